"""The three-peer demo end to end, as a user runs it (``python -m raftdir demo``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


def test_demo_ends_with_no_lost_write_and_cleans_up(tmp_path):
    out = subprocess.run([sys.executable, "-m", "raftdir", "demo", "--data-dir",
                          str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    for step in ("election: peer", "6 workers registered", "scale web -> 12 replicas",
                 "kill -9 peer", "new leader: peer", "workers still ready: 6/6",
                 "polls resumed after the failover", "caught up"):
        assert step in text, f"missing step {step!r}:\n{text}"
    assert re.search(r"lost writes:\s+0\n", text)
    assert re.search(r"marked down:\s+0\n", text)
    seconds = float(re.search(r"result:\s+ok in ([0-9.]+) s", text).group(1))
    assert seconds < 60
    pids = [int(p) for p in re.search(r"\(pids ([0-9, ]+)\)", text).group(1).split(", ")]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
