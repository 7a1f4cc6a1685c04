"""The commands of the directory state machine: data, one registry, one strict codec.

Owns: every command class (a frozen, keyword-only dataclass with a ``TYPE`` tag and a format
``VERSION``), the registry ``COMMANDS`` (tag -> class), ``encode_command`` /
``decode_command`` (msgpack) and ``canonical_command`` (the same checks for a command built
in Python). The codec is written once, driven by the dataclass field annotations; no command
has code of its own here: each class's annotations are compiled once, at import, into one
converter per field, so a command is checked without ``typing`` introspection, and encoded
in one pass.

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
from typing import Annotated, Any, Callable, ClassVar, Union, get_args, get_origin

import msgpack

from raftdir.codec import _fail, loads_msgpack, type_name as _type_name
from raftdir.errors import BadRequest

__all__ = [
    "Command", "Bootstrap", "RegisterNode", "RenewCheckpoint", "MarkDown", "MarkReady",
    "Drain", "Undrain", "Deregister", "SetPlacement", "Barrier", "Compact", "UpdateProfile",
    "CreateAccessToken", "RevokeAccessToken", "COMMANDS", "LEADER_COMMANDS", "encode_command", "decode_command", "canonical_command",
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
    #: Older versions still decoded (read as this version: their content is a subset).
    OLDER_VERSIONS: ClassVar[tuple[int, ...]] = ()
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
    #: 2: the profile is read as ZLayer writes it: any ``os`` and ``arch`` string, and an
    #: ``api_addr`` with port 0 (``0.0.0.0:0``: no reachable API). Version 1 refused those
    #: values; a v1 command is a v2 one with narrower values, so it is still read.
    VERSION: ClassVar[int] = 2
    OLDER_VERSIONS: ClassVar[tuple[int, ...]] = (1,)
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
class Undrain(Command):
    """Undo a drain: the node takes new placement again; emits one ``undrain`` event for
    it (a node that was not draining: nothing)."""

    TYPE: ClassVar[str] = "undrain"
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


@dataclass(frozen=True, kw_only=True)
class UpdateProfile(Command):
    """A registered node's new profile (a worker restarted with another address, labels,
    OS, architecture or resources): every profile field is replaced; kind, state, lease,
    secret and placement stay. ``unknown_node`` for an id that is not registered. Emits no
    event: the leader re-checks placement constraints afterwards and moves what no longer
    fits with ``set_placement``."""

    TYPE: ClassVar[str] = "update_profile"
    node_id: U64
    profile: ProfileMap


@dataclass(frozen=True, kw_only=True)
class CreateAccessToken(Command):
    """Keep a new scoped access token (``raftdir token create --scope``): its id, name,
    scope (``read``, ``operate`` or ``admin``), the SHA-256 of the token (never the token
    itself: it is shown once, to its creator), its expiry (Unix ms) and who created it
    (the creator's own credential, as text). Created at the command's time. An id that is
    taken is ``conflict``; tokens expired or revoked more than ``TOKEN_RETENTION_MS`` ago
    are dropped first; more than ``MAX_ACCESS_TOKENS`` kept is ``conflict``."""

    TYPE: ClassVar[str] = "create_access_token"
    token_id: str
    name: str = ""
    scope: str
    token_hash: str
    expires_ms: U64
    creator: str


@dataclass(frozen=True, kw_only=True)
class RevokeAccessToken(Command):
    """Revoke an access token at the command's time (``raftdir token revoke``): every
    server refuses it once it applied this. ``unknown_token`` for an id not kept; a token
    revoked already stays revoked when it was (``revoked: false``)."""

    TYPE: ClassVar[str] = "revoke_access_token"
    token_id: str


#: The one registry: type tag -> command class.
COMMANDS: dict[str, type[Command]] = {
    cls.TYPE: cls for cls in (Bootstrap, RegisterNode, RenewCheckpoint, MarkDown, MarkReady,
                              Drain, Undrain, Deregister, SetPlacement, Barrier, Compact,
                              UpdateProfile, CreateAccessToken, RevokeAccessToken)
}
LEADER_COMMANDS = frozenset(cls for cls in COMMANDS.values() if cls.LEADER)


# ---------------------------------------------------------------------------- value checks

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
    # A command is raftdir's own replicated format: every key must be understood, even
    # where the wire record skips keys it does not know (as ZLayer's serde does).
    if isinstance(value, dict):
        known = WorkerProfile.__dataclass_fields__
        for key in value:
            if isinstance(key, str) and key not in known:
                raise _fail(f"{path}.{key}", "unknown key")
    return WorkerProfile.from_dict(value, path).to_dict()


# ---------------------------------------------------------------------------- converters
#
# A converter ``conv(value, path)`` checks one value against one field annotation and
# returns its canonical Python form (sequences as tuples, int-keyed maps as dicts) or its
# wire form (sequences as lists, int-keyed maps as ``[key, value]`` pairs ascending by key).
# It accepts both the wire form and the Python form and raises ``BadRequest("<path>: ...")``.
# ``_compile`` builds them once per field from the annotation, so no ``typing``
# introspection happens per command. Containers give their items a blank path and, only if
# one fails, convert them again with their paths (converters are pure, so the same item
# fails the same way): paths are formatted only to report an error.

Converter = Callable[[Any, str], Any]


def _opaque(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise _fail(path, f"expected a map, got {_type_name(value)}")
    return _check_opaque(value, path)


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"expected a string, got {_type_name(value)}")
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, f"expected a bool, got {_type_name(value)}")
    return value


def _int_of(tag: str) -> Converter:
    lo, hi = _RANGES[tag]

    def conv(value: Any, path: str) -> int:
        if type(value) is int and lo <= value <= hi:
            return value
        return _check_int(value, tag, path)  # an int subclass, or the error

    return conv


def _optional(item: Converter) -> Converter:
    def conv(value: Any, path: str) -> Any:
        return None if value is None else item(value, path)

    return conv


def _int_sequence(tag: str, n: int | None, wire: bool) -> Converter:
    """A list of integers of one range: any length (``n`` None) or exactly ``n``."""
    lo, hi = _RANGES[tag]

    def conv(value: Any, path: str) -> Any:
        if not isinstance(value, (list, tuple)):
            raise _fail(path, f"expected a list, got {_type_name(value)}")
        if n is not None and len(value) != n:
            raise _fail(path, f"expected a list of {n} items, got {len(value)}")
        for v in value:
            if type(v) is not int or not lo <= v <= hi:
                for i, w in enumerate(value):  # raises unless all are int subclasses in range
                    _check_int(w, tag, f"{path}[{i}]")
                break
        return list(value) if wire else tuple(value)

    return conv


def _sequence_of(item: Converter, wire: bool) -> Converter:
    def conv(value: Any, path: str) -> Any:
        if not isinstance(value, (list, tuple)):
            raise _fail(path, f"expected a list, got {_type_name(value)}")
        out = []
        try:
            for v in value:
                out.append(item(v, ""))
        except BadRequest:  # again with the items' paths, to raise the exact error
            out = [item(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return out if wire else tuple(out)

    return conv


def _fixed_sequence(items: list[Converter], wire: bool) -> Converter:
    n = len(items)

    def conv(value: Any, path: str) -> Any:
        if not isinstance(value, (list, tuple)):
            raise _fail(path, f"expected a list, got {_type_name(value)}")
        if len(value) != n:
            raise _fail(path, f"expected a list of {n} items, got {len(value)}")
        try:
            out = [c(v, "") for c, v in zip(items, value)]
        except BadRequest:  # again with the items' paths, to raise the exact error
            out = [c(v, f"{path}[{i}]") for i, (c, v) in enumerate(zip(items, value))]
        return out if wire else tuple(out)

    return conv


def _str_map(item: Converter) -> Converter:
    def convert(value: Any, path: str, paths: bool) -> dict:
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _fail(path, f"map key {k!r} is not a string")
            out[k] = item(v, f'{path}["{k}"]' if paths else "")
        return out

    def conv(value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            raise _fail(path, f"expected a map, got {_type_name(value)}")
        try:
            return convert(value, path, False)
        except BadRequest:  # again with the items' paths, to raise the exact error
            return convert(value, path, True)

    return conv


def _int_map(key: Converter, item: Converter, wire: bool) -> Converter:
    """Integer keys: a dict (Python) or a list of ``[key, value]`` pairs (wire)."""

    def convert(pairs: Any, path: str, paths: bool) -> dict:
        out = {}
        for k, v in pairs:
            if paths:
                kk = key(k, f'{path}["{k}"]' if isinstance(k, str) else f"{path}[{k}]")
            else:
                kk = key(k, "")
            if kk in out:
                raise _fail(f"{path}[{kk}]", "duplicate key")
            out[kk] = item(v, f"{path}[{kk}]" if paths else "")
        return out

    def conv(value: Any, path: str) -> Any:
        if isinstance(value, dict):
            pairs: Any = value.items()
        elif isinstance(value, (list, tuple)):
            pairs = value
            for i, pair in enumerate(value):
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise _fail(f"{path}[{i}]", "expected a [key, value] pair")
        else:
            raise _fail(path, f"expected a list of [key, value] pairs, got {_type_name(value)}")
        try:
            out = convert(pairs, path, False)
        except BadRequest:  # again with the items' paths, to raise the exact error
            out = convert(pairs, path, True)
        return [[k, out[k]] for k in sorted(out)] if wire else out

    return conv


def _int_tag(tp: Any) -> str | None:
    """``"u32"`` or ``"u64"`` for an integer annotation, else None."""
    if tp is int:
        return "u64"
    if get_origin(tp) is Annotated and get_args(tp)[1] in _RANGES:
        return get_args(tp)[1]
    return None


def _compile(tp: Any, wire: bool) -> Converter:
    """The converter of annotation ``tp``: to the wire form if ``wire``, else canonical."""
    origin = get_origin(tp)
    tag = _int_tag(tp)
    if tag is not None:
        return _int_of(tag)
    if origin is Annotated:
        tag = get_args(tp)[1]
        if tag == "opaque":
            return _opaque
        if tag == "profile":
            return _check_profile
        raise TypeError(f"unknown annotation {tag!r}")  # pragma: no cover - a coding error
    if tp is str:
        return _str
    if tp is bool:
        return _bool
    if origin in (Union, types.UnionType):
        return _optional(_compile([a for a in get_args(tp) if a is not type(None)][0], wire))
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            tag = _int_tag(args[0])
            if tag is not None:
                return _int_sequence(tag, None, wire)
            return _sequence_of(_compile(args[0], wire), wire)
        tags = {_int_tag(a) for a in args}
        if len(tags) == 1 and None not in tags:
            return _int_sequence(tags.pop(), len(args), wire)
        return _fixed_sequence([_compile(a, wire) for a in args], wire)
    if origin is dict:
        ktp, vtp = get_args(tp)
        if ktp is str:
            return _str_map(_compile(vtp, wire))
        return _int_map(_compile(ktp, wire), _compile(vtp, wire), wire)
    raise TypeError(f"unsupported annotation {tp!r}")  # pragma: no cover - a coding error


class _Codec:
    """The compiled codec of one command class: its fields in declaration order, each with
    a converter to the canonical form (``canonical``) and one to the wire form (``wire``).

    A command is built without calling its ``__init__``: ``object.__new__`` and then every
    field set in declaration order in its ``__dict__``. The ``__init__`` of a frozen
    dataclass does only that (with ``object.__setattr__``), so it is the same object, built
    in a fraction of the time; hence no ``__post_init__`` and no slots."""

    __slots__ = ("cls", "names", "keys", "canonical", "wire")

    def __init__(self, cls: type) -> None:
        if hasattr(cls, "__post_init__") or "__slots__" in vars(cls):  # pragma: no cover
            raise TypeError(f"{cls.__name__}: a command must be a plain frozen dataclass")
        hints = typing.get_type_hints(cls, include_extras=True)
        self.cls = cls
        self.names = [f.name for f in dataclasses.fields(cls)]
        self.keys = frozenset(self.names) | {"type", "v"}
        self.canonical = tuple((n, _compile(hints[n], wire=False)) for n in self.names)
        self.wire = tuple((n, _compile(hints[n], wire=True)) for n in self.names)


_CODECS: dict[type, _Codec] = {cls: _Codec(cls) for cls in COMMANDS.values()}


def _codec_for(cls: type) -> _Codec:
    codec = _CODECS.get(cls)
    if codec is None:  # a class registered after import
        codec = _CODECS[cls] = _Codec(cls)
    return codec


def _codec_of(cmd: Any) -> _Codec:
    """The codec of a command built in Python; ``BadRequest`` for anything else."""
    cls = type(cmd)
    if COMMANDS.get(getattr(cls, "TYPE", None)) is not cls:
        raise BadRequest(f"not a directory command: {cls.__name__}")
    return _CODECS.get(cls) or _codec_for(cls)


# ---------------------------------------------------------------------------- codec

def canonical_command(cmd: Any) -> Command:
    """Check a command built in Python like a decoded one and return its canonical form
    (tuples, checked profile). Raises ``BadRequest`` naming the field."""
    codec = _codec_of(cmd)
    out = object.__new__(codec.cls)  # filled field by field: see _Codec
    fields = out.__dict__
    for name, conv in codec.canonical:
        fields[name] = conv(getattr(cmd, name), name)
    return out


def command_to_plain(cmd: Command) -> dict[str, Any]:
    """The wire map of a command: ``{"type", "v", <fields in order>}``; checked in the same
    pass (a bad command raises ``BadRequest`` like ``canonical_command``)."""
    codec = _codec_of(cmd)
    out: dict[str, Any] = {"type": codec.cls.TYPE, "v": codec.cls.VERSION}
    for name, conv in codec.wire:
        out[name] = conv(getattr(cmd, name), name)
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
    # known keys only, and a known type and version: the header checks cannot fail
    tag, version = obj.get("type"), obj.get("v")
    codec = _CODECS.get(COMMANDS.get(tag)) if type(tag) is str else None
    if (codec is None or type(version) is not int or version != codec.cls.VERSION
            or not obj.keys() <= codec.keys):
        codec = _check_header(obj)
    cmd = object.__new__(codec.cls)  # filled field by field: see _Codec
    fields = cmd.__dict__
    for name, conv in codec.canonical:
        try:
            value = obj[name]
        except KeyError:
            raise _fail(name, "required field missing") from None
        fields[name] = conv(value, name)
    return cmd


def _check_header(obj: dict) -> _Codec:
    """The checks of a command map's keys, type and version, in order: raises the first
    problem, or returns the codec of its class."""
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
    codec = _codec_for(cls)
    for key in obj:
        if key not in codec.keys:
            close = difflib.get_close_matches(key, codec.names, n=1, cutoff=0.6)
            raise _fail(key, "unknown key" + (f"; did you mean {close[0]!r}?" if close else ""))
    version = obj.get("v")
    if version is None:
        raise _fail("v", "required field missing")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _fail("v", f"expected an integer, got {_type_name(version)}")
    if version != cls.VERSION and version not in cls.OLDER_VERSIONS:
        raise _fail("v", f"unsupported version {version} of {tag!r}; expected {cls.VERSION}")
    return codec
