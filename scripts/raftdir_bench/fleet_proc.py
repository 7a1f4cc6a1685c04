"""One process of the 50,000-worker fleet (``replicas`` benchmark): workers ``lo..hi`` as
plain data in ONE asyncio loop (no thread, no client object per worker). Each registers
with the leader, reports before its TTL (``report_interval``, to the leader the acks name;
a follower forwards), and keeps one poll parked on its home server (``poll_home`` over the
server list of its acks, as ``RaftdirClient`` does), moving to another server when home
fails. Driven by JSON lines on stdin; answers JSON lines on stdout.

Commands: ``register`` (start), ``stats``, ``fan`` (receipt times of the ``fan`` set
event), ``stop``. Every loop is bounded by the process's life, which the coordinator ends
by PID."""

from __future__ import annotations

import asyncio
import heapq
import json
import sys
import time
import uuid
from typing import Any

import aiohttp

from raftdir.agent.agent import report_interval
from raftdir.api.client import poll_home
from raftdir_bench.common import msgpack_post


class Fleet:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.lo, self.hi = cfg["lo"], cfg["hi"]
        n = self.hi - self.lo
        self.node_id = [0] * n
        self.secret = [""] * n
        self.rev = [0] * n
        self.servers: list[str] = list(cfg["servers"])
        self.leader: str = cfg["leader"]
        self.fan_at: dict[int, float] = {}
        self.heap: list[tuple[float, int]] = []
        self.stats = {"registered": 0, "reg_failed": 0, "reg_retries": 0, "reports_ok": 0,
                      "reports_failed": 0, "polls_ok": 0, "poll_errors": 0,
                      "replica_behind": 0, "last_report_ok": 0.0, "reports_ok_at": [],
                      "reregister": 0}
        self.session: aiohttp.ClientSession | None = None
        self.tasks: list[asyncio.Task[Any]] = []

    async def post(self, url: str, path: str, body: Any, auth: str | None = None,
                   write: bool = False, timeout: float = 10.0) -> tuple[int, Any]:
        return await msgpack_post(self.session, url + path, body, auth=auth, write=write,
                                  timeout=timeout)

    # -- registration ----------------------------------------------------------------
    async def register_all(self) -> None:
        queue = list(range(self.hi - self.lo))
        queue.reverse()

        async def one() -> None:
            while queue:
                k = queue.pop()
                i = self.lo + k
                rid = uuid.uuid4().hex       # one request id for every try
                body = {"token": self.cfg["token"], "profile": {
                    "api_addr": f"127.0.0.1:{20000 + i % 40000}", "os": "linux",
                    "arch": "x86_64", "labels": {"sim": "yes"}}}
                target = self.leader
                for attempt in range(60):
                    try:
                        st, resp = await self._post_rid(target, body, rid)
                    except Exception:  # noqa: BLE001 - retried
                        st, resp = 0, None
                    if st == 200:
                        self.node_id[k] = resp["node_id"]
                        self.secret[k] = resp["internal_token"]
                        if resp.get("servers"):
                            self.servers = list(resp["servers"])
                        self.stats["registered"] += 1
                        self._schedule(k, report_interval(resp["heartbeat_ttl_secs"]))
                        self.tasks.append(asyncio.ensure_future(self.poll_loop(k)))
                        break
                    self.stats["reg_retries"] += 1
                    if st == 421 and resp and resp.get("leader"):
                        target = self.leader = resp["leader"]
                    elif st in (0, 502, 503, 504, 421):
                        target = self.servers[attempt % len(self.servers)] if st == 0 \
                            else target
                        await asyncio.sleep(min(2.0, 0.05 * 2 ** min(attempt, 6)))
                    else:
                        break
        await asyncio.gather(*(one() for _ in range(self.cfg["conc"])))
        self.stats["reg_failed"] = sum(1 for x in self.node_id if x == 0)

    async def _post_rid(self, url: str, body: Any, rid: str) -> tuple[int, Any]:
        return await msgpack_post(self.session, url + "/api/v1/workers/register", body,
                                  request_id=rid)

    # -- reports: one scheduler, a bounded number in flight ---------------------------
    def _schedule(self, k: int, after: float) -> None:
        heapq.heappush(self.heap, (time.monotonic() + after, k))

    async def report_loop(self) -> None:
        sem = asyncio.Semaphore(self.cfg.get("report_conc", 64))
        while True:
            now = time.monotonic()
            while self.heap and self.heap[0][0] <= now:
                _, k = heapq.heappop(self.heap)
                await sem.acquire()
                t = asyncio.ensure_future(self.report(k))
                t.add_done_callback(lambda _t: sem.release())
            await asyncio.sleep(0.02)

    async def report(self, k: int) -> None:
        body = {"node_id": self.node_id[k], "ts_ns": time.time_ns(), "containers": [],
                "resources": {"cpu_used": 0.0, "memory_used_bytes": 0, "gpu_used": 0}}
        target = self.leader
        for attempt in range(40):
            try:
                st, resp = await self.post(target, "/api/v1/workers/status", body,
                                           auth=self.secret[k], write=True, timeout=10)
            except Exception:  # noqa: BLE001 - retried
                st, resp = 0, None
            if st == 200:
                now = time.monotonic()
                self.stats["reports_ok"] += 1
                self.stats["last_report_ok"] = now
                if resp.get("leader"):
                    self.leader = resp["leader"]
                if resp.get("servers") and resp["servers"] != self.servers:
                    self.servers = list(resp["servers"])
                self._schedule(k, report_interval(resp["next_ttl_secs"]))
                if len(self.stats["reports_ok_at"]) < 200_000:
                    self.stats["reports_ok_at"].append(now)
                return
            self.stats["reports_failed"] += 1
            if st == 410:
                self.stats["reregister"] += 1
                return
            if st == 421 and resp and resp.get("leader"):
                target = self.leader = resp["leader"]
                continue
            target = self.servers[(attempt + 1) % len(self.servers)] if st in (0, 421) \
                else target
            await asyncio.sleep(min(1.0, 0.05 * 2 ** min(attempt, 5)))
        self._schedule(k, 1.0)

    # -- polls: one parked per worker, on its home server -----------------------------
    async def poll_loop(self, k: int) -> None:
        node_id, detour, fails, until = self.node_id[k], None, 0, 0.0
        while True:
            if detour is not None and time.monotonic() > until:
                detour = None        # try home again (POLL_DETOUR_SECS, as the client)
            server = detour or poll_home(node_id, self.servers)
            body = {"node_id": node_id, "last_revision": self.rev[k], "max_wait_secs": 60}
            try:
                st, resp = await self.post(server, "/api/v1/workers/poll", body,
                                           auth=self.secret[k], timeout=75)
            except Exception:  # noqa: BLE001 - another server next
                st, resp = 0, None
            if st == 200:
                fails = 0
                self.stats["polls_ok"] += 1
                self.rev[k] = max(self.rev[k], resp["revision"])
                for ev in resp.get("events", ()):
                    if ev.get("service") == "fan" and ev.get("kind") == "set" \
                            and node_id not in self.fan_at:
                        self.fan_at[node_id] = time.monotonic()
                continue
            self.stats["poll_errors"] += 1
            if st == 503 and resp and resp.get("code") == "replica_behind":
                self.stats["replica_behind"] += 1
                detour, until = resp.get("leader") or None, time.monotonic() + 30.0
                continue
            fails += 1
            others = [s for s in self.servers if s != server] or self.servers
            detour, until = others[(node_id + fails) % len(others)], time.monotonic() + 30.0
            await asyncio.sleep(min(1.0, 0.05 * fails))

    # -- the command loop ---------------------------------------------------------------
    async def run(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            limit=0, limit_per_host=0, ttl_dns_cache=None))
        self.tasks.append(asyncio.ensure_future(self.report_loop()))
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                     sys.stdin)
        print(json.dumps({"ready": True}), flush=True)
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "register":
                self.tasks.append(asyncio.ensure_future(self.register_all()))
                out: Any = {"ok": True}
            elif op == "stats":
                s = dict(self.stats)
                since = cmd.get("since")
                at = s.pop("reports_ok_at")
                s["first_report_ok_after"] = min((t for t in at if since and t > since),
                                                 default=None)
                s["servers"] = self.servers
                s["leader"] = self.leader
                out = s
            elif op == "fan":
                out = {"times": list(self.fan_at.values())}
            elif op == "stop":
                break
            else:
                out = {"error": f"unknown op {op}"}
            print(json.dumps(out), flush=True)
        for t in self.tasks:
            t.cancel()
        await self.session.close()


def main() -> None:
    cfg = json.loads(sys.argv[1])
    if cfg.get("uvloop"):
        import uvloop
        uvloop.install()
    asyncio.run(Fleet(cfg).run())


if __name__ == "__main__":
    main()
