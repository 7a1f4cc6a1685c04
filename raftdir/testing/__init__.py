"""Helpers for testing with raftdir: local multi-process clusters and simulated workers.

Owns: ``LocalCluster`` (N server processes on 127.0.0.1 with OS-chosen ports, one data
directory each, a shared cluster secret; started, killed with SIGKILL and restarted by
PID), ``SimWorker`` / ``SimFleet`` (workers that register, report and poll from one asyncio
process, no thread per worker) and ``wait_until``. Used by raftdir's own tests, the demo,
the benchmarks and the nemesis; usable in a host's tests. Imports the client and the config
types.

Submodules (imported on their own, never from here): ``raftdir.testing.nemesis_peer`` (a
launcher that starts ``raftdir`` with its Raft dials redirected) and
``raftdir.testing.proxy`` (TCP proxies between peers that can be cut and healed) and
``raftdir.testing.raftcut`` (dropping one in-process peer's Raft messages for a while).

Every wait has a deadline; every process started is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..assignments import AssignmentSet
from ..codec import dumps_msgpack
from ..config import dump_yaml
from ..errors import RaftdirError, Reregister
from ..model import (
    RaftMode, RaftPeer, WorkerPollRequest, WorkerProfile, WorkerRegisterRequest,
    WorkerResourceUsage, WorkerStatusReport, WorkerTierMode, WorkerTierRole,
)
from ..replication.secret import create_secret, load_secret
from ..tasks import cancel_and_wait

__all__ = ["free_ports", "wait_until", "async_wait_until", "map_of_size", "stop_process",
           "LocalCluster", "SimWorker", "SimFleet"]


def free_ports(n: int, host: str = "127.0.0.1", *, restartable: bool = False) -> list[int]:
    """``n`` distinct free ports (bound, then released together). By default the OS picks
    them, from its ephemeral range. ``restartable``: ports for servers that are stopped and
    started again on the same port (a cluster's peers): picked below the ephemeral range,
    where no outgoing connection's source port can take a stopped server's port meanwhile
    (a long run on a busy machine lost a peer that way)."""
    socks: list[socket.socket] = []
    try:
        if restartable:
            low = _ephemeral_low()
            rng = random.Random()
            for _ in range(200 * n):
                if len(socks) == n:
                    break
                port = rng.randrange(10_000, low)
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((host, port))
                except OSError:
                    s.close()
                    continue
                socks.append(s)
            if len(socks) < n:
                raise OSError(f"no {n} free ports between 10000 and {low} on {host}")
        else:
            for _ in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, 0))
                socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ephemeral_low() -> int:
    """The lowest port the OS hands out for outgoing connections (Linux; 32768 where it
    cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
    return max(low, 10_001)


def wait_until(cond: Callable[[], Any], timeout: float, what: str = "condition",
               interval: float = 0.02) -> Any:
    """Poll ``cond`` until it returns something truthy; raise ``TimeoutError`` naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


async def async_wait_until(cond: Callable[[], Any], timeout: float,
                           what: str = "condition", interval: float = 0.02) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


def map_of_size(size: int, char: str = "é") -> dict[str, str]:
    """A one-key map whose msgpack encoding is exactly ``size`` bytes, its text made of
    ``char`` (by default a 2-byte UTF-8 character): labels or a spec at a size limit."""
    out = {"k": char * max(0, (size - 8) // len(char.encode("utf-8")))}
    while len(dumps_msgpack(out)) < size:
        out["k"] += "e"
    while len(dumps_msgpack(out)) > size:
        out["k"] = out["k"][:-1]
    if len(dumps_msgpack(out)) != size:
        raise ValueError(f"no one-key map of {char!r} encodes to {size} bytes")
    return out


# ---------------------------------------------------------------------------- clusters

@dataclass
class Peer:
    node_id: int
    data_dir: Path
    raft_addr: str | None     # None: a read-only replica
    api_addr: str
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.api_addr}"


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to one process by its PID, if it still runs, and reap it (SIGKILL after
    10 s)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclass
class LocalCluster:
    """``size`` server processes (``raftdir serve``) on 127.0.0.1. ``mode``: ``worker-tier``
    or ``raft``. ``configs``: existing data dirs with their own ``cluster_mode.yaml`` (the
    demo's ``examples/three-peers``) instead of generated ones. ``env``: extra environment
    for the processes (e.g. ``RAFTDIR_CHECKPOINT_INTERVAL``)."""

    base_dir: Path
    size: int = 3
    mode: str = "worker-tier"
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    peers: dict[int, Peer] = field(default_factory=dict)

    def prepare(self, heartbeat: dict[str, int] | None = None,
                replicas: int = 0) -> "LocalCluster":
        """Write every peer's config and the shared ``cluster.secret``. ``replicas``:
        read-only replicas besides the ``size`` voters (ids ``size + 1``, ...); every
        config lists them all."""
        self.base_dir = Path(self.base_dir)
        ports = free_ports(2 * self.size + replicas, restartable=True)
        raft_peers = tuple(RaftPeer(id=i + 1, raft_addr=f"127.0.0.1:{ports[2 * i]}",
                                    api_addr=f"127.0.0.1:{ports[2 * i + 1]}")
                           for i in range(self.size)) + tuple(
            RaftPeer(id=self.size + j + 1, api_addr=f"127.0.0.1:{ports[2 * self.size + j]}",
                     replica=True) for j in range(replicas))
        secret = None
        for peer in raft_peers:
            data_dir = self.base_dir / f"peer{peer.id}"
            data_dir.mkdir(parents=True, exist_ok=True)
            if self.mode == "raft":
                mode: Any = RaftMode(node_id=peer.id, peers=raft_peers)
            else:
                mode = WorkerTierMode(role=WorkerTierRole.SERVER, node_id=peer.id,
                                      peers=raft_peers, **(heartbeat or {}))
            (data_dir / "cluster_mode.yaml").write_text(dump_yaml(mode))
            if secret is None:
                secret = create_secret(data_dir, force=True)
            else:
                _copy_secret(secret, data_dir)
            self.peers[peer.id] = Peer(peer.id, data_dir, peer.raft_addr, peer.api_addr)
        return self

    def adopt(self, data_dirs: list[Path]) -> "LocalCluster":
        """Use existing data dirs that hold their own configs (copied by the caller)."""
        from ..config import load_cluster_mode
        secret = None
        for data_dir in data_dirs:
            mode = load_cluster_mode(Path(data_dir) / "cluster_mode.yaml")
            me = next(p for p in mode.peers if p.id == mode.node_id)
            if load_secret(data_dir) is None:
                if secret is None:
                    secret = create_secret(data_dir)
                else:
                    _copy_secret(secret, Path(data_dir))
            secret = secret or load_secret(data_dir)
            self.peers[mode.node_id] = Peer(mode.node_id, Path(data_dir), me.raft_addr,
                                            me.api_addr)
        self.size = len(self.peers)
        return self

    @property
    def secret(self) -> str:
        value = load_secret(next(iter(self.peers.values())).data_dir)
        assert value is not None
        return value

    @property
    def endpoints(self) -> list[str]:
        return [p.url for _, p in sorted(self.peers.items())]

    @property
    def voters(self) -> list[int]:
        return sorted(n for n, p in self.peers.items() if p.raft_addr is not None)

    @property
    def replicas(self) -> list[int]:
        return sorted(n for n, p in self.peers.items() if p.raft_addr is None)

    def start(self, node_id: int | None = None) -> None:
        for peer in ([self.peers[node_id]] if node_id is not None else self.peers.values()):
            if peer.proc is not None and peer.proc.poll() is None:
                continue
            log = open(peer.data_dir / "server.log", "ab")
            env = dict(os.environ, **self.env)
            peer.proc = subprocess.Popen(
                self.command(peer), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            log.close()

    def command(self, peer: Peer) -> list[str]:
        """The argv that starts ``peer`` (``raftdir serve`` on its data dir). A subclass
        may start it through a launcher (the nemesis does: ``nemesis_peer``)."""
        return [sys.executable, "-m", "raftdir", "serve", "--data-dir", str(peer.data_dir),
                *self.extra_args]

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one peer's process (by PID) and reap it."""
        proc = self.peers[node_id].proc
        if proc is not None:
            stop_process(proc, sig)

    def alive(self, node_id: int) -> bool:
        proc = self.peers[node_id].proc
        return proc is not None and proc.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every peer, then SIGKILL what is left after ``grace`` seconds."""
        procs = [p.proc for p in self.peers.values() if p.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- who leads (HTTP, synchronous, for tests and the demo) ---------------------------
    def health(self, node_id: int, timeout: float = 0.5) -> dict[str, Any] | None:
        import json
        import urllib.request
        try:
            with urllib.request.urlopen(f"{self.peers[node_id].url}/health",
                                        timeout=timeout) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError):
            return None

    def leader_id(self) -> int | None:
        """The peer that says it leads (and is ready), if exactly one does."""
        leaders = [n for n in self.peers if self.alive(n)
                   and (self.health(n) or {}).get("is_leader")]
        return leaders[0] if len(leaders) == 1 else None

    def wait_leader(self, timeout: float = 20.0, exclude: int | None = None) -> int:
        return wait_until(lambda: (lambda n: n if n is not None and n != exclude else None)(
            self.leader_id()), timeout, "a leader", interval=0.05)

    def settled_leader(self) -> int | None:
        """The leader, when exactly one peer leads and every running peer names it (a
        peer that started late may still be a candidate for a moment after the others
        elected a leader)."""
        leader = self.leader_id()
        if leader is None:
            return None
        url = self.peers[leader].url
        named = [(self.health(n) or {}).get("leader") for n in self.peers if self.alive(n)]
        return leader if all(u == url for u in named) else None

    def wait_settled(self, timeout: float = 20.0, exclude: int | None = None) -> int:
        """Wait for ``settled_leader`` (not ``exclude``)."""
        return wait_until(lambda: (lambda n: n if n is not None and n != exclude else None)(
            self.settled_leader()), timeout, "every peer to follow one leader",
            interval=0.05)


def _copy_secret(secret: str, data_dir: Path) -> None:
    path = data_dir / "cluster.secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")


# ---------------------------------------------------------------------------- workers

@dataclass
class SimWorker:
    """One simulated worker: registers, reports before its TTL, long-polls, keeps its
    assignment set. Runs as two coroutines on the caller's loop."""

    servers: list[str]
    token: str
    name: int = 0
    report_every: float | None = None   # seconds; default ttl / 3
    poll_wait: int = 30
    client: Any = None
    node_id: int | None = None
    assignments: AssignmentSet = field(default_factory=AssignmentSet)
    acks: int = 0
    polls: int = 0
    errors: list[str] = field(default_factory=list)
    ttl: int = 10
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def register(self) -> int:
        from ..api.client import RaftdirClient
        if self.client is None:
            self.client = RaftdirClient(self.servers, timeout=5.0, retries=40,
                                        backoff=(0.02, 0.5))
        profile = WorkerProfile(api_addr=f"127.0.0.1:{20000 + self.name % 40000}",
                                os="linux", arch="x86_64", labels={"sim": "yes"})
        resp = await self.client.register(WorkerRegisterRequest(token=self.token,
                                                                profile=profile))
        self.node_id, self.ttl = resp.node_id, resp.heartbeat_ttl_secs
        return resp.node_id

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._report_loop()),
                       asyncio.ensure_future(self._poll_loop())]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        if self.client is not None:
            await self.client.close()

    async def report_once(self) -> None:
        ack = await self.client.report(WorkerStatusReport(
            node_id=self.node_id, ts_ns=time.time_ns(),
            resources=WorkerResourceUsage(cpu_used=0.0, memory_used_bytes=0, gpu_used=0)))
        self.acks += 1
        self.ttl = ack.next_ttl_secs

    async def _report_loop(self) -> None:
        while True:
            try:
                await self.report_once()
            except asyncio.CancelledError:
                raise
            except RaftdirError as exc:
                self.errors.append(f"report: {exc.code}: {exc}")
            await asyncio.sleep(self.report_every or max(0.5, self.ttl / 3))

    async def _poll_loop(self) -> None:
        while True:
            try:
                resp = await self.client.poll(WorkerPollRequest(
                    node_id=self.node_id, last_revision=self.assignments.revision,
                    max_wait_secs=self.poll_wait))
                self.polls += 1
                self.assignments.apply(resp)
            except asyncio.CancelledError:
                raise
            except Reregister as exc:
                self.errors.append(f"poll: {exc.code}")
                await asyncio.sleep(1.0)
            except RaftdirError as exc:
                self.errors.append(f"poll: {exc.code}: {exc}")
                await asyncio.sleep(0.05)

    @property
    def replicas(self) -> int:
        return len(self.assignments.containers())


@dataclass
class SimFleet:
    """``size`` simulated workers sharing nothing but the event loop."""

    servers: list[str]
    token: str
    size: int
    report_every: float | None = None
    workers: list[SimWorker] = field(default_factory=list)

    async def start(self, concurrency: int = 50) -> None:
        self.workers = [SimWorker(list(self.servers), self.token, name=i,
                                  report_every=self.report_every)
                        for i in range(self.size)]
        sem = asyncio.Semaphore(concurrency)

        async def reg(w: SimWorker) -> None:
            async with sem:
                await w.register()
        await asyncio.gather(*(reg(w) for w in self.workers))
        for w in self.workers:
            w.start()

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers))

    def node_ids(self) -> list[int]:
        return [w.node_id for w in self.workers if w.node_id is not None]

    def total_replicas(self) -> int:
        return sum(w.replicas for w in self.workers)

