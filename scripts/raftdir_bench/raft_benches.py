"""Benchmarks of issue 3 §4: adapter overhead (A), hard state per worker (B), restart of a
peer holding 100,000 workers (C)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import BenchResult, PeerCluster, child_env, log


# ---------------------------------------------------------------------------- A

def bench_adapter(opts: Any) -> BenchResult:
    """raftdir commands/s ÷ raw PySyncObj calls/s, same cluster config and payload size,
    interleaved phases of ``opts.phase_seconds`` (order alternates per round). Four
    clusters: raw PySyncObj, PySyncObjNode with a null state machine (both without the
    journal sync), raftdir with
    ``journal_sync`` off (like for like with raw, which never syncs: the target) and
    raftdir as it ships (journal synced: the price of surviving a power loss)."""
    r = BenchResult("adapter")
    seconds = opts.phase_seconds
    rounds = opts.rounds
    with tempfile.TemporaryDirectory(prefix="raftdir-bench-a-") as tmp:
        base = Path(tmp)
        raw = PeerCluster(base, "raw")
        rd = PeerCluster(base, "raftdir")
        nd = PeerCluster(base, "node")
        un = PeerCluster(base, "unsynced")
        try:
            raw.start()
            rd.start()
            nd.start()
            un.start()
            raw_leader = raw.wait_leader()
            rd_leader = rd.wait_leader()
            nd_leader = nd.wait_leader()
            un_leader = un.wait_leader()
            size = rd_leader.request("payload")["size"]
            r.figures["payload_bytes"] = size
            log(f"adapter: payload {size} B; warm-up")
            raw_leader.request("load", threads=4, seconds=1.0, size=size, timeout=60)
            rd_leader.request("load", threads=4, seconds=1.0, size=size, timeout=60)
            nd_leader.request("load", threads=4, seconds=1.0, size=size, timeout=60)
            un_leader.request("load", threads=4, seconds=1.0, size=size, timeout=60)
            leaders = {"raw": raw_leader, "node": nd_leader, "raftdir": rd_leader,
                       "unsynced": un_leader}
            terms0 = {k: v.request("status")["status"]["term"] for k, v in leaders.items()}
            phases: list[dict[str, Any]] = []
            for rnd in range(rounds):
                for threads in (1, 16):
                    order = list(leaders.items())
                    if rnd % 2:
                        order.reverse()
                    for kind, leader in order:
                        res = leader.request("load", threads=threads, seconds=seconds,
                                             size=size, timeout=seconds + 90)["result"]
                        res.update(kind=kind, threads=threads, round=rnd)
                        phases.append(res)
                        log(f"adapter: round {rnd} {kind:8s} {threads:2d} threads: "
                            f"{res['rate']:7.0f}/s p50 {res['p50_ms'] or 0:.2f} ms "
                            f"p99 {res['p99_ms'] or 0:.2f} ms errors {res['errors']}")
            terms1 = {k: v.request("status")["status"]["term"] for k, v in leaders.items()}
            r.figures["phases"] = phases
            r.figures["term_changes"] = {k: terms1[k] - terms0[k] for k in terms0}
            for threads in (1, 16):
                agg = {}
                for kind in ("raw", "node", "unsynced", "raftdir"):
                    ph = [p for p in phases if p["kind"] == kind and p["threads"] == threads]
                    ops = sum(p["ops"] for p in ph)
                    secs = sum(p["seconds"] for p in ph)
                    agg[kind] = ops / secs
                    p50s = sorted(p["p50_ms"] for p in ph)
                    r.figures[f"{kind}_{threads}t"] = {
                        "rate": agg[kind], "p50_ms": p50s[len(p50s) // 2],
                        "p99_ms": max(p["p99_ms"] for p in ph),
                        "cpu_us_per_op": 1e6 * sum(p["cpu_s"] for p in ph) / max(1, ops)}
                    label = {"raw": "raw SyncObj",
                             "node": "PySyncObjNode, null SM, journal_sync off",
                             "unsynced": "PySyncObjNode + Directory, journal_sync off",
                             "raftdir": "PySyncObjNode + Directory"}[kind]
                    r.info(f"{label}, {threads} thr", agg[kind], "ops/s")

                def per_round(kind: str) -> list[float]:
                    out = []
                    for rnd in range(rounds):
                        by = {p["kind"]: p["rate"] for p in phases
                              if p["threads"] == threads and p["round"] == rnd}
                        out.append(by[kind] / by["raw"])
                    return sorted(out)
                node_r, rd_r = per_round("node"), per_round("raftdir")
                un_r = per_round("unsynced")
                r.figures[f"round_ratios_{threads}t"] = {"node": node_r, "raftdir": rd_r,
                                                         "unsynced": un_r}
                r.info(f"ratio null-SM adapter/raw, {threads} thr, median of rounds",
                       node_r[len(node_r) // 2], "x")
                r.info(f"ratio raftdir (journal synced)/raw, {threads} thr, median",
                       rd_r[len(rd_r) // 2], "x")
                r.info(f"journal sync cost: synced/sync off, {threads} thr, pooled",
                       agg["raftdir"] / agg["unsynced"], "x")
                r.info(f"ratio raftdir sync off/raw, {threads} thr, all phases pooled",
                       agg["unsynced"] / agg["raw"], "x")
                # The target measures the adapter's overhead, so like for like: raw
                # PySyncObj never syncs its journal, so neither does this raftdir cluster.
                r.check(f"ratio raftdir sync off/raw, {threads} thr, median of {rounds}",
                        un_r[len(un_r) // 2], "x", ">=", 0.8)
            with open("/proc/loadavg") as f:
                r.figures["loadavg_end"] = f.read().split()[:3]
        finally:
            raw.kill_all()
            rd.kill_all()
            nd.kill_all()
            un.kill_all()
    return r


# ---------------------------------------------------------------------------- B

def bench_state(opts: Any) -> BenchResult:
    r = BenchResult("state")
    n = opts.workers
    out = subprocess.run([sys.executable, "-m", "raftdir_bench.state_probe", str(n)],
                         capture_output=True, text=True, env=child_env(), timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    fig = json.loads(out.stdout.strip().splitlines()[-1])
    r.figures.update(fig)
    r.check(f"RSS growth per worker ({n:,})", fig["rss_per_worker_bytes"], "B", "<=", 2048)
    r.check(f"snapshot bytes per worker ({n:,})", fig["snapshot_per_worker_bytes"], "B",
            "<=", 2048)
    r.info("to_snapshot + msgpack pack", fig["snapshot_s"], "s")
    r.info("msgpack unpack + from_snapshot", fig["restore_s"], "s")
    return r


# ---------------------------------------------------------------------------- C

def _wait_caught_up(cluster: PeerCluster, timeout: float) -> list[dict[str, Any] | None]:
    deadline = time.monotonic() + timeout
    while True:
        sts = cluster.statuses()
        leaders = [s for s in sts if s and s["is_leader"]]
        if leaders and all(s and s["last_applied"] >= leaders[0]["commit_index"]
                           for s in sts):
            return sts
        if time.monotonic() > deadline:
            raise TimeoutError(f"peers not caught up: {sts}")
        time.sleep(0.2)


def _log_evidence(cl: PeerCluster) -> dict[str, list[str]]:
    """Each peer's leadership changes and snapshot writes (timestamps from its log), to
    line the elections up with the synchronous snapshots."""
    out = {}
    for p in cl.peers:
        try:
            lines = p.log_path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        out[p.args["self"]] = [ln[11:23] + " " + ln.split(": ", 1)[-1][:70] for ln in lines
                               if "leadership" in ln or "snapshot written" in ln][-60:]
    return out


def bench_restart(opts: Any) -> BenchResult:
    r = BenchResult("restart")
    n = opts.workers
    with tempfile.TemporaryDirectory(prefix="raftdir-bench-c-") as tmp:
        base = Path(tmp)
        cl = PeerCluster(base, "raftdir")
        try:
            cl.start()
            leader = cl.wait_leader()
            st0 = leader.request("status")["status"]
            rss0 = [s["rss_mb"] for s in cl.statuses() if s]
            log(f"restart: registering {n:,} workers through the leader (window 256, "
                "chunks of 10,000, following the leader)")
            fill = {"ops": 0, "seconds": 0.0, "errors": 0, "leader_changes": 0,
                    "error_kinds": [], "chunks": []}
            t_fill = time.monotonic()
            chunk = 10_000
            i = 0
            while i < n and time.monotonic() - t_fill < opts.fill_seconds:
                leader = cl.wait_leader(60)
                left = opts.fill_seconds - (time.monotonic() - t_fill)
                res = leader.request("fill", start=i, count=min(chunk, n - i), window=256,
                                     seconds=max(5.0, left), timeout=left + 120)["result"]
                fill["chunks"].append(dict(res, start=i))
                fill["errors"] += res["errors"]
                fill["error_kinds"] = sorted(set(fill["error_kinds"]) | set(res["error_kinds"]))
                if res["lost_leader"]:
                    fill["leader_changes"] += 1
                    log(f"restart: leader lost during chunk at {i:,}; re-sending the chunk")
                    continue
                i += min(chunk, n - i)
            fill["seconds"] = time.monotonic() - t_fill
            fill["ops"] = i
            r.figures["fill"] = fill
            log(f"restart: filled {fill['ops']:,} in {fill['seconds']:.1f} s "
                f"({fill['ops'] / fill['seconds']:.0f}/s), leader lost "
                f"{fill['leader_changes']} times, errors {fill['errors']} "
                f"{fill['error_kinds']}")
            if i < n:
                raise RuntimeError(f"only {i:,} of {n:,} workers registered in "
                                   f"{opts.fill_seconds:g} s")
            r.figures["fill_log_evidence"] = _log_evidence(cl)
            sts = _wait_caught_up(cl, 120)
            leader = cl.wait_leader()
            st1 = leader.request("status")["status"]
            r.figures["terms_during_fill"] = st1["term"] - st0["term"]
            r.figures["rss_mb_empty"] = rss0
            r.figures["rss_mb_full"] = [s["rss_mb"] for s in sts if s]
            r.figures["nodes"] = [s["nodes"] for s in sts if s]
            r.info("fill rate (RegisterNode, async window 256)",
                   fill["ops"] / fill["seconds"], "cmd/s")
            r.info("leader lost during the fill", fill["leader_changes"], "times")
            r.info("elections during the fill", st1["term"] - st0["term"], "terms")
            lowest = min(p.args["self"] for p in cl.peers)
            trials = []
            for k in range(opts.restart_trials):
                time.sleep(1.0)
                leader = cl.wait_leader()
                followers = [p for p in cl.peers if p is not leader]
                victim = followers[k % len(followers)]
                commit = leader.request("status")["status"]["commit_index"]
                victim.kill()
                time.sleep(0.5)
                victim.start(timeout=60)
                started = time.monotonic() - victim.spawned_at
                deadline = time.monotonic() + 30
                caught = None
                first = None
                while time.monotonic() < deadline:
                    st = victim.request("status", timeout=10)["status"]
                    if first is None:
                        first = st
                    if st["last_applied"] >= commit and st["nodes"] >= n:
                        caught = time.monotonic() - victim.spawned_at
                        break
                    time.sleep(0.01)
                trial = {"peer": victim.args["self"], "lowest_address":
                         victim.args["self"] == lowest, "started_s": started,
                         "caught_up_s": caught, "commit_index": commit,
                         "last_applied_at_start": first["last_applied"] if first else None}
                trials.append(trial)
                log(f"restart: trial {k}: {trial}")
            r.figures["trials"] = trials
            times = sorted(t["caught_up_s"] if t["caught_up_s"] is not None else 99.0
                           for t in trials)
            r.info("restart: process start + dump load, median",
                   statistics.median(t["started_s"] for t in trials), "s")
            r.check(f"restart until caught up, median of {len(trials)}",
                    statistics.median(times), "s", "<=", 3.0)
            r.check(f"restart until caught up, worst of {len(trials)}", times[-1], "s",
                    "<=", 3.0)
            r.info("RSS per peer at 100k (max)", max(r.figures["rss_mb_full"]), "MB")
        finally:
            cl.kill_all()
    return r
