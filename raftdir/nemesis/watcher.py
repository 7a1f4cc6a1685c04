"""The watcher: what every peer says about itself, and the leader's view of every node.

Owns: one sampling loop per peer (``GET /health`` and ``GET /api/v1/cluster/peers`` every
``interval`` seconds, 0.5 s timeout each) and one for the node states (``GET
/api/v1/cluster/workers`` from the peer that leads with the highest term). It records
changes only: ``peer_state`` when a peer's reachability, term, Raft role, readiness as
leader or named leader changes; ``node_state`` when a node's state in the leader's listing
changes (with its ``ttl_left_secs`` there). The nemesis asks it who leads
(``leader()``); the checker uses its records as a cross-check of the server logs.

A SIGSTOPped peer does not answer: its loop records it unreachable and carries on; the
other loops never wait for it. Runs on the controller's event loop. Imports the nemesis's
own modules only.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from .history import Recorder
from .http import Http

__all__ = ["Watcher", "PeerView"]


@dataclass
class PeerView:
    """The latest answer of one peer."""

    up: bool = False
    term: int = 0
    role: str = "?"
    ready_leader: bool = False
    leader_api: str | None = None
    commit: int = 0
    applied: int = 0
    seen_at: float = 0.0      # controller monotonic time of the answer

    def key(self) -> tuple[Any, ...]:
        return (self.up, self.term, self.role, self.ready_leader, self.leader_api)


@dataclass
class Watcher:
    rec: Recorder
    http: Http
    peers: dict[int, str]             # peer id -> API endpoint
    interval: float = 0.2
    views: dict[int, PeerView] = field(default_factory=dict)
    node_states: dict[int, str] = field(default_factory=dict)
    max_term: int = 0
    samples: int = 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._peer_loop(n)) for n in sorted(self.peers)]
        self._tasks.append(asyncio.ensure_future(self._nodes_loop()))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def leader(self, fresh_within: float = 1.0) -> int | None:
        """The peer that says it leads (and is ready) with the highest term, among the
        answers of the last ``fresh_within`` seconds."""
        now = time.monotonic()
        best = [(v.term, n) for n, v in self.views.items()
                if v.up and v.ready_leader and now - v.seen_at <= fresh_within]
        return max(best)[1] if best else None

    # -- sampling --------------------------------------------------------------------
    async def _peer_loop(self, n: int) -> None:
        url = self.peers[n]
        while True:
            started = time.monotonic()
            t0, w0 = self.rec.now()
            health, status = await asyncio.gather(
                self.http.call(url, "GET", "/health", timeout=0.5),
                self.http.call(url, "GET", "/api/v1/cluster/peers", timeout=0.5))
            view = PeerView(seen_at=time.monotonic())
            if status.ok and isinstance(status.body, dict):
                s = status.body
                view.up = True
                view.term = int(s.get("term") or 0)
                view.role = str(s.get("state"))
                view.ready_leader = bool(s.get("is_leader"))
                view.leader_api = s.get("leader_api")
                view.commit = int(s.get("commit_index") or 0)
                view.applied = int(s.get("last_applied") or 0)
            self.samples += 1
            old = self.views.get(n)
            self.views[n] = view
            self.max_term = max(self.max_term, view.term)
            if old is None or old.key() != view.key():
                self.rec.write(
                    "peer_state", "watcher", t0, w0, peer=n, ok=view.up,
                    err=None if view.up else status.err, term=view.term, role=view.role,
                    ready_leader=view.ready_leader, leader_api=view.leader_api,
                    commit=view.commit, applied=view.applied,
                    health_leader=(health.body or {}).get("leader")
                    if health.ok and isinstance(health.body, dict) else None)
            await asyncio.sleep(max(0.0, started + self.interval - time.monotonic()))

    async def _nodes_loop(self) -> None:
        while True:
            started = time.monotonic()
            leader = self.leader()
            if leader is not None:
                t0, w0 = self.rec.now()
                ans = await self.http.call(self.peers[leader], "GET",
                                           "/api/v1/cluster/workers", timeout=1.0)
                if ans.ok and isinstance(ans.body, list):
                    term = self.views[leader].term
                    t1, w1 = self.rec.now()
                    listed = {int(n["node_id"]) for n in ans.body}
                    for nid in sorted(set(self.node_states) - listed):
                        if self.node_states[nid] != "gone":
                            self.rec.write("node_state", "watcher", t0, w0, t1=t1, w1=w1,
                                           ok=True, node=nid, state="gone",
                                           prev=self.node_states[nid], ttl_left=None,
                                           peer=leader, term=term)
                            self.node_states[nid] = "gone"
                    for node in ans.body:
                        if node.get("kind") != "worker":
                            continue
                        nid, state = int(node["node_id"]), str(node.get("state"))
                        prev = self.node_states.get(nid)
                        if prev != state:
                            self.node_states[nid] = state
                            self.rec.write("node_state", "watcher", t0, w0, t1=t1, w1=w1,
                                           ok=True, node=nid, state=state, prev=prev,
                                           ttl_left=node.get("ttl_left_secs"), peer=leader,
                                           term=term)
            await asyncio.sleep(max(0.0, started + self.interval - time.monotonic()))
