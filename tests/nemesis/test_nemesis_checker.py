"""The nemesis checker on small hand-written histories: a clean one passes, and each broken
promise is flagged by its own check with the figures that show it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from raftdir.nemesis.checker import Bounds, check, check_history, format_table
from raftdir.nemesis.history import Recorder
from raftdir.nemesis.logscan import LogFacts, parse_asctime, scan_text

ORIGIN = 1_000_000.0
TTL, GRACE = 4, 6
A, B = 1_000_000, 1_000_001          # two workers
LEADER = 1


class H:
    """A history builder; times are seconds after the origin."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.facts = LogFacts()

    def rec(self, op: str, t0: float, t1: float | None = None, **f: Any) -> None:
        t1 = t0 if t1 is None else t1
        self.records.append({"op": op, "who": f.pop("who", "x"), "t0": t0, "t1": t1,
                             "w0": ORIGIN + t0, "w1": ORIGIN + t1, **f})

    def register(self, node: int, t: float, token_id: str = "main") -> None:
        self.rec("register", t, t + 0.05, who=f"worker:{node}", ok=True, node=node, ttl=TTL,
                 grace=GRACE, token_id=token_id)

    def reports(self, node: int, start: float, end: float, every: float = 2.0) -> None:
        t = start
        while t <= end + 1e-9:
            self.rec("report", t, t + 0.02, who=f"worker:{node}", ok=True, node=node, ttl=TTL)
            t += every

    def poll(self, node: int, t: float, last: int, rev: int, events=(), full=False) -> None:
        self.rec("poll", t, t + 0.01, ok=True, node=node, last=last, rev=rev,
                 events=list(events), full=full)

    def markdown(self, t: float, *nodes: int, term: int = 1) -> None:
        self.facts.markdowns.append((ORIGIN + t, LEADER, term, tuple(nodes)))

    def ready(self, t: float, term: int, peer: int = LEADER) -> None:
        self.facts.ready.append((ORIGIN + t, peer, term))

    def finals(self, nodes: dict[int, dict[str, Any]], services: dict[str, int],
               polls: dict[int, tuple[int, list]], digest_ok: bool = True) -> None:
        end = 100.0
        self.rec("run", end, phase="final_reads")
        self.rec("final_workers", end, ok=True,
                 nodes=[{"node": n, "kind": "worker", **v} for n, v in nodes.items()])
        for name, replicas in services.items():
            self.rec("final_service", end, ok=True, service=name, replicas=replicas)
        for node, (rev, events) in polls.items():
            self.rec("final_poll", end, ok=True, node=node, rev=rev, full=True,
                     events=events)
        self.rec("digest_result", end, ok=digest_ok, index=40, peers=["1", "2", "3"],
                 why=None if digest_ok else "different digests at the same applied index")

    def verdict(self):
        self.facts.markdowns.sort()
        self.facts.ready.sort()
        return check_history(self.records, self.facts, Bounds(GRACE, 0.5, 1.0, ORIGIN))


WEB_A = ["set", "web", 2, [["default", [0, 1]]]]


def clean() -> H:
    """Two workers; A lives throughout, B is killed at 30 and marked down 10.4 s after its
    last ack; one scale acknowledged; everything consistent."""
    h = H()
    h.ready(0.5, term=1)
    h.register(A, 1.0)
    h.register(B, 1.1)
    h.reports(A, 2.0, 98.0)
    h.reports(B, 2.1, 28.1)                  # last ack completes at 28.12
    h.rec("worker_kill", 30.0, node=B)
    h.markdown(38.52, B)
    h.rec("scale", 5.0, 5.2, who="admin", ok=True, outcome="ok", service="web", replicas=2)
    h.poll(A, 1.2, 0, 2, [WEB_A])
    h.poll(A, 6.0, 2, 2)
    h.poll(B, 1.3, 0, 2)
    h.finals({A: {"state": "ready", "draining": False}, B: {"state": "down", "draining": False}},
             {"web": 2}, {A: (2, [WEB_A])})
    return h


def by_name(verdict) -> dict:
    return {c.name: c for c in verdict.checks}


def test_a_clean_history_passes_every_check():
    v = clean().verdict()
    assert v.ok, format_table(v)
    checks = by_name(v)
    assert checks["acked writes lost"].count == 3          # two registrations, one scale
    dead = checks["dead workers marked down in bound"]
    assert dead.count == 1 and dead.figures["worst_s"] == pytest.approx(10.4, abs=0.01)
    assert checks["no event gaps (final sets)"].count == 1
    assert "PASS" in format_table(v)


def test_a_live_worker_marked_down_before_its_lease_ran_out_is_flagged():
    h = clean()
    h.markdown(60.5, A, term=3)           # A's ack sent at 60.0: its lease runs to 70.0
    v = h.verdict()
    checks = by_name(v)
    early, live = checks["lease held until ttl+grace"], checks["live workers never marked down"]
    assert (early.violations, live.violations) == (1, 1)
    assert early.details[0]["node"] == A
    assert early.details[0]["early_by_s"] == pytest.approx(9.5)
    assert "9.5 s early" in live.worst and "term 3" in live.worst
    assert not v.ok


def test_a_live_worker_marked_down_after_its_lease_is_still_flagged_as_live():
    h = clean()
    h.records = [r for r in h.records if not (r["op"] == "report" and r["node"] == A
                                             and 40 < r["t0"] < 60)]
    h.rec("report", 45.0, 47.0, ok=False, err="timeout", node=A)
    h.markdown(52.0, A)                   # last ack sent at 40.0: lease end 50.0
    checks = by_name(h.verdict())
    assert checks["lease held until ttl+grace"].violations == 0
    live = checks["live workers never marked down"]
    assert live.violations == 1
    assert live.details[0]["failed_reports_since"] == 1
    assert live.details[0]["failure_codes"] == ["timeout"]


def test_a_dead_worker_found_late_is_flagged_unless_a_leader_took_office_since():
    h = clean()
    h.facts.markdowns.clear()
    h.markdown(45.0, B)                    # 16.9 s after its last ack; bound 28.12 + 11.5
    dead = by_name(h.verdict())["dead workers marked down in bound"]
    assert dead.violations == 1
    assert dead.details[0]["late_by_s"] == pytest.approx(45.0 - (28.12 + 11.5), abs=0.01)

    h.ready(34.0, term=2)                  # a new leader: the bound runs from 34.0
    dead = by_name(h.verdict())["dead workers marked down in bound"]
    assert dead.violations == 0 and dead.count == 1


def test_a_dead_worker_never_marked_down_before_it_came_back_is_missed():
    h = clean()
    h.facts.markdowns.clear()
    h.rec("worker_revive", 50.0, node=B)   # bound was 39.62
    dead = by_name(h.verdict())["dead workers marked down in bound"]
    assert dead.violations == 1 and dead.details[0]["missed"]
    assert dead.details[0]["came_back_t"] == 50.0


def test_time_without_a_serving_leader_does_not_count_against_detection():
    h = clean()
    h.facts.markdowns.clear()
    h.rec("peer_state", 0.6, ok=True, peer=LEADER, term=1, ready_leader=True)
    h.rec("peer_state", 32.0, ok=False, peer=LEADER, term=1, ready_leader=False)  # SIGSTOP
    h.rec("peer_state", 40.0, ok=True, peer=LEADER, term=1, ready_leader=True)
    h.rec("worker_revive", 44.0, node=B)   # 28.12 + 11.5 + 8 s paused = 47.62: not due yet
    dead = by_name(h.verdict())["dead workers marked down in bound"]
    assert (dead.count, dead.violations) == (0, 0)

    h.records = [r for r in h.records if r["op"] != "worker_revive"]
    h.markdown(48.0, B)                    # 0.38 s past the extended bound
    dead = by_name(h.verdict())["dead workers marked down in bound"]
    assert dead.violations == 1 and dead.details[0]["leaderless_s"] == pytest.approx(8.0)


def test_a_dead_worker_back_before_its_bound_is_not_judged():
    h = clean()
    h.facts.markdowns.clear()
    h.rec("worker_revive", 35.0, node=B)
    h.records = [r for r in h.records if not (r["op"] == "final_workers")]
    h.rec("final_workers", 100.0, ok=True, nodes=[{"node": A, "state": "ready"},
                                                  {"node": B, "state": "ready"}])
    dead = by_name(h.verdict())["dead workers marked down in bound"]
    assert (dead.count, dead.violations) == (0, 0)


def test_a_revision_going_back_is_flagged():
    h = clean()
    h.poll(A, 20.0, 2, 1)
    checks = by_name(h.verdict())
    assert checks["revisions never go back"].violations == 1


def test_a_missed_event_is_an_event_gap():
    h = clean()
    h.records = [r for r in h.records if r["op"] != "final_poll"]
    grown = ["set", "web", 3, [["default", [0, 1, 2]]]]
    h.rec("final_poll", 100.0, ok=True, node=A, rev=3, full=True, events=[grown])
    h.poll(A, 30.0, 2, 3)                 # the worker got the bookmark but not the event
    gaps = by_name(h.verdict())["no event gaps (final sets)"]
    assert gaps.violations == 1 and gaps.details[0]["why"] == "assignment set differs"


def test_a_token_admitting_more_than_max_uses_is_flagged():
    h = clean()
    h.rec("token", 10.0, who="admin", ok=True, outcome="ok", max_uses=2,
          answer={"token_id": "t1", "max_uses": 2})
    for i, node in enumerate((1_000_010, 1_000_011, 1_000_012)):
        h.register(node, 11.0 + i, token_id="t1")
    tokens = by_name(h.verdict())["token max_uses"]
    assert (tokens.count, tokens.violations) == (1, 1)


def test_lost_writes_are_flagged_and_an_unknown_outcome_is_allowed():
    h = clean()
    h.rec("scale", 50.0, 50.1, who="admin", ok=True, outcome="ok", service="web", replicas=5)
    lost = by_name(h.verdict())["acked writes lost"]
    assert lost.violations == 1 and lost.details[0]["expected"] == [5]

    h.rec("scale", 60.0, 80.0, who="admin", ok=False, outcome="unknown", service="web",
          replicas=2)                      # may have committed after all
    assert by_name(h.verdict())["acked writes lost"].violations == 0

    h.records = [r for r in h.records if r["op"] != "final_workers"]
    h.rec("final_workers", 100.0, ok=True, nodes=[{"node": B, "state": "down"}])
    lost = by_name(h.verdict())["acked writes lost"]
    assert [d["node"] for d in lost.details] == [A]


def test_more_than_one_election_in_a_fault_is_flagged():
    h = clean()
    h.rec("fault", 20.0, phase="start", index=0, kind="isolate", peers=[3])
    h.rec("fault", 30.0, phase="stop", index=0, kind="isolate", peers=[3])
    h.rec("run", 40.0, phase="heal")
    h.rec("peer_state", 21.0, ok=True, peer=3, term=1)
    h.rec("peer_state", 31.0, ok=True, peer=3, term=9)
    h.ready(31.5, term=10, peer=3)
    v = h.verdict()
    elections = by_name(v)["at most one election per fault"]
    assert (elections.count, elections.violations) == (1, 1)
    assert v.availability[0]["elections"] == 9 and v.availability[0]["leaders_ready"] == 1


def test_a_digest_mismatch_is_divergence():
    h = clean()
    h.records = [r for r in h.records if r["op"] != "digest_result"]
    h.rec("digest_result", 100.0, ok=False, why="different digests at the same applied index")
    assert by_name(h.verdict())["identical state on every peer"].violations == 1


LOG = """\
2026-01-01 00:00:01,000 INFO raftdir.leader.services: term 3: leader services ready on node 2
2026-01-01 00:00:05,250 INFO raftdir.leader.services: term 3: leases expired, marked down: [1000004, 1000007]
2026-01-01 00:00:06,000 CRITICAL pysyncobj.syncobj: truncating already-applied log entries from index 9
2026-01-01 00:00:07,000 ERROR asyncio: Task exception was never retrieved
future: <Task finished name='Task-9' coro=<f()> exception=NotLeader('x')>
Traceback (most recent call last):
  File "x.py", line 1, in f
    raise NotLeader("x")
raftdir.errors.NotLeader: x
"""


def test_the_log_scanner_finds_markdowns_leaders_and_trouble():
    facts = scan_text(2, LOG)
    t0 = parse_asctime("2026-01-01 00:00:00,000")
    assert [(round(w - t0, 3), p, term) for w, p, term in facts.ready] == [(1.0, 2, 3)]
    assert [(round(w - t0, 3), ids) for w, _, _, ids in facts.markdowns] == [
        (5.25, (1000004, 1000007))]
    assert len(facts.criticals) == 1 and facts.criticals[0].line == 3
    assert len(facts.unretrieved) == 1
    assert [t.text for t in facts.tracebacks] == ["raftdir.errors.NotLeader: x"]
    assert facts.tracebacks[0].w == t0 + 7.0


def test_a_recorded_run_checks_from_its_directory(tmp_path):
    """``--check DIR``: run.json, history.jsonl and the peers' logs, read back; a torn
    last line (a killed controller) is skipped."""
    h = clean()
    rec = Recorder(tmp_path / "history.jsonl", origin_mono=0.0, origin_wall=ORIGIN)
    for r in h.records:
        r = dict(r)
        rec.write(r.pop("op"), r.pop("who"), r.pop("t0"), r.pop("w0"), t1=r.pop("t1"),
                  w1=r.pop("w1"), **r)
    rec.close()
    with open(tmp_path / "history.jsonl", "a") as f:
        f.write('{"op": "repo')
    (tmp_path / "run.json").write_text(json.dumps({
        "origin_wall": ORIGIN, "settings": {"heartbeat_grace": GRACE},
        "peers": {"1": {}}}))
    log = tmp_path / "peers" / "peer1" / "server.log"
    log.parent.mkdir(parents=True)
    from datetime import datetime
    stamp = datetime.fromtimestamp(ORIGIN + 38.52).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
    log.write_text(f"{stamp} INFO raftdir.leader.services: term 1: leases expired, marked "
                   f"down: [{B}]\n")
    v = check(tmp_path)
    assert v.ok, format_table(v)
    assert json.loads((tmp_path / "verdict.json").read_text())["ok"] is True


def test_an_identity_refused_without_an_eviction_is_a_lost_registration():
    """A worker retires when the servers refuse its identity (401 unauthorized, their one
    answer for an evicted node); without an eviction of it, the directory lost it."""
    h = clean()
    h.rec("worker_retire", 50.0, who=f"worker:{B}", node=B, why="poll: unauthorized")
    lost = by_name(h.verdict())["acked writes lost"]
    assert lost.violations == 1 and lost.details[0]["node"] == B
    assert "never evicted" in lost.details[0]["why"]
    h.rec("evict", 49.0, 49.1, who="admin", ok=True, outcome="ok", node=B)
    h.records = [r for r in h.records if r["op"] != "final_workers"]
    h.rec("final_workers", 100.0, ok=True,
          nodes=[{"node": A, "kind": "worker", "state": "ready", "draining": False}])
    assert by_name(h.verdict())["acked writes lost"].violations == 0
