"""The hard state of the directory and its compact records.

Owns: ``HardState`` (everything replicated through Raft and saved in snapshots), the
per-node ``NodeRecord`` and per-service ``ServiceRecord``, the constants of node kinds and
states, and the snapshot form (``state_to_snapshot`` / ``state_from_snapshot``).

Only ``Directory`` (``raftdir.core.directory``) mutates these objects, from the Raft apply
thread (or the local node's caller). Must not import anything from raftdir but
``raftdir.errors`` and ``raftdir.core``.

Memory: a registered worker costs one ``NodeRecord`` (``__slots__``, no per-instance dict),
its profile strings (OS, arch and label keys and values are ``sys.intern``-ed so repeated
values are shared) and one dict entry. Assignment events are tuples shared by the global
log and the node's index; a spec is stored once as msgpack bytes and shared by reference.
"""

from __future__ import annotations

import re
import sys
from bisect import bisect_right
from collections import OrderedDict, deque
from operator import itemgetter
from typing import Any

import msgpack

from raftdir.errors import BadRequest

__all__ = [
    "HardState", "NodeRecord", "ServiceRecord", "AccessTokenRecord", "ACCESS_SCOPES",
    "MAX_ACCESS_TOKENS", "TOKEN_RETENTION_MS", "TOKEN_ID_RE", "TOKEN_NAME_RE", "WORKER_ID_BASE", "DEFAULT_MAX_REQUEST_IDS",
    "SERVER", "WORKER", "KINDS", "READY", "DRAINING", "DOWN", "STATES", "SNAPSHOT_FORMAT",
    "state_to_snapshot", "state_from_snapshot", "share_to_plain", "pack_spec",
    "unpack_spec", "sorted_maps",
]

WORKER_ID_BASE = 1_000_000
DEFAULT_MAX_REQUEST_IDS = 10_000
SNAPSHOT_FORMAT = 4
#: Formats ``state_from_snapshot`` reads. 1: request-id rows were [id, result] (no
#: fingerprint; such an entry matches any retry, as it did when it was written). 3: the
#: rows of format 2; a node's profile may hold what ZLayer writes (any os and arch,
#: api_addr ``0.0.0.0:0``), which a format-2 reader refuses to list, so it refuses the file.
#: 4: format 3 plus the access tokens (``access_token_fields``, ``access_tokens``); a file
#: of format 1-3 has none.
READABLE_SNAPSHOT_FORMATS = (1, 2, 3, 4)

#: The scopes of an access token, weakest first: each allows what the ones before it do.
ACCESS_SCOPES = ("read", "operate", "admin")
#: The most access tokens kept (revoked and expired ones count until they are dropped).
MAX_ACCESS_TOKENS = 1000
#: How long a revoked or expired access token is still listed before it is dropped (7 days).
TOKEN_RETENTION_MS = 7 * 86400 * 1000
#: An access token's id: 16 lowercase hex digits.
TOKEN_ID_RE = re.compile(r"[0-9a-f]{16}\Z")
#: An access token's name: empty, or a word an operator would type (``ci-deploy``,
#: ``alice@ops``): 1-64 of ``A-Z a-z 0-9 . _ @ : -``, starting with a letter or digit.
TOKEN_NAME_RE = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._@:-]{0,63})?\Z")

SERVER = sys.intern("server")
WORKER = sys.intern("worker")
KINDS = (SERVER, WORKER)
READY = sys.intern("ready")
DRAINING = sys.intern("draining")
DOWN = sys.intern("down")
STATES = (READY, DRAINING, DOWN)

SET, DELETE, DRAIN = sys.intern("set"), sys.intern("delete"), sys.intern("drain")
UNDRAIN = sys.intern("undrain")

#: An event is a tuple ``(revision, node_id, kind, service, share, spec)``: ``share`` is a
#: tuple of ``(role, (index, ...))`` sorted by role, ``spec`` msgpack bytes or None.
#: ``delete`` has share and spec None; ``drain`` has service, share and spec None.
EV_REV = itemgetter(0)

_EMPTY_LABELS: tuple = ()


class NodeRecord:
    """One node of the directory (hard state, except the two derived indices).

    ``labels`` is a tuple of ``(key, value)`` pairs in the profile's order. ``drain_rev``
    is the revision of the node's ``drain`` event (0: never drained; draining survives a
    down/ready cycle). ``resync_rev``: a poll with a ``last_revision`` below it gets a full
    resync (set when a ``down`` node comes back). ``reg_rev`` is the revision when the
    record was created: events of an earlier record under the same id are not its own.

    Derived indices, rebuilt from the rest on restore and never snapshotted: ``holds``
    (service name -> None, the services it has a share of, or None) and ``events`` (its
    events in the log, ascending, or None)."""

    __slots__ = ("node_id", "kind", "state", "registered_ms", "reg_rev", "ttl_secs",
                 "grace_secs", "renewed_ms", "secret_hash", "api_addr", "os", "arch",
                 "labels", "cpu_total", "memory_total_bytes", "drain_rev", "resync_rev",
                 "holds", "events")

    #: The hard fields in snapshot order.
    FIELDS = ("node_id", "kind", "state", "registered_ms", "reg_rev", "ttl_secs",
              "grace_secs", "renewed_ms", "secret_hash", "api_addr", "os", "arch", "labels",
              "cpu_total", "memory_total_bytes", "drain_rev", "resync_rev")

    def __init__(self, node_id: int, kind: str, state: str, registered_ms: int, reg_rev: int,
                 ttl_secs: int, grace_secs: int, renewed_ms: int, secret_hash: str,
                 api_addr: str, os: str, arch: str, labels: tuple, cpu_total: int,
                 memory_total_bytes: int, drain_rev: int = 0, resync_rev: int = 0) -> None:
        self.node_id = node_id
        self.kind = sys.intern(kind)
        self.state = sys.intern(state)
        self.registered_ms = registered_ms
        self.reg_rev = reg_rev
        self.ttl_secs = ttl_secs
        self.grace_secs = grace_secs
        self.renewed_ms = renewed_ms
        self.secret_hash = secret_hash
        self.api_addr = api_addr
        self.os = sys.intern(os)
        self.arch = sys.intern(arch)
        self.labels = labels or _EMPTY_LABELS
        self.cpu_total = cpu_total
        self.memory_total_bytes = memory_total_bytes
        self.drain_rev = drain_rev
        self.resync_rev = resync_rev
        self.holds: dict[str, None] | None = None
        self.events: list[tuple] | None = None

    @staticmethod
    def labels_from(mapping: dict[str, str]) -> tuple:
        if not mapping:
            return _EMPTY_LABELS
        return tuple((sys.intern(k), sys.intern(v)) for k, v in mapping.items())

    def profile_dict(self) -> dict[str, Any]:
        """The ``WorkerProfile`` wire dict (every field written)."""
        return {"api_addr": self.api_addr, "os": self.os, "arch": self.arch,
                "labels": dict(self.labels), "cpu_total": self.cpu_total,
                "memory_total_bytes": self.memory_total_bytes}

    def events_after(self, revision: int) -> list[tuple]:
        evs = self.events
        if not evs:
            return []
        return evs[bisect_right(evs, revision, key=EV_REV):]


class ServiceRecord:
    """One service (hard state): ``groups`` is a tuple of ``(role, (index, ...))`` sorted by
    role; ``spec`` msgpack bytes or None; ``placement`` node id -> ``(share, revision)``
    where ``share`` has the form of ``groups`` and ``revision`` is when the node's share
    last changed (its ``set`` event)."""

    __slots__ = ("name", "replicas", "groups", "spec", "placement")

    def __init__(self, name: str, replicas: int, groups: tuple, spec: bytes | None,
                 placement: dict[int, tuple[tuple, int]]) -> None:
        self.name = name
        self.replicas = replicas
        self.groups = groups
        self.spec = spec
        self.placement = placement


class AccessTokenRecord:
    """One scoped access token (hard state): never the token, only its SHA-256
    (``token_hash``, hex). ``revoked_ms`` is 0 while it is not revoked; times are Unix ms
    (``created_ms`` is the time of the command that created it)."""

    __slots__ = ("token_id", "name", "scope", "token_hash", "created_ms", "expires_ms",
                 "creator", "revoked_ms")

    #: The fields in snapshot order.
    FIELDS = __slots__

    def __init__(self, token_id: str, name: str, scope: str, token_hash: str,
                 created_ms: int, expires_ms: int, creator: str, revoked_ms: int = 0) -> None:
        self.token_id = token_id
        self.name = name
        self.scope = scope
        self.token_hash = token_hash
        self.created_ms = created_ms
        self.expires_ms = expires_ms
        self.creator = creator
        self.revoked_ms = revoked_ms

    def droppable(self, now_ms: int) -> bool:
        """Expired or revoked more than ``TOKEN_RETENTION_MS`` before ``now_ms``."""
        ended = min(self.expires_ms, self.revoked_ms or self.expires_ms)
        return ended + TOKEN_RETENTION_MS <= now_ms

    def to_plain(self) -> dict[str, Any]:
        """What a listing shows: every field but the hash."""
        return {"token_id": self.token_id, "name": self.name, "scope": self.scope,
                "created_ms": self.created_ms, "expires_ms": self.expires_ms,
                "creator": self.creator, "revoked_ms": self.revoked_ms}


class HardState:
    """The hard state of the directory (directory.md §2): replicated through Raft, in every
    snapshot, the same on every peer once applied. Soft state (deadlines, status reports,
    parked polls) lives outside the core.

    - ``cluster_id``: str or None until bootstrapped;
    - ``nodes``: node id -> ``NodeRecord``; ``next_node_id``: the next worker id to try;
    - ``token_uses``: join-token id -> uses;
    - ``access_tokens``: access-token id -> ``AccessTokenRecord`` (scoped tokens);
    - ``services``: name -> ``ServiceRecord``;
    - ``revision``: the global assignment revision; ``log``: every event not yet compacted,
      ascending (a deque of event tuples); ``compacted_revision``;
    - ``max_term``: the highest leader term seen; ``now_ms``: the largest proposer time
      seen (never goes backwards);
    - ``request_ids``: applied request id -> (the command's fingerprint or None when it
      came from a format-1 snapshot, its first
      ``Result``), oldest first, at most
      ``max_request_ids`` (the oldest is evicted first). ``max_request_ids`` is hard state
      too: eviction must be the same on every peer.

    ``counts`` ((kind, state) -> number of nodes) is a derived index."""

    __slots__ = ("cluster_id", "nodes", "next_node_id", "token_uses", "access_tokens",
                 "services", "revision", "log", "compacted_revision", "max_term", "now_ms",
                 "request_ids", "max_request_ids", "counts")

    def __init__(self, max_request_ids: int = DEFAULT_MAX_REQUEST_IDS) -> None:
        if isinstance(max_request_ids, bool) or not isinstance(max_request_ids, int) \
                or max_request_ids < 1:
            raise BadRequest(f"max_request_ids: {max_request_ids!r} must be an integer >= 1",
                             field="max_request_ids")
        self.cluster_id: str | None = None
        self.nodes: dict[int, NodeRecord] = {}
        self.next_node_id = WORKER_ID_BASE
        self.token_uses: dict[str, int] = {}
        self.access_tokens: dict[str, AccessTokenRecord] = {}
        self.services: dict[str, ServiceRecord] = {}
        self.revision = 0
        self.log: deque[tuple] = deque()
        self.compacted_revision = 0
        self.max_term = 0
        self.now_ms = 0
        self.request_ids: OrderedDict[str, Any] = OrderedDict()
        self.max_request_ids = max_request_ids
        self.counts: dict[tuple[str, str], int] = {}

    def count(self, kind: str, state: str, delta: int) -> None:
        key = (kind, state)
        self.counts[key] = self.counts.get(key, 0) + delta


# ---------------------------------------------------------------------------- plain forms

def share_to_plain(share: tuple) -> list:
    return [[role, list(indices)] for role, indices in share]


def _share_from_plain(data: Any) -> tuple:
    return tuple((sys.intern(role), tuple(indices)) for role, indices in data)


def sorted_maps(value: Any) -> Any:
    """``value`` with every map's keys in one fixed order (by type name, then value),
    recursively; lists keep their order. Maps equal as dicts become equal here, whatever
    order their keys were inserted in (a client's JSON may re-serialise them)."""
    if isinstance(value, dict):
        return {k: sorted_maps(value[k])
                for k in sorted(value, key=lambda k: (type(k).__name__, k))}
    if isinstance(value, (list, tuple)):
        return [sorted_maps(v) for v in value]
    return value


def pack_spec(spec: dict | None) -> bytes | None:
    """A spec's stored bytes: key order does not count (a re-sent spec whose keys a
    client re-ordered is the same spec and sends no events)."""
    return None if spec is None else msgpack.packb(sorted_maps(spec), use_bin_type=True)


def unpack_spec(spec: bytes | None) -> dict | None:
    return None if spec is None else msgpack.unpackb(spec, raw=False, strict_map_key=True)


def _event_to_plain(ev: tuple) -> list:
    rev, nid, kind, service, share, spec = ev
    if kind == SET:
        return [rev, nid, kind, service, share_to_plain(share), unpack_spec(spec)]
    if kind == DELETE:
        return [rev, nid, kind, service]
    return [rev, nid, kind]


def _result_to_plain(result: Any) -> list:
    return [result.ok, result.value, result.code, result.message, result.revision]


def state_to_snapshot(hs: HardState) -> dict[str, Any]:
    """Plain data (dicts, lists, str, int, bool, None), canonical: two equal states give
    equal snapshots."""
    return {
        "format": SNAPSHOT_FORMAT,
        "cluster_id": hs.cluster_id,
        "revision": hs.revision,
        "compacted_revision": hs.compacted_revision,
        "max_term": hs.max_term,
        "now_ms": hs.now_ms,
        "next_node_id": hs.next_node_id,
        "max_request_ids": hs.max_request_ids,
        "node_fields": list(NodeRecord.FIELDS),
        "nodes": [[getattr(rec, f) if f != "labels" else [list(p) for p in rec.labels]
                   for f in NodeRecord.FIELDS]
                  for _nid, rec in sorted(hs.nodes.items())],
        "token_uses": [[tid, n] for tid, n in sorted(hs.token_uses.items())],
        "services": [[svc.name, svc.replicas, share_to_plain(svc.groups),
                      unpack_spec(svc.spec),
                      [[nid, share_to_plain(share), rev]
                       for nid, (share, rev) in sorted(svc.placement.items())]]
                     for _name, svc in sorted(hs.services.items())],
        "log": [_event_to_plain(ev) for ev in hs.log],
        "request_ids": [[rid, fp, _result_to_plain(res)]
                        for rid, (fp, res) in hs.request_ids.items()],
        "access_token_fields": list(AccessTokenRecord.FIELDS),
        "access_tokens": [[getattr(rec, f) for f in AccessTokenRecord.FIELDS]
                          for _tid, rec in sorted(hs.access_tokens.items())],
    }


_LABELS_AT = NodeRecord.FIELDS.index("labels")

_SNAPSHOT_KEYS = ("format", "cluster_id", "revision", "compacted_revision", "max_term",
                  "now_ms", "next_node_id", "max_request_ids", "node_fields", "nodes",
                  "token_uses", "services", "log", "request_ids")
#: The keys format 4 added.
_TOKEN_KEYS = ("access_token_fields", "access_tokens")


def state_from_snapshot(data: Any) -> HardState:
    """Rebuild a ``HardState`` (and its derived indices) from ``state_to_snapshot`` output.
    Raises ``BadRequest`` for an unknown format or a malformed snapshot."""
    if not isinstance(data, dict):
        raise BadRequest("snapshot: expected a map", field="snapshot")
    fmt = data.get("format")
    if isinstance(fmt, bool) or fmt not in READABLE_SNAPSHOT_FORMATS:
        raise BadRequest(f"format: unknown snapshot format {fmt!r}; this version reads "
                         f"{', '.join(map(str, READABLE_SNAPSHOT_FORMATS))} (a snapshot "
                         "from a newer raftdir? upgrade every peer)", field="format")
    keys = _SNAPSHOT_KEYS + (_TOKEN_KEYS if fmt >= 4 else ())
    unknown = sorted(set(data) - set(keys))
    missing = [k for k in keys if k not in data]
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown key in snapshot", field=str(unknown[0]))
    if missing:
        raise BadRequest(f"{missing[0]}: required field missing", field=missing[0])
    if list(data["node_fields"]) != list(NodeRecord.FIELDS):
        raise BadRequest("node_fields: does not match this version's node record",
                         field="node_fields")
    if fmt >= 4 and list(data["access_token_fields"]) != list(AccessTokenRecord.FIELDS):
        raise BadRequest("access_token_fields: does not match this version's token record",
                         field="access_token_fields")
    from raftdir.core.result import Result  # noqa: PLC0415 - avoid a cycle at import

    try:
        hs = HardState(data["max_request_ids"])
        hs.cluster_id = data["cluster_id"]
        hs.revision = data["revision"]
        hs.compacted_revision = data["compacted_revision"]
        hs.max_term = data["max_term"]
        hs.now_ms = data["now_ms"]
        hs.next_node_id = data["next_node_id"]
        width = len(NodeRecord.FIELDS)
        nodes = hs.nodes
        counts = hs.counts
        intern = sys.intern
        for row in data["nodes"]:
            if len(row) != width:
                raise ValueError(f"node row of {len(row)} fields, expected {width}")
            row = list(row)
            row[_LABELS_AT] = tuple((intern(k), intern(v)) for k, v in row[_LABELS_AT]) \
                if row[_LABELS_AT] else _EMPTY_LABELS
            rec = NodeRecord(*row)
            nodes[rec.node_id] = rec
            key = (rec.kind, rec.state)
            counts[key] = counts.get(key, 0) + 1
        for tid, n in data["token_uses"]:
            hs.token_uses[tid] = n
        specs: dict[bytes, bytes] = {}

        def spec_of(plain: Any) -> bytes | None:
            packed = pack_spec(plain)
            return None if packed is None else specs.setdefault(packed, packed)

        for name, replicas, groups, spec, placement in data["services"]:
            svc = ServiceRecord(name, replicas, _share_from_plain(groups), spec_of(spec), {})
            for nid, share, rev in placement:
                svc.placement[nid] = (_share_from_plain(share), rev)
                rec = hs.nodes[nid]
                if rec.holds is None:
                    rec.holds = {}
                rec.holds[name] = None
            hs.services[name] = svc
        for row in data["log"]:
            rev, nid, kind = row[0], row[1], sys.intern(row[2])
            if kind == SET:
                ev = (rev, nid, SET, row[3], _share_from_plain(row[4]), spec_of(row[5]))
            elif kind == DELETE:
                ev = (rev, nid, DELETE, row[3], None, None)
            elif kind in (DRAIN, UNDRAIN):
                ev = (rev, nid, kind, None, None, None)
            else:
                raise ValueError(f"unknown event kind {kind!r}")
            hs.log.append(ev)
            rec = hs.nodes.get(nid)
            if rec is not None and rev > rec.reg_rev:
                if rec.events is None:
                    rec.events = []
                rec.events.append(ev)
        for row in data["request_ids"]:
            if fmt == 1:
                (rid, (ok, value, code, message, revision)), fp = row, None
            else:
                rid, fp, (ok, value, code, message, revision) = row
                if not isinstance(fp, str):
                    raise ValueError(f"request id {rid!r}: fingerprint is not a string")
            hs.request_ids[rid] = (fp, Result(ok, value, code, message, revision))
        for row in data.get("access_tokens", ()):
            if len(row) != len(AccessTokenRecord.FIELDS):
                raise ValueError(f"access token row of {len(row)} fields")
            tok = AccessTokenRecord(*row)
            hs.access_tokens[tok.token_id] = tok
    except BadRequest:
        raise
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise BadRequest(f"snapshot: malformed: {exc!r}", field="snapshot") from None
    return hs
