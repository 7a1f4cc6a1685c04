"""Benchmark E (issue 8): elections a returning follower causes, stock PySyncObj against
raftdir's Raft rules (PreVote, leader stickiness: raftdir/replication/raft_rules.py), in
one run.

Two three-peer clusters of bench peers (``raft_peer``): ``raw`` (a bare PySyncObj SyncObj
with raftdir's configuration) and ``node`` (raftdir's PySyncObjNode). The same trials on
each: a follower killed with -9 and restarted after 1 s; a follower paused (SIGSTOP) for
2 s; a follower cut off (every Raft message dropped) for 3 s. Each trial counts the terms
the cluster went through (the highest term after it settled minus the one before) and
whether the leader changed. A healthy leader should see none: the follower left and came
back, nothing else happened.
"""

from __future__ import annotations

import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import BenchResult, PeerCluster, PeerProc, log

SCENARIOS = ("restart", "pause", "cut_off")


def _status(p: PeerProc) -> dict[str, Any] | None:
    try:
        return p.request("status", timeout=5.0)["status"]
    except (RuntimeError, TimeoutError):
        return None


def _settled(cl: PeerCluster, timeout: float) -> tuple[PeerProc, int]:
    """Every peer follows one leader and has applied its commit index."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sts = [(p, _status(p)) for p in cl.peers]
        leaders = [(p, s) for p, s in sts if s and s["is_leader"]]
        if len(leaders) == 1 and all(s for _, s in sts):
            leader, ls = leaders[0]
            if all(s["leader"] == leader.args["self"] and s["last_applied"] >= ls["commit_index"]
                   and s["term"] == ls["term"] for p, s in sts if p is not leader):
                return leader, ls["term"]
        time.sleep(0.05)
    raise TimeoutError("the cluster did not settle")


def _trial(cl: PeerCluster, scenario: str, k: int) -> dict[str, Any]:
    leader, term = _settled(cl, 30)
    followers = [p for p in cl.peers if p is not leader]
    victim = followers[k % len(followers)]
    if scenario == "restart":
        victim.kill()
        time.sleep(1.0)
        victim.start(timeout=60)
    elif scenario == "pause":
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            time.sleep(2.0)
        finally:
            os.kill(victim.pid, signal.SIGCONT)
    else:
        victim.request("isolate", seconds=3.0)
        time.sleep(3.0)
    time.sleep(1.0)                      # let whatever election there is happen
    new_leader, new_term = _settled(cl, 30)
    return {"scenario": scenario, "victim": victim.args["self"], "terms": new_term - term,
            "leader_changed": new_leader is not leader}


def bench_elections(opts: Any) -> BenchResult:
    r = BenchResult("elections")
    trials = opts.election_trials
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="raftdir-bench-e-") as tmp:
        for kind in ("raw", "node"):
            cl = PeerCluster(Path(tmp) / kind, kind)
            try:
                cl.start()
                cl.wait_leader(30)
                out[kind] = {}
                for scenario in SCENARIOS:
                    runs = []
                    for k in range(trials):
                        t = _trial(cl, scenario, k)
                        log(f"elections: {kind} {scenario} {k}: {t}")
                        runs.append(t)
                    out[kind][scenario] = runs
            finally:
                cl.kill_all()
    r.figures["trials"] = out
    for scenario in SCENARIOS:
        for kind, label in (("raw", "stock PySyncObj"), ("node", "raftdir")):
            runs = out[kind][scenario]
            r.info(f"{scenario}: terms per trial, {label} (mean of {len(runs)})",
                   statistics.mean(t["terms"] for t in runs), "terms")
            r.info(f"{scenario}: leader deposed, {label}",
                   sum(t["leader_changed"] for t in runs), f"of {len(runs)}")
        r.check(f"{scenario}: terms caused, raftdir (total of {trials})",
                sum(t["terms"] for t in out["node"][scenario]), "terms", "<=", 0)
    return r
