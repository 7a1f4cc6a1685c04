"""The one strict codec for raftdir's wire and config types (wire-types.md §1).

Owns: the field kinds (u32, addr, list of ..., tagged unions, ...), the presence rules,
``to_dict`` / ``from_dict`` driven by dataclass fields and their ``wire(...)`` metadata, and
the strict msgpack and JSON byte codecs. Pure functions, callable from any thread.
Imports only ``raftdir.errors``; ``raftdir.model`` declares the types on top of it.

Every decode problem raises ``BadRequest("<path>: <problem>", field=<path>)``; nothing is
silently coerced.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import ipaddress
import json
import math
import re
from dataclasses import MISSING
from typing import Any, Callable, ClassVar, Mapping, Sequence, TypeVar

import msgpack

from .errors import BadRequest

__all__ = [
    "Wire", "wire", "Presence", "Kind",
    "U32", "U64", "I64", "F64", "STR", "NONEMPTY_STR", "BOOL", "SECONDS", "ADDR",
    "SOCKET_ADDR", "IP", "reachable_addr",
    "ENDPOINT", "ANY_MAP", "STR_MAP", "ListOf", "Nested", "EnumOf",
    "to_dict", "from_dict", "to_msgpack", "from_msgpack", "to_json", "from_json",
    "loads_msgpack", "loads_json", "dumps_msgpack", "dumps_json", "type_name",
    "parse_addr", "join_path",
]

T = TypeVar("T")


# ---------------------------------------------------------------------------- paths, errors

def join_path(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _fail(path: str, problem: str) -> BadRequest:
    return BadRequest(f"{path}: {problem}" if path else problem, field=path or None)


def type_name(value: Any) -> str:
    """How a decoded value's type is named in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


# ---------------------------------------------------------------------------- field kinds

class Kind:
    """How one value is checked on decode and written on encode."""

    name = "value"

    def decode(self, value: Any, path: str) -> Any:
        raise NotImplementedError

    def encode(self, value: Any) -> Any:
        return value

    def empty(self, value: Any) -> bool:
        """True when an omitted-when-empty field should be left out."""
        return value is None


class _Int(Kind):
    def __init__(self, name: str, lo: int, hi: int) -> None:
        self.name, self.lo, self.hi = name, lo, hi

    def decode(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, f"expected an integer ({self.name}), got {type_name(value)}")
        if not self.lo <= value <= self.hi:
            raise _fail(path, f"{value} is out of range for {self.name}")
        return value


U32 = _Int("u32", 0, 2**32 - 1)
U64 = _Int("u64", 0, 2**64 - 1)
I64 = _Int("i64", -(2**63), 2**63 - 1)


class _Seconds(_Int):
    def decode(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, f"expected a whole number of seconds, got {type_name(value)}"
                        + (f" {value!r}" if isinstance(value, (str, float)) else ""))
        return super().decode(value, path)


SECONDS = _Seconds("u64", 0, 2**64 - 1)


class _F64(Kind):
    name = "f64"

    def decode(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(path, f"expected a number, got {type_name(value)}")
        try:
            out = float(value)
        except OverflowError:  # an int beyond the float range (JSON allows any digits)
            raise _fail(path, f"{value} is not a finite number") from None
        if not math.isfinite(out):
            raise _fail(path, f"{value!r} is not a finite number")
        return out

    def encode(self, value: Any) -> float:
        return float(value)


F64 = _F64()


class _Str(Kind):
    name = "string"

    def __init__(self, nonempty: bool = False) -> None:
        self.nonempty = nonempty

    def decode(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise _fail(path, f"expected a string, got {type_name(value)}")
        if self.nonempty and not value:
            raise _fail(path, "must not be empty")
        return value


STR = _Str()
NONEMPTY_STR = _Str(nonempty=True)


class _Bool(Kind):
    name = "bool"

    def decode(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise _fail(path, f"expected a bool, got {type_name(value)}")
        return value

    def empty(self, value: Any) -> bool:
        return not value


BOOL = _Bool()

_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")  # \Z: '$' would allow a final "\n"


def parse_addr(text: str, *, port_zero: bool = False) -> tuple[str, int]:
    """Split and check ``host:port`` (wire-types.md §1 *addr*). Returns the host in canonical
    form (IPv6 compressed, lowercase, without brackets) and the port. ``port_zero``: port 0
    is accepted too (Rust's ``SocketAddr`` takes it). Raises ValueError with the problem."""
    if "://" in text:
        raise ValueError("expected host:port, not a URL")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("unterminated '[' in address")
        host, rest = text[1:end], text[end + 1:]
        if not rest.startswith(":"):
            raise ValueError("expected ':port' after ']'")
        port_text = rest[1:]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError("expected host:port")
        if ":" in host:
            raise ValueError("an IPv6 address must be in brackets, as [addr]:port")
        if re.fullmatch(r"[0-9.]+", host):
            try:
                host = str(ipaddress.IPv4Address(host))
            except ValueError:
                raise ValueError(f"{host!r} is not an IPv4 address") from None
        elif len(host) > 253 or not all(_DNS_LABEL.match(p) for p in host.split(".")):
            raise ValueError(f"{host!r} is neither an IP address nor a DNS name")
        else:
            host = host.lower()
    lowest = 0 if port_zero else 1
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or not lowest <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not a number from {lowest} to 65535")
    return host, int(port_text)


def format_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Addr(Kind):
    name = "addr"

    def __init__(self, port_zero: bool = False) -> None:
        self.port_zero = port_zero

    def decode(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise _fail(path, f"expected an address string host:port, got {type_name(value)}")
        try:
            return format_addr(*parse_addr(value, port_zero=self.port_zero))
        except ValueError as exc:
            raise _fail(path, f"{value!r}: {exc}") from None


ADDR = _Addr()
#: An address as Rust's ``SocketAddr`` reads it: port 0 too. ZLayer stores ``0.0.0.0:0``
#: as the API address of a worker that registered over gRPC (no reachable API).
SOCKET_ADDR = _Addr(port_zero=True)


def reachable_addr(addr: str) -> str | None:
    """``addr`` when another node could dial it; None for the unspecified host
    (``0.0.0.0``, ``[::]``), port 0 (ZLayer's ``0.0.0.0:0`` means "no reachable API") or
    anything that is not an address."""
    try:
        host, port = parse_addr(addr, port_zero=True)
    except ValueError:
        return None
    return None if port == 0 or host in ("0.0.0.0", "::") else addr


class _Endpoint(Kind):
    """A control-plane endpoint: ``http://host:port``, ``https://host:port`` or ``host:port``."""

    name = "endpoint"

    def decode(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise _fail(path, f"expected an endpoint string, got {type_name(value)}")
        scheme, sep, rest = value.partition("://")
        if not sep:
            scheme, rest = "", value
        elif scheme not in ("http", "https"):
            raise _fail(path, f"{value!r}: scheme must be http or https")
        try:
            addr = format_addr(*parse_addr(rest.rstrip("/")))
        except ValueError as exc:
            raise _fail(path, f"{value!r}: {exc}") from None
        return f"{scheme}://{addr}" if scheme else addr


ENDPOINT = _Endpoint()


class _Ip(Kind):
    name = "ip"

    def decode(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise _fail(path, f"expected an IP address string, got {type_name(value)}")
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise _fail(path, f"{value!r} is not an IP address (no port, no brackets)") from None


IP = _Ip()


class _AnyMap(Kind):
    """An opaque map (a service ``spec``): must be a map; contents pass through unchanged."""

    name = "map"

    def decode(self, value: Any, path: str) -> dict:
        if not isinstance(value, Mapping):
            raise _fail(path, f"expected a map, got {type_name(value)}")
        return dict(value)


ANY_MAP = _AnyMap()


class _StrMap(Kind):
    name = "map"

    def decode(self, value: Any, path: str) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise _fail(path, f"expected a map of strings, got {type_name(value)}")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _fail(f"{path}[{key!r}]", f"key must be a string, got {type_name(key)}")
            out[key] = STR.decode(item, f'{path}["{key}"]')
        return out

    def encode(self, value: Any) -> dict:
        return dict(value)

    def empty(self, value: Any) -> bool:
        return not value


STR_MAP = _StrMap()


class ListOf(Kind):
    name = "list"

    def __init__(self, item: Kind, *, ascending: bool = False) -> None:
        self.item = item
        self.ascending = ascending

    def decode(self, value: Any, path: str) -> tuple:
        if not isinstance(value, (list, tuple)):
            raise _fail(path, f"expected a list, got {type_name(value)}")
        return tuple(self.item.decode(v, f"{path}[{i}]") for i, v in enumerate(value))

    def encode(self, value: Any) -> list:
        out = [self.item.encode(v) for v in value]
        return sorted(out) if self.ascending else out

    def empty(self, value: Any) -> bool:
        return not value


class EnumOf(Kind):
    def __init__(self, enum_cls: type[enum.Enum]) -> None:
        self.enum_cls = enum_cls

    def decode(self, value: Any, path: str) -> enum.Enum:
        if not isinstance(value, str):
            raise _fail(path, f"expected a string, got {type_name(value)}")
        try:
            return self.enum_cls(value)
        except ValueError:
            allowed = ", ".join(m.value for m in self.enum_cls)
            raise _fail(path, f"unknown variant {value!r}; expected {allowed}") from None

    def encode(self, value: Any) -> str:
        return self.enum_cls(value).value


class Nested(Kind):
    """A value that is itself a wire type (a dataclass, or a tagged union's base)."""

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def decode(self, value: Any, path: str) -> Any:
        return from_dict(self.cls, value, path)

    def encode(self, value: Any) -> dict:
        return to_dict(value)


# ---------------------------------------------------------------------------- presence

class Presence(enum.Enum):
    REQUIRED = "required"              # present and not null; always written
    DEFAULT = "default"                # missing -> default; null is an error; always written
    DEFAULT_OMITTED = "default, omitted"   # ... written only when it differs / is non-empty
    OPTIONAL_OMITTED = "optional, omitted"  # missing or null -> None; written when set
    OPTIONAL_NULL = "optional, null"        # missing or null -> None; always written


def wire(kind: Kind, presence: Presence = Presence.REQUIRED, default: Any = MISSING, *,
         roles: frozenset[str] | None = None, compare: Callable[[Any], Any] | None = None
         ) -> Any:
    """A dataclass field with its wire kind and presence rule. ``default`` may be a value or
    a zero-argument factory for mutable values (``dict``, ``tuple``)."""
    meta = {"kind": kind, "presence": presence, "roles": roles, "compare": compare}
    if presence in (Presence.OPTIONAL_OMITTED, Presence.OPTIONAL_NULL) and default is MISSING:
        default = None
    if default is MISSING:
        return dataclasses.field(metadata=meta)
    if callable(default) and default in (dict, list, tuple):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return MISSING


# ---------------------------------------------------------------------------- the base class

class Wire:
    """Base of every wire and config type. Subclasses are frozen, keyword-only dataclasses
    whose fields carry ``wire(...)`` metadata.

    A tagged union is a ``Wire`` subclass with ``TAG_KEY`` set (``"mode"``, ``"kind"``); each
    variant subclasses it and sets ``TAG``. ``from_dict(Base, data)`` picks the variant.
    ``check(path)`` runs after a successful decode for rules that span fields.

    ``IGNORE_UNKNOWN_KEYS``: an unknown key is an error (with a did-you-mean) unless the
    type sets this, as the records ZLayer's serde reads without ``deny_unknown_fields`` do;
    such a key is then skipped and never written back (wire-types.md §1, raftdir's rule
    per type in ``docs/design.md`` "ZLayer compatibility")."""

    TAG_KEY: ClassVar[str | None] = None
    TAG: ClassVar[str | None] = None
    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = False

    def check(self, path: str) -> None:  # pragma: no cover - default: nothing to check
        return None

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls: type[T], data: Any, path: str = "") -> T:
        return from_dict(cls, data, path)

    @classmethod
    def variants(cls) -> dict[str, type]:
        """The tag -> class table of a tagged union base."""
        table: dict[str, type] = {}
        stack = list(cls.__subclasses__())
        while stack:
            sub = stack.pop(0)
            if sub.TAG is not None:
                table[sub.TAG] = sub
            stack.extend(sub.__subclasses__())
        return table


def _wire_fields(cls: type) -> tuple[dataclasses.Field, ...]:
    cached = cls.__dict__.get("_wire_fields_cache")
    if cached is None:
        cached = tuple(f for f in dataclasses.fields(cls) if "kind" in f.metadata)
        setattr(cls, "_wire_fields_cache", cached)
    return cached


def _suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Decode a plain map into ``cls`` strictly (wire-types.md §1)."""
    if not isinstance(data, Mapping):
        raise _fail(path, f"expected a map, got {type_name(data)}")
    tag_key = cls.TAG_KEY  # type: ignore[attr-defined]
    if tag_key is not None and cls.TAG is None:  # type: ignore[attr-defined]
        variants = cls.variants()  # type: ignore[attr-defined]
        tag_path = join_path(path, tag_key)
        if tag_key not in data or data[tag_key] is None:
            raise _fail(tag_path, "required field missing")
        tag = data[tag_key]
        if not isinstance(tag, str):
            raise _fail(tag_path, f"expected a string, got {type_name(tag)}")
        if tag not in variants:
            raise _fail(tag_path, f"unknown variant {tag!r}; expected {', '.join(variants)}")
        cls = variants[tag]
    fields = _wire_fields(cls)
    known = [f.name for f in fields]
    allowed = set(known) | ({tag_key} if tag_key else set())
    refuse_unknown = not cls.IGNORE_UNKNOWN_KEYS  # type: ignore[attr-defined]
    for key in data:
        if not isinstance(key, str):
            raise _fail(path, f"map key {key!r} is not a string")
        if key not in allowed and refuse_unknown:
            raise _fail(join_path(path, key), "unknown key" + _suggest(key, known))
    if tag_key is not None and data.get(tag_key) != cls.TAG:  # type: ignore[attr-defined]
        raise _fail(join_path(path, tag_key), f"expected {cls.TAG!r}")  # type: ignore[attr-defined]
    values: dict[str, Any] = {}
    for f in fields:
        kind: Kind = f.metadata["kind"]
        presence: Presence = f.metadata["presence"]
        fpath = join_path(path, f.name)
        raw = data.get(f.name, MISSING)
        if raw is None and presence in (Presence.OPTIONAL_OMITTED, Presence.OPTIONAL_NULL):
            raw = MISSING
        if raw is MISSING:
            if presence is Presence.REQUIRED:
                raise _fail(fpath, "required field missing")
            continue  # the dataclass default applies
        if raw is None:
            raise _fail(fpath, "must not be null")
        values[f.name] = kind.decode(raw, fpath)
    obj = cls(**values)
    obj.check(path)  # type: ignore[attr-defined]
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """Encode a wire object as a plain map, keys in table order, presence rules applied."""
    cls = type(obj)
    out: dict[str, Any] = {}
    if cls.TAG is not None:
        out[cls.TAG_KEY] = cls.TAG
    for f in _wire_fields(cls):
        kind: Kind = f.metadata["kind"]
        presence: Presence = f.metadata["presence"]
        value = getattr(obj, f.name)
        if presence is Presence.OPTIONAL_NULL:
            out[f.name] = None if value is None else kind.encode(value)
            continue
        if value is None:
            if presence is Presence.OPTIONAL_OMITTED:
                continue
            raise BadRequest(f"{cls.__name__}.{f.name}: is None but the field is "
                             f"{presence.value}", field=f.name)
        if presence is Presence.DEFAULT_OMITTED:
            default = _field_default(f)
            compare = f.metadata["compare"] or (lambda v: v)
            if kind.empty(value) or compare(value) == compare(default):
                continue
        out[f.name] = kind.encode(value)
    return out


# ---------------------------------------------------------------------------- bytes

def _no_duplicates(pairs: list[tuple[Any, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise BadRequest(f"duplicate key {key!r} in one map")
        out[key] = value
    return out


def _no_ext(code: int, data: bytes) -> Any:
    raise BadRequest(f"msgpack ext type {code} is not allowed")


def _no_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not allowed in JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf without passing parse_constant
        raise BadRequest(f"{text} is not a finite number (Infinity is not allowed in JSON)")
    return value


def _no_timestamp(value: Any) -> None:
    # msgpack decodes ext type -1 (timestamp) itself, without calling ext_hook.
    if isinstance(value, msgpack.Timestamp):
        raise BadRequest("msgpack ext type -1 is not allowed")


def _msgpack_pairs(pairs: list[tuple[Any, Any]]) -> dict:
    for _key, value in pairs:
        _no_timestamp(value)
    return _no_duplicates(pairs)


def _msgpack_list(items: list) -> list:
    for value in items:
        _no_timestamp(value)
    return items


# -- locating a problem: the second pass ----------------------------------------------
# The strict hooks above raise at the first bad value, but a hook does not know where in
# the document it is. When one of them refused, the document is decoded once more with
# hooks that return a ``_Bad`` marker instead, and every enclosing map or list wraps the
# marker in its own key or index, so the error names the key's full path
# (``resources.cpu_used``, ``spec.x[1]``). Only a refused document pays for it.

class _Bad:
    __slots__ = ("problem", "steps")

    def __init__(self, problem: str, steps: tuple = ()) -> None:
        self.problem, self.steps = problem, steps

    def under(self, step: Any) -> "_Bad":
        return _Bad(self.problem, (step,) + self.steps)

    def error(self) -> BadRequest:
        path = ""
        for step in self.steps:
            if isinstance(step, int):
                path += f"[{step}]"
            elif isinstance(step, str) and _IDENTIFIER.fullmatch(step):
                path = join_path(path, step)
            else:
                path += f"[{json.dumps(step, ensure_ascii=False) if isinstance(step, str) else repr(step)}]"
        return _fail(path, self.problem)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _bad_scalar(value: Any) -> "_Bad | None":
    if isinstance(value, _Bad):
        return value
    if isinstance(value, msgpack.Timestamp):
        return _Bad("msgpack ext type -1 is not allowed")
    return None


def _located_pairs(pairs: list[tuple[Any, Any]]) -> Any:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            return _Bad("duplicate key in one map", (key,))
        bad = _bad_scalar(value) or (_bad_in_list(value) if type(value) is list else None)
        if bad is not None:
            return bad.under(key)
        out[key] = value
    return out


def _bad_in_list(items: list) -> "_Bad | None":
    """The first marker in a list JSON built (JSON has no list hook): maps inside it went
    through ``_located_pairs`` already, nested lists did not."""
    for i, value in enumerate(items):
        bad = _bad_scalar(value) or (_bad_in_list(value) if type(value) is list else None)
        if bad is not None:
            return bad.under(i)
    return None


def _located_list(items: list) -> Any:
    for i, value in enumerate(items):
        bad = _bad_scalar(value)
        if bad is not None:
            return bad.under(i)
    return items


def _located_int(text: str) -> Any:
    try:
        return int(text)
    except ValueError:  # beyond sys.get_int_max_str_digits()
        return _Bad(f"an integer of {len(text.lstrip('-'))} digits is too large")


def _located_float(text: str) -> Any:
    value = float(text)
    if not math.isfinite(value):
        return _Bad(f"{text} is not a finite number (Infinity is not allowed in JSON)")
    return value


def _locate(decode: Callable[[], Any]) -> BadRequest | None:
    """The refusal of the second pass, naming its path; None if it finds nothing."""
    try:
        out = decode()
        bad = _bad_scalar(out) or (_bad_in_list(out) if type(out) is list else None)
    except Exception:  # noqa: BLE001 - a syntax error: the first pass's message stands
        return None
    return bad.error() if bad is not None else None


def loads_msgpack(data: bytes) -> Any:
    """Strict msgpack: str keys, str as str, no ext types, no duplicate keys, one object.
    A refused value is named by its key's path."""
    try:
        out = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_no_ext,
                              object_pairs_hook=_msgpack_pairs, list_hook=_msgpack_list,
                              use_list=True)
        _no_timestamp(out)
        return out
    except BadRequest as err:
        raise _locate(lambda: msgpack.unpackb(
            data, raw=False, strict_map_key=True, ext_hook=lambda code, _: _Bad(
                f"msgpack ext type {code} is not allowed"),
            object_pairs_hook=_located_pairs, list_hook=_located_list, use_list=True)
        ) or err from None
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise BadRequest(f"malformed msgpack: {str(exc) or type(exc).__name__}") from None


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def loads_json(data: bytes | str) -> Any:
    """Strict JSON: UTF-8, no NaN or Infinity, no duplicate keys. A refused value (NaN, an
    integer too long to read, a repeated key) is named by its key's path."""
    try:
        if isinstance(data, (bytes, bytearray)):
            text = data.decode("utf-8")
        else:
            text = data
            text.encode("utf-8")  # a str holding a lone surrogate is not UTF-8 text
    except UnicodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    try:
        out = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                         parse_float=_finite_float)
        if _SURROGATE_ESCAPE.search(text):
            # "\ud800" without its pair decodes to a str that no encoder can write back.
            json.dumps(out, ensure_ascii=False).encode("utf-8")
        return out
    except BadRequest as err:
        raise _locate(lambda: _json_second_pass(text)) or err from None
    except (ValueError, UnicodeError, RecursionError) as exc:
        located = _locate(lambda: _json_second_pass(text)) \
            if not isinstance(exc, RecursionError) else None
        raise located or BadRequest(f"malformed JSON: {exc}") from None


def _json_second_pass(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_located_pairs,
                      parse_constant=lambda name: _Bad(f"{name} is not allowed in JSON"),
                      parse_float=_located_float, parse_int=_located_int)


def dumps_msgpack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def dumps_json(value: Any, *, indent: int | None = None) -> bytes:
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False, indent=indent,
                          separators=None if indent else (",", ":")).encode("utf-8")
    except ValueError as exc:
        raise BadRequest(f"cannot encode as JSON: {exc}") from None


def to_msgpack(obj: Any) -> bytes:
    return dumps_msgpack(to_dict(obj))


def from_msgpack(cls: type[T], data: bytes) -> T:
    return from_dict(cls, loads_msgpack(data))


def to_json(obj: Any, *, indent: int | None = None) -> bytes:
    return dumps_json(to_dict(obj), indent=indent)


def from_json(cls: type[T], data: bytes | str) -> T:
    return from_dict(cls, loads_json(data))
