"""Helpers for the replication tests: free loopback ports, the fast test tuning, and
``Peer``/``Cluster``, which drive ``peer_main.py`` processes (every request has a deadline,
``kill`` is SIGKILL + reap). Fixtures live in ``conftest.py``; tests import helpers from
here (not from ``conftest``, whose module name other test directories share)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from raftdir.testing import free_ports  # noqa: F401 - re-exported for the tests

#: Quick elections for tests; still the pinned shape (no batching, journal + dump).
TEST_TUNING = dict(
    raft_min_timeout=0.3, raft_max_timeout=0.9, append_entries_period=0.075,
    auto_tick_period=0.02, connection_timeout=10.0, connection_retry_time=0.3,
    leader_fallback_timeout=2.0, bind_retry_time=0.2, max_bind_retries=3,
)


PEER_MAIN = str(Path(__file__).with_name("peer_main.py"))


def wait_until(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = cond()
            if value:
                return value
        except PeerError as exc:  # a peer answering an error is "not yet"
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                                 + (f" (last error: {last_exc})" if last_exc else ""))
        time.sleep(step)


class PeerError(Exception):
    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(f"{reply.get('error')}: {reply.get('message')}")
        self.reply = reply
        self.code = reply.get("error")
        self.leader = reply.get("leader")


class BindFailed(Exception):
    pass


class Peer:
    """A ``peer_main.py`` process. Every request has a deadline; ``kill`` is SIGKILL."""

    def __init__(self, addr: str, partners: list[str], data_dir: Path, log_path: Path,
                 tuning: dict[str, Any], secret: str | None, sm: str) -> None:
        self.addr = addr
        self.partners = partners
        self.data_dir = data_dir
        self.log_path = log_path
        self.args = {"self": addr, "partners": partners, "data_dir": str(data_dir),
                     "tuning": tuning, "secret": secret, "sm": sm}
        self.proc: subprocess.Popen[str] | None = None
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._next_id = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def spawn(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self._replies = queue.Queue()
        log = open(self.log_path, "a")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, PEER_MAIN, json.dumps(self.args)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                bufsize=1, cwd=str(self.data_dir.parent))
        finally:
            log.close()
        threading.Thread(target=self._read, args=(self.proc, self._replies),
                         daemon=True).start()

    @staticmethod
    def _read(proc: subprocess.Popen[str], q: queue.Queue) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                q.put(json.loads(line))
            except ValueError:
                continue
        q.put(None)

    def wait_started(self, timeout: float = 20.0) -> None:
        msg = self._get(timeout, "start-up")
        if msg.get("event") == "bind_failed":
            raise BindFailed(msg.get("message"))
        assert msg.get("event") == "started", msg

    def _get(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            msg = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"peer {self.addr}: no answer to {what} within {timeout} s; "
                                 f"log: {self.log_tail()}") from None
        if msg is None:
            raise AssertionError(f"peer {self.addr} exited during {what}; "
                                 f"log: {self.log_tail()}")
        return msg

    def call(self, op: str, timeout: float = 5.0, check: bool = True, **kw: Any) -> dict:
        assert self.proc is not None and self.proc.stdin is not None
        self._next_id += 1
        rid = self._next_id
        self.proc.stdin.write(json.dumps({"id": rid, "op": op, "timeout": timeout, **kw}) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout + 10
        while True:
            msg = self._get(max(0.01, deadline - time.monotonic()), op)
            if msg.get("id") == rid:
                break
        if check and not msg["ok"]:
            raise PeerError(msg)
        return msg

    def status(self) -> dict[str, Any]:
        return self.call("status")["status"]

    def kill(self) -> None:
        """SIGKILL and reap; safe to call twice."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text()[-n:]
        except OSError:
            return "<no log>"


class Cluster:
    def __init__(self, peers: list[Peer]) -> None:
        self.peers = peers

    def leader(self, timeout: float = 10.0, among: list[Peer] | None = None) -> Peer:
        """Wait until exactly one live peer leads and every live peer names it."""
        live = among or [p for p in self.peers if p.proc and p.proc.poll() is None]

        def agreed() -> Peer | None:
            statuses = [(p, p.status()) for p in live]
            leaders = [p for p, s in statuses if s["is_leader"]]
            if len(leaders) != 1:
                return None
            if all(s["leader"] == leaders[0].addr for _, s in statuses):
                return leaders[0]
            return None

        return wait_until(agreed, timeout, "one agreed leader")

    def followers(self, leader: Peer) -> list[Peer]:
        return [p for p in self.peers if p is not leader]

    def kill_all(self) -> None:
        for p in self.peers:
            try:
                p.kill()
            except Exception:  # noqa: BLE001 - clean up the rest regardless
                pass


def wipe(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
