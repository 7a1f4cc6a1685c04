"""Benchmarks of issue 4 §7 (D): a simulated fleet against three raftdir server processes
on 127.0.0.1, next to the raw PySyncObj write rate measured in the same run.

The fleet is one asyncio process (this one) with ONE shared aiohttp ``ClientSession``
(unlimited connector) sending msgpack POSTs directly, the same bodies and headers as
``RaftdirClient`` (which is too heavy to run 10,000 times in one process on 2 cores).
Servers: ``python -m raftdir serve --data-dir D`` when that command exists, else
``raftdir_bench.server_main`` (``Daemon.from_data_dir``), in worker-tier mode with a
cluster secret (so Raft traffic is encrypted, as in production). Heartbeat TTLs are raised
(min 300 s) so that no lease expires while the benchmark pauses between phases.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import (
    BenchResult, PeerCluster, child_env, cpu_seconds, log, msgpack_post, pct, rss_mb,
)

MSGPACK = "application/msgpack"


def _serve_available() -> bool:
    try:
        out = subprocess.run([sys.executable, "-m", "raftdir", "serve", "--help"],
                             capture_output=True, timeout=60, env=child_env())
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0


def make_cluster(base: Path, use_serve: bool) -> Any:
    from raftdir.testing import LocalCluster

    class BenchCluster(LocalCluster):
        def start(self, node_id: int | None = None) -> None:
            if use_serve:
                return super().start(node_id)
            for peer in ([self.peers[node_id]] if node_id is not None
                         else self.peers.values()):
                if peer.proc is not None and peer.proc.poll() is None:
                    continue
                logf = open(peer.data_dir / "server.log", "ab")
                peer.proc = subprocess.Popen(
                    [sys.executable, "-m", "raftdir_bench.server_main", str(peer.data_dir)],
                    stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=dict(child_env(), **self.env), start_new_session=True)
                logf.close()

    return BenchCluster(base).prepare(heartbeat={"heartbeat_min_ttl": 300,
                                                 "heartbeat_max_ttl": 600})


class Fleet:
    def __init__(self, cluster: Any, opts: Any) -> None:
        import aiohttp
        from raftdir.auth import admin_token
        from raftdir.codec import dumps_msgpack, loads_msgpack
        self.aiohttp = aiohttp
        self.dumps, self.loads = dumps_msgpack, loads_msgpack
        self.cluster = cluster
        self.opts = opts
        self.admin = admin_token(cluster.secret)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            limit=0, limit_per_host=0, ttl_dns_cache=None))
        self.workers: list[tuple[int, str]] = []   # (node_id, node secret)
        self.fan: list[tuple[int, str]] = []
        self.token = ""

    async def close(self) -> None:
        await self.session.close()

    def url(self, node_id: int) -> str:
        return self.cluster.peers[node_id].url

    async def post(self, base: str, path: str, body: Any, *, auth: str | None = None,
                   write: bool = False, timeout: float = 10.0) -> tuple[int, Any]:
        return await msgpack_post(self.session, base + path, body, auth=auth, write=write,
                                  timeout=timeout)

    async def get_text(self, base: str, path: str) -> str:
        async with self.session.get(base + path,
                                    timeout=self.aiohttp.ClientTimeout(total=5)) as resp:
            return await resp.text()

    async def parked(self, node_ids: list[int]) -> int:
        total = 0
        for n in node_ids:
            try:
                text = await self.get_text(self.url(n), "/metrics")
            except Exception:  # noqa: BLE001 - a dead peer parks nothing
                continue
            for line in text.splitlines():
                if line.startswith("raftdir_parked_polls "):
                    total += int(float(line.split()[1]))
        return total

    # -- registrations -----------------------------------------------------------------
    async def create_token(self, leader: int) -> None:
        st, body = await self.post(self.url(leader), "/api/v1/cluster/tokens",
                                   {"valid_for_secs": 86400, "max_uses": 0},
                                   auth=self.admin, write=True)
        if st != 200:
            raise RuntimeError(f"create token: {st} {body}")
        self.token = body["token"]

    def reg_body(self, i: int, fan: bool) -> dict[str, Any]:
        labels = {"sim": "yes", "grp": "fan" if fan else "bulk"}
        return {"token": self.token, "profile": {
            "api_addr": f"127.0.0.1:{20000 + i % 40000}", "os": "linux", "arch": "x86_64",
            "labels": labels}}

    async def register_all(self, leader: int, n: int, n_fan: int, conc: int,
                           bound_s: float) -> dict[str, Any]:
        base = self.url(leader)
        lats: list[float] = []
        errors: list[str] = []
        next_i = 0
        deadline = time.monotonic() + bound_s
        results: list[tuple[int, str] | None] = [None] * n

        async def loop() -> None:
            nonlocal next_i
            while next_i < n and time.monotonic() < deadline:
                i = next_i
                next_i += 1
                t0 = time.perf_counter()
                try:
                    st, body = await self.post(base, "/api/v1/workers/register",
                                               self.reg_body(i, i < n_fan), write=True)
                except Exception as exc:  # noqa: BLE001 - counted
                    errors.append(type(exc).__name__)
                    continue
                if st != 200:
                    errors.append(f"{st} {body.get('code') if body else ''}")
                    continue
                lats.append(time.perf_counter() - t0)
                results[i] = (body["node_id"], body["internal_token"])
        t0 = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(conc)))
        elapsed = time.monotonic() - t0
        self.workers = [w for w in results if w is not None]
        self.fan = [w for w in results[:n_fan] if w is not None]
        return {"ok": len(lats), "seconds": elapsed, "rate": len(lats) / elapsed,
                "p50_ms": (pct(lats, 50) or 0) * 1e3, "p99_ms": (pct(lats, 99) or 0) * 1e3,
                "errors": len(errors), "error_kinds": sorted(set(errors))[:5]}

    # -- status reports ----------------------------------------------------------------
    async def status_load(self, leader: int, seconds: float, conc: int) -> dict[str, Any]:
        base = self.url(leader)
        pid = self.cluster.peers[leader].proc.pid
        lats: list[float] = []
        errors: list[str] = []
        k = 0
        ws = self.workers
        deadline = time.monotonic() + seconds
        max_ops = int(seconds * 50_000)

        async def loop() -> None:
            nonlocal k
            while time.monotonic() < deadline and k < max_ops:
                node_id, secret = ws[k % len(ws)]
                k += 1
                body = {"node_id": node_id, "ts_ns": time.time_ns(), "containers": [],
                        "resources": {"cpu_used": 0.0, "memory_used_bytes": 0,
                                      "gpu_used": 0}}
                t0 = time.perf_counter()
                try:
                    st, resp = await self.post(base, "/api/v1/workers/status", body,
                                               auth=secret, write=True)
                except Exception as exc:  # noqa: BLE001 - counted
                    errors.append(type(exc).__name__)
                    continue
                if st != 200:
                    errors.append(f"{st} {resp.get('code') if resp else ''}")
                    continue
                lats.append(time.perf_counter() - t0)
        cpu0, mycpu0 = cpu_seconds(pid), time.process_time()
        t0 = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(conc)))
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(pid) - cpu0
        return {"acks": len(lats), "seconds": elapsed, "rate": len(lats) / elapsed,
                "p50_ms": (pct(lats, 50) or 0) * 1e3, "p99_ms": (pct(lats, 99) or 0) * 1e3,
                "max_ms": max(lats) * 1e3 if lats else None,
                "leader_cpu_s": cpu, "leader_cpu_us_per_ack": cpu / max(1, len(lats)) * 1e6,
                "client_cpu_s": time.process_time() - mycpu0,
                "errors": len(errors), "error_kinds": sorted(set(errors))[:5]}

    # -- polls -------------------------------------------------------------------------
    async def poll(self, server: int, node_id: int, secret: str, last: int, wait: int,
                   timeout: float) -> tuple[int, Any]:
        return await self.post(self.url(server), "/api/v1/workers/poll",
                               {"node_id": node_id, "last_revision": last,
                                "max_wait_secs": wait}, auth=secret, timeout=timeout)

    async def fanout(self, leader: int, bound_s: float = 30.0) -> dict[str, Any]:
        servers = sorted(self.cluster.peers)
        fan = self.fan
        # each worker learns its revision (a full answer), then parks on a server
        revs: dict[int, int] = {}
        sem = asyncio.Semaphore(100)

        async def first(j: int, w: tuple[int, str]) -> None:
            async with sem:
                st, body = await self.poll(servers[j % 3], w[0], w[1], 0, 0, 10)
                if st != 200:
                    raise RuntimeError(f"poll: {st} {body}")
                revs[w[0]] = body["revision"]
        await asyncio.gather(*(first(j, w) for j, w in enumerate(fan)))
        got: dict[int, float] = {}
        t_scale = [0.0]
        deadline = time.monotonic() + bound_s
        errors: list[str] = []

        async def park(j: int, w: tuple[int, str]) -> None:
            last = revs[w[0]]
            while time.monotonic() < deadline:
                try:
                    st, body = await self.poll(servers[j % 3], w[0], w[1], last, 30, 40)
                except Exception as exc:  # noqa: BLE001
                    errors.append(type(exc).__name__)
                    await asyncio.sleep(0.05)
                    continue
                if st != 200:
                    errors.append(str(st))
                    await asyncio.sleep(0.05)
                    continue
                last = max(last, body["revision"])
                if any(ev.get("service") == "fan" and ev.get("kind") == "set"
                       for ev in body.get("events", [])):
                    got[w[0]] = time.monotonic()
                    return
        tasks = [asyncio.ensure_future(park(j, w)) for j, w in enumerate(fan)]
        try:
            t_wait = time.monotonic() + 20
            parked = 0
            while time.monotonic() < t_wait:
                parked = await self.parked(servers)
                if parked >= len(fan):
                    break
                await asyncio.sleep(0.1)
            t_scale[0] = time.monotonic()
            st, body = await self.post(
                self.url(leader), "/api/v1/internal/scale",
                {"service": "fan", "replicas": len(fan),
                 "spec": {"image": "bench", "placement": {"labels": {"grp": "fan"}}}},
                auth=self.admin, write=True, timeout=30)
            scale_s = time.monotonic() - t_scale[0]
            if st != 200:
                raise RuntimeError(f"scale: {st} {body}")
            await asyncio.wait(tasks, timeout=max(1.0, deadline - time.monotonic()))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        lat = [got[w[0]] - t_scale[0] for w in fan if w[0] in got]
        return {"workers": len(fan), "parked_before_scale": parked - len(servers), "received": len(lat),
                "scale_call_s": scale_s, "p50_s": pct(lat, 50), "p99_s": pct(lat, 99),
                "max_s": max(lat) if lat else None, "errors": len(errors)}

    async def park_all(self, server: int, bound_s: float = 90.0) -> dict[str, Any]:
        pid = self.cluster.peers[server].proc.pid
        ws = self.workers
        st, body = await self.poll(server, ws[0][0], ws[0][1], 0, 0, 10)
        rev = body["revision"] + 10**6   # above any revision the run will reach: no answer
        before = rss_mb(pid)
        baseline = await self.parked([server])   # the server's own watcher parks one
        sem = asyncio.Semaphore(200)      # connection set-up rate only; all stay parked
        opened = [0]

        async def park(w: tuple[int, str]) -> None:
            async with sem:
                opened[0] += 1
            await self.poll(server, w[0], w[1], rev, 60, 70)
        tasks = [asyncio.ensure_future(park(w)) for w in ws]
        parked = 0
        try:
            deadline = time.monotonic() + bound_s
            t0 = time.monotonic()
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                parked = await self.parked([server])
                if parked >= len(ws):
                    break
            took = time.monotonic() - t0
            await asyncio.sleep(1.0)
            after = rss_mb(pid)
            parked = await self.parked([server])
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # the server notices the disconnects and cancels the handlers
        for _ in range(100):
            if await self.parked([server]) <= baseline:
                break
            await asyncio.sleep(0.1)
        parked -= baseline
        return {"parked": parked, "rss_before_mb": before, "rss_after_mb": after,
                "kib_per_parked_poll": (after - before) * 1024 / max(1, parked),
                "seconds_to_park": took}

    # -- failover ----------------------------------------------------------------------
    async def failover_trial(self, idle: float) -> dict[str, Any]:
        cl = self.cluster
        for n in sorted(cl.peers):     # every trial starts from three live peers
            if not cl.alive(n):
                cl.start(n)
        t_up = time.monotonic() + 30
        while not all(cl.alive(n) and cl.health(n) for n in sorted(cl.peers)):
            if time.monotonic() > t_up:
                raise RuntimeError("a peer did not come back; see its server.log")
            await asyncio.sleep(0.2)
        await asyncio.sleep(idle)
        leader = await asyncio.to_thread(cl.wait_leader, 30.0)
        survivors = [n for n in sorted(cl.peers) if n != leader]
        probe_w = self.workers[0]
        done: dict[str, float] = {}
        t_kill = time.monotonic()
        await asyncio.to_thread(cl.kill, leader)
        deadline = t_kill + 30
        reg_i = [0]

        async def probe(kind: str) -> None:
            k = 0
            while time.monotonic() < deadline:
                server = survivors[k % 2]
                k += 1
                try:
                    if kind == "register":
                        reg_i[0] += 1
                        st, _ = await self.post(self.url(server), "/api/v1/workers/register",
                                                self.reg_body(10**6 + reg_i[0], False),
                                                write=True, timeout=1.0)
                    else:
                        st, _ = await self.poll(server, probe_w[0], probe_w[1], 0, 0, 1.0)
                    if st == 200:
                        done[kind] = time.monotonic() - t_kill
                        return
                except Exception:  # noqa: BLE001 - probing
                    pass
                await asyncio.sleep(0.025)
        await asyncio.gather(probe("register"), probe("poll"))
        new_leader = cl.leader_id()
        # bring the killed peer back and let it catch up before the next trial
        cl.start(leader)
        caught = None
        t_restart = time.monotonic()
        while time.monotonic() < t_restart + 60:
            await asyncio.sleep(0.2)
            try:
                _, mine = await self._peer_status(leader)
                _, lead = await self._peer_status(new_leader or survivors[0])
            except Exception:  # noqa: BLE001 - not up yet
                continue
            if mine and lead and mine.get("last_applied", 0) >= lead.get("commit_index", 1):
                caught = time.monotonic() - t_restart
                break
        served = max(done.values()) if len(done) == 2 else None
        return {"killed": leader, "new_leader": new_leader,
                "register_s": done.get("register"), "poll_s": done.get("poll"),
                "served_again_s": served, "restarted_caught_up_s": caught}

    async def _peer_status(self, node_id: int) -> tuple[int, Any]:
        async with self.session.get(self.url(node_id) + "/api/v1/cluster/peers",
                                    headers={"Accept": MSGPACK},
                                    timeout=self.aiohttp.ClientTimeout(total=2)) as resp:
            return resp.status, self.loads(await resp.read())


def raw_rate(base: Path, secret: str, seconds: float) -> dict[str, Any]:
    """The raw PySyncObj write rate, same SyncObjConf and password as the servers."""
    cl = PeerCluster(base, "raw", secret=secret)
    try:
        cl.start()
        leader = cl.wait_leader()
        leader.request("load", threads=4, seconds=1.0, size=200, timeout=60)
        out = {}
        for threads in (1, 16):
            out[f"{threads}t"] = leader.request("load", threads=threads, seconds=seconds,
                                                size=200, timeout=seconds + 60)["result"]
        return out
    finally:
        cl.kill_all()


async def _run(r: BenchResult, cluster: Any, opts: Any) -> None:
    fl = Fleet(cluster, opts)
    try:
        leader = await asyncio.to_thread(cluster.wait_leader, 60.0)
        await fl.create_token(leader)
        n, n_fan = opts.fleet, min(opts.fanout, opts.fleet)
        log(f"fleet: registering {n:,} workers over HTTP ({opts.concurrency} in flight)")
        reg = await fl.register_all(leader, n, n_fan, opts.concurrency, 180.0)
        r.figures["register"] = reg
        log(f"fleet: {reg}")
        r.check("registrations over HTTP", reg["rate"], "/s", ">=", 1000)
        r.info("registration p99", reg["p99_ms"], "ms")
        log(f"fleet: status reports for {opts.status_seconds:g} s")
        await fl.status_load(leader, 1.0, opts.concurrency)   # warm-up
        stl = await fl.status_load(leader, opts.status_seconds, opts.concurrency)
        r.figures["status"] = stl
        log(f"fleet: {stl}")
        r.check(f"status acks/s ({len(fl.workers):,} workers)", stl["rate"], "/s", ">=",
                5000)
        r.info("status ack p50", stl["p50_ms"], "ms")
        r.check("status ack p99", stl["p99_ms"], "ms", "<=", 50)
        raw16 = r.figures["raw_raft"]["16t"]["rate"]
        r.check("status acks / raw Raft writes (16 thr)", stl["rate"] / raw16, "x", ">=", 5)
        r.info("leader CPU per ack", stl["leader_cpu_us_per_ack"], "us")
        log("fleet: fan-out")
        fo = await fl.fanout(leader)
        r.figures["fanout"] = fo
        log(f"fleet: {fo}")
        r.info(f"fan-out: scale call ({fo['workers']:,} replicas)", fo["scale_call_s"], "s")
        r.info("fan-out: workers that got their event", fo["received"], "")
        r.check("fan-out p99 (scale sent -> event held)", fo["p99_s"], "s", "<=", 1.0)
        log(f"fleet: parking {len(fl.workers):,} polls on the leader")
        pk = await fl.park_all(leader)
        r.figures["parked"] = pk
        log(f"fleet: {pk}")
        r.info("parked polls", pk["parked"], "")
        r.check(f"server RSS with {pk['parked']:,} parked polls", pk["rss_after_mb"], "MB",
                "<=", 300)
        r.info("memory per parked poll", pk["kib_per_parked_poll"], "KiB")
        trials = []
        for k in range(opts.failover_trials):
            t = await fl.failover_trial(opts.failover_idle)
            log(f"fleet: failover trial {k}: {t}")
            trials.append(t)
        r.figures["failover"] = trials
        served = sorted(t["served_again_s"] if t["served_again_s"] is not None else 99.0
                        for t in trials)
        if served:
            r.check(f"failover, median of {len(served)} (kill -9 -> register+poll OK)",
                    statistics.median(served), "s", "<=", 1.0)
            r.info("failover, worst", served[-1], "s")
            polls = sorted(t["poll_s"] for t in trials if t["poll_s"] is not None)
            if polls:
                r.info("failover: polls served again, median", statistics.median(polls), "s")
            regs = [t["register_s"] for t in trials if t["register_s"] is not None]
            if regs:
                r.info("failover: registrations served again, median",
                       statistics.median(regs), "s")
    finally:
        await fl.close()


def bench_fleet(opts: Any) -> BenchResult:
    r = BenchResult("fleet")
    use_serve = _serve_available()
    r.figures["server_command"] = ("python -m raftdir serve" if use_serve
                                   else "python -m raftdir_bench.server_main (Daemon)")
    with tempfile.TemporaryDirectory(prefix="raftdir-bench-d-") as tmp:
        base = Path(tmp)
        cluster = make_cluster(base / "cluster", use_serve)
        log("fleet: raw PySyncObj write rate (same conf and password as the servers)")
        r.figures["raw_raft"] = raw_rate(base / "raw", cluster.secret, 4.0)
        r.info("raw Raft writes, 16 threads", r.figures["raw_raft"]["16t"]["rate"], "/s")
        r.info("raw Raft writes, 1 thread", r.figures["raw_raft"]["1t"]["rate"], "/s")
        try:
            cluster.start()
            asyncio.run(_run(r, cluster, opts))
        finally:
            for node_id in list(cluster.peers):
                cluster.kill(node_id)
            r.figures["server_logs_tail"] = {
                n: (p.data_dir / "server.log").read_text(errors="replace")[-1500:]
                for n, p in cluster.peers.items() if (p.data_dir / "server.log").exists()}
    return r
