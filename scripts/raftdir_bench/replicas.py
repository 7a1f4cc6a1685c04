"""Benchmark of issue 10: a fleet of 50,000 simulated workers against 3 voters and 2
read-only replicas, and the same fleet against 3 voters alone, in the same run.

Servers: ``raftdir serve`` processes (worker-tier, cluster secret, the adaptive TTL with
``max_heartbeats_per_second`` raised to 500 so that 50,000 workers hold a 100 s TTL and the
run can watch a whole TTL after the kill). The fleet: ``fleet_proc`` processes, each ONE
asyncio loop holding 12,500 workers as plain data (the machine allows 20,000 open files
per process, so 50,000 parked polls cannot live in one process). Per configuration:

1. cold start, registration storm: every fleet process registers its workers with the
   leader (``--concurrency`` in flight each) and starts reporting and polling each worker
   as soon as it is registered: time until all are registered, registrations/s;
2. every worker parks a poll on its home server (rendezvous hash over the acks' list):
   RSS of every server before the fleet and now, parked polls per server;
3. steady state at the adaptive TTL for ``--steady-seconds``: reports/s on the leader
   (its heartbeat counter) and the leader's CPU;
4. one scale of ``fan`` to as many replicas as workers: time from the request until each
   worker holds its ``set`` event (p50, p99), counted by the fleet processes;
5. kill -9 of the leader: time until a report and a poll are served by a survivor (a
   probe worker every 25 ms), until the fleet's reports are acknowledged again, until the
   workers homed on the dead leader parked elsewhere; then the run watches for the new
   leader's whole takeover window (longest TTL + grace, plus 15 s) and counts the workers
   marked down (must be 0) and the registrations lost (must be 0).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import msgpack

from .common import BenchResult, JsonChild, child_env, cpu_seconds, log, pct, rss_mb

PER_PROC = 12_500
HEARTBEAT = {"max_heartbeats_per_second": 500}
MSGPACK = "application/msgpack"


def _http(url: str, body: Any = None, token: str | None = None, timeout: float = 10.0,
          method: str | None = None, request_id: str | None = None) -> tuple[int, Any]:
    data = msgpack.packb(body, use_bin_type=True) if body is not None else None
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    req.add_header("Accept", MSGPACK)
    if data is not None:
        req.add_header("Content-Type", MSGPACK)
        req.add_header("X-Request-Id", request_id or uuid.uuid4().hex)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, msgpack.unpackb(raw, raw=False) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, msgpack.unpackb(raw, raw=False)
        except Exception:  # noqa: BLE001
            return exc.code, None
    except (OSError, ValueError):
        return 0, None


def metrics(url: str) -> dict[str, float]:
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def gc_pauses(url: str) -> dict[str, Any]:
    """A server's garbage collections so far, by generation, from
    ``raftdir_gc_pause_seconds``: how many, their seconds in all, and the bucket holding the
    longest (``"<= 2.0"``)."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    count: dict[str, float] = {}
    total: dict[str, float] = {}
    buckets: dict[str, list[tuple[str, float]]] = {}
    for line in text.splitlines():
        if not line.startswith("raftdir_gc_pause_seconds"):
            continue
        name, _, value = line.rpartition(" ")
        gen = name.split('generation="', 1)[1].split('"', 1)[0]
        if name.startswith("raftdir_gc_pause_seconds_count"):
            count[gen] = float(value)
        elif name.startswith("raftdir_gc_pause_seconds_sum"):
            total[gen] = float(value)
        elif 'le="' in name:
            buckets.setdefault(gen, []).append(
                (name.split('le="', 1)[1].split('"', 1)[0], float(value)))
    return {gen: {"count": int(c), "seconds": round(total.get(gen, 0.0), 2),
                  "longest_le": next((le for le, n in buckets.get(gen, []) if n >= c), None)}
            for gen, c in sorted(count.items())}


class FleetProc(JsonChild):
    def __init__(self, cfg: dict[str, Any], log_path: Path) -> None:
        self.logf = open(log_path, "ab")
        super().__init__("raftdir_bench.fleet_proc", [json.dumps(cfg)], "a fleet process",
                         stderr=self.logf)

    def kill(self) -> None:
        super().kill()
        self.logf.close()


def _until(cond: Any, bound: float, every: float = 0.5) -> float | None:
    """Seconds until ``cond()`` held, None if it did not within ``bound``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < bound:
        if cond():
            return time.monotonic() - t0
        time.sleep(every)
    return None


def run_config(base: Path, n: int, replicas: int, opts: Any,
               out: dict[str, Any]) -> dict[str, Any]:
    """One configuration; ``out`` collects the figures as they come (a failed phase
    leaves the earlier ones there)."""
    from raftdir.auth import admin_token
    from raftdir.testing import LocalCluster

    out.update(workers=n, replicas=replicas)
    env = {"PYTHONPATH": child_env()["PYTHONPATH"]}
    # every server may hold the whole fleet's polls while others are down or refuse
    extra = ["--max-connections", str(max(10_000, n + 2_000))]
    if getattr(opts, "election_timeout", None):
        extra += ["--election-timeout", str(opts.election_timeout)]
    if getattr(opts, "gc_threshold", None):
        extra += ["--gc-threshold", opts.gc_threshold]
    cluster = LocalCluster(base, env=env, extra_args=extra).prepare(heartbeat=HEARTBEAT,
                                                                    replicas=replicas)
    fleets: list[FleetProc] = []
    try:
        cluster.start()
        leader = cluster.wait_settled(60)
        if replicas:
            _until(lambda: len(_peers(cluster, leader).get("replicas", [])) == replicas, 30)
        url = {k: p.url for k, p in cluster.peers.items()}
        pid = {k: p.proc.pid for k, p in cluster.peers.items()}
        admin = admin_token(cluster.secret)
        time.sleep(1.0)
        rss0 = {k: rss_mb(pid[k]) for k in cluster.peers}
        st, tok = _http(url[leader] + "/api/v1/cluster/tokens",
                        {"valid_for_secs": 86400, "max_uses": 0}, admin)
        assert st == 200, (st, tok)
        servers = [url[k] for k in sorted(cluster.peers)]
        for i in range(math.ceil(n / PER_PROC)):
            lo, hi = i * PER_PROC, min(n, (i + 1) * PER_PROC)
            fleets.append(FleetProc({"lo": lo, "hi": hi, "servers": servers,
                                     "leader": url[leader], "token": tok["token"],
                                     "conc": opts.concurrency, "uvloop": opts.fleet_uvloop},
                                    base / f"fleet{i}.log"))
        # 1. the registration storm
        for f in fleets:
            f.ask("register")

        def stats() -> list[dict[str, Any]]:
            return [f.ask("stats") for f in fleets]
        done = _until(lambda: sum(s["registered"] + s["reg_failed"] for s in stats()) >= n,
                      opts.bound, every=1.0)
        s = stats()
        registered = sum(x["registered"] for x in s)
        out["register"] = {"registered": registered, "failed": sum(x["reg_failed"] for x in s),
                           "seconds": done, "rate": registered / done if done else None,
                           "retries": sum(x["reg_retries"] for x in s)}
        log(f"replicas={replicas}: {out['register']}")
        # 2. every worker parks a poll
        def parked() -> dict[int, float]:
            return {k: metrics(url[k]).get("raftdir_api_parked_polls", 0)
                    for k in cluster.peers if cluster.alive(k)}
        took = _until(lambda: sum(parked().values()) >= registered, 300, every=2.0)
        time.sleep(2.0)
        p = parked()
        rss1 = {k: rss_mb(pid[k]) for k in cluster.peers}
        out["parked"] = {"seconds_after_registered": took,
                         "per_server": {str(k): int(v) for k, v in sorted(p.items())},
                         "total": int(sum(p.values()))}
        out["rss_mb"] = {str(k): {"before": round(rss0[k], 1), "after": round(rss1[k], 1),
                                  "role": _role(cluster, k, leader)}
                         for k in sorted(cluster.peers)}
        log(f"replicas={replicas}: parked {out['parked']}, rss {out['rss_mb']}")
        out["terms"] = {"registered": _term(cluster)}
        # 3. steady state
        leader = cluster.wait_leader(120)
        m0, c0, w0 = metrics(url[leader]), cpu_seconds(pid[leader]), time.monotonic()
        time.sleep(opts.steady_seconds)
        m1, c1, w1 = metrics(url[leader]), cpu_seconds(pid[leader]), time.monotonic()
        hb = m1["raftdir_heartbeats_received_total"] - m0["raftdir_heartbeats_received_total"]
        out["steady"] = {"seconds": w1 - w0, "reports_per_s": hb / (w1 - w0),
                         "leader_cpu_pct": 100 * (c1 - c0) / (w1 - w0),
                         "leader_cpu_us_per_report": (c1 - c0) / max(1, hb) * 1e6,
                         "ttl_s": _ttl(n)}
        log(f"replicas={replicas}: steady {out['steady']}")
        out["terms"]["steady"] = _term(cluster)
        # 4. one scale to n replicas
        t_scale = time.monotonic()
        rid = uuid.uuid4().hex            # retried under one request id, as the client does
        for _ in range(30):
            leader = cluster.wait_leader(120)
            st, body = _http(url[leader] + "/api/v1/internal/scale",
                             {"service": "fan", "replicas": registered}, admin, timeout=300,
                             request_id=rid)
            if st not in (421, 502, 503, 504):
                break
            time.sleep(0.5)
        call_s = time.monotonic() - t_scale
        got: list[float] = []

        def all_got() -> bool:
            got[:] = [t for f in fleets for t in f.ask("fan")["times"]]
            return len(got) >= registered
        _until(all_got, 180, every=1.0)
        lat = [t - t_scale for t in got]
        out["scale"] = {"status": st, "call_s": call_s, "received": len(lat),
                        "p50_s": pct(lat, 50), "p99_s": pct(lat, 99),
                        "max_s": max(lat) if lat else None}
        log(f"replicas={replicas}: scale {out['scale']}")
        out["terms"]["scaled"] = _term(cluster)
        # 5. kill -9 the leader under the fleet
        out["gc"] = {str(k): gc_pauses(url[k]) for k in sorted(cluster.peers)}
        log(f"replicas={replicas}: garbage collections until now {out['gc']}")
        leader = cluster.wait_leader(120)
        probe = _probe_worker(url[leader], tok["token"])
        survivors = [k for k in sorted(cluster.peers) if k != leader]
        time.sleep(2.0)
        t_kill = time.monotonic()
        cluster.kill(leader)
        served = _served_again(cluster, survivors, url, probe, t_kill)
        keep = threading.Event()      # the probe worker goes on reporting, as a live one
        threading.Thread(target=_keep_reporting, args=(survivors, url, probe, keep),
                         daemon=True).start()
        reparked = _until(lambda: sum(parked().values()) >= registered, 120, every=0.5)
        new_leader = cluster.leader_id()
        window = _ttl(n) + 10 + 15
        log(f"replicas={replicas}: failover {served}; watching {window} s for expiries")
        time.sleep(max(0.0, t_kill + window - time.monotonic()))
        keep.set()
        s = [f.ask("stats", since=t_kill) for f in fleets]
        first_ok = [x["first_report_ok_after"] for x in s if x["first_report_ok_after"]]
        m = metrics(url[new_leader]) if new_leader else {}
        ready, down = m.get("raftdir_workers_ready"), m.get("raftdir_workers_down")
        out["failover"] = dict(
            served, new_leader=new_leader, parked_again_s=reparked,
            fleet_reports_acked_again_s=(min(first_ok) - t_kill) if first_ok else None,
            watched_s=time.monotonic() - t_kill, workers_ready=ready, workers_down=down,
            lease_expiries=m.get("raftdir_lease_expiries_total"),
            lost_registrations=None if ready is None else registered + 1 - int(ready + down),
            reregistered=sum(x["reregister"] for x in s),
            replica_behind_answers=sum(x["replica_behind"] for x in s))
        out["terms"]["end"] = _term(cluster)
        log(f"replicas={replicas}: {out['failover']}; terms {out['terms']}")
        return out
    finally:
        for f in fleets:
            f.kill()
        for k in list(cluster.peers):
            cluster.kill(k)


def _ttl(n: int) -> int:
    from raftdir.model import AdaptiveTtlConfig
    return AdaptiveTtlConfig(max_heartbeats_per_second=HEARTBEAT["max_heartbeats_per_second"]
                             ).compute_ttl(n)


def _term(cluster: Any) -> int | None:
    """The highest Raft term the live voters report (1 + the elections so far)."""
    terms = [_peers(cluster, k).get("term") for k in cluster.voters if cluster.alive(k)]
    return max((t for t in terms if isinstance(t, int)), default=None)


def _role(cluster: Any, k: int, leader: int) -> str:
    return "replica" if k in cluster.replicas else "leader" if k == leader else "follower"


def _peers(cluster: Any, k: int) -> dict[str, Any]:
    st, body = _http(cluster.peers[k].url + "/api/v1/cluster/peers")
    return body if st == 200 and isinstance(body, dict) else {}


def _probe_worker(leader_url: str, token: str) -> tuple[int, str]:
    st, body = _http(leader_url + "/api/v1/workers/register", {"token": token, "profile": {
        "api_addr": "127.0.0.1:19999", "os": "linux", "arch": "x86_64"}})
    assert st == 200, (st, body)
    return body["node_id"], body["internal_token"]


def _keep_reporting(survivors: list[int], url: dict[int, str], probe: tuple[int, str],
                    stop: threading.Event) -> None:
    k = 0
    while not stop.wait(2.0):
        k += 1
        _http(url[survivors[k % len(survivors)]] + "/api/v1/workers/status", {
            "node_id": probe[0], "ts_ns": time.time_ns(), "containers": [],
            "resources": {"cpu_used": 0.0, "memory_used_bytes": 0, "gpu_used": 0}},
            probe[1], timeout=2.0)


def _served_again(cluster: Any, survivors: list[int], url: dict[int, str],
                  probe: tuple[int, str], t_kill: float) -> dict[str, Any]:
    node_id, secret = probe
    done: dict[str, float] = {}
    k = 0
    while time.monotonic() - t_kill < 30 and len(done) < 2:
        server = url[survivors[k % len(survivors)]]
        k += 1
        if "report" not in done:
            st, _ = _http(server + "/api/v1/workers/status", {
                "node_id": node_id, "ts_ns": time.time_ns(), "containers": [],
                "resources": {"cpu_used": 0.0, "memory_used_bytes": 0, "gpu_used": 0}},
                secret, timeout=1.0)
            if st == 200:
                done["report"] = time.monotonic() - t_kill
        if "poll" not in done:
            st, _ = _http(server + "/api/v1/workers/poll", {
                "node_id": node_id, "last_revision": 0, "max_wait_secs": 0}, secret,
                timeout=1.0)
            if st == 200:
                done["poll"] = time.monotonic() - t_kill
        time.sleep(0.025)
    return {"report_served_s": done.get("report"), "poll_served_s": done.get("poll")}


def _open_files_for(n: int) -> int:
    """Raise this process's open-file limit (the servers and fleet processes inherit it)
    toward what ``n`` parked polls on one server need; the limit reached."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, 2 * n + 10_000)
    for limits in ((want, max(hard, want)), (min(want, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            return limits[0]
        except (OSError, ValueError):
            continue      # raising the hard limit needs CAP_SYS_RESOURCE
    return soft


def bench_replicas(opts: Any) -> BenchResult:
    r = BenchResult("replicas")
    n = opts.replica_fleet
    r.figures["open_files"] = _open_files_for(n)
    log(f"replicas: open-file limit {r.figures['open_files']:,}")
    r.figures["loadavg_before"] = Path("/proc/loadavg").read_text().split()[:3]
    tmp = tempfile.mkdtemp(prefix="raftdir-bench-r-")   # kept when a configuration failed
    if True:
        runs = {}
        for reps in (int(x) for x in getattr(opts, "replica_configs", "2,0").split(",")):
            log(f"replicas: {n:,} workers, 3 voters + {reps} replicas")
            partial: dict[str, Any] = {}
            try:
                runs[reps] = run_config(Path(tmp) / f"r{reps}", n, reps, opts, partial)
            except Exception as exc:  # noqa: BLE001 - the other configuration still runs
                log(f"replicas={reps}: FAILED: {type(exc).__name__}: {exc}")
                runs[reps] = dict(partial, error=f"{type(exc).__name__}: {exc}")
    if any("error" in v for v in runs.values()):
        log(f"replicas: data and server logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    r.figures["runs"] = {str(k): v for k, v in runs.items()}
    r.figures["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    for reps, v in runs.items():
        tag = f"{reps} replicas"
        if "error" in v:
            r.error = f"{tag}: {v['error']}"
            continue
        r.info(f"{tag}: registration storm, all registered", v["register"]["seconds"], "s")
        r.info(f"{tag}: registrations/s", v["register"]["rate"], "/s")
        r.check(f"{tag}: lost registrations", (v["failover"]["lost_registrations"] or 0)
                + v["register"]["failed"], "", "<=", 0)
        r.info(f"{tag}: reports/s on the leader (TTL {v['steady']['ttl_s']} s)",
               v["steady"]["reports_per_s"], "/s")
        r.info(f"{tag}: leader CPU, steady state", v["steady"]["leader_cpu_pct"], "%")
        r.info(f"{tag}: Raft term after the storm / steady state / scale", None, "")
        r.checks[-1].unit = "/".join(str(v["terms"].get(p)) for p in
                                     ("registered", "steady", "scaled"))
        for k, mem in v["rss_mb"].items():
            parked = v["parked"]["per_server"].get(k, 0)
            r.info(f"{tag}: {mem['role']} {k} RSS ({parked:,} parked)", mem["after"], "MB")
        r.info(f"{tag}: scale to {n:,}: p50", v["scale"]["p50_s"], "s")
        r.info(f"{tag}: scale to {n:,}: p99", v["scale"]["p99_s"], "s")
        for k, by_gen in v.get("gc", {}).items():
            for gen, g in by_gen.items():
                r.info(f"{tag}: server {k}: generation {gen} collections (longest <= "
                       f"{g['longest_le']} s, {g['seconds']} s in all)", g["count"], "")
        r.info(f"{tag}: kill -9 leader -> report served", v["failover"]["report_served_s"], "s")
        r.info(f"{tag}: kill -9 leader -> poll served", v["failover"]["poll_served_s"], "s")
        r.check(f"{tag}: workers marked down", v["failover"]["workers_down"], "", "<=", 0)
    return r
