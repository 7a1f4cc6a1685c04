"""The server side of the ``pollcost`` benchmark: one single-node ``DirectoryServer`` with
the HTTP API on 127.0.0.1 (an OS-chosen port), on the plain asyncio loop or on uvloop,
optionally under ``tracemalloc``. Prints ``{"port": N}``; then answers JSON lines on stdin:
``measure`` (RSS, Python heap by top-level owner, kernel socket memory), ``cpu``, ``stop``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import tracemalloc
from typing import Any

SECRET = "5e" * 32


def _owner(filename: str) -> str:
    """A traced allocation's owner: the package (aiohttp, asyncio, raftdir, msgpack...)."""
    parts = filename.replace("\\", "/").split("/")
    for key in ("aiohttp", "asyncio", "raftdir", "multidict", "yarl", "msgpack", "ssl",
                "uvloop", "selectors", "socket", "pysyncobj"):
        if key in parts:
            i = parts.index(key)
            return "/".join(parts[i:i + 2]).removesuffix(".py")
    return parts[-1].removesuffix(".py")


def _sockstat_kib() -> float:
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE") / 1024
    return 0.0


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def main(trace: bool) -> None:
    from raftdir.api.server import start_api
    from raftdir.server import DirectoryServer, ServerSettings
    server = DirectoryServer(ServerSettings(node_id=1, placement_kinds=frozenset({"worker"})),
                             secret=SECRET)
    await server.start()
    api = await start_api(server, "127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"port": api.port, "loop": type(loop).__module__}), flush=True)
    base: Any = None
    while True:
        line = await reader.readline()
        if not line:
            break
        op = json.loads(line)["op"]
        if op == "base" or op == "measure":
            gc.collect()
            snap = tracemalloc.take_snapshot() if trace else None
            now = {"rss_kib": _rss_kib(), "sock_kib": _sockstat_kib(),
                   "parked": server.notifier.waiting}
            if op == "base":
                base = (now, snap)
                out: Any = now
            else:
                out = dict(now, rss_delta_kib=now["rss_kib"] - base[0]["rss_kib"],
                           sock_delta_kib=now["sock_kib"] - base[0]["sock_kib"])
                if snap is not None and base[1] is not None:
                    by: dict[str, list[int]] = {}
                    for stat in snap.compare_to(base[1], "filename"):
                        key = _owner(stat.traceback[0].filename)
                        acc = by.setdefault(key, [0, 0])
                        acc[0] += stat.size_diff
                        acc[1] += stat.count_diff
                    out["heap_by_owner"] = sorted(
                        ((k, v[0], v[1]) for k, v in by.items()), key=lambda x: -x[1])[:14]
        elif op == "cpu":
            t = os.times()
            out = {"cpu_s": t.user + t.system}
        elif op == "stop":
            break
        else:
            out = {"error": op}
        print(json.dumps(out), flush=True)
    await api.close()
    await server.stop()


if __name__ == "__main__":
    loop_kind, trace = sys.argv[1], sys.argv[2] == "1"
    if trace:
        tracemalloc.start(1)
    if loop_kind == "uvloop":
        import uvloop
        uvloop.install()
    asyncio.run(main(trace))
