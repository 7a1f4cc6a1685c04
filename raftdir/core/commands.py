"""The commands of the directory state machine: data, one registry, one strict codec.

Owns: every command class (a frozen, keyword-only dataclass with a ``TYPE`` tag and a format
``VERSION``), the registry ``COMMANDS`` (tag -> class), ``encode_command`` /
``decode_command`` (msgpack) and ``canonical_command`` (the same checks for a command built
in Python). The codec is written once, driven by the dataclass field annotations; no command
has code of its own here.

Called from any thread (the proposer encodes, the Raft apply thread decodes); pure
functions. Must not import anything from raftdir but ``raftdir.errors`` and
``raftdir.model`` (and ``raftdir.core``): no replication, API, agent, CLI, leader or
daemon code.

Wire form of a command: a msgpack map ``{"type": TYPE, "v": VERSION, <every field>}`` with
the fields in declaration order. Every field is written and every field is required on
decode (``None`` where a field allows it); unknown keys, missing keys, wrong types and
out-of-range integers raise ``BadRequest("<path>: <problem>", field=<path>)``. A map keyed
by node id (``dict[int, ...]``) travels as a list of ``[key, value]`` pairs, ascending by
key, because msgpack maps here only have string keys (``strict_map_key``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Union, get_args, get_origin

import msgpack

from raftdir.codec import _fail, loads_msgpack, type_name as _type_name
from raftdir.errors import BadRequest

__all__ = [
    "Command", "Bootstrap", "RegisterNode", "RenewCheckpoint", "MarkDown", "MarkReady",
    "Drain", "Deregister", "SetPlacement", "Barrier", "Compact",
    "COMMANDS", "LEADER_COMMANDS", "encode_command", "decode_command", "canonical_command",
    "command_to_plain", "pack_plain", "U32", "U64",
]

#: Integer annotations: plain ``int`` means u64.
U32 = Annotated[int, "u32"]
U64 = Annotated[int, "u64"]
#: An opaque map (a service spec): a map with string keys holding only maps, lists,
#: strings, integers, finite floats, booleans and null. Contents are not interpreted.
Opaque = Annotated[dict, "opaque"]
#: A ``WorkerProfile`` in its wire-dict form, checked by ``raftdir.model.WorkerProfile``.
ProfileMap = Annotated[dict, "profile"]

_RANGES = {"u32": (0, 2**32 - 1), "u64": (0, 2**64 - 1)}
_MAX_DEPTH = 64


# ---------------------------------------------------------------------------- commands

@dataclass(frozen=True, kw_only=True)
class Command:
    """Base of every command. ``request_id`` makes a client write idempotent (a retried
    command with the same id gets the first result); ``ts_ms`` is the proposer's wall-clock
    time in Unix milliseconds (the state's clock is the largest one seen)."""

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    #: Leader-originated: carries ``term`` and is refused as ``stale`` below the state's
    #: highest term (pysyncobj.md §5.2 rule 4).
    LEADER: ClassVar[bool] = False

    request_id: str | None = None
    ts_ms: U64 = 0


@dataclass(frozen=True, kw_only=True)
class Bootstrap(Command):
    """Fix the cluster id. Again with the same id: no-op; with another id: ``conflict``."""

    TYPE: ClassVar[str] = "bootstrap"
    cluster_id: str


@dataclass(frozen=True, kw_only=True)
class RegisterNode(Command):
    """Record a node, its lease, its secret's hash and one use of its join token.

    ``desired_node_id``: a worker gets it when it is free and in the worker range
    (>= 1,000,000), else the next free id; a server always registers under it (required).
    Same id and same ``secret_hash`` as an existing node: the existing record comes back
    and nothing changes (no token use). ``token_max_uses`` None means no limit;
    ``token_id`` None means no token is counted (a server)."""

    TYPE: ClassVar[str] = "register_node"
    desired_node_id: U64 | None = None
    kind: str = "worker"
    profile: ProfileMap
    ttl_secs: U32
    grace_secs: U32
    secret_hash: str
    token_id: str | None = None
    token_max_uses: U32 | None = None


@dataclass(frozen=True, kw_only=True)
class RenewCheckpoint(Command):
    """The leader's periodic checkpoint of renewal times: ``(node_id, renewed_ms)`` pairs.
    A time only moves forward; unknown ids are skipped and reported."""

    TYPE: ClassVar[str] = "renew_checkpoint"
    LEADER: ClassVar[bool] = True
    term: U64
    entries: tuple[tuple[U64, U64], ...] = ()


@dataclass(frozen=True, kw_only=True)
class MarkDown(Command):
    """Expired leases: every listed node goes ``down``. Unknown ids are skipped."""

    TYPE: ClassVar[str] = "mark_down"
    LEADER: ClassVar[bool] = True
    term: U64
    node_ids: tuple[U64, ...] = ()


@dataclass(frozen=True, kw_only=True)
class MarkReady(Command):
    """A ``down`` node reported again: ready (or draining, if it was drained), a full
    resync on its next poll, and its renewal time moved forward."""

    TYPE: ClassVar[str] = "mark_ready"
    LEADER: ClassVar[bool] = True
    term: U64
    node_id: U64
    renewed_ms: U64


@dataclass(frozen=True, kw_only=True)
class Drain(Command):
    """Stop new placement on a node; emits one ``drain`` event for it."""

    TYPE: ClassVar[str] = "drain"
    node_id: U64


@dataclass(frozen=True, kw_only=True)
class Deregister(Command):
    """Remove a node's record; ``conflict`` while it still holds placement."""

    TYPE: ClassVar[str] = "deregister"
    node_id: U64


@dataclass(frozen=True, kw_only=True)
class SetPlacement(Command):
    """The whole placement of one service. ``groups``: role -> indices (the service's every
    (role, index)); ``replicas`` must equal their count; ``placement``: node id -> role ->
    indices, each (role, index) of the groups on exactly one ``ready`` node. ``spec`` None
    keeps the current spec. ``replicas`` 0 (no groups, no placement) deletes the service."""

    TYPE: ClassVar[str] = "set_placement"
    service: str
    replicas: U32
    groups: dict[str, tuple[U32, ...]]
    spec: Opaque | None = None
    placement: dict[U64, dict[str, tuple[U32, ...]]]


@dataclass(frozen=True, kw_only=True)
class Barrier(Command):
    """A no-op that records ``term``: a new leader's first write, a consistent read."""

    TYPE: ClassVar[str] = "barrier"
    LEADER: ClassVar[bool] = True
    term: U64


@dataclass(frozen=True, kw_only=True)
class Compact(Command):
    """Drop assignment events with revision <= ``upto_revision`` (clamped to the current
    revision) and record the compacted revision."""

    TYPE: ClassVar[str] = "compact"
    upto_revision: U64


#: The one registry: type tag -> command class.
COMMANDS: dict[str, type[Command]] = {
    cls.TYPE: cls for cls in (Bootstrap, RegisterNode, RenewCheckpoint, MarkDown, MarkReady,
                              Drain, Deregister, SetPlacement, Barrier, Compact)
}
LEADER_COMMANDS = frozenset(cls for cls in COMMANDS.values() if cls.LEADER)


# ---------------------------------------------------------------------------- type walker

def _check_int(value: Any, tag: str, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"expected an integer ({tag}), got {_type_name(value)}")
    lo, hi = _RANGES[tag]
    if not lo <= value <= hi:
        raise _fail(path, f"{value} is out of range for {tag}")
    return value


def _check_opaque(value: Any, path: str, depth: int = 0) -> Any:
    """An opaque value: plain data only (so it snapshots and compares exactly)."""
    if depth > _MAX_DEPTH:
        raise _fail(path, "nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value <= 2**64 - 1:
            raise _fail(path, f"{value} is out of range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(path, f"{value!r} is not a finite number")
        return value
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _fail(path, f"map key {k!r} is not a string")
            out[k] = _check_opaque(v, f'{path}["{k}"]', depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_check_opaque(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    raise _fail(path, f"{_type_name(value)} is not allowed in an opaque map")


def _check_profile(value: Any, path: str) -> dict:
    from raftdir.model import WorkerProfile  # noqa: PLC0415 - wire type, checked once

    if isinstance(value, WorkerProfile):
        return value.to_dict()
    return WorkerProfile.from_dict(value, path).to_dict()


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against annotation ``tp`` and return its canonical Python form
    (sequences as tuples, int-keyed maps as dicts). Accepts both the wire form (lists,
    pair lists) and the Python form (tuples, dicts)."""
    origin = get_origin(tp)
    if origin is Annotated:
        _base, tag = get_args(tp)[:2]
        if tag in _RANGES:
            return _check_int(value, tag, path)
        if tag == "opaque":
            if not isinstance(value, dict):
                raise _fail(path, f"expected a map, got {_type_name(value)}")
            return _check_opaque(value, path)
        if tag == "profile":
            return _check_profile(value, path)
        raise TypeError(f"unknown annotation {tag!r}")  # pragma: no cover - a coding error
    if tp is int:
        return _check_int(value, "u64", path)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(path, f"expected a string, got {_type_name(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(path, f"expected a bool, got {_type_name(value)}")
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], path)
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise _fail(path, f"expected a list, got {_type_name(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _fail(path, f"expected a list of {len(args)} items, got {len(value)}")
        return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        ktp, vtp = get_args(tp)
        if ktp is str:
            if not isinstance(value, dict):
                raise _fail(path, f"expected a map, got {_type_name(value)}")
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise _fail(path, f"map key {k!r} is not a string")
                out[k] = _convert(v, vtp, f'{path}["{k}"]')
            return out
        # integer keys: a dict (Python) or a list of [key, value] pairs (wire)
        if isinstance(value, dict):
            pairs = list(value.items())
        elif isinstance(value, (list, tuple)):
            pairs = []
            for i, pair in enumerate(value):
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise _fail(f"{path}[{i}]", "expected a [key, value] pair")
                pairs.append((pair[0], pair[1]))
        else:
            raise _fail(path, f"expected a list of [key, value] pairs, got {_type_name(value)}")
        out = {}
        for k, v in pairs:
            key = _convert(k, ktp, f'{path}["{k}"]' if isinstance(k, str) else f"{path}[{k}]")
            if key in out:
                raise _fail(f"{path}[{key}]", "duplicate key")
            out[key] = _convert(v, vtp, f"{path}[{key}]")
        return out
    raise TypeError(f"unsupported annotation {tp!r}")  # pragma: no cover - a coding error


def _to_plain(value: Any, tp: Any) -> Any:
    """The wire (msgpack-able) form of a canonical value of annotation ``tp``."""
    origin = get_origin(tp)
    if value is None:
        return None
    if origin is Annotated:
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return _to_plain(value, args[0])
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return [_to_plain(v, args[0]) for v in value]
        return [_to_plain(v, a) for v, a in zip(value, args)]
    if origin is dict:
        ktp, vtp = get_args(tp)
        if ktp is str:
            return {k: _to_plain(v, vtp) for k, v in value.items()}
        return [[k, _to_plain(value[k], vtp)] for k in sorted(value)]
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        allh = typing.get_type_hints(cls, include_extras=True)
        hints = {f.name: allh[f.name] for f in dataclasses.fields(cls)}
        _HINTS[cls] = hints
    return hints


# ---------------------------------------------------------------------------- codec

def canonical_command(cmd: Any) -> Command:
    """Check a command built in Python like a decoded one and return its canonical form
    (tuples, checked profile). Raises ``BadRequest`` naming the field."""
    cls = type(cmd)
    if COMMANDS.get(getattr(cls, "TYPE", None)) is not cls:
        raise BadRequest(f"not a directory command: {cls.__name__}")
    values = {name: _convert(getattr(cmd, name), tp, name)
              for name, tp in _hints(cls).items()}
    return cls(**values)


def command_to_plain(cmd: Command) -> dict[str, Any]:
    """The wire map of a command: ``{"type", "v", <fields in order>}``."""
    cmd = canonical_command(cmd)
    out: dict[str, Any] = {"type": cmd.TYPE, "v": cmd.VERSION}
    for name, tp in _hints(type(cmd)).items():
        out[name] = _to_plain(getattr(cmd, name), tp)
    return out


def pack_plain(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def encode_command(cmd: Command) -> bytes:
    """msgpack bytes of a command (checked first: a bad command raises ``BadRequest``)."""
    return pack_plain(command_to_plain(cmd))


def decode_command(data: bytes) -> Command:
    """Decode msgpack bytes into a command, strictly. Raises ``BadRequest`` naming the
    field for anything but a well-formed command of a known type and version."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadRequest(f"command: expected bytes, got {type(data).__name__}")
    try:
        obj = loads_msgpack(bytes(data))
    except BadRequest as exc:
        raise BadRequest(f"command: {exc.message}") from None
    if not isinstance(obj, dict):
        raise BadRequest(f"command: expected a map, got {_type_name(obj)}")
    for key in obj:
        if not isinstance(key, str):
            raise BadRequest(f"command: map key {key!r} is not a string")
    tag = obj.get("type")
    if tag is None:
        raise _fail("type", "required field missing")
    if not isinstance(tag, str):
        raise _fail("type", f"expected a string, got {_type_name(tag)}")
    cls = COMMANDS.get(tag)
    if cls is None:
        raise _fail("type", f"unknown command type {tag!r}; expected {', '.join(COMMANDS)}")
    hints = _hints(cls)
    known = list(hints)
    for key in obj:
        if key not in hints and key not in ("type", "v"):
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            raise _fail(key, "unknown key" + (f"; did you mean {close[0]!r}?" if close else ""))
    version = obj.get("v")
    if version is None:
        raise _fail("v", "required field missing")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _fail("v", f"expected an integer, got {_type_name(version)}")
    if version != cls.VERSION:
        raise _fail("v", f"unsupported version {version} of {tag!r}; expected {cls.VERSION}")
    values = {}
    for name, tp in hints.items():
        if name not in obj:
            raise _fail(name, "required field missing")
        values[name] = _convert(obj[name], tp, name)
    return cls(**values)
