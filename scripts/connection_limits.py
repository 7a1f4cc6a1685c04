"""What slow and idle connections get from a raftdir API with its default limits.

    .venv/bin/python scripts/connection_limits.py            # about a minute
    .venv/bin/python scripts/connection_limits.py --quick    # smaller counts

Starts a single-node server (``DirectoryServer`` + ``start_api`` with its defaults, in a
child process on 127.0.0.1 with an OS-chosen port; a second one with a low connection cap)
and measures, from this process:

- slowloris: connections that send a request line, then one header line a second, forever;
- idle: connections that send nothing at all;
- over the cap: more connections than the server takes;
- kept alive: connections that make one request and then stay idle;

and, during the slowloris, how long a well-behaved ``GET /health`` takes. Prints a table
(the figures in docs/api.md come from it). The child is stopped by its PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time


# ---------------------------------------------------------------------------- the server

async def serve(max_connections: int | None) -> None:
    from raftdir.api.server import start_api
    from raftdir.server import DirectoryServer, ServerSettings

    server = DirectoryServer(ServerSettings(node_id=1), secret="cd" * 32)
    await server.start()
    kwargs = {} if max_connections is None else {"max_connections": max_connections}
    api = await start_api(server, "127.0.0.1", 0, **kwargs)
    print(api.port, api.max_connections, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)   # until the parent closes stdin
    await api.close()
    await server.stop()


def start_child(max_connections: int | None) -> tuple[subprocess.Popen, int, int]:
    args = [sys.executable, __file__, "--serve"]
    if max_connections is not None:
        args += ["--max-connections", str(max_connections)]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port, cap = proc.stdout.readline().split()
    return proc, int(port), int(cap)


def stop_child(proc: subprocess.Popen) -> None:
    try:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


# ---------------------------------------------------------------------------- the clients

class Probe:
    """One connection: when it was opened, when the server closed it, what it answered."""

    def __init__(self) -> None:
        self.opened = 0.0
        self.closed: float | None = None
        self.status: int | None = None

    @property
    def lifetime(self) -> float | None:
        return None if self.closed is None else self.closed - self.opened


async def watch(probe: Probe, reader: asyncio.StreamReader, deadline: float) -> None:
    data = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536),
                                           max(0.01, deadline - time.monotonic()))
            if not chunk:
                break
            data += chunk
    except (asyncio.TimeoutError, ConnectionError):
        pass
    else:
        probe.closed = time.monotonic()
    if data.startswith(b"HTTP/1.1 "):
        probe.status = int(data[9:12])


async def open_probe(port: int) -> tuple[Probe, asyncio.StreamReader, asyncio.StreamWriter]:
    probe = Probe()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    probe.opened = time.monotonic()
    return probe, reader, writer


async def slowloris(port: int, count: int, horizon: float) -> tuple[list[Probe], list[float]]:
    deadline = time.monotonic() + horizon
    conns = [await open_probe(port) for _ in range(count)]
    watchers = [asyncio.ensure_future(watch(p, r, deadline)) for p, r, _ in conns]

    async def trickle(writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /health HTTP/1.1\r\nHost: raftdir\r\n")
        i = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            i += 1
            try:
                writer.write(b"X-Pad-%d: x\r\n" % i)
            except (ConnectionError, RuntimeError):
                return

    senders = [asyncio.ensure_future(trickle(w)) for _, _, w in conns]
    latencies: list[float] = []
    while time.monotonic() < deadline and not all(w.done() for w in watchers):
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: raftdir\r\nConnection: close\r\n\r\n")
        await reader.read()
        writer.close()
        latencies.append(time.monotonic() - started)
        await asyncio.sleep(0.5)
    await asyncio.gather(*watchers)
    for s in senders:
        s.cancel()
    for _, _, w in conns:
        w.close()
    return [p for p, _, _ in conns], latencies


async def idle(port: int, count: int, horizon: float, request_first: bool = False
               ) -> list[Probe]:
    deadline = time.monotonic() + horizon
    conns = []
    for _ in range(count):
        probe, reader, writer = await open_probe(port)
        if request_first:
            writer.write(b"GET /health HTTP/1.1\r\nHost: raftdir\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            probe.opened = time.monotonic()   # idle from here
        conns.append((probe, reader, writer))
    await asyncio.gather(*(watch(p, r, deadline) for p, r, _ in conns))
    for _, _, w in conns:
        w.close()
    return [p for p, _, _ in conns]


# ---------------------------------------------------------------------------- report

def describe(probes: list[Probe]) -> str:
    closed = [p.lifetime for p in probes if p.lifetime is not None]
    statuses: dict[str, int] = {}
    for p in probes:
        key = str(p.status) if p.status else ("closed" if p.closed else "open")
        statuses[key] = statuses.get(key, 0) + 1
    text = f"{len(closed)}/{len(probes)} closed"
    if closed:
        text += (f" after {min(closed):.2f} s (min) / {statistics.median(closed):.2f} s "
                 f"(median) / {max(closed):.2f} s (max)")
    return text + "; answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))


async def measure(opts: argparse.Namespace) -> None:
    n_slow, n_idle, n_alive = (20, 200, 20) if opts.quick else (200, 2000, 100)
    proc, port, cap = start_child(None)
    rows = []
    try:
        probes, latencies = await slowloris(port, n_slow, 30.0)
        rows.append((f"slowloris x{n_slow} (a header line a second)", describe(probes)))
        rows.append(("GET /health during the slowloris",
                     f"median {statistics.median(latencies) * 1000:.1f} ms, max "
                     f"{max(latencies) * 1000:.1f} ms over {len(latencies)} requests"))
        rows.append((f"idle x{n_idle} (nothing sent)", describe(await idle(port, n_idle, 30.0))))
        rows.append((f"kept alive x{n_alive} (one request, then idle)",
                     describe(await idle(port, n_alive, 60.0, request_first=True))))
    finally:
        stop_child(proc)
    low = n_idle // 2
    proc, port, cap_low = start_child(low)
    try:
        probes = await idle(port, n_idle, 30.0)
        refused = [p for p in probes if p.status == 503]
        rows.append((f"idle x{n_idle} at a cap of {cap_low}",
                     describe(probes) + f"; 503 overloaded within "
                     f"{max(p.lifetime or 0 for p in refused):.2f} s" if refused else
                     describe(probes)))
    finally:
        stop_child(proc)
    print(f"raftdir API connection limits (defaults: cap {cap}); python {sys.version.split()[0]}")
    width = max(len(r[0]) for r in rows)
    for name, text in rows:
        print(f"  {name.ljust(width)}  {text}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--max-connections", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="smaller counts (a quick look)")
    opts = ap.parse_args()
    if opts.serve:
        asyncio.run(serve(opts.max_connections))
    else:
        asyncio.run(measure(opts))


if __name__ == "__main__":
    main()
