"""The compiled command codec names the exact path of a nested problem, alike for a command
built in Python (``canonical_command``, ``encode_command``) and for one decoded from bytes.

The converters give container items a blank path and format the paths only when an item
fails; these cases pin the messages of nested failures (figures from the first, walking
codec)."""

from __future__ import annotations

import enum
from typing import Any

import msgpack
import pytest

from raftdir.core import (
    MarkDown, RegisterNode, RenewCheckpoint, SetPlacement, canonical_command, decode_command,
    encode_command,
)
from raftdir.core.commands import U32, _compile
from raftdir.errors import BadRequest

SP: dict[str, Any] = dict(service="s", replicas=1, groups={"a": (0,)},
                          placement={5: {"a": (0,)}})
PROFILE = {"api_addr": "1.2.3.4:5", "os": "linux", "arch": "x86_64"}

CASES = [
    (RenewCheckpoint(term=1, entries=((1, 2), (3, -1))),
     "entries[1][1]", "-1 is out of range for u64"),
    (RenewCheckpoint(term=1, entries=((1, 2), (3,))),
     "entries[1]", "expected a list of 2 items, got 1"),
    (RenewCheckpoint(term=1, entries=((1, 2), 3)), "entries[1]", "expected a list, got int"),
    (MarkDown(term=1, node_ids=(1, True)), "node_ids[1]", "expected an integer (u64), got bool"),
    (SetPlacement(**dict(SP, placement={5: {"a": (0, 2**32)}})),
     'placement[5]["a"][1]', "4294967296 is out of range for u32"),
    (SetPlacement(**dict(SP, groups={1: (0,)})), "groups", "map key 1 is not a string"),
    (SetPlacement(**dict(SP, groups={"a": (0, "1")})),
     'groups["a"][1]', "expected an integer (u32), got string"),
    (SetPlacement(**dict(SP, placement=[[5, {"a": [0]}], [5, {}]])),
     "placement[5]", "duplicate key"),
    (SetPlacement(**dict(SP, placement=[[5, {"a": [0]}], [6]])),
     "placement[1]", "expected a [key, value] pair"),
    (SetPlacement(**dict(SP, placement={"5": {}})),
     'placement["5"]', "expected an integer (u64), got string"),
    (SetPlacement(**dict(SP, placement={5: {7: (0,)}})), "placement[5]",
     "map key 7 is not a string"),
    (SetPlacement(**dict(SP, spec={"x": [1, {"y": float("inf")}]})),
     'spec["x"][1]["y"]', "inf is not a finite number"),
    (RegisterNode(profile=dict(PROFILE, labels={"a": 1}), ttl_secs=1, grace_secs=1,
                  secret_hash="ab"),
     'profile.labels["a"]', "expected a string, got int"),
]


def _wire(cmd: Any) -> dict[str, Any]:
    """The wire map of a (possibly bad) command, written without checking it."""
    out: dict[str, Any] = {"type": cmd.TYPE, "v": cmd.VERSION}
    for name, value in vars(cmd).items():
        if isinstance(value, dict) and name == "placement":
            value = [[k, v] for k, v in value.items()]
        out[name] = value
    return out


@pytest.mark.parametrize("cmd, field, problem", CASES, ids=[c[1] for c in CASES])
def test_nested_problems_name_their_path(cmd: Any, field: str, problem: str) -> None:
    raw = msgpack.packb(_wire(cmd), use_bin_type=True)
    attempts = [lambda: canonical_command(cmd), lambda: encode_command(cmd)]
    if "map key" not in problem:  # msgpack itself refuses a non-string map key
        attempts.append(lambda: decode_command(raw))
    for attempt in attempts:
        with pytest.raises(BadRequest) as err:
            attempt()
        assert (err.value.message, err.value.field) == (f"{field}: {problem}", field)


class _Id(enum.IntEnum):
    A = 7


def test_int_subclasses_pass_as_before_and_bools_do_not() -> None:
    cmd = canonical_command(MarkDown(term=1, node_ids=[_Id.A, 8]))
    assert cmd.node_ids == (7, 8) and type(cmd.node_ids[0]) is _Id
    assert encode_command(MarkDown(term=1, node_ids=(_Id.A, 8))) == \
        encode_command(MarkDown(term=1, node_ids=(7, 8)))


def test_generic_kinds_compile() -> None:
    """Kinds no command uses today still compile and check: a mixed fixed tuple, a bool,
    a sequence of strings, a map of maps."""
    pair = _compile(tuple[str, U32], wire=False)
    assert pair(["a", 1], "p") == ("a", 1)
    assert _compile(tuple[str, U32], wire=True)(("a", 1), "p") == ["a", 1]
    with pytest.raises(BadRequest, match=r"^p\[1\]: expected an integer \(u32\), got string$"):
        pair(["a", "b"], "p")
    with pytest.raises(BadRequest, match=r"^p: expected a list of 2 items, got 1$"):
        pair(["a"], "p")
    flag = _compile(bool, wire=False)
    assert flag(True, "f") is True
    with pytest.raises(BadRequest, match=r"^f: expected a bool, got int$"):
        flag(1, "f")
    names = _compile(tuple[str, ...], wire=True)
    assert names(("a", "b"), "n") == ["a", "b"]
    with pytest.raises(BadRequest, match=r"^n\[2\]: expected a string, got null$"):
        names(("a", "b", None), "n")
    nested = _compile(dict[str, dict[str, U32]], wire=False)
    assert nested({"a": {"b": 1}}, "m") == {"a": {"b": 1}}
    with pytest.raises(BadRequest, match=r'^m\["a"\]\["c"\]: -1 is out of range for u32$'):
        nested({"a": {"b": 1, "c": -1}}, "m")
