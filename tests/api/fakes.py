"""An in-memory, deterministic ``ControlPlane`` for the API tests, and small test helpers.

``FakeControlPlane`` keeps nodes, secrets, a global revision with per-node events and an
``asyncio.Condition`` that parked polls wait on. It can be told it is a follower (writes
raise ``NotLeader`` with a leader endpoint, or ``NoLeader``), and ``inject(method, error,
times)`` makes the next calls of a method raise an error, so every error code of every
route can be exercised. It records every call with its request id.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from raftdir.errors import (
    NoLeader, NotLeader, TokenExhausted, TokenInvalid, Unauthorized,
    UnknownNode, UnknownService,
)
from raftdir.model import (
    ClusterContainerSummary, InternalScaleRequest, NodeServiceState, ScaleAssignment,
    SetEvent, DrainEvent, UndrainEvent, WorkerLease, WorkerPollRequest, WorkerPollResponse,
    WorkerProfile,
    WorkerRegisterRequest, WorkerRegisterResponse, WorkerStatusAck, WorkerStatusReport,
)

ADMIN = "admin-token-for-tests"
GOOD_TOKEN = "join-ok"
USED_UP_TOKEN = "join-used-up"
PROFILE = WorkerProfile(api_addr="10.0.0.5:3669", os="linux", arch="x86_64",
                        labels={"zone": "a"}, cpu_total=4, memory_total_bytes=8 << 30)


class FakeControlPlane:
    """Implements ``raftdir.api.contract.ControlPlane`` in memory."""

    def __init__(self, node_id: int = 1, *, leader: bool = True,
                 leader_url: str | None = None, servers: list[str] | None = None) -> None:
        self.node_id = node_id
        self.leader = leader          # is this peer the leader?
        self.leader_url = leader_url  # the leader's endpoint when it is not
        self.server_list = list(servers or [])
        self.revision = 0
        self.nodes: dict[int, dict[str, Any]] = {}
        self.events: dict[int, list[Any]] = {}
        self.services: dict[str, dict[int, InternalScaleRequest]] = {}
        self.done_requests: dict[str, Any] = {}
        self.calls: list[tuple[str, Any]] = []
        self.injected: dict[str, list[BaseException]] = {}
        self.barriers = 0
        self.next_id = 1_000_000
        self.waiting = 0
        self.leaderless_barrier_fails = False
        self._cond: asyncio.Condition | None = None

    # -- test controls ----------------------------------------------------------------
    def inject(self, method: str, error: BaseException, times: int = 1) -> None:
        self.injected.setdefault(method, []).extend([error] * times)

    def _enter(self, method: str, arg: Any = None) -> None:
        self.calls.append((method, arg))
        queue = self.injected.get(method)
        if queue:
            raise queue.pop(0)

    def _write(self) -> None:
        if not self.leader:
            if self.leader_url:
                raise NotLeader(f"peer {self.node_id} does not lead", leader=self.leader_url)
            raise NoLeader("no leader elected")

    @property
    def cond(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    def add_node(self, node_id: int | None = None, secret: str | None = None) -> tuple[int, str]:
        node_id = node_id if node_id is not None else self._take_id()
        secret = secret or f"secret-{node_id}"
        self.nodes[node_id] = {"secret": secret, "state": "ready", "profile": PROFILE,
                               "renewed": 1_767_225_600}
        self.events.setdefault(node_id, [])
        return node_id, secret

    def _take_id(self) -> int:
        while self.next_id in self.nodes:
            self.next_id += 1
        self.next_id += 1
        return self.next_id - 1

    async def advance(self, node_ids: list[int] | None = None, service: str = "web") -> int:
        """Commit one revision with a ``set`` event for each of ``node_ids`` and wake
        the parked polls."""
        self.revision += 1
        for nid in node_ids or []:
            self.events.setdefault(nid, []).append(SetEvent(
                service=service, revision=self.revision,
                assignments=(ScaleAssignment(role="default", indices=(0,)),)))
        async with self.cond:
            self.cond.notify_all()
        return self.revision

    def _check_secret(self, node_id: int, secret: str | None) -> None:
        """As ``DirectoryServer``: one answer for every secret that does not authenticate
        the node (wrong, another node's, or no such node)."""
        node = self.nodes.get(node_id)
        if node is None or secret != node["secret"]:
            raise Unauthorized(f"the node secret does not authenticate node {node_id}",
                               field="node_id")

    # -- ControlPlane ------------------------------------------------------------------
    def is_leader(self) -> bool:
        return self.leader

    def leader_endpoint(self) -> str | None:
        return None if self.leader else self.leader_url

    def servers(self) -> list[str]:
        return list(self.server_list)

    async def register(self, req: WorkerRegisterRequest, request_id: str | None,
                       node_secret: str | None = None) -> WorkerRegisterResponse:
        self._enter("register", request_id)
        self._write()
        if request_id and request_id in self.done_requests:
            return self.done_requests[request_id]
        if req.token == USED_UP_TOKEN:
            raise TokenExhausted("join token used up (max_uses 1)", field="token")
        if req.token != GOOD_TOKEN:
            raise TokenInvalid("join token signature does not match", field="token")
        wanted = req.desired_node_id
        node_id, secret = self.add_node(wanted if wanted is not None and wanted not in
                                        self.nodes else None)
        self.nodes[node_id]["profile"] = req.profile
        resp = WorkerRegisterResponse(node_id=node_id, cluster_id="c-test",
                                      heartbeat_ttl_secs=10, heartbeat_grace_secs=10,
                                      internal_token=secret, servers=tuple(self.server_list))
        if request_id:
            self.done_requests[request_id] = resp
        return resp

    async def report(self, report: WorkerStatusReport, node_secret: str | None
                     ) -> WorkerStatusAck:
        self._enter("report", report.node_id)
        self._write()
        self._check_secret(report.node_id, node_secret)
        self.nodes[report.node_id]["report"] = report
        return WorkerStatusAck(next_ttl_secs=10, servers=tuple(self.server_list),
                               leader=self.server_list[0] if self.server_list else None)

    async def poll(self, req: WorkerPollRequest, node_secret: str | None
                   ) -> WorkerPollResponse:
        self._enter("poll", req.node_id)
        self._check_secret(req.node_id, node_secret)
        if req.last_revision > self.revision:  # as DirectoryServer: not of this history
            return WorkerPollResponse(revision=self.revision, full=True, behind=True,
                                      events=tuple(self.events.get(req.node_id, [])))

        def newer() -> list[Any]:
            return [e for e in self.events.get(req.node_id, []) if e.revision > req.last_revision]

        wait = min(req.max_wait_secs, 60)
        self.waiting += 1
        try:
            async with self.cond:
                try:
                    await asyncio.wait_for(self.cond.wait_for(lambda: bool(newer())), wait)
                except asyncio.TimeoutError:
                    pass
        finally:
            self.waiting -= 1
        return WorkerPollResponse(revision=max(self.revision, req.last_revision),
                                  events=tuple(newer()), full=req.last_revision == 0)

    def check_admin(self, token: str | None) -> None:
        self._enter("check_admin")
        if token != ADMIN:
            raise Unauthorized("this operation needs the admin token")

    async def distribute_scale(self, req: InternalScaleRequest, request_id: str | None
                               ) -> dict[int, InternalScaleRequest]:
        return await self.scale(req, request_id)

    async def scale(self, req: InternalScaleRequest, request_id: str | None
                    ) -> dict[int, InternalScaleRequest]:
        self._enter("scale", request_id)
        self._write()
        ready = sorted(n for n, rec in self.nodes.items() if rec["state"] == "ready")
        split: dict[int, list[int]] = {n: [] for n in ready}
        for i in range(req.replicas):
            if ready:
                split[ready[i % len(ready)]].append(i)
        out = {n: InternalScaleRequest.phase2(req.service, [("default", idx)], req.spec)
               for n, idx in split.items() if idx}
        self.services[req.service] = out
        await self.advance(list(out), req.service)
        return out

    async def undrain(self, node_id: int, request_id: str | None) -> dict[str, Any]:
        self._enter("undrain", request_id)
        self._write()
        if node_id not in self.nodes:
            raise UnknownNode(f"no node {node_id}")
        was = self.nodes[node_id]["state"] == "draining"
        if was:
            self.nodes[node_id]["state"] = "ready"
            self.revision += 1
            self.events[node_id].append(UndrainEvent(revision=self.revision))
            async with self.cond:
                self.cond.notify_all()
        return {"node_id": node_id, "state": self.nodes[node_id]["state"],
                "events_for": [node_id] if was else []}

    async def drain(self, node_id: int, request_id: str | None) -> dict[str, Any]:
        self._enter("drain", request_id)
        self._write()
        if node_id not in self.nodes:
            raise UnknownNode(f"no node {node_id}")
        self.nodes[node_id]["state"] = "draining"
        self.revision += 1
        self.events[node_id].append(DrainEvent(revision=self.revision))
        async with self.cond:
            self.cond.notify_all()
        return {"node_id": node_id, "state": "draining", "revision": self.revision}

    async def deregister(self, node_id: int, request_id: str | None) -> dict[str, Any]:
        self._enter("deregister", request_id)
        self._write()
        if node_id not in self.nodes:
            raise UnknownNode(f"no node {node_id}")
        del self.nodes[node_id]
        return {"node_id": node_id, "removed": True}

    async def create_token(self, valid_for_secs: int, max_uses: int) -> dict[str, Any]:
        self._enter("create_token", (valid_for_secs, max_uses))
        self._write()
        return {"token": GOOD_TOKEN, "token_id": "t1",
                "expires_unix_secs": 1_767_225_600 + valid_for_secs, "max_uses": max_uses}

    async def add_peer(self, peer_id: int, raft_addr: str, api_addr: str | None
                       ) -> dict[str, Any]:
        self._enter("add_peer", (peer_id, raft_addr, api_addr))
        self._write()
        return {"id": peer_id, "raft_addr": raft_addr, "api_addr": api_addr, "added": True}

    async def remove_peer(self, peer_id: int, raft_addr: str, api_addr: str | None
                          ) -> dict[str, Any]:
        self._enter("remove_peer", (peer_id, raft_addr, api_addr))
        self._write()
        return {"id": peer_id, "raft_addr": raft_addr, "removed": True}

    async def barrier(self) -> None:
        self._enter("barrier")
        if self.leaderless_barrier_fails:
            self._write()  # like the real server: only the leader commits a barrier
        self.barriers += 1

    def service_state(self, service: str) -> dict[str, Any]:
        self._enter("service_state", service)
        self._write()
        if service not in self.services:
            raise UnknownService(f"no service {service!r}")
        nodes = [NodeServiceState(node_id=n, running=len(r.groups()[0].indices), healthy=True,
                                  containers=()) for n, r in sorted(self.services[service].items())]
        return {"service": service, "running": sum(s.running for s in nodes), "healthy": True,
                "nodes": nodes, "unknown": []}

    def service_containers(self, service: str) -> list[dict[str, Any]]:
        self._enter("service_containers", service)
        self._write()
        if service not in self.services:
            raise UnknownService(f"no service {service!r}")
        return [ClusterContainerSummary(node_id=n, id=f"{service}-default-{i}", service=service,
                                        replica=i, image="", state="running").to_dict()
                for n, r in sorted(self.services[service].items())
                for i in r.groups()[0].indices]

    def peer_status(self) -> dict[str, Any]:
        self._enter("peer_status")
        return {"self": self.node_id, "leader": self.leader_url, "is_leader": self.leader,
                "term": 3, "commit_index": self.revision}

    def workers(self) -> list[dict[str, Any]]:
        self._enter("workers")
        return [{"node_id": n, "kind": "worker", "state": rec["state"],
                 "profile": rec["profile"].to_dict()} for n, rec in sorted(self.nodes.items())]

    def leases(self) -> list[tuple[WorkerLease, float | None]]:
        self._enter("leases")
        return [(WorkerLease(node_id=n, profile=rec["profile"], acquired_unix_secs=rec["renewed"],
                             renewed_unix_secs=rec["renewed"], ttl_secs=10, grace_secs=10),
                 12.5 if i % 2 == 0 else None)
                for i, (n, rec) in enumerate(sorted(self.nodes.items()))]

    def metrics(self) -> dict[str, float]:
        return {"term": 3, "is_leader": 1.0 if self.leader else 0.0,
                "commit_index": self.revision, "live_workers": len(self.nodes),
                "heartbeats_received_total": 7}


class RecordingClock:
    """A clock whose ``sleep`` returns at once and records the delays asked for."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)


def closed_port() -> int:
    """A loopback port with nothing listening on it (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_until(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    """Wait (polling the event loop) until ``predicate()`` is true, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


# ---------------------------------------------------------------------------- HTTP helpers

import contextlib  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import aiohttp  # noqa: E402

from raftdir.api.server import start_api  # noqa: E402
from raftdir.codec import dumps_json, dumps_msgpack, loads_json, loads_msgpack  # noqa: E402

MSGPACK = "application/msgpack"
JSON = "application/json"


@contextlib.asynccontextmanager
async def serving(cp: FakeControlPlane, **kwargs: Any):
    """The API over ``cp`` on 127.0.0.1 with an OS-chosen port."""
    api = await start_api(cp, "127.0.0.1", 0, **kwargs)
    try:
        yield api
    finally:
        await api.close()


@dataclass
class FakePair:
    """A fake leader and a fake follower that forwards to it, both served."""

    leader_cp: FakeControlPlane
    follower_cp: FakeControlPlane
    leader: Any
    follower: Any

    def url(self, via: str) -> str:
        return (self.leader if via == "leader" else self.follower).url

    def api(self, via: str) -> Any:
        return self.leader if via == "leader" else self.follower


@contextlib.asynccontextmanager
async def fake_pair(**kwargs: Any):
    """``FakePair``: node 1 leads, node 2 follows and forwards to it."""
    leader_cp = FakeControlPlane(1)
    async with serving(leader_cp, **kwargs) as leader:
        follower_cp = FakeControlPlane(2, leader=False, leader_url=leader.url)
        async with serving(follower_cp, **kwargs) as follower:
            yield FakePair(leader_cp, follower_cp, leader, follower)


def encode(body: Any, fmt: str) -> bytes:
    return dumps_msgpack(body) if fmt == MSGPACK else dumps_json(body)


async def call(session: aiohttp.ClientSession, method: str, url: str, body: Any = None, *,
               fmt: str = JSON, raw: bytes | None = None, headers: dict | None = None,
               accept: str | None = None) -> tuple[int, Any, str]:
    """One request; returns (status, decoded body or None, content type)."""
    hdrs = dict(headers or {})
    data = raw if raw is not None else (encode(body, fmt) if body is not None else None)
    if data is not None and "Content-Type" not in hdrs:
        hdrs["Content-Type"] = fmt
    if accept:
        hdrs["Accept"] = accept
    async with session.request(method, url, data=data, headers=hdrs) as resp:
        payload = await resp.read()
        ctype = resp.headers.get("Content-Type", "").split(";")[0]
        if not payload:
            return resp.status, None, ctype
        if ctype == MSGPACK:
            return resp.status, loads_msgpack(payload), ctype
        if ctype == JSON:
            return resp.status, loads_json(payload), ctype
        return resp.status, payload.decode(), ctype


async def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` as is on a fresh connection to 127.0.0.1:``port`` and read until the
    server closes it (or ``timeout``, which fails the test): for requests a client library
    would rewrite (raw ``..`` paths, HTTP/0.9 request lines, odd headers)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def parse_raw_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one HTTP/1.x response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a ``/metrics`` answer, read with prometheus-client's own
    parser (so the test also checks the exposition parses); the sum over the samples whose
    labels include ``labels``; 0 when there is none."""
    from prometheus_client.parser import text_string_to_metric_families
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                total += sample.value
    return total
