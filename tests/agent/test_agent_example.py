"""``examples/worker.py`` runs as a real process against an in-process control plane,
prints its assignments as they change and stops cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from agent_harness import control_plane

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "worker.py"


async def _line(proc: asyncio.subprocess.Process, needle: str, seen: list[str],
                timeout: float = 10.0) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    assert proc.stdout is not None
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"no line with {needle!r}; output so far: {seen}")
        raw = await asyncio.wait_for(proc.stdout.readline(), remaining)
        if not raw:
            raise AssertionError(f"the example exited; output: {seen}")
        line = raw.decode().rstrip()
        seen.append(line)
        if needle in line:
            return line


async def test_the_example_worker_prints_its_assignments_and_stops_on_ctrl_c(tmp_path):
    cp = await control_plane()
    token = await cp.token_file(tmp_path)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), "--data-dir", str(tmp_path / "w"),
        "--server", cp.url(), "--token-file", str(token), "--api-addr", "127.0.0.1:7001",
        "--label", "zone=a", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env)
    seen: list[str] = []
    try:
        connected = await _line(proc, "connected to", seen)
        node_id = int(connected.split()[1])
        assert cp.state(node_id) == "ready"
        assert cp.node(node_id)["profile"]["labels"] == {"zone": "a"}
        await cp.scale("web", 2)
        await _line(proc, "web-default-0, web-default-1", seen)
        proc.send_signal(signal.SIGINT)
        await _line(proc, "stopped", seen)
        assert await asyncio.wait_for(proc.wait(), 10) == 0, seen
        assert (tmp_path / "w" / "worker" / "identity" / "identity.json").exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await cp.stop()
