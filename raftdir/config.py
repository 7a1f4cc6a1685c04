"""Loading the daemon's cluster-mode file (wire-types.md §1 "Config files", §2).

Owns: reading ``cluster_mode.yaml`` / ``.json`` strictly (safe YAML loader, duplicate keys
rejected), decoding it into a ``ClusterMode``, running the §2.6 cross-field rules, and
turning every problem into ``ConfigError("FILE: path: problem")``. Called once at start-up
from any thread. Imports ``raftdir.model``, ``raftdir.codec``, ``raftdir.errors`` only.
"""

from __future__ import annotations

import logging
import os
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


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key repeated within one mapping."""


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


def _parse_document(text: str, suffix: str) -> Any:
    if suffix in (".yaml", ".yml"):
        try:
            return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise BadRequest(f"{where}invalid YAML: {problem}") from None
    if suffix == ".json":
        return loads_json(text)
    raise BadRequest(f"unsupported extension {suffix or '(none)'!r}; use .yaml, .yml or .json")


def parse_cluster_mode(text: str, suffix: str = ".yaml") -> tuple[ClusterMode, list[str]]:
    """Decode and validate one document; returns the mode and its warnings. Raises
    ``BadRequest("path: problem")``."""
    data = _parse_document(text, suffix)
    if data is None:
        raise BadRequest("the file is empty")
    mode = from_dict(ClusterMode, data)
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


def _load(path: Path) -> tuple[ClusterMode, list[str]]:
    name = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
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


def load_with_warnings(path: str | os.PathLike[str]) -> tuple[ClusterMode, list[str]]:
    """Like ``load_cluster_mode`` but hands the warnings back instead of logging them."""
    return _load(Path(path))


def dump_yaml(mode: ClusterMode) -> str:
    """The normalised document as YAML, keys in table order."""
    return yaml.safe_dump(to_dict(mode), sort_keys=False, default_flow_style=False)
