"""Loading the daemon's cluster-mode file (wire-types.md §1 "Config files", §2).

Owns: reading ``cluster_mode.yaml`` / ``.json`` strictly (safe YAML loader, duplicate keys
rejected), decoding it into a ``ClusterMode``, running the §2.6 cross-field rules, and
turning every problem into ``ConfigError("FILE: path: problem")``.

YAML is typed as ZLayer reads the same file: serde_yaml 0.9 (YAML 1.2 core schema) under
``ClusterMode``'s internally tagged enum, which makes every plain scalar a null, a bool, an
integer, a float or a string *before* a field sees it (serde's ``ContentDeserializer``), so
an unquoted ``8080`` or ``true`` is not a string there: raftdir refuses it naming the
field, as ZLayer refuses it. ``yes``/``no``/``on``/``off``, ``010``, ``1_000``, ``1:30`` and
dates are strings in YAML 1.2 (PyYAML's YAML 1.1 would make them bools, octal or base-60
integers and dates). Called once at start-up
from any thread. Imports ``raftdir.model``, ``raftdir.codec``, ``raftdir.errors`` only.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from .codec import from_dict, loads_json, to_dict
from .errors import BadRequest, ConfigError
from .model import ClusterMode, SingleNodeMode

__all__ = ["CLUSTER_MODE_FILE", "load_cluster_mode", "parse_cluster_mode", "dump_yaml"]

log = logging.getLogger(__name__)

#: The file the daemon looks for in its data directory.
CLUSTER_MODE_FILE = "cluster_mode.yaml"


_HEX, _OCT, _BIN = (re.compile(r"0x[0-9a-fA-F]+\Z"), re.compile(r"0o[0-7]+\Z"),
                    re.compile(r"0b[01]+\Z"))
_RADIX = ((_HEX, 16), (_OCT, 8), (_BIN, 2))
_DECIMAL = re.compile(r"[0-9]+\Z")
_FLOAT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")
_NOT_A_STRING = re.compile(r"expected (a string|an address string host:port|an endpoint "
                           r"string), got (int|float|bool|null)\Z")
_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"


def _leading_zero_digits(text: str) -> bool:
    """``007``, ``-00``: digits with a leading zero are a string in YAML 1.2."""
    body = text[1:] if text[:1] in ("+", "-") else text
    return len(body) > 1 and body[0] == "0" and _DECIMAL.match(body) is not None


def _yaml12_int(text: str) -> int | None:
    """serde_yaml 0.9's integers: decimal (``+``/``-``, no leading zero), ``0x``/``0o``/``0b``
    (a ``+`` or ``-`` before them), within 128 bits; None when ``text`` is not one."""
    sign, body = (-1, text[1:]) if text[:1] == "-" else (1, text[1:] if text[:1] == "+"
                                                        else text)
    for pattern, radix in _RADIX:
        if pattern.match(body):
            value = sign * int(body[2:], radix)
            break
    else:
        if not _DECIMAL.match(body) or _leading_zero_digits(body):
            return None
        value = sign * int(body)
    return value if -(2**127) <= value < 2**128 else None


def _yaml12_float(text: str) -> float | None:
    """serde_yaml 0.9's floats: the ``.inf``/``.nan`` forms and Rust's finite decimal
    floats (``1.5``, ``.5``, ``1e3``); None when ``text`` is not one."""
    if _leading_zero_digits(text):
        return None
    body = text[1:] if text[:1] == "+" else text
    if body[:1] in ("+", "-") and text[:1] == "+":
        return None
    if body in (".inf", ".Inf", ".INF"):
        return math.inf
    if text in ("-.inf", "-.Inf", "-.INF"):
        return -math.inf
    if text in (".nan", ".NaN", ".NAN"):
        return math.nan
    if not _FLOAT.match(body):
        return None
    value = float(body)
    return value if math.isfinite(value) else None


def _yaml12_tag(text: str) -> str:
    """The tag serde_yaml 0.9 gives a plain scalar (``visit_untagged_scalar``)."""
    if text in ("", "~", "null", "Null", "NULL"):
        return "tag:yaml.org,2002:null"
    if text in ("true", "True", "TRUE", "false", "False", "FALSE"):
        return "tag:yaml.org,2002:bool"
    if _yaml12_int(text) is not None:
        return _INT_TAG
    if _yaml12_float(text) is not None:
        return _FLOAT_TAG
    if text == "<<":
        return "tag:yaml.org,2002:merge"   # kept from PyYAML: merge keys still work
    return "tag:yaml.org,2002:str"


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader with serde_yaml 0.9's typing of plain scalars (what ZLayer reads),
    refusing a key repeated within one mapping."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode and implicit[0]:
            return _yaml12_tag(value)
        return super().resolve(kind, value, implicit)


def _construct_int(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    value = _yaml12_int(node.value)
    if value is None:
        raise BadRequest(f"line {node.start_mark.line + 1}: {node.value!r} is not an integer")
    return value


def _construct_float(loader: _StrictLoader, node: yaml.ScalarNode) -> float:
    value = _yaml12_float(node.value)
    if value is None:
        raise BadRequest(f"line {node.start_mark.line + 1}: {node.value!r} is not a number")
    return value


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False
                       ) -> dict:
    loader.flatten_mapping(node)
    out: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise BadRequest(f"line {key_node.start_mark.line + 1}: a map key must be a "
                             "scalar") from None
        if key in out:
            raise BadRequest(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}",
                             field=str(key))
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                              _construct_mapping)
_StrictLoader.add_constructor(_INT_TAG, _construct_int)
_StrictLoader.add_constructor(_FLOAT_TAG, _construct_float)


_SUFFIXES = (".yaml", ".yml", ".json")


def _check_suffix(suffix: str) -> None:
    if suffix not in _SUFFIXES:
        raise BadRequest(f"unsupported extension {suffix or '(none)'!r}; use .yaml, .yml or "
                         ".json")


def _parse_document(text: str, suffix: str) -> Any:
    _check_suffix(suffix)
    if suffix in (".yaml", ".yml"):
        try:
            return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise BadRequest(f"{where}invalid YAML: {problem}") from None
    return loads_json(text)


def parse_cluster_mode(text: str, suffix: str = ".yaml") -> tuple[ClusterMode, list[str]]:
    """Decode and validate one document; returns the mode and its warnings. Raises
    ``BadRequest("path: problem")``."""
    data = _parse_document(text, suffix)
    if data is None:
        raise BadRequest("the file is empty")
    try:
        mode = from_dict(ClusterMode, data)
    except BadRequest as exc:
        if suffix in (".yaml", ".yml") and _NOT_A_STRING.search(exc.message):
            raise BadRequest(f"{exc.message} (quote it: YAML reads an unquoted number, "
                             "true, false or null as such, and so does ZLayer)",
                             field=exc.field) from None
        raise
    warnings = mode.validate()
    return mode, warnings


def load_cluster_mode(path: str | os.PathLike[str]) -> ClusterMode:
    """Read the cluster mode from ``path``. A missing file means single-node; anything
    unreadable or invalid raises ``ConfigError`` naming the file and the field. Warnings
    (fields of the other worker-tier role, which are ignored) are logged."""
    mode, warnings = _load(Path(path))
    for warning in warnings:
        log.warning("%s: %s", path, warning)
    return mode


def _load(path: Path, *, missing_ok: bool = True) -> tuple[ClusterMode, list[str]]:
    name = str(path)
    try:   # one rule for a name: the extension decides, whether the file exists or not
        _check_suffix(path.suffix.lower())
    except BadRequest as exc:
        raise ConfigError(f"{name}: {exc.message}", file=name) from None
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if not missing_ok:
            raise ConfigError(f"{name}: no such file (a daemon whose data dir has no "
                              "cluster_mode.yaml runs single-node)", file=name) from None
        return SingleNodeMode(), []
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror or exc}", file=name) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                          file=name) from None
    try:
        return parse_cluster_mode(text, path.suffix.lower())
    except BadRequest as exc:
        raise ConfigError(f"{name}: {exc.message}", file=name, field=exc.field) from None


def load_with_warnings(path: str | os.PathLike[str], *, missing_ok: bool = True
                       ) -> tuple[ClusterMode, list[str]]:
    """Like ``load_cluster_mode`` but hands the warnings back instead of logging them.
    ``missing_ok=False``: a missing file is an error (``raftdir config check``)."""
    return _load(Path(path), missing_ok=missing_ok)


class _Dumper(yaml.SafeDumper):
    """Quotes every string that a YAML 1.2 reader (ZLayer's, ours) or a YAML 1.1 one would
    read as something else: ``"1e3"``, ``"0o17"`` and ``"yes"`` alike."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode and implicit[0]:
            tag = _yaml12_tag(value)
            if tag != "tag:yaml.org,2002:str":
                return tag
        return super().resolve(kind, value, implicit)


def dump_yaml(mode: ClusterMode) -> str:
    """The normalised document as YAML, keys in table order; it reads back the same."""
    return yaml.dump(to_dict(mode), Dumper=_Dumper, sort_keys=False,
                     default_flow_style=False)
