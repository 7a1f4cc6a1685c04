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


def test_demo_keep_prints_the_dashboard_url(tmp_path):
    import signal
    import time
    import urllib.request
    out = subprocess.run([sys.executable, "-m", "raftdir", "demo", "--keep", "--workers", "2",
                          "--data-dir", str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    # the note says how to stop what it left running: those pids are ours to stop
    stop = re.search(r"\n  kill ([0-9 ]+);", out.stdout)
    pids = [int(p) for p in stop.group(1).split()] if stop else []
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        assert stop and len(pids) == 5, out.stdout   # 3 servers, 2 workers
        url = re.search(r"dashboard: (http://127\.0\.0\.1:[0-9]+/ui) ", out.stdout).group(1)
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200 and b"<h1>raftdir</h1>" in resp.read()
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for pid in pids:
            while True:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    break
                time.sleep(0.05)


def test_demo_with_replicas_spreads_the_polls_over_them(tmp_path):
    out = subprocess.run([sys.executable, "-m", "raftdir", "demo", "--replicas", "2",
                          "--data-dir", str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "and read-only replicas 4, 5" in text
    # the last peer table lists both replicas, caught up
    table = text.rsplit("caught up", 1)[1]
    assert re.search(r"\n\s+4\s+-\s+\S+\s+replica\s+\d+\s+\d+\s+\d+\s+0\s", table), table
    assert re.search(r"\n\s+5\s+-\s+\S+\s+replica\s+\d+\s+\d+\s+\d+\s+0\s", table), table
    parked = dict(re.findall(r"(peer \d|replica \d): (\d+)",
                             text.split("parked polls: ", 1)[1].split("\n", 1)[0]))
    assert sum(map(int, parked.values())) == 6 and set(parked) >= {"replica 4", "replica 5"}
    assert re.search(r"lost writes:\s+0\n", text) and re.search(r"marked down:\s+0\n", text)
    pids = [int(p) for p in re.search(r"\(pids ([0-9, ]+)\)", text).group(1).split(", ")]
    assert len(pids) == 5
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
