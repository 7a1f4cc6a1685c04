"""``pollcost`` (issue 10): where the memory of a parked poll goes, and what uvloop buys.

One single-node server process (``poll_server``: DirectoryServer + the HTTP API) and this
process as the client, both on the plain asyncio loop, then both on uvloop (when it is
installed), then asyncio again with ``tracemalloc`` in the server for the breakdown:

- reports: ``--pollcost-seconds`` of status reports, 64 in flight (closed loop): acks/s,
  server and client CPU per report;
- parked: ``--pollcost-workers`` polls parked at the current revision: server RSS and
  kernel TCP memory per parked poll (and, traced, the Python heap by owner: aiohttp's
  request and protocol objects, asyncio's transports, raftdir's own);
- wake: one scale with a replica for every parked worker: time until every poll has its
  answer, and the server CPU it took.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .common import BenchResult, JsonChild, log, msgpack_post

MSGPACK = "application/msgpack"
SECRET = "5e" * 32


class Server(JsonChild):
    def __init__(self, loop_kind: str, trace: bool) -> None:
        super().__init__("raftdir_bench.poll_server", [loop_kind, "1" if trace else "0"],
                         "the poll server")
        self.url = f"http://127.0.0.1:{self.hello['port']}"
        self.loop = self.hello["loop"]


async def _session_run(srv: Server, k: int, seconds: float) -> dict[str, Any]:
    import aiohttp
    from raftdir.auth import admin_token
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def post(path: str, body: Any, auth: str | None = None, write: bool = False,
                   timeout: float = 30.0) -> tuple[int, Any]:
        return await msgpack_post(session, srv.url + path, body, auth=auth, write=write,
                                  timeout=timeout)

    out: dict[str, Any] = {"loop": srv.loop}
    try:
        admin = admin_token(SECRET)
        for _ in range(100):          # the single node elects itself
            st, tok = await post("/api/v1/cluster/tokens",
                                 {"valid_for_secs": 3600, "max_uses": 0}, admin, True)
            if st == 200:
                break
            await asyncio.sleep(0.05)
        workers: list[tuple[int, str]] = []
        todo = list(range(k))

        async def reg() -> None:
            while todo:
                todo.pop()
                st, body = await post("/api/v1/workers/register", {
                    "token": tok["token"], "profile": {"api_addr": "127.0.0.1:1",
                                                       "os": "linux", "arch": "x86_64"}},
                    write=True)
                assert st == 200, body
                workers.append((body["node_id"], body["internal_token"]))
        await asyncio.gather(*(reg() for _ in range(64)))
        # reports, closed loop
        n_ok, i = 0, 0
        deadline = time.monotonic() + seconds
        cpu0, mine0 = srv.ask("cpu")["cpu_s"], time.process_time()

        async def rep() -> None:
            nonlocal n_ok, i
            while time.monotonic() < deadline:
                node_id, secret = workers[i % len(workers)]
                i += 1
                st, _ = await post("/api/v1/workers/status", {
                    "node_id": node_id, "ts_ns": time.time_ns(), "containers": [],
                    "resources": {"cpu_used": 0.0, "memory_used_bytes": 0, "gpu_used": 0}},
                    secret, True)
                n_ok += st == 200
        t0 = time.monotonic()
        await asyncio.gather(*(rep() for _ in range(64)))
        wall = time.monotonic() - t0
        cpu1, mine1 = srv.ask("cpu")["cpu_s"], time.process_time()
        out["reports"] = {"per_s": n_ok / wall, "server_us": (cpu1 - cpu0) / n_ok * 1e6,
                          "client_us": (mine1 - mine0) / n_ok * 1e6}
        # park every worker at the current revision
        srv.ask("base")
        st, first = await post("/api/v1/workers/poll", {"node_id": workers[0][0],
                                                         "last_revision": 0,
                                                         "max_wait_secs": 0}, workers[0][1])
        rev = first["revision"]
        answered: list[float] = []

        async def park(w: tuple[int, str]) -> None:
            st, body = await post("/api/v1/workers/poll", {"node_id": w[0],
                                                           "last_revision": rev,
                                                           "max_wait_secs": 60}, w[1],
                                  timeout=90)
            if st == 200 and body.get("events"):
                answered.append(time.monotonic())
        tasks = [asyncio.ensure_future(park(w)) for w in workers]
        for _ in range(600):
            await asyncio.sleep(0.1)
            m = await asyncio.to_thread(srv.ask, "measure")
            if m["parked"] >= k:
                break
        await asyncio.sleep(1.0)
        m = await asyncio.to_thread(srv.ask, "measure")
        out["parked"] = {"polls": m["parked"], "rss_kib_per_poll": m["rss_delta_kib"] / k,
                         "sock_kib_per_poll": m["sock_delta_kib"] / k}
        if "heap_by_owner" in m:
            out["parked"]["heap_bytes_per_poll_by_owner"] = [
                (owner, round(size / k), round(count / k, 2))
                for owner, size, count in m["heap_by_owner"]]
        # wake them all with one scale
        cpu0 = srv.ask("cpu")["cpu_s"]
        t_scale = time.monotonic()
        st, _ = await post("/api/v1/internal/scale", {"service": "w", "replicas": k},
                           admin, True, timeout=120)
        await asyncio.wait(tasks, timeout=60)
        cpu1 = srv.ask("cpu")["cpu_s"]
        lat = sorted(t - t_scale for t in answered)
        out["wake"] = {"answered": len(lat), "all_s": lat[-1] if lat else None,
                       "server_cpu_s": cpu1 - cpu0}
    finally:
        await session.close()
    return out


def _run(loop_kind: str, trace: bool, k: int, seconds: float) -> dict[str, Any]:
    srv = Server(loop_kind, trace)
    try:
        factory = None
        if loop_kind == "uvloop":
            import uvloop
            factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(_session_run(srv, k, seconds))
    finally:
        srv.kill()


def bench_pollcost(opts: Any) -> BenchResult:
    r = BenchResult("pollcost")
    k, seconds = opts.pollcost_workers, opts.pollcost_seconds
    try:
        import uvloop  # noqa: F401
        kinds = ["asyncio", "uvloop", "asyncio", "uvloop"]   # interleaved, twice
    except ImportError:
        kinds = ["asyncio"]
        log("pollcost: uvloop is not installed; plain asyncio only")
    runs: dict[str, list[dict[str, Any]]] = {}
    for kind in kinds:
        res = _run(kind, False, k, seconds)
        log(f"pollcost {kind}: {res}")
        runs.setdefault(kind, []).append(res)
    traced = _run("asyncio", True, k, seconds)
    log(f"pollcost traced: {traced}")
    r.figures = {"runs": runs, "traced": traced, "workers": k}
    for kind, rs in runs.items():
        best = max(rs, key=lambda x: x["reports"]["per_s"])
        r.info(f"{kind}: status acks/s (64 in flight)", best["reports"]["per_s"], "/s")
        r.info(f"{kind}: server CPU per ack", best["reports"]["server_us"], "us")
        r.info(f"{kind}: client CPU per ack", best["reports"]["client_us"], "us")
        r.info(f"{kind}: RSS per parked poll", best["parked"]["rss_kib_per_poll"], "KiB")
        r.info(f"{kind}: kernel TCP memory per parked poll",
               best["parked"]["sock_kib_per_poll"], "KiB")
        r.info(f"{kind}: wake {k:,} parked polls: all answered", best["wake"]["all_s"], "s")
    for owner, size, count in traced["parked"].get("heap_bytes_per_poll_by_owner", [])[:8]:
        r.info(f"heap per parked poll: {owner} ({count} objects)", size, "B")
    return r
