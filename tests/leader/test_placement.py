"""Placement: every replica placed once, spread evenly, moved as little as possible."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from raftdir import BadRequest, NodeNotReady, ScaleAssignment
from raftdir.leader.placement import (
    Candidate, Constraints, constraints_from_spec, eligible, place,
)


def legacy(n):
    return (ScaleAssignment(role="default", indices=tuple(range(n))),)


def counts(placement):
    return {n: sum(len(i) for i in roles.values()) for n, roles in placement.items()}


def items_of(placement):
    return sorted((r, i) for roles in placement.values() for r, idx in roles.items()
                  for i in idx)


def test_twelve_replicas_over_six_workers_two_each():
    nodes = [Candidate(n) for n in range(1_000_000, 1_000_006)]
    out = place(legacy(12), nodes)
    assert counts(out) == {n.node_id: 2 for n in nodes}
    assert out[1_000_000] == {"default": [0, 6]}


def test_phase2_roles_are_kept_and_spread():
    groups = (ScaleAssignment(role="primary", indices=(0,)),
              ScaleAssignment(role="replica", indices=(1, 2)))
    out = place(groups, [Candidate(1), Candidate(2), Candidate(3)])
    assert out == {1: {"primary": [0]}, 2: {"replica": [1]}, 3: {"replica": [2]}}


def test_a_lost_node_moves_only_its_share():
    nodes = [Candidate(n) for n in (1, 2, 3, 4)]
    before = place(legacy(8), nodes)
    after = place(legacy(8), nodes[:3], current=before)
    for node in (1, 2, 3):
        kept = set(before[node]["default"])
        assert kept <= set(after[node]["default"]), "a surviving node lost a replica"
    assert sorted(counts(after).values()) == [2, 3, 3]


def test_no_node_for_items_is_node_not_ready_and_zero_items_need_none():
    with pytest.raises(NodeNotReady):
        place(legacy(1), [])
    assert place(legacy(0), []) == {}


def test_constraints_filter_os_and_labels():
    nodes = [Candidate(1, "linux", {"zone": "a"}), Candidate(2, "windows", {"zone": "a"}),
             Candidate(3, "macos", {"zone": "b"}), Candidate(4, "linux", {"zone": "b"})]
    assert [c.node_id for c in eligible(nodes, Constraints("linux"))] == [1, 4]
    assert [c.node_id for c in eligible(nodes, Constraints(None, {"zone": "b"}))] == [3, 4]
    spec = {"image": "x", "placement": {"os": "macos", "labels": {"zone": "b"}}}
    assert [c.node_id for c in eligible(nodes, constraints_from_spec(spec))] == [3]


@pytest.mark.parametrize("spec,path", [
    ({"placement": []}, "spec.placement"),
    ({"placement": {"zone": "a"}}, "spec.placement.zone"),
    ({"placement": {"os": 1}}, "spec.placement.os"),
    ({"placement": {"labels": {"a": 1}}}, "spec.placement.labels"),
])
def test_bad_placement_spec_names_the_field(spec, path):
    with pytest.raises(BadRequest) as info:
        constraints_from_spec(spec)
    assert info.value.field == path


groups_st = st.lists(
    st.tuples(st.sampled_from(["default", "primary", "read"]),
              st.lists(st.integers(0, 40), unique=True, max_size=12)),
    max_size=3, unique_by=lambda t: t[0],
).map(lambda gs: tuple(ScaleAssignment(role=r, indices=tuple(i)) for r, i in gs))
ids_st = st.lists(st.integers(1, 30), min_size=1, max_size=8, unique=True)


@settings(max_examples=200, deadline=None)
@given(groups_st, ids_st, ids_st)
def test_properties(groups, first_ids, second_ids):
    wanted = sorted((g.role, i) for g in groups for i in g.indices)
    first = place(groups, [Candidate(n) for n in first_ids])
    assert items_of(first) == wanted
    if wanted:
        c = list(counts(first).values()) + [0] * (len(first_ids) - len(first))
        assert max(c) - min(c) <= 1
    # placing again with the same nodes changes nothing
    assert place(groups, [Candidate(n) for n in first_ids], current=first) == first
    # re-placing on another node set keeps the spread and moves at most what it must
    second = place(groups, [Candidate(n) for n in second_ids], current=first)
    assert items_of(second) == wanted
    assert set(second) <= set(second_ids)
    moved = sum(1 for n, roles in second.items() for r, idx in roles.items() for i in idx
                if i not in first.get(n, {}).get(r, []))
    survivors = set(first_ids) & set(second_ids)
    lost = sum(c for n, c in counts(first).items() if n not in survivors)
    target_hi = -(-len(wanted) // len(second_ids))
    excess = sum(max(0, c - target_hi) for n, c in counts(first).items() if n in survivors)
    assert moved <= lost + excess + len(second_ids)
