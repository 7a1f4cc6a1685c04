"""What the multi-process cluster tests share: a running ``LocalCluster``, the ``raftdir``
CLI as a process, and a ``raftdir worker`` process against the cluster (stopped by its
PID with ``stop_process``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from raftdir.config import dump_yaml
from raftdir.model import WorkerTierMode, WorkerTierRole
from raftdir.testing import LocalCluster


@contextmanager
def running_cluster(base_dir: Path, **heartbeat: int) -> Iterator[LocalCluster]:
    """A three-peer cluster in ``base_dir``, started and settled (one leader every peer
    follows); every peer stopped by its PID on the way out."""
    c = LocalCluster(base_dir).prepare(heartbeat=heartbeat or None)
    c.start()
    try:
        c.wait_settled(30)
        yield c
    finally:
        c.stop()


def raftdir(*args: str, env: dict | None = None, timeout: float = 30
            ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raftdir", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, **(env or {})))


def start_worker(cluster: LocalCluster, data_dir: Path, token: str, *,
                 labels: dict[str, str] | None = None, api_addr: str | None = None
                 ) -> subprocess.Popen:
    """``raftdir worker --data-dir DATA_DIR`` with a worker-tier config for ``cluster``
    (rewritten each time: a restart may change the labels), logging to worker.log."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "join.token").write_text(token + "\n")
    mode = WorkerTierMode(role=WorkerTierRole.WORKER, servers=tuple(cluster.endpoints),
                          token_file=str(data_dir / "join.token"), labels=labels or {})
    (data_dir / "cluster_mode.yaml").write_text(dump_yaml(mode))
    log = open(data_dir / "worker.log", "ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "raftdir", "worker", "--data-dir", str(data_dir),
             *(["--api-addr", api_addr] if api_addr else [])],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    finally:
        log.close()


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to one process by its PID and reap it (SIGKILL after 10 s)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
