"""What the multi-process cluster tests share: a running ``LocalCluster``, the ``raftdir``
CLI as a process, and a ``raftdir worker`` process against the cluster (stopped by its
PID with ``stop_process``)."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from raftdir.config import dump_yaml
from raftdir.model import WorkerTierMode, WorkerTierRole
from raftdir.testing import LocalCluster, stop_process  # noqa: F401 (tests import it here)


@contextmanager
def running_cluster(base_dir: Path, extra_args: list[str] | None = None,
                    **heartbeat: int) -> Iterator[LocalCluster]:
    """A three-peer cluster in ``base_dir``, started and settled (one leader every peer
    follows); every peer stopped by its PID on the way out. ``extra_args``: more arguments
    of `raftdir serve`."""
    c = LocalCluster(base_dir, extra_args=list(extra_args or [])).prepare(
        heartbeat=heartbeat or None)
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


def http(base: str, method: str, path: str, token: str | None = None,
         body: dict | None = None, timeout: float = 10.0) -> tuple[int, object]:
    """One request to one server (no failover, no retry): its status and decoded JSON."""
    import json
    import urllib.error
    import urllib.request
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


def secrets_in_logs(paths: list[Path], secrets: list[str]) -> list[tuple[str, str]]:
    """(file, the first characters of a secret) for every secret found in a log: a test
    that collected every secret and token of a run asserts this is empty."""
    found = []
    for path in paths:
        text = path.read_text(errors="replace") if path.exists() else ""
        for secret in secrets:
            if secret and secret in text:
                found.append((str(path), secret[:8] + "..."))
    return found


def token_parts(token: str) -> list[str]:
    """A token and the parts of it that are secret on their own (an access token's or a
    join token's last part; the id and the payload are not secret)."""
    return [token, token.rsplit(".", 1)[-1]] if "." in token else [token]
