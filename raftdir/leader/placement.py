"""Where a service's replicas go: a pure, deterministic placement function (directory.md §7).

Owns: spreading the (role, index) items of a scale order over the eligible nodes, keeping
items where they already are when that does not unbalance the spread, and the constraint
filter (OS and labels, read from the opaque spec). The leader calls it before proposing a
``set_placement`` command, which carries the result; the state machine only checks it.
No I/O, no clock, no randomness; any thread. Imports ``raftdir.model`` and
``raftdir.errors`` only.

Constraints live in the service spec under the key ``placement``:
``{"os": "linux", "labels": {"zone": "eu-1a"}}`` (both optional). ZLayer's spec is opaque
to raftdir; this one key is raftdir's convention.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from heapq import heapify, heappop, heappush
from itertools import groupby
from typing import Iterable, Mapping

from ..errors import BadRequest, NodeNotReady
from ..model import ScaleAssignment

__all__ = ["Candidate", "Constraints", "constraints_from_spec", "eligible", "place",
           "Placement"]

#: node_id -> role -> ascending indices
Placement = dict[int, dict[str, list[int]]]


@dataclass(frozen=True)
class Candidate:
    """A node that may take replicas: ready, not draining (the caller filters state)."""

    node_id: int
    os: str = "linux"
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Constraints:
    os: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def admits(self, node: Candidate) -> bool:
        node_os = "darwin" if node.os == "macos" else node.os
        if self.os is not None and node_os != self.os:
            return False
        return all(node.labels.get(k) == v for k, v in self.labels.items())

    def describe(self) -> str:
        parts = [f"os={self.os}"] if self.os else []
        parts += [f"{k}={v}" for k, v in sorted(self.labels.items())]
        return ", ".join(parts) or "none"


def constraints_from_spec(spec: Mapping | None) -> Constraints:
    """Read ``spec["placement"]``; a malformed one is a ``BadRequest`` naming the path."""
    if not spec or "placement" not in spec:
        return Constraints()
    raw = spec["placement"]
    if not isinstance(raw, Mapping):
        raise BadRequest("spec.placement: expected a map", field="spec.placement")
    unknown = set(raw) - {"os", "labels"}
    if unknown:
        key = sorted(map(str, unknown))[0]
        raise BadRequest(f"spec.placement.{key}: unknown key; expected os, labels",
                         field=f"spec.placement.{key}")
    os_name = raw.get("os")
    if os_name is not None and not isinstance(os_name, str):
        raise BadRequest("spec.placement.os: expected a string", field="spec.placement.os")
    labels = raw.get("labels") or {}
    if not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise BadRequest("spec.placement.labels: expected a map of strings",
                         field="spec.placement.labels")
    return Constraints("darwin" if os_name == "macos" else os_name, dict(labels))


def eligible(candidates: Iterable[Candidate], constraints: Constraints) -> list[Candidate]:
    return sorted((c for c in candidates if constraints.admits(c)), key=lambda c: c.node_id)


def place(groups: Iterable[ScaleAssignment], nodes: Iterable[Candidate],
          current: Mapping[int, Mapping[str, Iterable[int]]] | None = None) -> Placement:
    """Spread every (role, index) of ``groups`` over ``nodes`` (already filtered).

    Each node gets ``len(items) // len(nodes)`` items, and the nodes already holding the
    most of them get the one extra where the division is not even, so a re-placement moves
    as few containers as it can. Items stay where they are up to a node's target; the rest
    go to the nodes furthest below their target, preferring the node with the fewest items
    of the same role (so the replicas of a role spread too). Ties go to the lowest id.
    Raises ``NodeNotReady`` when there are items and no node to take them.
    """
    items = [(g.role, i) for g in groups for i in sorted(g.indices)]
    ids = sorted({n.node_id for n in nodes})
    if not items:
        return {}
    if not ids:
        raise NodeNotReady("no ready node can take replicas")
    owner = {(role, i): node for node, roles in (current or {}).items()
             for role, indices in roles.items() for i in indices}
    held = {n: 0 for n in ids}
    for item in items:
        if owner.get(item) in held:
            held[owner[item]] += 1
    base, extra = divmod(len(items), len(ids))
    by_holding = sorted(ids, key=lambda n: (-held[n], n))
    target = {n: base + (1 if rank < extra else 0) for rank, n in enumerate(by_holding)}

    count = {n: 0 for n in ids}
    role_count: dict[tuple[int, str], int] = {}
    out: Placement = {}

    def assign(node: int, role: str, index: int) -> None:
        out.setdefault(node, {}).setdefault(role, []).append(index)
        count[node] += 1
        role_count[(node, role)] = role_count.get((node, role), 0) + 1

    rest = []
    for role, index in items:
        node = owner.get((role, index))
        if node in count and count[node] < target[node]:
            assign(node, role, index)
        else:
            rest.append((role, index))
    # The rest, a role at a time: a heap of the nodes below their target keyed by
    # (count - target, items of this role, id); only the chosen node's key changes.
    # O(items log nodes), so 10,000 replicas on 10,000 nodes take milliseconds.
    for role, group in groupby(rest, key=lambda item: item[0]):
        heap = [(count[n] - target[n], role_count.get((n, role), 0), n)
                for n in ids if count[n] < target[n]]
        heapify(heap)
        for _, index in group:
            _, _, node = heappop(heap)
            assign(node, role, index)
            if count[node] < target[node]:
                heappush(heap, (count[node] - target[node], role_count[(node, role)], node))
    for roles in out.values():
        for indices in roles.values():
            indices.sort()
    return out
