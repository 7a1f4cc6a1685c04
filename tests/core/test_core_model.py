"""Random command sequences: the core against the simple reference model.

After every step: the results agree (ok, value, code, revision), the queries agree, the
invariants of ``core_invariants`` hold (gap-free log, placement sums, snapshot round trip,
...), a refused command left the state exactly as it was, a successful placement put no
share on a node that is not ready, the clock never went backwards, and the command's bytes
decode back to the same command.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from raftdir.core import (
    Barrier, Bootstrap, Compact, CreateAccessToken, Deregister, Directory, Drain, MarkDown,
    MarkReady, RegisterNode, RenewCheckpoint, RevokeAccessToken, SetPlacement, Undrain,
    UpdateProfile, canonical_command, decode_command, encode_command,
)
from raftdir.errors import BadRequest

from core_invariants import check_invariants
from core_reference import Reference

EXTRA_IDS = [1, 2, 999_999, 1_000_000, 1_000_001, 1_000_002, 1_000_007, 4242]
PROFILES = [
    {"api_addr": "10.0.0.1:3669", "os": "linux", "arch": "x86_64"},
    {"api_addr": "10.0.0.2:3669", "os": "windows", "arch": "aarch64",
     "labels": {"zone": "eu-1a", "gpu": "a100"}, "cpu_total": 8,
     "memory_total_bytes": 2**34},
    # the same labels in another order: no change for update_profile
    {"api_addr": "10.0.0.2:3669", "os": "windows", "arch": "aarch64",
     "labels": {"gpu": "a100", "zone": "eu-1a"}, "cpu_total": 8,
     "memory_total_bytes": 2**34},
    {"api_addr": "[fd00::3]:3669", "os": "macos", "arch": "x86_64", "labels": {}},
    {"api_addr": "10.0.0.4:3669", "os": "plan9", "arch": "x86_64"},  # refused: bad os
]
SPECS = [None, None, {"image": "a"}, {"image": "b", "env": {"X": "1"}, "ports": [80, 443]}]
ROLES = ["default", "primary", "replica"]


def node_pool(d: Directory) -> list[int]:
    return sorted(set(d.state.nodes) | set(EXTRA_IDS))


@st.composite
def commands(draw: Any, d: Directory) -> Any:
    common = {"request_id": draw(st.sampled_from([None, None, None, "r1", "r2", "r3"])),
              "ts_ms": draw(st.integers(0, 50_000))}
    term = draw(st.integers(max(0, d.max_term - 1), d.max_term + 1))
    ids = node_pool(d)
    any_id = st.sampled_from(ids)
    kind = draw(st.sampled_from(
        ["register"] * 5 + ["place"] * 6 + ["renew", "down", "down", "ready", "ready",
                                            "drain", "undrain", "deregister", "barrier",
                                            "compact", "compact", "bootstrap", "profile",
                                            "profile", "mktoken", "mktoken", "revoke"]))
    token_ids = st.sampled_from(["00000000000000a1", "00000000000000a2", "00000000000000a3",
                                 "00000000000000a4", "nope"])
    if kind == "mktoken":
        # times in days, so that tokens outlive the 7 days they are kept after they end;
        # one field in four is wrong
        ts = draw(st.integers(0, 30)) * 86_400_000
        return CreateAccessToken(
            token_id=draw(token_ids), name=draw(st.sampled_from(["", "ci", "ci", "a b"])),
            scope=draw(st.sampled_from(["read", "operate", "admin", "root"])),
            token_hash=draw(st.sampled_from(["ab" * 32] * 3 + ["xyz"])),
            expires_ms=max(0, ts + draw(st.integers(-1, 20)) * 86_400_000),
            creator=draw(st.sampled_from(["admin-token", "token 00000000000000a1", ""])),
            request_id=common["request_id"], ts_ms=ts)
    if kind == "revoke":
        return RevokeAccessToken(token_id=draw(token_ids), request_id=common["request_id"],
                                 ts_ms=draw(st.integers(0, 30)) * 86_400_000)
    if kind == "bootstrap":
        return Bootstrap(cluster_id=draw(st.sampled_from(["c1", "c1", "c2", ""])), **common)
    if kind == "register":
        return RegisterNode(
            desired_node_id=draw(st.one_of(st.none(), any_id)),
            kind=draw(st.sampled_from(["worker", "worker", "worker", "server"])),
            profile=draw(st.sampled_from(PROFILES)),
            ttl_secs=draw(st.integers(1, 600)), grace_secs=draw(st.integers(0, 30)),
            secret_hash=draw(st.sampled_from(["aa", "bb", "cc", "0f"])),
            token_id=draw(st.sampled_from([None, "t1", "t2"])),
            token_max_uses=draw(st.sampled_from([None, 1, 2, 3])), **common)
    if kind == "profile":
        return UpdateProfile(node_id=draw(any_id), profile=draw(st.sampled_from(PROFILES)),
                             **common)
    if kind == "renew":
        return RenewCheckpoint(term=term, entries=draw(st.lists(
            st.tuples(any_id, st.integers(0, 60_000)), max_size=4)), **common)
    if kind == "down":
        return MarkDown(term=term, node_ids=draw(st.lists(any_id, max_size=3)), **common)
    if kind == "ready":
        return MarkReady(term=term, node_id=draw(any_id),
                         renewed_ms=draw(st.integers(0, 60_000)), **common)
    if kind == "drain":
        return Drain(node_id=draw(any_id), **common)
    if kind == "undrain":
        return Undrain(node_id=draw(any_id), **common)
    if kind == "deregister":
        return Deregister(node_id=draw(any_id), **common)
    if kind == "barrier":
        return Barrier(term=term, **common)
    if kind == "compact":
        return Compact(upto_revision=draw(st.integers(0, d.revision + 2)), **common)
    # place: usually valid over ready nodes, sometimes deliberately wrong
    service = draw(st.sampled_from(["web", "db"]))
    n_roles = draw(st.integers(0, 2))
    groups = {}
    for role in ROLES[:n_roles] if n_roles else []:
        groups[role] = list(range(draw(st.integers(1, 3))))
    ready = d.node_ids(state="ready") or ids
    which = draw(st.integers(0, 7))
    targets = (any_id if which == 0 else st.sampled_from(d.node_ids() or ids) if which == 1
               else st.sampled_from(ready))
    placement: dict[int, dict[str, list[int]]] = {}
    for role, indices in groups.items():
        for index in indices:
            placement.setdefault(draw(targets), {}).setdefault(role, []).append(index)
    replicas = sum(len(v) for v in groups.values())
    mistake = draw(st.integers(0, 12))
    if mistake == 0:
        replicas += 1
    elif mistake == 1 and placement:
        placement[next(iter(placement))].setdefault("default", []).append(7)
    elif mistake == 2 and groups:
        groups[next(iter(groups))].append(0)
    return SetPlacement(service=service, replicas=replicas, groups=groups,
                        spec=draw(st.sampled_from(SPECS)), placement=placement, **common)


def compare_queries(d: Directory, ref: Reference) -> None:
    assert d.revision == ref.revision
    assert d.compacted_revision == ref.compacted
    assert d.max_term == ref.max_term and d.now_ms == ref.now
    assert d.cluster_id == ref.cluster_id
    assert d.nodes() == ref.nodes_list()
    assert d.services() == sorted(ref.services)
    for name in ("web", "db"):
        assert d.placement(name) == ref.placement(name)
    for token in ("t1", "t2"):
        assert d.token_uses(token) == ref.tokens.get(token, 0)
    assert d.access_tokens() == ref.access_list()
    for nid in node_pool(d):
        assert d.node(nid) == ref.node(nid)
        for last in sorted({0, 1, d.compacted_revision, max(0, d.revision - 2),
                            d.revision, d.revision + 1}):
            expected = ref.poll(nid, last)
            if expected is None:
                assert d.node(nid) is None
            else:
                assert d.poll_data(nid, last) == expected, (nid, last)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), max_ids=st.sampled_from([2, 10_000]))
def test_core_agrees_with_reference(data: Any, max_ids: int) -> None:
    d = Directory(max_request_ids=max_ids)
    ref = Reference(max_request_ids=max_ids)
    for step in range(data.draw(st.integers(5, 40), label="steps")):
        cmd = data.draw(commands(d), label=f"step {step}")
        before = d.to_snapshot()
        now_before = d.now_ms
        via_bytes = data.draw(st.booleans(), label="via bytes")
        try:
            canon = canonical_command(cmd)
        except BadRequest:
            canon = None
        if canon is not None and via_bytes:
            raw = encode_command(cmd)
            assert decode_command(raw) == canon
            result = d.apply_bytes(raw)
        else:
            result = d.apply(cmd)
        if canon is None:
            assert (result.ok, result.code) == (False, "bad_request")
        else:
            expected = ref.apply(canon)
            assert (result.ok, result.value, result.code, result.revision) == expected, cmd
        event(f"{type(cmd).__name__}: {result.code or 'ok'}")
        if not result.ok:
            assert d.to_snapshot() == before, f"refused {result.code} changed the state"
        assert d.now_ms >= now_before
        if result.ok and isinstance(cmd, SetPlacement) and result.revision > before["revision"]:
            for nid in result.value["events_for"]:
                if nid in (d.placement(cmd.service) or {}):
                    assert d.node(nid)["state"] == "ready", "placement on a node not ready"
        check_invariants(d)
        compare_queries(d, ref)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_bytes_are_refused_and_change_nothing(raw: bytes) -> None:
    d = Directory()
    before = d.to_snapshot()
    result = d.apply_bytes(raw)
    if not result.ok:
        assert result.code == "bad_request"
        assert d.to_snapshot() == before
