"""The nemesis's fleet: simulated workers that register, report and long-poll over HTTP.

Owns: ``Worker`` (one simulated worker: its identity, its lease TTL, its ``AssignmentSet``
built only from its own poll answers, and two coroutines, a report loop and a poll loop)
and ``Fleet`` (every worker of the run, killing and reviving them). Every HTTP attempt is
one history record (``register``, ``report``, ``poll``), with the server it went to.

A worker reports on the real agent's schedule: the next report is due
``raftdir.agent.agent.report_interval(ttl)`` after the previous one was sent, with the TTL
of the latest ack; a failed report is retried at once on a ``421`` leader hint, otherwise
at the next server after a short backoff (0.1 s doubling to 0.5 s). A worker the nemesis
kills stops reporting and polling (a "dead worker"); revived, it carries on with the same
identity and assignment set. A worker whose identity is refused (``unauthorized``, the
servers' one answer for an evicted node; ``reregister`` from older servers) retires; the
checker counts a retirement without an eviction of the node as a lost registration.

Runs on the controller's event loop, no thread per worker. Imports the wire types, the
assignment set, the agent's ``report_interval`` and the nemesis's own modules.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..agent.agent import report_interval
from ..api.client import normalize_endpoint
from ..assignments import AssignmentSet
from ..codec import from_dict, to_dict
from ..model import (
    DeleteEvent, DrainEvent, SetEvent, WorkerPollResponse, WorkerProfile,
    WorkerRegisterRequest, WorkerRegisterResponse, WorkerResourceUsage, WorkerStatusAck,
    WorkerStatusReport,
)
from ..tasks import cancel_and_wait
from .history import Recorder
from .http import Http, Retry

__all__ = ["Worker", "Fleet", "FleetSettings", "event_record", "NEW", "LIVE", "DEAD",
           "RETIRED"]

NEW, LIVE, DEAD, RETIRED = "new", "live", "dead", "retired"
#: The answers that refuse a worker's identity: the node was evicted (or its secret is not
#: its: the servers do not tell these apart, so as not to tell which node ids exist).
REFUSED_IDENTITY = frozenset({"unauthorized", "reregister"})
_BACKOFF_FIRST, _BACKOFF_CAP = 0.1, 0.5


@dataclass(frozen=True)
class FleetSettings:
    servers: tuple[str, ...]            # every peer's API endpoint
    poll_wait: int = 10                 # max_wait_secs of a poll
    report_timeout: float = 2.0         # seconds per report attempt
    register_timeout: float = 3.0       # seconds per registration attempt
    register_deadline: float = 30.0     # seconds for every try of one registration


def event_record(ev: Any) -> list[Any]:
    """A poll event as compact plain data for the history: ``["set", service, revision,
    [[role, [indices]], ...]]``, ``["delete", service, revision]`` or ``["drain",
    revision]``."""
    if isinstance(ev, SetEvent):
        return ["set", ev.service, ev.revision,
                [[g.role, list(g.indices)] for g in ev.assignments]]
    if isinstance(ev, DeleteEvent):
        return ["delete", ev.service, ev.revision]
    if isinstance(ev, DrainEvent):
        return ["drain", ev.revision]
    return ["unknown", type(ev).__name__]


def _rid_tag(rid: str) -> str:
    """A registration's request id is a credential (the node secret derives from it): the
    history keeps a short hash, enough to group the tries of one registration."""
    return hashlib.sha256(rid.encode()).hexdigest()[:12]


class Worker:
    """One simulated worker; ``name`` is its index in the run (its profile's port)."""

    def __init__(self, name: int, settings: FleetSettings, rec: Recorder, http: Http) -> None:
        self.name = name
        self.settings = settings
        self.rec = rec
        self.http = http
        self.who = f"worker:{name}"
        self.node_id: int | None = None
        self.secret: str | None = None
        self.token_id: str | None = None
        self.ttl = 0
        self.grace = 0
        self.status = NEW
        self.assignments = AssignmentSet()
        servers = list(settings.servers)
        self.report_to = servers[name % len(servers)]
        self.poll_to = servers[(name + 1) % len(servers)]
        self.acks = 0
        self.polls = 0
        self._tasks: list[asyncio.Task[None]] = []

    def _retry(self) -> Retry:
        return Retry(lambda: self.settings.servers, _BACKOFF_FIRST, _BACKOFF_CAP)

    # -- registration --------------------------------------------------------------------
    async def register(self, token: str, token_id: str) -> bool:
        """Register with ``token`` (every try under one request id); True when a node id
        came back. A refused token (exhausted, invalid) is final."""
        rid = uuid.uuid4().hex
        tag = _rid_tag(rid)
        profile = WorkerProfile(api_addr=f"127.0.0.1:{20000 + self.name % 40000}",
                                os="linux", arch="x86_64", labels={"sim": "nemesis"})
        body = to_dict(WorkerRegisterRequest(token=token, profile=profile))
        server = self.report_to
        retry = self._retry()
        deadline = time.monotonic() + self.settings.register_deadline
        while time.monotonic() < deadline:
            t0, w0 = self.rec.now()
            ans = await self.http.call(server, "POST", "/api/v1/workers/register", body,
                                       request_id=rid, timeout=self.settings.register_timeout)
            if ans.ok:
                resp = from_dict(WorkerRegisterResponse, ans.body)
                self.node_id, self.secret = resp.node_id, resp.internal_token
                self.ttl, self.grace = resp.heartbeat_ttl_secs, resp.heartbeat_grace_secs
                self.token_id = token_id
                self.rec.write("register", self.who, t0, w0, ok=True, node=self.node_id,
                               ttl=self.ttl, grace=self.grace, token_id=token_id, rid=tag,
                               server=server)
                return True
            self.rec.write("register", self.who, t0, w0, ok=False, err=ans.err,
                           msg=ans.message[:160], token_id=token_id, rid=tag, server=server)
            if ans.err in ("token_exhausted", "token_invalid", "bad_request", "conflict"):
                return False
            server = await retry.after(server, ans)
        return False

    # -- running -------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or resume) reporting and polling."""
        if self.node_id is None or self._tasks:
            return
        self.status = LIVE
        self._tasks = [asyncio.ensure_future(self._report_loop()),
                       asyncio.ensure_future(self._poll_loop())]

    async def stop(self, status: str = DEAD) -> None:
        """Stop both loops (a dead worker: no report, no poll)."""
        tasks, self._tasks = self._tasks, []
        if self.status == LIVE:
            self.status = status
        await cancel_and_wait(tasks)

    def _retire(self, why: str) -> None:
        """The directory removed this node (evicted): it stops for good."""
        if self.status != RETIRED:
            self.status = RETIRED
            self.rec.event("worker_retire", self.who, node=self.node_id, why=why)
        me = asyncio.current_task()
        for t in self._tasks:
            if t is not me:
                t.cancel()

    async def _report_loop(self) -> None:
        server = self.report_to
        retry = self._retry()
        while True:
            body = to_dict(WorkerStatusReport(
                node_id=self.node_id, ts_ns=time.time_ns(),
                resources=WorkerResourceUsage(cpu_used=0.0, memory_used_bytes=0,
                                              gpu_used=0)))
            t0, w0 = self.rec.now()
            sent = time.monotonic()
            try:
                ans = await self.http.call(server, "POST", "/api/v1/workers/status", body,
                                           bearer=self.secret, request_id=uuid.uuid4().hex,
                                           timeout=self.settings.report_timeout)
            except asyncio.CancelledError:
                # killed with a report in flight: the server may still renew the lease
                self.rec.write("report", self.who, t0, w0, ok=False, err="cancelled",
                               node=self.node_id, server=server)
                raise
            if ans.ok:
                ack = from_dict(WorkerStatusAck, ans.body)
                self.ttl = ack.next_ttl_secs
                self.acks += 1
                self.rec.write("report", self.who, t0, w0, ok=True, node=self.node_id,
                               ttl=self.ttl, leader=ack.leader, server=server)
                if ack.leader:
                    server = normalize_endpoint(ack.leader)
                self.report_to = server
                retry.reset()
                await asyncio.sleep(max(0.0, sent + report_interval(self.ttl)
                                        - time.monotonic()))
                continue
            self.rec.write("report", self.who, t0, w0, ok=False, err=ans.err,
                           node=self.node_id, server=server, leader=ans.leader,
                           msg=ans.message[:160])
            if ans.err in REFUSED_IDENTITY:
                self._retire(f"report: {ans.err}")
                return
            server = await retry.after(server, ans)

    async def _poll_loop(self) -> None:
        server = self.poll_to
        retry = self._retry()
        wait = self.settings.poll_wait
        while True:
            last = self.assignments.revision
            t0, w0 = self.rec.now()
            ans = await self.http.call(
                server, "POST", "/api/v1/workers/poll",
                {"node_id": self.node_id, "last_revision": last, "max_wait_secs": wait},
                bearer=self.secret, timeout=self.settings.report_timeout + wait + 1.0)
            if ans.ok:
                resp = from_dict(WorkerPollResponse, ans.body)
                self.assignments.apply(resp)
                self.polls += 1
                self.rec.write("poll", self.who, t0, w0, ok=True, node=self.node_id,
                               server=server, last=last, rev=resp.revision, full=resp.full,
                               events=[event_record(e) for e in resp.events],
                               held=self.assignments.revision)
                self.poll_to = server
                retry.reset()
                continue
            self.rec.write("poll", self.who, t0, w0, ok=False, err=ans.err, node=self.node_id,
                           server=server, last=last, msg=ans.message[:160])
            if ans.err in REFUSED_IDENTITY:
                self._retire(f"poll: {ans.err}")
                return
            server = await retry.elsewhere(server)


@dataclass
class Fleet:
    """Every worker of a run, by name. ``rng`` picks the workers the nemesis kills."""

    settings: FleetSettings
    rec: Recorder
    http: Http
    rng: random.Random
    workers: list[Worker] = field(default_factory=list)

    def new_worker(self) -> Worker:
        w = Worker(len(self.workers), self.settings, self.rec, self.http)
        self.workers.append(w)
        return w

    async def join(self, token: str, token_id: str, count: int, concurrency: int = 25
                   ) -> list[Worker]:
        """Register ``count`` new workers at once (at most ``concurrency`` in flight) and
        start the ones admitted."""
        sem = asyncio.Semaphore(concurrency)
        fresh = [self.new_worker() for _ in range(count)]

        async def one(w: Worker) -> bool:
            async with sem:
                return await w.register(token, token_id)
        admitted = await asyncio.gather(*(one(w) for w in fresh))
        for w, ok in zip(fresh, admitted):
            if ok:
                w.start()
        return [w for w, ok in zip(fresh, admitted) if ok]

    def in_state(self, status: str) -> list[Worker]:
        return [w for w in self.workers if w.status == status]

    async def kill(self, count: int, max_dead_fraction: float = 0.1) -> list[Worker]:
        """Kill ``count`` live workers picked by ``rng``, keeping the dead at most
        ``max_dead_fraction`` of the fleet: the leader never marks more than half of a
        fleet of 50 or more down (``ExpiryPolicy``), and the run must stay far from that."""
        live = self.in_state(LIVE)
        dead = len(self.in_state(DEAD))
        room = int(max_dead_fraction * (len(live) + dead)) - dead
        victims = self.rng.sample(live, max(0, min(count, len(live), room)))
        for w in victims:
            await w.stop(DEAD)
            self.rec.event("worker_kill", "nemesis", node=w.node_id, name=w.name)
        return victims

    async def revive(self, count: int) -> list[Worker]:
        """Bring ``count`` dead workers back (same identity, same assignment set)."""
        dead = self.in_state(DEAD)
        back = self.rng.sample(dead, min(count, len(dead)))
        for w in back:
            self.rec.event("worker_revive", "nemesis", node=w.node_id, name=w.name)
            w.start()
        return back

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop(w.status) for w in self.workers))
