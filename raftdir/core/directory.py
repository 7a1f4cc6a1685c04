"""The directory state machine: ``Directory.apply(command) -> Result`` and the read queries.

Owns: the one mutator of the hard state (``apply`` / ``apply_bytes``), the rules of every
command (directory.md §2-§7, hard-state parts), the read queries the API and the leader
services use, and snapshots (``to_snapshot`` / ``from_snapshot`` / ``restore``).

Threads: ``apply``, ``apply_bytes`` and ``restore`` are called by one thread at a time (the
Raft apply thread, or the local node's caller); queries may run on other threads only if
the caller serialises them with apply (the adapter's job). Nothing here blocks.

Pure: no clock, no randomness, no I/O, no logging, no threads. Iteration order never leaks
from sets or hash order: every output that lists things sorts them.

Must not import anything from raftdir but ``raftdir.errors``, ``raftdir.model`` and
``raftdir.core``: no replication, API, agent, CLI, leader or daemon code.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import sys
from typing import TYPE_CHECKING, Any, Callable

from raftdir.core.commands import (
    Barrier, Bootstrap, Command, Compact, CreateAccessToken, Deregister, Drain, MarkDown,
    MarkReady, RegisterNode, RenewCheckpoint, RevokeAccessToken, SetPlacement, Undrain,
    UpdateProfile, canonical_command, command_to_plain, decode_command, pack_plain,
)
from raftdir.core.result import Result
from raftdir.core.state import (
    ACCESS_SCOPES, DELETE, DEFAULT_MAX_REQUEST_IDS, DOWN, DRAIN, DRAINING, KINDS,
    MAX_ACCESS_TOKENS, READY, SERVER, SET, TOKEN_ID_RE, TOKEN_NAME_RE, UNDRAIN, WORKER,
    WORKER_ID_BASE, AccessTokenRecord,
    HardState, NodeRecord, ServiceRecord, pack_spec, sorted_maps,
    state_from_snapshot, state_to_snapshot, unpack_spec,
)
from raftdir.errors import BadRequest, UnknownNode

if TYPE_CHECKING:  # pragma: no cover
    from raftdir.model import WorkerLease, WorkerPollResponse

__all__ = ["Directory"]

_HEX = re.compile(r"[0-9a-f]{1,256}")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_MAX_CREATOR = 200


#: Fields the leader decides afresh on every try of a request (the TTL it hands out, the
#: placement it computes): a retry may carry other values and is still the same request.
LEADER_CHOICES: dict[type, tuple[str, ...]] = {
    RegisterNode: ("ttl_secs", "grace_secs"),
    SetPlacement: ("placement",),
    CreateAccessToken: ("expires_ms",),   # the leader's clock plus the validity asked for
}


def _fingerprint(cmd: Command) -> str:
    """What a client asked for, without when it was proposed or what the leader chose:
    a retry of the same request matches (whatever the key order of its maps); another
    command reusing the id does not. Deterministic on every peer (no ``hash()``)."""
    plain = command_to_plain(cmd)
    for name in ("ts_ms", "request_id") + LEADER_CHOICES.get(type(cmd), ()):
        del plain[name]
    return hashlib.sha256(pack_plain(sorted_maps(plain))).hexdigest()[:32]


def _profile_fields(profile: dict) -> dict[str, Any]:
    """A checked ``WorkerProfile`` wire dict as the ``NodeRecord`` fields that hold it."""
    return {"api_addr": profile["api_addr"], "os": sys.intern(profile["os"]),
            "arch": sys.intern(profile["arch"]),
            "labels": NodeRecord.labels_from(profile.get("labels") or {}),
            "cpu_total": profile.get("cpu_total", 0),
            "memory_total_bytes": profile.get("memory_total_bytes", 0)}


class _Refuse(Exception):
    """Raised by a handler's validation step (before any mutation); becomes a refusal."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Directory:
    """The pure directory state machine. ``apply`` is its one mutator; every other public
    method reads. All state is in ``self.state`` (a ``HardState``).

    ``max_request_ids`` bounds the table of applied request ids; it becomes part of the
    hard state (a snapshot carries it), so give every peer the same value."""

    __slots__ = ("state",)

    def __init__(self, *, max_request_ids: int = DEFAULT_MAX_REQUEST_IDS) -> None:
        self.state = HardState(max_request_ids)

    # ------------------------------------------------------------------ apply

    def apply_bytes(self, data: bytes) -> Result:
        """Decode and apply one command. A decode failure is a ``bad_request`` refusal;
        this never raises for bad input."""
        try:
            cmd = decode_command(data)
        except BadRequest as exc:
            return Result.refused(exc.code, exc.message, self.state.revision)
        return self._apply(cmd)

    def apply(self, cmd: Command) -> Result:
        """Apply one command: an applied ``Result`` with a plain-data value, or a refusal
        (``Result.refused(code, message)``) that left the state exactly as it was. A
        command whose ``request_id`` was already applied gets its first result again; a
        different command reusing that id is refused as ``conflict``."""
        try:
            cmd = canonical_command(cmd)
        except BadRequest as exc:
            return Result.refused(exc.code, exc.message, self.state.revision)
        return self._apply(cmd)

    def _apply(self, cmd: Command) -> Result:
        hs = self.state
        rid = cmd.request_id
        fingerprint = None
        if rid is not None:
            fingerprint = _fingerprint(cmd)
            seen = hs.request_ids.get(rid)
            if seen is not None:
                if seen[0] is not None and seen[0] != fingerprint:  # None: format-1 entry
                    # not the id itself: a request id may derive a credential
                    return Result.refused("conflict", "request_id: this request id was "
                                          "already used for another command", hs.revision)
                return seen[1]
        term = getattr(cmd, "term", None)
        if cmd.LEADER and term < hs.max_term:
            return Result.refused("stale", f"term: {term} is older than term {hs.max_term}",
                                  hs.revision)
        handler = _HANDLERS[type(cmd)]
        now = max(hs.now_ms, cmd.ts_ms)
        try:
            value = handler(self, cmd, now)
        except _Refuse as refusal:
            return Result.refused(refusal.code, refusal.message, hs.revision)
        hs.now_ms = now
        if term is not None and term > hs.max_term:
            hs.max_term = term
        result = Result.applied(value, hs.revision)
        if rid is not None:
            table = hs.request_ids
            table[rid] = (fingerprint, result)
            while len(table) > hs.max_request_ids:
                table.popitem(last=False)
        return result

    # ------------------------------------------------------------------ helpers

    def _emit(self, rec: NodeRecord, kind: str, service: str | None = None,
              share: tuple | None = None, spec: bytes | None = None) -> int:
        hs = self.state
        hs.revision += 1
        ev = (hs.revision, rec.node_id, kind, service, share, spec)
        hs.log.append(ev)
        if rec.events is None:
            rec.events = []
        rec.events.append(ev)
        return hs.revision

    def _set_state(self, rec: NodeRecord, state: str) -> None:
        hs = self.state
        hs.count(rec.kind, rec.state, -1)
        rec.state = state
        hs.count(rec.kind, state, 1)

    def _node_or_refuse(self, node_id: int) -> NodeRecord:
        rec = self.state.nodes.get(node_id)
        if rec is None:
            raise _Refuse("unknown_node", f"node_id: node {node_id} is not registered")
        return rec

    # ------------------------------------------------------------------ handlers

    def _bootstrap(self, cmd: Bootstrap, now: int) -> dict:
        hs = self.state
        if not cmd.cluster_id:
            raise _Refuse("bad_request", "cluster_id: must not be empty")
        if hs.cluster_id is not None and hs.cluster_id != cmd.cluster_id:
            raise _Refuse("conflict", f"cluster_id: the cluster is already bootstrapped as "
                                      f"{hs.cluster_id!r}")
        created = hs.cluster_id is None
        hs.cluster_id = cmd.cluster_id
        return {"cluster_id": cmd.cluster_id, "created": created}

    def _register_value(self, rec: NodeRecord, existing: bool) -> dict:
        return {"node_id": rec.node_id, "kind": rec.kind, "state": rec.state,
                "ttl_secs": rec.ttl_secs, "grace_secs": rec.grace_secs,
                "cluster_id": self.state.cluster_id, "existing": existing}

    def _register(self, cmd: RegisterNode, now: int) -> dict:
        hs = self.state
        if cmd.kind not in KINDS:
            raise _Refuse("bad_request", f"kind: unknown kind {cmd.kind!r}; expected server, "
                                         "worker")
        if not _HEX.fullmatch(cmd.secret_hash):
            raise _Refuse("bad_request", "secret_hash: expected 1-256 lowercase hex digits")
        if cmd.token_max_uses is not None and cmd.token_id is None:
            raise _Refuse("bad_request", "token_max_uses: given without token_id")
        if cmd.token_id is not None and not cmd.token_id:
            raise _Refuse("bad_request", "token_id: must not be empty")
        desired = cmd.desired_node_id
        if cmd.kind == SERVER and desired is None:
            raise _Refuse("bad_request", "desired_node_id: required for a server")
        existing = hs.nodes.get(desired) if desired is not None else None
        if existing is not None and hmac.compare_digest(existing.secret_hash,
                                                        cmd.secret_hash):
            if existing.kind != cmd.kind:
                raise _Refuse("conflict", f"kind: node {desired} is registered as a "
                                          f"{existing.kind}")
            return self._register_value(existing, True)
        if cmd.token_id is not None and cmd.token_max_uses is not None:
            used = hs.token_uses.get(cmd.token_id, 0)
            if used >= cmd.token_max_uses:
                raise _Refuse("token_exhausted", f"token_id: token {cmd.token_id!r} has used "
                                                 f"all of its {cmd.token_max_uses} uses")
        if cmd.kind == SERVER:
            if existing is not None:
                raise _Refuse("conflict", f"desired_node_id: node {desired} is registered "
                                          "with another secret")
            node_id = desired
        elif desired is not None and desired >= WORKER_ID_BASE and existing is None:
            node_id = desired
        else:
            node_id = hs.next_node_id
            while node_id in hs.nodes:
                node_id += 1
            hs.next_node_id = node_id + 1
        # -- mutation (nothing below refuses)
        rec = NodeRecord(
            node_id=node_id, kind=cmd.kind, state=READY, registered_ms=now,
            reg_rev=hs.revision, ttl_secs=cmd.ttl_secs, grace_secs=cmd.grace_secs,
            renewed_ms=now, secret_hash=cmd.secret_hash, **_profile_fields(cmd.profile))
        hs.nodes[node_id] = rec
        hs.count(rec.kind, READY, 1)
        if cmd.token_id is not None:
            hs.token_uses[cmd.token_id] = hs.token_uses.get(cmd.token_id, 0) + 1
        return self._register_value(rec, False)

    def _update_profile(self, cmd: UpdateProfile, now: int) -> dict:
        rec = self._node_or_refuse(cmd.node_id)
        changed = []
        for name, value in _profile_fields(cmd.profile).items():
            old = getattr(rec, name)
            # labels are a map: the same labels in another order are no change
            if (dict(old) != dict(value)) if name == "labels" else old != value:
                setattr(rec, name, value)
                changed.append(name)
        return {"node_id": rec.node_id, "changed": changed}

    def _renew(self, cmd: RenewCheckpoint, now: int) -> dict:
        nodes = self.state.nodes
        renewed: set[int] = set()
        unknown: set[int] = set()
        for node_id, renewed_ms in cmd.entries:
            rec = nodes.get(node_id)
            if rec is None:
                unknown.add(node_id)
            elif renewed_ms > rec.renewed_ms:
                rec.renewed_ms = renewed_ms
                renewed.add(node_id)
        return {"renewed": sorted(renewed), "unknown": sorted(unknown)}

    def _mark_down(self, cmd: MarkDown, now: int) -> dict:
        nodes = self.state.nodes
        went: set[int] = set()
        unknown: set[int] = set()
        for node_id in cmd.node_ids:
            rec = nodes.get(node_id)
            if rec is None:
                unknown.add(node_id)
            elif rec.state != DOWN:
                self._set_state(rec, DOWN)
                went.add(node_id)
        return {"went_down": sorted(went), "unknown": sorted(unknown)}

    def _mark_ready(self, cmd: MarkReady, now: int) -> dict:
        rec = self._node_or_refuse(cmd.node_id)
        resync = rec.state == DOWN
        if resync:
            self._set_state(rec, DRAINING if rec.drain_rev else READY)
            rec.resync_rev = self.state.revision
        if cmd.renewed_ms > rec.renewed_ms:
            rec.renewed_ms = cmd.renewed_ms
        return {"node_id": rec.node_id, "state": rec.state, "resync": resync}

    def _drain(self, cmd: Drain, now: int) -> dict:
        rec = self._node_or_refuse(cmd.node_id)
        if rec.drain_rev:
            return {"node_id": rec.node_id, "state": rec.state, "events_for": []}
        rec.drain_rev = self._emit(rec, DRAIN)
        if rec.state == READY:
            self._set_state(rec, DRAINING)
        return {"node_id": rec.node_id, "state": rec.state, "events_for": [rec.node_id]}

    def _undrain(self, cmd: Undrain, now: int) -> dict:
        rec = self._node_or_refuse(cmd.node_id)
        if not rec.drain_rev:
            return {"node_id": rec.node_id, "state": rec.state, "events_for": []}
        rec.drain_rev = 0
        self._emit(rec, UNDRAIN)
        if rec.state == DRAINING:
            self._set_state(rec, READY)
        return {"node_id": rec.node_id, "state": rec.state, "events_for": [rec.node_id]}

    def _deregister(self, cmd: Deregister, now: int) -> dict:
        hs = self.state
        rec = self._node_or_refuse(cmd.node_id)
        if rec.holds:
            raise _Refuse("conflict", f"node_id: node {rec.node_id} still holds placement of "
                                      f"{', '.join(sorted(rec.holds))}")
        del hs.nodes[rec.node_id]
        hs.count(rec.kind, rec.state, -1)
        return {"node_id": rec.node_id}

    def _set_placement(self, cmd: SetPlacement, now: int) -> dict:
        hs = self.state
        name = cmd.service
        if not name:
            raise _Refuse("bad_request", "service: must not be empty")
        # groups: role -> sorted indices, roles sorted, empty roles dropped
        groups: dict[str, tuple[int, ...]] = {}
        for role in sorted(cmd.groups):
            indices = cmd.groups[role]
            if not role:
                raise _Refuse("bad_request", 'groups[""]: a role must not be empty')
            if len(set(indices)) != len(indices):
                raise _Refuse("bad_request", f'groups["{role}"]: duplicate index')
            if indices:
                groups[role] = tuple(sorted(indices))
        total = sum(len(v) for v in groups.values())
        if cmd.replicas != total:
            raise _Refuse("bad_request", f"replicas: {cmd.replicas} does not match the {total} "
                                         "indices in groups")
        placed: dict[tuple[str, int], int] = {}
        new: dict[int, tuple] = {}
        members_of = {role: frozenset(ix) for role, ix in groups.items()}   # once, not per node
        for node_id in sorted(cmd.placement):
            share_map = cmd.placement[node_id]
            share = []
            for role in sorted(share_map):
                indices = share_map[role]
                if not indices:
                    continue
                if role not in groups:
                    raise _Refuse("bad_request", f'placement[{node_id}]["{role}"]: role is not '
                                                 "in groups")
                members = members_of[role]
                for index in indices:
                    if index not in members:
                        raise _Refuse("bad_request", f'placement[{node_id}]["{role}"]: index '
                                                     f"{index} is not in groups")
                    if (role, index) in placed:
                        raise _Refuse("bad_request", f'placement[{node_id}]["{role}"]: index '
                                                     f"{index} is placed twice")
                    placed[(role, index)] = node_id
                share.append((role, tuple(sorted(indices))))
            if share:
                new[node_id] = tuple(share)
        for role, indices in groups.items():
            for index in indices:
                if (role, index) not in placed:
                    raise _Refuse("bad_request", f'groups["{role}"]: index {index} is not placed')
        for node_id in new:  # ascending (built from sorted keys)
            rec = hs.nodes.get(node_id)
            if rec is None:
                raise _Refuse("unknown_node", f"placement[{node_id}]: node {node_id} is not "
                                              "registered")
            if rec.state != READY:
                raise _Refuse("node_not_ready", f"placement[{node_id}]: node {node_id} is "
                                                f"{rec.state}")
        svc = hs.services.get(name)
        if cmd.spec is not None:
            spec = pack_spec(cmd.spec)
            if svc is not None and svc.spec == spec:
                spec = svc.spec  # share the stored bytes
        else:
            spec = svc.spec if svc is not None else None
        # -- mutation (nothing below refuses)
        old = svc.placement if svc is not None else {}
        spec_changed = svc is not None and spec != svc.spec
        events_for: list[int] = []
        placement: dict[int, tuple[tuple, int]] = {}
        for node_id in sorted(set(old) | set(new)):
            rec = hs.nodes[node_id]
            if node_id in new:
                share = new[node_id]
                before = old.get(node_id)
                if before is None or before[0] != share or spec_changed:
                    rev = self._emit(rec, SET, name, share, spec)
                    events_for.append(node_id)
                    if rec.holds is None:
                        rec.holds = {}
                    rec.holds[name] = None
                    placement[node_id] = (share, rev)
                else:
                    placement[node_id] = before
            else:
                self._emit(rec, DELETE, name)
                events_for.append(node_id)
                del rec.holds[name]  # type: ignore[union-attr]
                if not rec.holds:
                    rec.holds = None
        deleted = svc is not None and not groups
        if not groups:
            hs.services.pop(name, None)
        else:
            hs.services[name] = ServiceRecord(name, cmd.replicas, tuple(groups.items()), spec,
                                              placement)
        return {"service": name, "events_for": events_for, "deleted": deleted}

    def _create_access_token(self, cmd: CreateAccessToken, now: int) -> dict:
        hs = self.state
        if not TOKEN_ID_RE.match(cmd.token_id):
            raise _Refuse("bad_request", "token_id: expected 16 lowercase hex digits")
        if not TOKEN_NAME_RE.match(cmd.name):
            raise _Refuse("bad_request", "name: expected 1-64 of A-Z a-z 0-9 . _ @ : - "
                                         "(starting with a letter or digit), or none")
        if cmd.scope not in ACCESS_SCOPES:
            raise _Refuse("bad_request", f"scope: {cmd.scope!r} is not one of "
                                         f"{', '.join(ACCESS_SCOPES)}")
        if not _SHA256.match(cmd.token_hash):
            raise _Refuse("bad_request", "token_hash: expected 64 lowercase hex digits")
        if not cmd.creator or len(cmd.creator) > _MAX_CREATOR \
                or not cmd.creator.isprintable():
            raise _Refuse("bad_request", f"creator: expected 1-{_MAX_CREATOR} printable "
                                         "characters")
        if cmd.expires_ms <= now:
            raise _Refuse("bad_request", f"expires_ms: {cmd.expires_ms} is not after the "
                                         f"command's time {now}")
        if cmd.token_id in hs.access_tokens:
            raise _Refuse("conflict", f"token_id: token {cmd.token_id} exists already")
        dropped = sorted(tid for tid, rec in hs.access_tokens.items() if rec.droppable(now))
        if len(hs.access_tokens) - len(dropped) >= MAX_ACCESS_TOKENS:
            raise _Refuse("conflict", f"token_id: {MAX_ACCESS_TOKENS} access tokens are kept "
                                      "already; revoke some (they are dropped 7 days later)")
        # -- mutation (nothing below refuses)
        for tid in dropped:
            del hs.access_tokens[tid]
        rec = AccessTokenRecord(cmd.token_id, cmd.name, cmd.scope, cmd.token_hash, now,
                                cmd.expires_ms, cmd.creator)
        hs.access_tokens[rec.token_id] = rec
        return dict(rec.to_plain(), dropped=dropped)

    def _revoke_access_token(self, cmd: RevokeAccessToken, now: int) -> dict:
        rec = self.state.access_tokens.get(cmd.token_id)
        if rec is None:
            raise _Refuse("unknown_token", f"token_id: no access token {cmd.token_id!r}")
        revoked = not rec.revoked_ms
        if revoked:
            rec.revoked_ms = now
        return {"token_id": rec.token_id, "revoked": revoked, "revoked_ms": rec.revoked_ms}

    def _barrier(self, cmd: Barrier, now: int) -> dict:
        # previous_term: the last leader term that wrote before this barrier; a peer that
        # led that very term knows no other leader acknowledged anything since.
        return {"term": max(cmd.term, self.state.max_term),
                "previous_term": self.state.max_term}

    def _compact(self, cmd: Compact, now: int) -> dict:
        hs = self.state
        upto = min(cmd.upto_revision, hs.revision)
        dropped = 0
        if upto > hs.compacted_revision:
            touched: set[int] = set()
            log = hs.log
            while log and log[0][0] <= upto:
                ev = log.popleft()
                touched.add(ev[1])
                dropped += 1
            for node_id in touched:
                rec = hs.nodes.get(node_id)
                if rec is not None and rec.events:
                    rest = rec.events_after(upto)
                    rec.events = rest or None
            hs.compacted_revision = upto
        return {"compacted_revision": hs.compacted_revision, "dropped": dropped}

    # ------------------------------------------------------------------ queries

    @property
    def revision(self) -> int:
        """The global assignment revision."""
        return self.state.revision

    @property
    def compacted_revision(self) -> int:
        return self.state.compacted_revision

    @property
    def cluster_id(self) -> str | None:
        return self.state.cluster_id

    @property
    def now_ms(self) -> int:
        """The largest proposer time applied so far (Unix ms)."""
        return self.state.now_ms

    @property
    def max_term(self) -> int:
        return self.state.max_term

    @property
    def next_node_id(self) -> int:
        return self.state.next_node_id

    @staticmethod
    def _node_dict(rec: NodeRecord) -> dict[str, Any]:
        return {"node_id": rec.node_id, "kind": rec.kind, "state": rec.state,
                "profile": rec.profile_dict(), "registered_ms": rec.registered_ms,
                "renewed_ms": rec.renewed_ms, "ttl_secs": rec.ttl_secs,
                "grace_secs": rec.grace_secs, "draining": bool(rec.drain_rev),
                "services": sorted(rec.holds) if rec.holds else []}

    def node(self, node_id: int) -> dict[str, Any] | None:
        """A node as plain data (never its secret hash), or None when unknown."""
        rec = self.state.nodes.get(node_id)
        return None if rec is None else self._node_dict(rec)

    def nodes(self, kind: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        """Every node (optionally of one kind and/or state) as plain data, by id."""
        return [self._node_dict(rec) for _nid, rec in sorted(self.state.nodes.items())
                if (kind is None or rec.kind == kind) and (state is None or rec.state == state)]

    def node_ids(self, kind: str | None = None, state: str | None = None) -> list[int]:
        return [nid for nid, rec in sorted(self.state.nodes.items())
                if (kind is None or rec.kind == kind) and (state is None or rec.state == state)]

    def node_count(self, kind: str | None = None, state: str | None = None) -> int:
        """How many nodes (of a kind, in a state); O(1). ``node_count("worker", "ready")`` is
        the live count ``compute_ttl`` takes."""
        return sum(n for (k, s), n in self.state.counts.items()
                   if (kind is None or k == kind) and (state is None or s == state))

    def node_brief(self, node_id: int) -> tuple[str, str, int, int, str] | None:
        """``(kind, state, ttl_secs, grace_secs, secret_hash)`` of a node, or None: what a
        heartbeat needs, without building the node's profile (the hot path)."""
        rec = self.state.nodes.get(node_id)
        if rec is None:
            return None
        return rec.kind, rec.state, rec.ttl_secs, rec.grace_secs, rec.secret_hash

    def secret_hash(self, node_id: int) -> str | None:
        """The stored hash of a node's secret (to check a request against), or None."""
        rec = self.state.nodes.get(node_id)
        return None if rec is None else rec.secret_hash

    def lease_row(self, node_id: int) -> tuple[int, str, int, int, int] | None:
        """``(node_id, state, ttl_secs, grace_secs, renewed_ms)`` of a worker, or None:
        what a new leader arms a deadline from, without building the node's profile."""
        rec = self.state.nodes.get(node_id)
        if rec is None or rec.kind != WORKER:
            return None
        return rec.node_id, rec.state, rec.ttl_secs, rec.grace_secs, rec.renewed_ms

    def placement_row(self, node_id: int) -> tuple[int, str, str, dict[str, str]] | None:
        """``(node_id, kind, os, labels)`` of a ready node, or None: what placement needs
        (``labels`` is the record's own map: read it, never change it)."""
        rec = self.state.nodes.get(node_id)
        if rec is None or rec.state != READY:
            return None
        return rec.node_id, rec.kind, rec.os, rec.labels

    def misplaced_services(self, exclude: frozenset[int] = frozenset(),
                           rule_for: Callable[[Any], Callable[[str, dict], bool] | None]
                           | None = None) -> list[str]:
        """The services with a share on a node that is not ready (down, draining, gone),
        in ``exclude``, or (with ``rule_for``) that the service's placement rule no longer
        admits: ``rule_for(spec)`` gives a service's ``admits(os, labels)``, or None when
        it has no constraint. One pass over the placements, nothing copied."""
        nodes = self.state.nodes
        out = []
        for name, svc in sorted(self.state.services.items()):
            admits = rule_for(unpack_spec(svc.spec)) if rule_for is not None else None
            for nid in svc.placement:
                rec = nodes.get(nid)
                if nid in exclude or rec is None or rec.state != READY or (
                        admits is not None and not admits(rec.os, dict(rec.labels))):
                    out.append(name)
                    break
        return out

    def renewals(self) -> dict[int, int]:
        """node id -> checkpointed renewal time (ms), for a new leader arming deadlines."""
        return {nid: rec.renewed_ms for nid, rec in sorted(self.state.nodes.items())}

    def lease_data(self, node_id: int) -> dict[str, Any] | None:
        """A worker's ``WorkerLease`` wire dict, or None (unknown node, or a server)."""
        rec = self.state.nodes.get(node_id)
        if rec is None or rec.kind != WORKER:
            return None
        return {"node_id": rec.node_id, "profile": rec.profile_dict(),
                "acquired_unix_secs": rec.registered_ms // 1000,
                "renewed_unix_secs": rec.renewed_ms // 1000,
                "ttl_secs": rec.ttl_secs, "grace_secs": rec.grace_secs}

    def lease(self, node_id: int) -> WorkerLease | None:
        from raftdir.model import WorkerLease  # noqa: PLC0415

        data = self.lease_data(node_id)
        return None if data is None else WorkerLease.from_dict(data)

    def leases(self) -> list[WorkerLease]:
        """The leases of every worker-kind node (any state), by id."""
        from raftdir.model import WorkerLease  # noqa: PLC0415

        return [WorkerLease.from_dict(self.lease_data(nid))  # type: ignore[arg-type]
                for nid, rec in sorted(self.state.nodes.items()) if rec.kind == WORKER]

    @staticmethod
    def _event_plain(ev: tuple) -> dict[str, Any]:
        rev, _nid, kind, service, share, spec = ev
        if kind == SET:
            out: dict[str, Any] = {
                "kind": SET, "service": service,
                "assignments": [{"role": r, "indices": list(ix)} for r, ix in share],
                "revision": rev}
            if spec is not None:
                out["spec"] = unpack_spec(spec)
            return out
        if kind == DELETE:
            return {"kind": DELETE, "service": service, "revision": rev}
        return {"kind": kind, "revision": rev}   # drain, undrain

    def poll_data(self, node_id: int, last_revision: int) -> dict[str, Any]:
        """The ``WorkerPollResponse`` wire dict for a poll (directory.md §6, wire-types.md
        §12): the node's events above ``last_revision``, ascending, with ``revision`` the
        current one; or its complete current set with ``full: true`` when ``last_revision``
        is 0, below the compacted revision, or from before it came back from ``down``. A
        ``last_revision`` above the current revision gets itself back and no events (the
        server catches up, then answers such a poll with the complete set). Raises
        ``UnknownNode`` for an unknown node."""
        hs = self.state
        rec = hs.nodes.get(node_id)
        if rec is None:
            raise UnknownNode(f"node {node_id} is not registered", field="node_id")
        if last_revision > hs.revision:
            return {"revision": last_revision}
        if last_revision == 0 or last_revision < hs.compacted_revision \
                or last_revision < rec.resync_rev:
            events = []
            for name in sorted(rec.holds or ()):
                svc = hs.services[name]
                share, rev = svc.placement[node_id]
                events.append((rev, node_id, SET, name, share, svc.spec))
            if rec.drain_rev:
                events.append((rec.drain_rev, node_id, DRAIN, None, None, None))
            events.sort(key=lambda ev: ev[0])
            out: dict[str, Any] = {"revision": hs.revision}
            if events:
                out["events"] = [self._event_plain(ev) for ev in events]
            out["full"] = True
            return out
        out = {"revision": hs.revision}
        events = rec.events_after(last_revision)
        if events:
            out["events"] = [self._event_plain(ev) for ev in events]
        return out

    def events_since(self, node_id: int, last_revision: int) -> WorkerPollResponse:
        """``poll_data`` as a ``raftdir.model.WorkerPollResponse``."""
        from raftdir.model import WorkerPollResponse  # noqa: PLC0415

        return WorkerPollResponse.from_dict(self.poll_data(node_id, last_revision))

    def services(self) -> list[str]:
        return sorted(self.state.services)

    def placement(self, service: str) -> dict[int, dict[str, list[int]]] | None:
        """node id -> role -> indices of a service, or None when it does not exist."""
        svc = self.state.services.get(service)
        if svc is None:
            return None
        return {nid: {role: list(ix) for role, ix in share}
                for nid, (share, _rev) in sorted(svc.placement.items())}

    def service(self, service: str) -> dict[str, Any] | None:
        """A service as plain data: replicas, groups (role -> indices), spec, placement."""
        svc = self.state.services.get(service)
        if svc is None:
            return None
        return {"service": svc.name, "replicas": svc.replicas,
                "groups": {role: list(ix) for role, ix in svc.groups},
                "spec": unpack_spec(svc.spec), "placement": self.placement(service)}

    def holdings(self, node_id: int) -> list[str]:
        """The services a node holds a share of, sorted."""
        rec = self.state.nodes.get(node_id)
        return sorted(rec.holds) if rec is not None and rec.holds else []

    def token_uses(self, token_id: str) -> int:
        return self.state.token_uses.get(token_id, 0)

    def access_token(self, token_id: str) -> AccessTokenRecord | None:
        """An access token's record (its hash included, for checking a presented token;
        never hand it out), or None."""
        return self.state.access_tokens.get(token_id)

    def access_tokens(self) -> list[dict[str, Any]]:
        """Every access token kept, by creation time then id, without its hash."""
        return [rec.to_plain() for rec in sorted(self.state.access_tokens.values(),
                                                 key=lambda r: (r.created_ms, r.token_id))]

    def log_data(self) -> list[dict[str, Any]]:
        """Every event not yet compacted, ascending, each with its ``node_id`` (debugging,
        tests)."""
        return [dict(self._event_plain(ev), node_id=ev[1]) for ev in self.state.log]

    # ------------------------------------------------------------------ snapshots

    def to_snapshot(self) -> dict[str, Any]:
        """The hard state as plain data with ``{"format": 4, ...}``; canonical (equal states
        give equal snapshots) and msgpack-able."""
        return state_to_snapshot(self.state)

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> "Directory":
        """A directory rebuilt from ``to_snapshot()`` output; ``BadRequest`` for an unknown
        format or a malformed snapshot."""
        d = cls.__new__(cls)
        d.state = state_from_snapshot(data)
        return d

    def restore(self, data: dict[str, Any]) -> None:
        """Replace this directory's state in place with a snapshot's (all or nothing)."""
        self.state = state_from_snapshot(data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Directory):
            return NotImplemented
        return self.to_snapshot() == other.to_snapshot()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        hs = self.state
        return (f"Directory(cluster_id={hs.cluster_id!r}, nodes={len(hs.nodes)}, "
                f"services={len(hs.services)}, revision={hs.revision})")


_HANDLERS: dict[type, Callable[[Directory, Any, int], Any]] = {
    Bootstrap: Directory._bootstrap,
    RegisterNode: Directory._register,
    RenewCheckpoint: Directory._renew,
    MarkDown: Directory._mark_down,
    MarkReady: Directory._mark_ready,
    Drain: Directory._drain,
    Undrain: Directory._undrain,
    Deregister: Directory._deregister,
    SetPlacement: Directory._set_placement,
    Barrier: Directory._barrier,
    Compact: Directory._compact,
    UpdateProfile: Directory._update_profile,
    CreateAccessToken: Directory._create_access_token,
    RevokeAccessToken: Directory._revoke_access_token,
}
