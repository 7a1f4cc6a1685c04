"""Invariants of the directory's hard state, checked after every step of the scripted and
the random tests. Each check recomputes from scratch what the core keeps incrementally."""

from __future__ import annotations

import json

import msgpack

from raftdir.core import Directory
from raftdir.core.state import DELETE, DOWN, DRAIN, READY, SET


def check_invariants(d: Directory) -> None:
    hs = d.state
    log = list(hs.log)
    # The log holds exactly the revisions (compacted, revision], ascending and gap-free.
    assert [ev[0] for ev in log] == list(range(hs.compacted_revision + 1, hs.revision + 1)), \
        "log revisions are not exactly (compacted, revision]"
    assert 0 <= hs.compacted_revision <= hs.revision
    # Each node's events are its own events of the log (since its record was created),
    # strictly increasing; every other log entry belongs to a removed or older record.
    for nid, rec in hs.nodes.items():
        own = [ev for ev in log if ev[1] == nid and ev[0] > rec.reg_rev]
        assert (rec.events or []) == own, f"node {nid}: events differ from the log"
        revs = [ev[0] for ev in own]
        assert revs == sorted(set(revs))
        assert rec.reg_rev <= hs.revision
        assert rec.state in (READY, "draining", DOWN)
        assert (rec.state == "draining") <= bool(rec.drain_rev), "draining without drain event"
        if rec.drain_rev and rec.state != DOWN:
            assert rec.state == "draining", f"node {nid}: drained but {rec.state}"
        if rec.drain_rev > hs.compacted_revision:
            assert any(ev[0] == rec.drain_rev and ev[2] == DRAIN and ev[1] == nid
                       for ev in own)
    # Derived counts match a recount.
    recount: dict = {}
    for rec in hs.nodes.values():
        recount[(rec.kind, rec.state)] = recount.get((rec.kind, rec.state), 0) + 1
    assert {k: v for k, v in hs.counts.items() if v} == recount, "node counts drifted"
    # Placement: every (role, index) of the groups on exactly one node; the sum is replicas;
    # holders exist and know it; the share's revision is its last set event.
    holds: dict[int, set] = {}
    for name, svc in hs.services.items():
        pairs = {(role, i) for role, ix in svc.groups for i in ix}
        assert len(pairs) == svc.replicas > 0, f"{name}: groups do not sum to replicas"
        placed = [(role, i) for share, _rev in svc.placement.values()
                  for role, ix in share for i in ix]
        assert len(placed) == len(set(placed)) == svc.replicas, f"{name}: placement sum"
        assert set(placed) == pairs, f"{name}: placement does not cover the groups"
        for nid, (share, rev) in svc.placement.items():
            assert nid in hs.nodes, f"{name}: placed on a removed node {nid}"
            assert share and all(ix for _r, ix in share)
            holds.setdefault(nid, set()).add(name)
            assert 0 < rev <= hs.revision
            if rev > hs.compacted_revision:
                ev = log[rev - hs.compacted_revision - 1]
                assert ev[:5] == (rev, nid, SET, name, share), f"{name}: stale share rev"
                assert ev[5] == svc.spec
    for nid, rec in hs.nodes.items():
        assert set(rec.holds or ()) == holds.get(nid, set()), f"node {nid}: holds index"
        assert rec.holds is None or rec.holds, "empty holds dict kept"
    # Deleted/unplaced: the last event of a node for a service it does not hold is a delete.
    for nid, rec in hs.nodes.items():
        last: dict = {}
        for ev in rec.events or ():
            if ev[2] in (SET, DELETE):
                last[ev[3]] = ev[2]
        for name, kind in last.items():
            assert (kind == SET) == (name in (rec.holds or ())), f"node {nid}: {name} {kind}"
    # Request-id table is bounded.
    assert len(hs.request_ids) <= hs.max_request_ids
    # Snapshots: plain data, canonical, round trip equal (directly and through msgpack/JSON).
    snap = d.to_snapshot()
    again = Directory.from_snapshot(snap)
    assert again == d and again.to_snapshot() == snap
    packed = msgpack.packb(snap, use_bin_type=True)
    assert Directory.from_snapshot(msgpack.unpackb(packed, raw=False,
                                                   strict_map_key=False)) == d
    assert Directory.from_snapshot(json.loads(json.dumps(snap))) == d
    # Polls: ascending, never below the asked revision, events above it.
    for nid in list(hs.nodes)[:20]:
        for last in {0, hs.compacted_revision, max(0, hs.revision - 1), hs.revision,
                     hs.revision + 3}:
            check_poll(d.poll_data(nid, last), last, d.revision)


def check_poll(resp: dict, last: int, current: int) -> None:
    revs = [ev["revision"] for ev in resp.get("events", ())]
    assert revs == sorted(set(revs)), "poll events not strictly ascending"
    assert resp["revision"] >= last, "poll revision went below last_revision"
    assert resp["revision"] == max(last, current)
    assert all(r <= resp["revision"] for r in revs)
    if not resp.get("full"):
        assert all(r > last for r in revs)
