"""The nemesis's three peers: ``raftdir serve`` processes whose Raft links go through proxies.

Owns: ``NemesisCluster``, a ``LocalCluster`` (worker-tier server configs on 127.0.0.1 with
OS-chosen ports, one shared ``cluster.secret``) whose peers are started through
``raftdir.testing.nemesis_peer`` with ``--dial`` pointing at a ``MeshProcess`` (one proxy per
ordered pair of peers, ``raftdir.testing.proxy``), and the process faults: kill -9 and
restart, SIGSTOP and SIGCONT, each by PID. Each peer's log is ``server.log`` in its data
directory, under the run's output directory.

Runs on the controller's event loop: nothing here blocks it (a reaped process is waited
for with short sleeps), because the loop also runs the fleet. Imports ``raftdir.testing``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from ..testing import LocalCluster, Peer
from ..testing.proxy import MeshProcess

__all__ = ["NemesisCluster"]


@dataclass
class NemesisCluster(LocalCluster):
    """``prepare(heartbeat=...)``, then ``await start_mesh()``, then ``start()``."""

    mesh: MeshProcess | None = None
    log_level: str = "info"
    paused: set[int] = field(default_factory=set)

    async def start_mesh(self) -> MeshProcess:
        self.mesh = await MeshProcess({n: p.raft_addr for n, p in self.peers.items()}).start()
        return self.mesh

    def command(self, peer: Peer) -> list[str]:
        assert self.mesh is not None, "start_mesh() first"
        return [sys.executable, "-m", "raftdir.testing.nemesis_peer", "--exit-with-parent",
                *self.mesh.dial_args(peer.node_id), "--", "serve", "--data-dir",
                str(peer.data_dir), "--log-level", self.log_level, *self.extra_args]

    def pid(self, n: int) -> int | None:
        proc = self.peers[n].proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # -- faults (each by PID) ------------------------------------------------------------
    async def kill9(self, n: int, timeout: float = 10.0) -> None:
        """SIGKILL peer ``n`` and reap it."""
        proc = self.peers[n].proc
        if proc is None or proc.poll() is not None:
            return
        self.paused.discard(n)
        proc.send_signal(signal.SIGKILL)
        await _reap(proc, timeout)

    def pause(self, n: int) -> None:
        pid = self.pid(n)
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)
            self.paused.add(n)

    def resume(self, n: int) -> None:
        pid = self.pid(n)
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        self.paused.discard(n)

    async def restart(self, n: int) -> None:
        self.start(n)

    async def stop_all(self, grace: float = 8.0) -> None:
        """SIGCONT whatever is paused, SIGTERM every peer, SIGKILL what is left after
        ``grace`` seconds; then the proxy mesh."""
        for n in list(self.paused):
            self.resume(n)
        procs = [p.proc for p in self.peers.values()
                 if p.proc is not None and p.proc.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                await _reap(proc, max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                await _reap(proc, 10.0)
        if self.mesh is not None:
            await self.mesh.close()
            self.mesh = None

    def exit_codes(self) -> dict[int, int | None]:
        return {n: (p.proc.returncode if p.proc is not None else None)
                for n, p in sorted(self.peers.items())}


async def _reap(proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        await asyncio.sleep(0.02)
