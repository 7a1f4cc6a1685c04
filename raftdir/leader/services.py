"""Leader services: what only the leader does, for one term (directory.md §5, §7).

Owns: the lifecycle of one leadership term (barrier, bootstrap, arming deadlines from the
checkpoints), the periodic work (expiry, renewal checkpoints, re-placement, compaction) and
the leader-side writes that need placement (scale, drain, evict). Runs on the server's
event loop; started when this peer gains leadership, stopped when it loses it. Changes
hard state only by proposing commands through ``server.propose``.

Must not import the API, agent or CLI. Talks to the directory through ``DirectoryServer``
(``raftdir.server``), never to PySyncObj.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING, Any, Callable

from ..core.commands import (
    Barrier, Bootstrap, Compact, Deregister, Drain, MarkDown, RegisterNode,
    RenewCheckpoint, SetPlacement, Undrain,
)
from ..errors import BadRequest, Conflict, NoLeader, NotLeader, RaftdirError, UnknownNode
from ..model import InternalScaleRequest, ScaleAssignment
from .leases import LeaseTable
from .placement import Candidate, constraints_from_spec, eligible, place
from ..tasks import cancel_and_wait

if TYPE_CHECKING:  # pragma: no cover
    from ..server import DirectoryServer

__all__ = ["LeaderServices"]

log = logging.getLogger(__name__)


class LeaderServices:
    """Everything this peer does as leader in ``term``. ``ready`` once the barrier and
    the arming are done; until then leader-only requests get ``no_leader``."""

    def __init__(self, server: "DirectoryServer", term: int) -> None:
        self.server = server
        self.term = term
        self.leases = LeaseTable(server.settings.expiry, term=term)
        self.ready = asyncio.Event()
        self.expired_total = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self._placement_lock = asyncio.Lock()
        self._unplaced: dict[str, str] = {}   # service -> why reconcile could not move it

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._tasks.append(asyncio.ensure_future(self._run()))

    async def stop(self) -> None:
        self._stopped = True
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)

    async def _run(self) -> None:
        delay = 0.05
        while True:
            try:
                await self._take_office()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried while this peer still leads
                if self._stopped or not self.server.raft.is_leader():
                    log.warning("term %d: taking office failed and leadership is gone: %s",
                                self.term, exc)
                    return
                log.warning("term %d: taking office failed (%s); retrying in %.2f s",
                            self.term, exc, delay)
                await self.server.clock.sleep(delay)
                delay = min(2 * delay, 2.0)
        self.ready.set()
        log.info("term %d: leader services ready on node %d", self.term,
                 self.server.settings.node_id)
        settings = self.server.settings
        self._tasks.append(asyncio.ensure_future(self._every(settings.expiry_tick,
                                                             self.expire_once)))
        self._tasks.append(asyncio.ensure_future(self._every(settings.checkpoint_interval,
                                                             self.checkpoint_once)))
        self._tasks.append(asyncio.ensure_future(self._every(settings.reconcile_interval,
                                                             self.maintain_once)))

    async def _every(self, period: float, work: Any) -> None:
        clock = self.server.clock
        while not self._stopped:
            await clock.sleep(period)
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except (NotLeader, NoLeader):
                return  # leadership is going; the listener will stop us
            except RaftdirError as exc:
                log.warning("term %d: %s failed: %s", self.term, work.__name__, exc)
            except Exception:  # noqa: BLE001 - a bug must not end the leader's timers
                log.exception("term %d: %s raised", self.term, work.__name__)

    async def _take_office(self) -> None:
        """Barrier in this term, bootstrap, register the peers, re-place what needs it,
        then arm every deadline (the last step: "ready" starts every worker's lease)."""
        server = self.server
        settings = server.settings
        barrier = await server.propose(Barrier(term=self.term))
        if server.read(lambda d: d.cluster_id) is None:
            try:
                await server.propose(Bootstrap(cluster_id=settings.cluster_id
                                               or f"rd-{secrets.token_hex(8)}"))
            except Conflict:
                pass  # another leader bootstrapped it first
        for peer in settings.server_nodes:
            if server.read(lambda d, p=peer: d.node(p.node_id)) is None:
                await server.propose(RegisterNode(
                    desired_node_id=peer.node_id, kind="server", profile=peer.profile,
                    ttl_secs=0, grace_secs=0, secret_hash="0"))
        await self.reconcile()
        self._arm(server.kept_leases(barrier.value.get("previous_term")))

    def _arm(self, kept: LeaseTable | None) -> None:
        """Every ready worker's deadline as this term starts (leases.py: the failover
        rule). ``kept``: this peer's own table from the term just before this one, with
        no other leader in between; it knows every acknowledgement since, so its
        deadlines stand. Otherwise every worker gets the longest TTL it may hold plus its
        grace from now."""
        server = self.server
        # read in chunks: the apply lock is never held for the whole fleet (the tick
        # thread applies under it, and sends no heartbeat while it waits)
        ids = server.read(lambda d: d.node_ids(kind="worker"))
        workers = [{"node_id": r[0], "ttl_secs": r[2], "grace_secs": r[3],
                    "renewed_ms": r[4]}
                   for r in server.read_each(ids, lambda d, n: d.lease_row(n))
                   if r is not None and r[1] != "down"]
        if kept is not None:
            alive = {n["node_id"] for n in workers}
            kept.entries = {n: e for n, e in kept.entries.items() if n in alive}
            self.leases = kept
            log.info("term %d: kept the lease table of term %d (no other leader between)",
                     self.term, kept.term)
        self.leases.term = self.term
        ttl = server.settings.ttl
        # A worker holds the TTL of its last acknowledgement, computed from the live count
        # then (x2 with jitter); the count of every worker record bounds that count.
        total = server.read(lambda d: d.node_count("worker"))
        longest = ttl.compute_ttl(total) * (2 if server.settings.ttl_jitter else 1)
        now = server.lease_now()
        for node in workers:
            if node["node_id"] in self.leases.entries:
                continue
            self.leases.arm_on_takeover(
                node["node_id"], ttl_secs=max(node["ttl_secs"], longest),
                grace_secs=node["grace_secs"], checkpointed_ms=node["renewed_ms"], now=now)

    # -- periodic work ---------------------------------------------------------------
    async def expire_once(self) -> list[int]:
        """Mark down the nodes whose deadline passed (rate-limited), then move their
        share. Re-checks leadership before proposing (the propose itself is term-fenced)."""
        server = self.server
        total, down = server.read(lambda d: (d.node_count("worker"),
                                             d.node_count("worker", "down")))
        due = self.leases.expired(server.lease_now(), workers_total=total,
                                  workers_down=down)
        if not due or not server.raft.is_leader():
            return []
        result = await server.propose(MarkDown(term=self.term, node_ids=tuple(due)))
        now = server.lease_now()
        for node_id in due:   # one that reported meanwhile keeps its entry (and is back)
            left = self.leases.time_left(node_id, now)
            if left is not None and left < 0:
                self.leases.forget(node_id)
        went = result.value.get("went_down", [])
        self.expired_total += len(went)
        if went:
            log.info("term %d: leases expired, marked down: %s", self.term, went)
            await self.reconcile()
        return went

    async def checkpoint_once(self) -> int:
        """Commit the renewals since the last checkpoint; an empty checkpoint still
        commits, so the state's clock tells a successor how recent the last one was."""
        entries = self.leases.pending_checkpoint()
        await self.server.propose(RenewCheckpoint(term=self.term, entries=tuple(entries)))
        self.leases.checkpointed(entries)
        return len(entries)

    async def maintain_once(self) -> None:
        await self.reconcile()
        settings = self.server.settings
        rev, compacted = self.server.read(lambda d: (d.revision, d.compacted_revision))
        if rev - compacted > 2 * settings.keep_revisions:
            await self.server.propose(Compact(upto_revision=rev - settings.keep_revisions))

    # -- placement -------------------------------------------------------------------
    def _candidates(self, exclude: frozenset[int] = frozenset()) -> list[Candidate]:
        kinds = self.server.settings.placement_kinds
        server = self.server   # in chunks: the apply lock is never held for the whole fleet
        ids = server.read(lambda d: d.node_ids(state="ready"))
        return [Candidate(r[0], r[2], dict(r[3]))
                for r in server.read_each(ids, lambda d, n: d.placement_row(n))
                if r is not None and r[1] in kinds and r[0] not in exclude]

    async def place_service(self, service: str, groups: tuple[ScaleAssignment, ...],
                            spec: dict | None, *, request_id: str | None = None,
                            exclude: frozenset[int] = frozenset()
                            ) -> dict[int, dict[str, list[int]]]:
        """Place ``groups`` of ``service`` and commit it; returns the placement the
        directory holds once it is committed. That is not always the one computed here: a
        retried request id is answered with its first result and leaves the state as the
        first try made it (the placement is the leader's choice, left out of the
        fingerprint), so a fleet that changed since makes this computation differ."""
        async with self._placement_lock:
            stored = self.server.read(lambda d: d.service(service))
            current = stored["placement"] if stored else {}
            effective_spec = spec if spec is not None else (stored or {}).get("spec")
            nodes = eligible(self._candidates(exclude), constraints_from_spec(effective_spec))
            placement = place(groups, nodes, current)
            await self.server.propose(SetPlacement(
                request_id=request_id, service=service,
                replicas=sum(len(g.indices) for g in groups),
                groups={g.role: tuple(g.indices) for g in groups}, spec=spec,
                placement={n: {r: tuple(i) for r, i in roles.items()}
                           for n, roles in placement.items()}))
            return self.server.read(lambda d: d.placement(service)) or {}

    async def scale(self, req: InternalScaleRequest, request_id: str | None
                    ) -> dict[int, InternalScaleRequest]:
        constraints_from_spec(req.spec)  # a malformed placement key is the caller's error
        placement = await self.place_service(req.service, req.groups(), req.spec,
                                             request_id=request_id)
        spec = req.spec if req.spec is not None else self.server.read(
            lambda d: (d.service(req.service) or {}).get("spec"))
        return {node: InternalScaleRequest.phase2(
                    req.service, [(r, i) for r, i in sorted(roles.items())], spec)
                for node, roles in sorted(placement.items())}

    async def assign(self, node_id: int, req: InternalScaleRequest) -> None:
        """Give one node exactly ``req``'s share of the service (a host's direct
        ``dispatch_scale``); those (role, index) pairs leave any other node, and the
        service's groups become whatever is placed afterwards."""
        async with self._placement_lock:
            stored = self.server.read(lambda d: d.service(req.service))
            mine = {(g.role, i) for g in req.groups() for i in g.indices}
            placement: dict[int, dict[str, list[int]]] = {}
            for node, roles in ((stored or {}).get("placement") or {}).items():
                if node == node_id:
                    continue
                for role, indices in roles.items():
                    keep = [i for i in indices if (role, i) not in mine]
                    if keep:
                        placement.setdefault(node, {})[role] = keep
            if mine:
                placement[node_id] = {g.role: sorted(g.indices) for g in req.groups()
                                      if g.indices}
            groups: dict[str, list[int]] = {}
            for roles in placement.values():
                for role, indices in roles.items():
                    groups.setdefault(role, []).extend(indices)
            await self.server.propose(SetPlacement(
                service=req.service, replicas=sum(len(v) for v in groups.values()),
                groups={r: tuple(sorted(v)) for r, v in groups.items()}, spec=req.spec,
                placement={n: {r: tuple(i) for r, i in roles.items()}
                           for n, roles in placement.items()}))

    async def reconcile(self, exclude: frozenset[int] = frozenset()) -> list[str]:
        """Re-place every service with a share on a node that is no longer ready (down,
        draining, gone), in ``exclude``, or no longer meeting the service's placement
        constraints (its profile changed). Returns the services moved."""
        def misplaced(d: Any) -> list[tuple[str, dict]]:
            return [(name, d.service(name))
                    for name in d.misplaced_services(exclude, _placement_rule)]
        moved = []
        for name, svc in self.server.read(misplaced):
            groups = tuple(ScaleAssignment(role=r, indices=tuple(i))
                           for r, i in sorted(svc["groups"].items()))
            try:
                await self.place_service(name, groups, None, exclude=exclude)
                moved.append(name)
            except RaftdirError as exc:  # no ready node left: it stays where it is
                # said once per problem, not at every pass of the maintenance loop
                level = logging.DEBUG if self._unplaced.get(name) == str(exc) \
                    else logging.WARNING
                self._unplaced[name] = str(exc)
                log.log(level, "term %d: cannot re-place %s: %s", self.term, name, exc)
            else:
                self._unplaced.pop(name, None)
        return moved

    def _worker(self, node_id: int) -> dict[str, Any]:
        """The record of a node that drain and evict may act on: a worker. A server leaves
        the cluster through the membership routes (``raftdir peers remove``)."""
        node = self.server.read(lambda d: d.node(node_id))
        if node is None:
            raise UnknownNode(f"node {node_id} is not registered", field="id")
        if node["kind"] == "server":
            raise BadRequest(f"id: node {node_id} is a server; remove it with "
                             "`raftdir peers remove`", field="id")
        return node

    async def drain(self, node_id: int, request_id: str | None) -> dict[str, Any]:
        self._worker(node_id)
        result = await self.server.propose(Drain(request_id=request_id, node_id=node_id))
        moved = await self.reconcile()
        return dict(result.value, moved=moved)

    async def undrain(self, node_id: int, request_id: str | None) -> dict[str, Any]:
        """Undo a drain (Nomad's node eligibility): new placement may use the node again;
        nothing already placed elsewhere moves back."""
        self._worker(node_id)
        result = await self.server.propose(Undrain(request_id=request_id, node_id=node_id))
        return dict(result.value)

    async def evict(self, node_id: int, request_id: str | None) -> dict[str, Any]:
        self._worker(node_id)
        moved = await self.reconcile(exclude=frozenset({node_id}))
        if self.server.read(lambda d: d.holdings(node_id)):
            raise Conflict(f"node {node_id} still holds replicas and no other node can take "
                           "them", field="id")
        result = await self.server.propose(Deregister(request_id=request_id,
                                                      node_id=node_id))
        self.leases.forget(node_id)
        return dict(result.value, moved=moved)


def _placement_rule(spec: Any) -> Callable[[str, dict], bool] | None:
    """A service's placement rule as ``admits(os, labels)``, or None when its spec has no
    constraint (``Directory.misplaced_services``). A spec placed by a direct order and
    never checked counts as unconstrained."""
    try:
        rule = constraints_from_spec(spec)
    except BadRequest:
        return None
    if not (rule.os or rule.labels):
        return None
    return lambda os_name, labels: rule.admits(Candidate(0, os_name, labels))
