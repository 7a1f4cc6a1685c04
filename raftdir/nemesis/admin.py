"""The nemesis's admin loop: registrations, scales, drains, evictions and raced join tokens.

Owns: ``Admin.call`` (one logical admin write: every try under one ``X-Request-Id``,
following ``421`` hints, other servers and a short backoff until an answer or a deadline)
and ``Admin.run`` (a seeded mix of operations until a deadline). Every logical call is one
history record (``scale``, ``drain``, ``evict``, ``token``) with its ``outcome``:

- ``ok``: acknowledged;
- ``failed``: refused by the server (a code of ``http.DEFINITE_REFUSALS``, and no try
  before it may have been applied);
- ``unknown``: no answer, or a refusal after a try whose outcome is not known; the write
  may or may not be in force.

The mix, one operation every 0.7-2 s: scale one of four services to a random replica
count; new workers join; a join token with ``max_uses`` 1-3 raced by 1-3 more registrations
than it allows; drain a live worker; evict a worker (a dead one once it is marked down, or
a drained one; with neither, a live one three times in ten). Runs on
the controller's event loop. Imports the nemesis's own modules and the wire types.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from .history import Recorder
from .http import DEFINITE_REFUSALS, Http, Retry
from .workers import DEAD, LIVE, Fleet

__all__ = ["Admin", "SERVICES"]

SERVICES = ("web", "api", "db", "cache")
_RETRYABLE = frozenset({"not_leader", "no_leader"})


@dataclass
class Admin:
    rec: Recorder
    http: Http
    servers: list[str]
    token: str                          # the admin token
    fleet: Fleet
    rng: random.Random
    max_workers: int = 0                # new workers stop joining past this many
    main_token: str | None = None       # the join token new workers use
    main_token_id: str | None = None
    node_state: Callable[[int], str | None] = lambda node_id: None   # the watcher's view
    scaled: set[str] = field(default_factory=set)
    drained: set[int] = field(default_factory=set)
    evicted: set[int] = field(default_factory=set)
    preferred: str = ""

    def __post_init__(self) -> None:
        self.preferred = self.preferred or self.servers[0]

    async def call(self, op: str, method: str, path: str, body: Any = None, *,
                   deadline: float = 20.0, timeout: float = 5.0, **fields: Any
                   ) -> tuple[dict[str, Any], Any]:
        """One logical admin write: its history record (``outcome``, ``answer``) and the
        answer's body (on success)."""
        rid = uuid.uuid4().hex
        t0, w0 = self.rec.now()
        server = self.preferred
        retry = Retry(lambda: self.servers)
        tried: list[list[Any]] = []
        maybe_applied = False
        end = time.monotonic() + deadline
        while True:
            ans = await self.http.call(server, method, path, body, bearer=self.token,
                                       request_id=rid, timeout=timeout)
            tried.append([server, "ok" if ans.ok else ans.err])
            if ans.ok:
                self.preferred = server
                return self.rec.write(op, "admin", t0, w0, ok=True, outcome="ok",
                                      server=server, tries=tried, answer=_brief(ans.body),
                                      **fields), ans.body
            if ans.err in DEFINITE_REFUSALS and ans.err not in _RETRYABLE:
                return self.rec.write(op, "admin", t0, w0, ok=False, err=ans.err,
                                      outcome="unknown" if maybe_applied else "failed",
                                      server=server, tries=tried, msg=ans.message[:200],
                                      **fields), None
            if ans.err not in _RETRYABLE and ans.err != "unreachable":
                maybe_applied = True        # timeout, connection, 504, 500: who knows
            if time.monotonic() > end:
                return self.rec.write(op, "admin", t0, w0, ok=False, err=ans.err,
                                      outcome="unknown" if maybe_applied else "failed",
                                      server=server, tries=tried, msg=ans.message[:200],
                                      **fields), None
            server = await retry.after(server, ans)

    # -- operations ------------------------------------------------------------------
    async def create_token(self, max_uses: int, valid_for_secs: int = 86400
                           ) -> tuple[str, str] | None:
        rec, body = await self.call("token", "POST", "/api/v1/cluster/tokens",
                                    {"valid_for_secs": valid_for_secs, "max_uses": max_uses},
                                    max_uses=max_uses)
        if not rec["ok"]:
            return None
        return body["token"], body["token_id"]

    async def scale(self, service: str, replicas: int) -> dict[str, Any]:
        self.scaled.add(service)
        rec, _ = await self.call("scale", "POST", "/api/v1/internal/scale",
                                 {"service": service, "replicas": replicas},
                                 service=service, replicas=replicas)
        return rec

    async def drain(self, node_id: int) -> dict[str, Any]:
        rec, _ = await self.call("drain", "POST", f"/api/v1/workers/{node_id}/drain",
                                 node=node_id)
        if rec["outcome"] != "failed":
            self.drained.add(node_id)
        return rec

    async def evict(self, node_id: int) -> dict[str, Any]:
        rec, _ = await self.call("evict", "DELETE", f"/api/v1/workers/{node_id}",
                                 node=node_id)
        if rec["outcome"] == "ok":
            self.drained.discard(node_id)
            self.evicted.add(node_id)
        return rec

    async def join(self, count: int) -> None:
        if self.main_token is None or self.main_token_id is None:
            return
        room = self.max_workers - len(self.fleet.workers)
        if room > 0:
            await self.fleet.join(self.main_token, self.main_token_id, min(count, room))

    async def token_race(self) -> None:
        """A token with small ``max_uses``, raced by more registrations than it allows."""
        max_uses = self.rng.randint(1, 3)
        made = await self.create_token(max_uses, valid_for_secs=600)
        if made is None:
            return
        token, token_id = made
        await self.fleet.join(token, token_id, max_uses + self.rng.randint(1, 3))

    async def run(self, until: float) -> None:
        """The mix, until ``until`` (the recorder's run time)."""
        ops = ("scale", "join", "token_race", "drain", "evict", "idle")
        weights = (35, 15, 10, 10, 10, 20)
        while True:
            now, _ = self.rec.now()
            if now >= until:
                return
            op = self.rng.choices(ops, weights)[0]
            if op == "scale":
                live = len(self.fleet.in_state(LIVE))
                await self.scale(self.rng.choice(SERVICES),
                                 self.rng.randint(1, max(2, min(120, 2 * live))))
            elif op == "join":
                await self.join(self.rng.randint(1, 3))
            elif op == "token_race":
                await self.token_race()
            elif op == "drain":
                live = [w for w in self.fleet.in_state(LIVE) if w.node_id not in self.drained]
                if live and len(self.drained) < max(1, len(self.fleet.workers) // 20):
                    await self.drain(self.rng.choice(live).node_id)
            elif op == "evict":
                # a dead worker only once it is down (its detection is measured first), a
                # drained one, or now and then a live one
                pool = [w for w in self.fleet.workers if w.node_id is not None
                        and w.node_id not in self.evicted
                        and ((w.status == DEAD and self.node_state(w.node_id) == "down")
                             or (w.status == LIVE and w.node_id in self.drained))]
                if not pool and self.rng.random() < 0.3:
                    pool = self.fleet.in_state(LIVE)
                if pool:
                    await self.evict(self.rng.choice(pool).node_id)
            await asyncio.sleep(self.rng.uniform(0.7, 2.0))


def _brief(body: Any) -> Any:
    """What the history keeps of an admin answer: a scale's split as {node: replicas};
    a join token without the token itself (a credential)."""
    if isinstance(body, dict) and "token" in body:
        return {k: v for k, v in body.items() if k != "token"}
    if isinstance(body, dict) and "nodes" in body and "service" in body:
        return {"service": body["service"],
                "split": {str(item["node_id"]): int(item["request"].get("replicas") or 0)
                          for item in body["nodes"]}}
    return body
