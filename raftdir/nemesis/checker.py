"""The checker: every promise of directory.md §5-§6 that a recorded nemesis run can break.

Owns: ``check(out_dir)`` (reads ``run.json``, ``history.jsonl`` and every peer's
``server.log``; returns a ``Verdict``), ``check_history`` (the same over records and log facts
in memory, for tests), the bounds (docs/robustness.md says each exactly), the verdict
table and ``verdict.json``. Pure over its inputs: no network, no clock.

Times: every time is taken on the wall clock (the history's ``w0``/``w1`` and the logs'
timestamps, both Unix seconds) and printed as ``t``, seconds since the run's origin.

The checks (each counted; ``violations`` 0 is a pass):

- ``acked writes lost``: in the final consistent read, every acknowledged registration is
  present (unless an eviction of it was acknowledged or may have applied), and no worker
  had its identity refused (and retired) without such an eviction; the last
  acknowledged scale of each service is in force (or a later one whose outcome is unknown),
  acknowledged drains are in force, acknowledged evictions are gone;
- ``lease held until ttl+grace``: no mark-down of a worker before ``invoke + ttl + grace`` of
  its last lease grant (an acknowledged report or registration) whose answer came before
  the mark-down;
- ``live workers never marked down``: a worker the nemesis had not killed since its last
  grant is never marked down;
- ``dead workers marked down in bound``: a killed worker is marked down by ``base + ttl +
  grace + tick + slack`` plus the time after ``base`` with no serving leader (the watcher
  saw no peer answering as a ready leader: a paused or killed leader, an election), where
  ``base`` is its last grant's completion (or the kill, if a report was in flight), or,
  when a leader took office after that and before the detection, the last such moment; a
  worker never marked down before it came back, or before the end, when that bound had
  passed, is missed;
- ``revisions never go back``: no poll answer's revision is below the worker's
  ``last_revision``;
- ``no event gaps``: each live worker's assignment set, rebuilt from its own poll answers
  only, equals the leader's full answer for that node at the end;
- ``token max_uses``: distinct nodes admitted per raced token <= its ``max_uses``;
- ``identical state on every peer``: the three digests at one applied index are equal;
- ``at most one election per fault``: the highest term any peer reported rose by at most 1
  from a fault's start to the next fault's start;
- ``log tracebacks`` / ``log CRITICAL`` / ``log unretrieved task exceptions``: none in any
  server log.

Availability per fault (longest window without a report acknowledged anywhere, elections,
time to a ready leader) is reported, not judged. Imports the assignment set, the wire
types and the nemesis's own modules.
"""

from __future__ import annotations

import bisect
import json
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..assignments import AssignmentSet
from ..model import DeleteEvent, DrainEvent, ScaleAssignment, SetEvent, WorkerPollResponse
from .history import RUN_FILE, load
from .logscan import LogFacts, scan_files

__all__ = ["Bounds", "Check", "Verdict", "check", "check_history", "format_table",
           "VERDICT_FILE", "peer_logs"]

VERDICT_FILE = "verdict.json"
MAX_DETAILS = 200


@dataclass(frozen=True)
class Bounds:
    grace: float = 6.0             # heartbeat_grace (a node's own grace wins when recorded)
    tick: float = 0.5              # the leader's expiry tick
    slack: float = 1.0             # observation slack: commit and log latency
    origin_wall: float = 0.0


@dataclass
class Check:
    name: str
    count: int = 0
    violations: int = 0
    worst: str = ""
    details: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def add(self, detail: dict[str, Any]) -> None:
        self.violations += 1
        if len(self.details) < MAX_DETAILS:
            self.details.append(detail)


@dataclass
class Verdict:
    checks: list[Check]
    availability: list[dict[str, Any]]
    figures: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(c.violations == 0 for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks],
                "availability": self.availability, "figures": self.figures}


# ---------------------------------------------------------------------------- entry points

def peer_logs(out_dir: Path, run: dict[str, Any]) -> dict[int, Path]:
    return {int(n): Path(out_dir) / "peers" / f"peer{n}" / "server.log"
            for n in run.get("peers", {})}


def check(out_dir: Path, write: bool = True) -> Verdict:
    """Check a recorded run; writes ``verdict.json`` next to it (``write``)."""
    out_dir = Path(out_dir)
    run = json.loads((out_dir / RUN_FILE).read_text())
    records = list(load(out_dir))
    facts = scan_files(peer_logs(out_dir, run))
    verdict = check_history(records, facts, bounds_from_run(run))
    if write:
        (out_dir / VERDICT_FILE).write_text(json.dumps(verdict.to_json(), indent=1) + "\n")
    return verdict


def bounds_from_run(run: dict[str, Any]) -> Bounds:
    s = run.get("settings", {})
    return Bounds(grace=float(s.get("heartbeat_grace", 6)), tick=float(s.get("expiry_tick", 0.5)),
                  slack=float(s.get("slack", 1.0)), origin_wall=float(run["origin_wall"]))


# ---------------------------------------------------------------------------- the history

@dataclass
class Grant:
    """A lease granted to a worker: an acknowledged report or registration."""

    w0: float
    w1: float
    ttl: float
    grace: float


@dataclass
class Node:
    node: int
    name: str = ""
    grace: float | None = None
    grants: list[Grant] = field(default_factory=list)
    grant_ends: list[float] = field(default_factory=list)   # w1 of grants, ascending
    cancelled: list[tuple[float, float]] = field(default_factory=list)  # (w0, w1)
    kills: list[float] = field(default_factory=list)
    revives: list[float] = field(default_factory=list)
    retired: float | None = None
    evicted: list[tuple[float, str]] = field(default_factory=list)  # (w0, outcome)
    failed_reports: list[tuple[float, str]] = field(default_factory=list)
    polls: list[dict[str, Any]] = field(default_factory=list)

    def last_grant_before(self, w: float) -> Grant | None:
        i = bisect.bisect_left(self.grant_ends, w)
        return self.grants[i - 1] if i > 0 else None


@dataclass
class MarkDown:
    w: float
    node: int
    source: str         # "log" or "watcher"
    peer: int | None
    term: int | None


class History:
    """The records of one run, indexed for the checks."""

    def __init__(self, records: Iterable[dict[str, Any]], facts: LogFacts) -> None:
        self.records = list(records)
        self.facts = facts
        self.nodes: dict[int, Node] = {}
        self.by_op: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in self.records:
            self.by_op[r["op"]].append(r)
        self.phases = {r.get("phase"): r for r in self.by_op.get("run", [])}
        self._index()
        self.markdowns = self._markdowns()
        self.ready = self._ready()
        self.terms = self._terms()
        self.leaderless = self._leaderless()

    def node(self, node_id: int) -> Node:
        n = self.nodes.get(node_id)
        if n is None:
            n = self.nodes[node_id] = Node(node_id)
        return n

    def _index(self) -> None:
        for r in sorted(self.by_op.get("register", []), key=lambda r: r["w1"]):
            if r.get("ok"):
                n = self.node(r["node"])
                n.name = r["who"]
                n.grace = float(r.get("grace", 0) or 0) or None
                n.grants.append(Grant(r["w0"], r["w1"], float(r["ttl"]),
                                      float(r.get("grace") or 0)))
        for r in self.by_op.get("report", []):
            if r.get("node") is None:
                continue
            n = self.node(r["node"])
            if r.get("ok"):
                n.grants.append(Grant(r["w0"], r["w1"], float(r["ttl"]), n.grace or 0.0))
            elif r.get("err") == "cancelled":
                n.cancelled.append((r["w0"], r["w1"]))
            else:
                n.failed_reports.append((r["w0"], str(r.get("err"))))
        for n in self.nodes.values():
            n.grants.sort(key=lambda g: g.w1)
            n.grant_ends = [g.w1 for g in n.grants]
            n.failed_reports.sort()
        for r in self.by_op.get("worker_kill", []):
            self.node(r["node"]).kills.append(r["w0"])
        for r in self.by_op.get("worker_revive", []):
            self.node(r["node"]).revives.append(r["w0"])
        for r in self.by_op.get("worker_retire", []):
            if r.get("node") is not None:
                self.node(r["node"]).retired = r["w0"]
        for r in self.by_op.get("evict", []):
            if r.get("outcome") in ("ok", "unknown"):
                self.node(r["node"]).evicted.append((r["w0"], r["outcome"]))
        for r in self.by_op.get("poll", []):
            if r.get("ok") and r.get("node") is not None:
                self.node(r["node"]).polls.append(r)
        for n in self.nodes.values():
            n.kills.sort()
            n.revives.sort()
            n.polls.sort(key=lambda r: r["w1"])

    def _markdowns(self) -> dict[int, list[MarkDown]]:
        """Mark-downs from the leaders' logs; a watcher-seen one with no log line within
        5 s before it is added (a leader killed before it logged)."""
        out: dict[int, list[MarkDown]] = defaultdict(list)
        for w, peer, term, ids in self.facts.markdowns:
            for nid in ids:
                out[nid].append(MarkDown(w, nid, "log", peer, term))
        for r in self.by_op.get("node_state", []):
            if r.get("state") != "down" or r.get("prev") in (None, "down"):
                continue
            nid = r["node"]
            if not any(r["w1"] - 5.0 <= m.w <= r["w1"] + 0.5 for m in out.get(nid, [])):
                out[nid].append(MarkDown(r["w1"], nid, "watcher", r.get("peer"), r.get("term")))
        for lst in out.values():
            lst.sort(key=lambda m: m.w)
        return out

    def _ready(self) -> list[tuple[float, int, int]]:
        """(w, peer, term) of every leader taking office: the log line, or the watcher's
        first sight of a ready leader in a term with no log line."""
        ready = list(self.facts.ready)
        logged = {(peer, term) for _, peer, term in ready}
        seen: set[tuple[int, int]] = set()
        for r in self.by_op.get("peer_state", []):
            if r.get("ready_leader") and (r["peer"], r["term"]) not in logged | seen:
                seen.add((r["peer"], r["term"]))
                ready.append((r["w1"], r["peer"], r["term"]))
        return sorted(ready)

    def _terms(self) -> list[tuple[float, int]]:
        """(w, highest term any peer reported by then), ascending."""
        points = [(r["w1"], int(r.get("term") or 0)) for r in self.by_op.get("peer_state", [])
                  if r.get("ok")]
        points += [(w, term) for w, _, term in self.facts.ready]
        points += [(w, term) for w, _, term, _ in self.facts.markdowns]
        points.sort()
        out: list[tuple[float, int]] = []
        high = 0
        for w, term in points:
            if term > high:
                high = term
                out.append((w, high))
        return out

    def _leaderless(self) -> list[tuple[float, float]]:
        """The watcher's intervals with no serving leader: no peer both answering and
        saying it leads and is ready (a SIGSTOPped or killed leader, an election)."""
        states = sorted(self.by_op.get("peer_state", []), key=lambda r: r["w1"])
        if not states:
            return []
        now: dict[int, bool] = {}
        out: list[tuple[float, float]] = []
        since: float | None = None
        for r in states:
            now[r["peer"]] = bool(r.get("ok") and r.get("ready_leader"))
            serving = any(now.values())
            if not serving and since is None:
                since = r["w1"]
            elif serving and since is not None:
                out.append((since, r["w1"]))
                since = None
        if since is not None:
            out.append((since, float("inf")))
        return out

    def leaderless_between(self, a: float, b: float) -> float:
        return sum(max(0.0, min(b, y) - max(a, x)) for x, y in self.leaderless)

    def max_term_at(self, w: float) -> int:
        i = bisect.bisect_right([p[0] for p in self.terms], w)
        return self.terms[i - 1][1] if i > 0 else 0

    def end_w(self) -> float:
        """When the run stopped watching for mark-downs (the final reads began)."""
        for phase in ("final_reads", "heal", "load_end"):
            if phase in self.phases:
                return self.phases[phase]["w0"]
        return max((r["w1"] for r in self.records), default=0.0)


# ---------------------------------------------------------------------------- the checks

def check_history(records: Iterable[dict[str, Any]], facts: LogFacts, bounds: Bounds
                  ) -> Verdict:
    h = History(records, facts)
    t = _Clock(bounds.origin_wall)
    checks = [
        _writes_lost(h, t),
        *_leases(h, bounds, t),
        _dead_detection(h, bounds, t),
        _revisions(h, t),
        _event_gaps(h, t),
        _tokens(h),
        _digest(h),
        _elections(h, t),
        *_logs(h, t),
    ]
    availability = _availability(h, t)
    lags = [r.get("lag", 0.0) for r in h.by_op.get("lag", [])]
    figures = {
        "records": len(h.records),
        "report_acks": sum(1 for r in h.by_op.get("report", []) if r.get("ok")),
        "report_failures": sum(1 for r in h.by_op.get("report", []) if not r.get("ok")),
        "polls_answered": sum(1 for r in h.by_op.get("poll", []) if r.get("ok")),
        "registrations": sum(1 for r in h.by_op.get("register", []) if r.get("ok")),
        "faults": _fault_counts(h),
        "elections_total": (h.terms[-1][1] - h.terms[0][1]) if h.terms else 0,
        "controller_max_lag_s": round(max(lags), 3) if lags else 0.0,
        "workers_killed": len(h.by_op.get("worker_kill", [])),
        "workers_revived": len(h.by_op.get("worker_revive", [])),
    }
    return Verdict(checks, availability, figures)


class _Clock:
    def __init__(self, origin: float) -> None:
        self.origin = origin

    def __call__(self, w: float | None) -> float | None:
        return None if w is None else round(w - self.origin, 3)


def _fault_counts(h: History) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for r in h.by_op.get("fault", []):
        if r.get("phase") == "start":
            counts[r["kind"]] += 1
    return dict(sorted(counts.items()))


def _writes_lost(h: History, t: _Clock) -> Check:
    c = Check("acked writes lost")
    finals = h.by_op.get("final_workers", [])
    if not finals:
        c.add({"why": "no final consistent read was recorded"})
        c.worst = "no final read"
        return c
    final = {int(n["node"]): n for n in finals[-1].get("nodes", [])}
    evictions = defaultdict(list)
    for r in h.by_op.get("evict", []):
        evictions[r["node"]].append(r)
    lost: dict[str, int] = defaultdict(int)
    # registrations
    for nid in sorted({r["node"] for r in h.by_op.get("register", []) if r.get("ok")}):
        c.count += 1
        if nid in final:
            continue
        if any(e.get("outcome") in ("ok", "unknown") for e in evictions.get(nid, [])):
            continue
        lost["registration"] += 1
        c.add({"write": "registration", "node": nid})
    # identities refused though never evicted: the directory lost what it acknowledged
    for r in h.by_op.get("worker_retire", []):
        nid = r.get("node")
        if nid is None:
            continue
        c.count += 1
        if any(e.get("outcome") in ("ok", "unknown") for e in evictions.get(nid, [])):
            continue
        lost["registration"] += 1
        c.add({"write": "registration", "node": nid, "why": f"refused ({r.get('why')}) "
               "though never evicted", "t": t(r["w0"])})
    # evictions
    for r in h.by_op.get("evict", []):
        if r.get("outcome") == "ok":
            c.count += 1
            if r["node"] in final:
                lost["eviction"] += 1
                c.add({"write": "eviction", "node": r["node"], "t": t(r["w1"])})
    # drains
    for r in h.by_op.get("drain", []):
        if r.get("outcome") != "ok":
            continue
        nid = r["node"]
        c.count += 1
        if nid not in final:
            if any(e.get("outcome") in ("ok", "unknown") for e in evictions.get(nid, [])):
                continue
            lost["drain"] += 1
            c.add({"write": "drain", "node": nid, "why": "node missing"})
        elif not final[nid].get("draining"):
            lost["drain"] += 1
            c.add({"write": "drain", "node": nid, "why": "not draining",
                   "state": final[nid].get("state")})
    # scales: the last acknowledged one per service (or a later one of unknown outcome)
    services = {r["service"]: r for r in h.by_op.get("final_service", [])}
    by_service: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in h.by_op.get("scale", []):
        by_service[r["service"]].append(r)
    for name, scales in sorted(by_service.items()):
        scales.sort(key=lambda r: r["w0"])
        acked = [i for i, r in enumerate(scales) if r.get("outcome") == "ok"]
        c.count += sum(1 for r in scales if r.get("outcome") == "ok")
        if not acked:
            continue
        last = acked[-1]
        allowed = {scales[last]["replicas"]} | {
            r["replicas"] for r in scales[last + 1:] if r.get("outcome") == "unknown"}
        got = services.get(name)
        replicas = None if got is None else got.get("replicas")
        if replicas not in allowed:
            lost["scale"] += 1
            c.add({"write": "scale", "service": name, "expected": sorted(allowed),
                   "found": replicas, "t": t(scales[last]["w1"])})
    c.worst = ", ".join(f"{n} {k}" for k, n in sorted(lost.items())) or "none lost"
    return c


def _leases(h: History, b: Bounds, t: _Clock) -> tuple[Check, Check]:
    early = Check("lease held until ttl+grace")
    live = Check("live workers never marked down")
    live.count = sum(1 for n in h.nodes.values() if n.grants)
    worst_early: tuple[float, dict[str, Any]] | None = None
    worst_live: tuple[float, dict[str, Any]] | None = None
    for nid, downs in sorted(h.markdowns.items()):
        n = h.nodes.get(nid)
        if n is None:
            continue                      # a server node, or one we never registered
        for m in downs:
            g = n.last_grant_before(m.w)
            if g is None:
                continue
            early.count += 1
            grace = g.grace or n.grace or b.grace
            lease_end = g.w0 + g.ttl + grace
            killed = any(g.w0 <= k <= m.w for k in n.kills)
            detail = {"node": nid, "worker": n.name, "marked_down_t": t(m.w),
                      "by": f"{m.source} peer {m.peer} term {m.term}",
                      "last_grant_sent_t": t(g.w0), "last_grant_acked_t": t(g.w1),
                      "ttl": g.ttl, "grace": grace, "lease_end_t": t(lease_end),
                      "early_by_s": round(lease_end - m.w, 3), "killed": killed}
            if m.w < lease_end:
                early.add(detail)
                if worst_early is None or lease_end - m.w > worst_early[0]:
                    worst_early = (lease_end - m.w, detail)
            if not killed:
                fails = [e for w, e in n.failed_reports if g.w1 <= w <= m.w]
                detail = dict(detail, failed_reports_since=len(fails),
                              failure_codes=sorted(set(fails)))
                live.add(detail)
                if worst_live is None or lease_end - m.w > worst_live[0]:
                    worst_live = (lease_end - m.w, detail)
    early.worst = (_early_text(worst_early[1]) if worst_early else "none early")
    live.worst = (f"{live.violations} down; worst {_early_text(worst_live[1])}"
                  if worst_live else "none")
    batches: dict[str, int] = defaultdict(int)
    for d in live.details:
        batches[f"t={d['marked_down_t']} {d['by']}"] += 1
    live.figures = {"mark_downs_by_batch": dict(batches)}
    return early, live


def _early_text(d: dict[str, Any]) -> str:
    e = d["early_by_s"]
    when = f"{e:.1f} s early" if e > 0 else f"{-e:.1f} s after its lease"
    return (f"node {d['node']} {when}: grant sent t={d['last_grant_sent_t']} "
            f"(ttl {d['ttl']:g}+{d['grace']:g}), down t={d['marked_down_t']} by {d['by']}")


def _dead_detection(h: History, b: Bounds, t: _Clock) -> Check:
    c = Check("dead workers marked down in bound")
    end = h.end_w()
    detections: list[float] = []
    late = missed = 0
    worst_excess: tuple[float, dict[str, Any]] | None = None
    ready_ws = [w for w, _, _ in h.ready]
    for nid, n in sorted(h.nodes.items()):
        for k in n.kills:
            g = n.last_grant_before(k + 1e-6)
            if g is None:
                continue
            base = g.w1
            if any(w0 <= k <= w1 + 1e-6 for w0, w1 in n.cancelled if w0 >= g.w0):
                base = max(base, k)        # a report in flight at the kill may have renewed
            later = [r for r in n.revives if r > k]
            window_end = min(later[0] if later else end,
                             min((w for w, _ in n.evicted if w > k), default=end),
                             n.retired if n.retired and n.retired > k else end)
            evicted_first = any(k < w <= window_end + 1e-6 for w, _ in n.evicted)
            down = next((m for m in h.markdowns.get(nid, []) if m.w > g.w1), None)
            detected = down is not None and down.w <= window_end + 0.5
            horizon = down.w if detected else window_end
            readies = [w for w in ready_ws if base < w <= horizon]
            start = max(base, readies[-1]) if readies else base
            grace = g.grace or n.grace or b.grace
            need = g.ttl + grace + b.tick + b.slack
            bound = start + need
            # time with no serving leader (paused, killed, electing) does not count
            for _ in range(20):
                moved = start + need + h.leaderless_between(start, bound)
                if moved == bound:
                    break
                bound = moved
            detail = {"node": nid, "worker": n.name, "killed_t": t(k),
                      "last_ack_t": t(g.w1), "ttl": g.ttl, "grace": grace,
                      "leader_ready_since_t": t(readies[-1]) if readies else None,
                      "leaderless_s": round(bound - start - need, 3),
                      "bound_t": t(bound) if bound != float("inf") else None}
            if detected:
                assert down is not None
                took = down.w - base
                detections.append(took)
                c.count += 1
                detail.update(marked_down_t=t(down.w), detection_s=round(took, 3),
                              by=f"{down.source} peer {down.peer} term {down.term}")
                if down.w > bound:
                    late += 1
                    detail["late_by_s"] = round(down.w - bound, 3)
                    c.add(detail)
                    if worst_excess is None or down.w - bound > worst_excess[0]:
                        worst_excess = (down.w - bound, detail)
            elif evicted_first:
                continue                   # removed before it was due to go down
            elif window_end > bound:
                c.count += 1
                missed += 1
                detail.update(missed=True, came_back_t=t(window_end) if later else None,
                              undetected_for_s=round(window_end - base, 3))
                c.add(detail)
            # else: it came back before it was due: nothing to judge
    if detections:
        c.figures = {"median_s": round(statistics.median(detections), 3),
                     "worst_s": round(max(detections), 3), "late": late, "missed": missed,
                     "detected": len(detections)}
        c.worst = (f"median {c.figures['median_s']:.1f} s, worst "
                   f"{c.figures['worst_s']:.1f} s; {late} late, {missed} missed")
    else:
        c.figures = {"late": late, "missed": missed, "detected": 0}
        c.worst = f"none detected; {missed} missed"
    if worst_excess is not None:
        c.figures["worst_late"] = worst_excess[1]
    return c


def _revisions(h: History, t: _Clock) -> Check:
    c = Check("revisions never go back")
    worst = 0
    for r in h.by_op.get("poll", []):
        if not r.get("ok"):
            continue
        c.count += 1
        if r["rev"] < r["last"]:
            c.add({"node": r["node"], "t": t(r["w1"]), "held": r["last"], "answer": r["rev"],
                   "server": r.get("server"), "full": r.get("full")})
            worst = max(worst, r["last"] - r["rev"])
    c.worst = f"{worst} revisions back" if worst else "none"
    return c


def _replay(polls: list[dict[str, Any]]) -> AssignmentSet:
    """A worker's assignment set rebuilt from its recorded poll answers only."""
    s = AssignmentSet()
    for r in polls:
        events = []
        for ev in r.get("events", []):
            if ev[0] == "set":
                events.append(SetEvent(service=ev[1], revision=ev[2], assignments=tuple(
                    ScaleAssignment(role=role, indices=tuple(ix)) for role, ix in ev[3])))
            elif ev[0] == "delete":
                events.append(DeleteEvent(service=ev[1], revision=ev[2]))
            elif ev[0] == "drain":
                events.append(DrainEvent(revision=ev[1]))
        s.apply(WorkerPollResponse(revision=r["rev"], events=tuple(events),
                                   full=bool(r.get("full"))))
    return s


def shares(s: AssignmentSet) -> dict[str, list[list[Any]]]:
    """``{service: [[role, [indices]], ...]}`` of a set, sorted (what is compared)."""
    return {name: sorted([g.role, sorted(g.indices)] for g in ev.assignments if g.indices)
            for name, ev in sorted(s.services.items())
            if any(g.indices for g in ev.assignments)}


def _event_gaps(h: History, t: _Clock) -> Check:
    c = Check("no event gaps (final sets)")
    finals = h.by_op.get("final_poll", [])
    if not finals and h.by_op.get("final_workers"):
        c.add({"why": "no final polls were recorded"})
    for r in finals:
        if not r.get("ok"):
            c.count += 1
            c.add({"node": r.get("node"), "why": f"final poll failed: {r.get('err')}"})
            continue
        n = h.nodes.get(r["node"])
        polls = n.polls if n is not None else []
        c.count += 1
        mine = _replay(polls)
        reference = _replay([r])
        if mine.revision < r["rev"]:
            c.add({"node": r["node"], "why": "its polls never reached the final revision",
                   "held": mine.revision, "final": r["rev"]})
        elif shares(mine) != shares(reference) or mine.draining != reference.draining:
            c.add({"node": r["node"], "why": "assignment set differs", "held": mine.revision,
                   "final": r["rev"], "worker": shares(mine), "directory": shares(reference),
                   "draining": [mine.draining, reference.draining]})
    c.worst = f"{c.violations} of {c.count} differ" if c.violations else "all equal"
    return c


def _tokens(h: History) -> Check:
    c = Check("token max_uses")
    limits = {}
    for r in h.by_op.get("token", []):
        if r.get("outcome") == "ok" and (r.get("answer") or {}).get("max_uses"):
            limits[r["answer"]["token_id"]] = int(r["answer"]["max_uses"])
    admitted: dict[str, set[int]] = defaultdict(set)
    for r in h.by_op.get("register", []):
        if r.get("ok") and r.get("token_id") in limits:
            admitted[r["token_id"]].add(r["node"])
    worst = ""
    for tid, limit in sorted(limits.items()):
        c.count += 1
        got = len(admitted.get(tid, ()))
        if got > limit:
            c.add({"token_id": tid, "max_uses": limit, "admitted": got})
            worst = f"token {tid[:8]}: {got} admitted, max_uses {limit}"
    c.worst = worst or "none over"
    return c


def _digest(h: History) -> Check:
    c = Check("identical state on every peer")
    results = h.by_op.get("digest_result", [])
    if not results:
        c.add({"why": "no digest comparison was recorded"})
        c.worst = "not compared"
        return c
    r = results[-1]
    c.count = len(r.get("peers") or [])
    if not r.get("ok"):
        c.add(r)
        c.worst = r.get("why", "digests differ")
    else:
        c.worst = f"equal at index {r.get('index')}"
    return c


def _fault_windows(h: History) -> list[tuple[dict[str, Any], float, float | None, float]]:
    """(start record, start w, stop w or None, window end w) for every fault."""
    starts = sorted((r for r in h.by_op.get("fault", []) if r.get("phase") == "start"),
                    key=lambda r: r["w0"])
    stops = {r["index"]: r for r in h.by_op.get("fault", []) if r.get("phase") == "stop"}
    out = []
    end = h.phases.get("heal", h.phases.get("load_end", {})).get("w0") or h.end_w()
    for i, r in enumerate(starts):
        nxt = starts[i + 1]["w0"] if i + 1 < len(starts) else end
        stop = stops.get(r["index"])
        out.append((r, r["w0"], stop["w0"] if stop else None, nxt))
    return out


def _elections(h: History, t: _Clock) -> Check:
    c = Check("at most one election per fault")
    worst: tuple[int, str] = (0, "")
    for r, start, _stop, end in _fault_windows(h):
        c.count += 1
        elections = h.max_term_at(end) - h.max_term_at(start)
        if elections > worst[0]:
            worst = (elections, f"term +{elections} in fault #{r['index']} {r['kind']} "
                                f"(t={t(start)})")
        if elections > 1:
            c.add({"fault": r["index"], "kind": r["kind"], "peers": r.get("peers"),
                   "t": t(start), "terms": [h.max_term_at(start), h.max_term_at(end)]})
    c.worst = worst[1] or "none"
    return c


def _availability(h: History, t: _Clock) -> list[dict[str, Any]]:
    acks = sorted(r["w1"] for r in h.by_op.get("report", []) if r.get("ok"))
    out = []
    for r, start, stop, end in _fault_windows(h):
        i = bisect.bisect_left(acks, start)
        j = bisect.bisect_right(acks, end)
        inside = acks[i:j]
        gap, at = 0.0, start
        prev = start
        for w in inside + [end]:
            if w - prev > gap:
                gap, at = w - prev, prev
            prev = w
        readies = [w for w, _, _ in h.ready if start < w <= end]
        out.append({
            "fault": r["index"], "kind": r["kind"], "peers": r.get("peers"),
            "mode": r.get("mode") if "isolate" in r["kind"] or r["kind"] == "bridge" else None,
            "start_t": t(start), "lasted_s": round(stop - start, 2) if stop else None,
            "elections": h.max_term_at(end) - h.max_term_at(start),
            "leaders_ready": len(readies),
            "longest_no_ack_s": round(gap, 2), "no_ack_from_t": t(at),
            "first_leader_ready_s": round(readies[0] - start, 2) if readies else None,
            "report_acks": len(inside),
        })
    return out


def _logs(h: History, t: _Clock) -> list[Check]:
    f = h.facts
    out = []
    for name, items in (("log tracebacks", f.tracebacks), ("log CRITICAL", f.criticals),
                        ("log unretrieved task exceptions", f.unretrieved)):
        c = Check(name, count=f.lines)
        for item in items:
            c.add({"peer": item.peer, "line": item.line, "t": t(item.w),
                   "text": item.text[:300]})
        kinds: dict[str, int] = defaultdict(int)
        for item in items:
            kinds[item.text.split(":")[0][:60] if name == "log tracebacks"
                  else item.text.split(": ", 1)[-1][:60]] += 1
        c.figures = {"kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:10])}
        c.worst = (f"{items[0].text[:90]} (peer {items[0].peer})" if items else "none")
        out.append(c)
    return out


# ---------------------------------------------------------------------------- output

def format_table(v: Verdict) -> str:
    rows = [("CHECK", "COUNT", "VIOLATIONS", "WORST")]
    for c in v.checks:
        rows.append((c.name, str(c.count), str(c.violations), c.worst))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    lines = [f"{a:<{w0}}  {b:>{w1}}  {c:>{w2}}  {d}" for a, b, c, d in rows]
    lines.append("")
    lines.append("availability per fault (figures, not judged; TERM+: rise of the highest "
                 "term, LEADERS: leaders taking office, NO-ACK MAX: longest time without "
                 "any report acknowledged, 1ST LEADER AFTER: seconds from the fault's start "
                 "to the first leader taking office):")
    hdr = ("#", "KIND", "PEERS", "START", "LASTED", "TERM+", "LEADERS", "NO-ACK MAX",
           "1ST LEADER AFTER")
    arows = [hdr] + [(
        str(a["fault"]), a["kind"] + (f"/{a['mode']}" if a.get("mode") else ""),
        ",".join(str(p) for p in a.get("peers") or []), f"{a['start_t']:.1f}",
        "-" if a["lasted_s"] is None else f"{a['lasted_s']:.1f}", str(a["elections"]),
        str(a["leaders_ready"]), f"{a['longest_no_ack_s']:.1f}",
        "-" if a["first_leader_ready_s"] is None else f"{a['first_leader_ready_s']:.2f}")
        for a in v.availability]
    widths = [max(len(r[i]) for r in arows) for i in range(len(hdr))]
    for r in arows:
        lines.append("  ".join(x.rjust(widths[i]) if i not in (1, 2) else x.ljust(widths[i])
                               for i, x in enumerate(r)))
    fig = v.figures
    lines.append("")
    lines.append("faults injected: " + (", ".join(f"{k} {n}" for k, n in fig.get(
        "faults", {}).items()) or "none") + f"; workers killed {fig.get('workers_killed', 0)}, "
        f"revived {fig.get('workers_revived', 0)}; report acks {fig.get('report_acks', 0)}, "
        f"failed report attempts {fig.get('report_failures', 0)}; controller max loop lag "
        f"{fig.get('controller_max_lag_s', 0)} s")
    lines.append(f"verdict: {'PASS' if v.ok else 'FAIL'}")
    return "\n".join(lines)
