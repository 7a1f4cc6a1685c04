"""TCP proxies between Raft peers on loopback, which a test can cut and heal (partitions).

Owns: ``PairProxy`` (one listening socket relaying every connection one peer dials to
another peer's real Raft port) and ``ProxyMesh`` (one proxy per ordered pair of peers, and
the partitions made of them: a pair cut, a peer isolated, a bridge). Peers are started with
``raftdir.testing.nemesis_peer --dial IDENTITY=127.0.0.1:PROXY_PORT`` so that they dial
through here while keeping their configured addresses as their identities.

What a cut looks like to the peers, as a real partition does to TCP:

- ``hold`` (the default): nothing is relayed either way; bytes already sent stay held here
  (or in the kernel's socket buffers) and new connections are accepted but not relayed
  (no upstream connection is made). PySyncObj's own ``connectionTimeout`` then closes a
  link it keeps sending on. Healing relays what was held and resumes.
- ``reset``: every connection through the pair is aborted (RST) at once, and new ones are
  aborted as they arrive, until healed.

``python -m raftdir.testing.proxy --peer 1=127.0.0.1:7101 --peer 2=... --peer 3=...``
runs a ``ProxyMesh`` in a process of its own (``MeshProcess`` starts it and speaks to it),
so that relaying Raft traffic never waits on a busy test's event loop: a stall of a few
hundred milliseconds there would look like a partition to the peers and cost an election.
It prints one JSON line with the proxy ports, then answers one JSON command per line on
stdin (``cut``, ``heal``, ``isolate``, ``bridge``, ``heal_all``, ``stats``) with one JSON line
once the change is in effect; it exits when stdin closes.

Runs on one asyncio event loop (the caller's, or the mesh process's own; never block it).
Imports nothing of raftdir. Every socket it opens is closed by ``close()``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PairProxy", "ProxyMesh", "MeshProcess", "HOLD", "RESET"]

HOLD = "hold"
RESET = "reset"
_CHUNK = 1 << 16


@dataclass(eq=False)
class _Link:
    """One relayed connection: the dialer's side and (once healed) the upstream side."""

    down: asyncio.StreamWriter
    up: asyncio.StreamWriter | None = None

    def abort(self) -> None:
        for w in (self.down, self.up):
            if w is not None:
                w.transport.abort()


@dataclass(eq=False)
class PairProxy:
    """Relays the connections ``dialer`` opens to ``target`` (names for the reader) to
    ``upstream`` (``host``, ``port``). ``port`` is the listening port (OS-chosen) once
    ``start()`` returned."""

    dialer: str
    target: str
    upstream: tuple[str, int]
    host: str = "127.0.0.1"
    port: int = 0
    mode: str | None = None              # None: relaying; HOLD or RESET: cut
    relayed_bytes: int = 0
    connections: int = 0
    _open: asyncio.Event = field(default_factory=asyncio.Event)
    _links: set[_Link] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _server: asyncio.AbstractServer | None = None
    _closing: bool = False

    async def start(self) -> "PairProxy":
        self._open.set()
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self.mode is not None

    def cut(self, mode: str = HOLD) -> None:
        if mode not in (HOLD, RESET):
            raise ValueError(f"mode: {mode!r} is not {HOLD!r} or {RESET!r}")
        self.mode = mode
        self._open.clear()
        if mode == RESET:
            for link in list(self._links):
                link.abort()

    def heal(self) -> None:
        self.mode = None
        self._open.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        self._closing = True
        self._open.set()                  # held connections end instead of waiting
        for link in list(self._links):
            link.abort()
        tasks = list(self._tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=2.0)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    # -- relaying ----------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        link = _Link(writer)
        self._links.add(link)
        self.connections += 1
        try:
            if self.mode == RESET:
                return
            await self._open.wait()       # a cut: accepted, never relayed until healed
            if self._closing:
                return
            try:
                up_reader, link.up = await asyncio.open_connection(*self.upstream)
            except OSError:
                return                    # the peer is down: the dialer sees a close
            await asyncio.gather(self._pump(reader, link.up), self._pump(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass                          # close(): asyncio's server callback must not see it
        finally:
            self._links.discard(link)
            if self.mode == RESET:
                link.abort()
            else:
                self._close(link)
            if task is not None:
                self._tasks.discard(task)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._open.wait()
                data = await src.read(_CHUNK)
                if not data:
                    break
                await self._open.wait()   # read just before a cut: held until healed
                dst.write(data)
                await dst.drain()
                self.relayed_bytes += len(data)
        finally:
            # one side ended: end the other (PySyncObj never half-closes)
            with contextlib.suppress(Exception):
                dst.close()

    @staticmethod
    def _close(link: _Link) -> None:
        for w in (link.down, link.up):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.close()


@dataclass
class ProxyMesh:
    """A proxy for every ordered pair of ``peers`` (``{peer id: "host:port"}``, the real
    Raft addresses). ``dial_map(x)`` is what peer ``x``'s launcher gets."""

    peers: dict[int, str]
    host: str = "127.0.0.1"
    proxies: dict[tuple[int, int], PairProxy] = field(default_factory=dict)

    async def start(self) -> "ProxyMesh":
        for x, y in itertools.permutations(sorted(self.peers), 2):
            host, port = self.peers[y].rsplit(":", 1)
            self.proxies[(x, y)] = await PairProxy(str(x), str(y), (host, int(port)),
                                                   host=self.host).start()
        return self

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.proxies.values()))

    def dial_map(self, x: int) -> dict[str, str]:
        """``{identity of y: proxy address}`` for every other peer ``y``: how ``x`` dials."""
        return {self.peers[y]: self.proxies[(x, y)].address
                for y in sorted(self.peers) if y != x}

    def dial_args(self, x: int) -> list[str]:
        return [a for ident, addr in self.dial_map(x).items()
                for a in ("--dial", f"{ident}={addr}")]

    # -- partitions --------------------------------------------------------------------
    def cut(self, a: int, b: int, mode: str = HOLD) -> None:
        self.proxies[(a, b)].cut(mode)
        self.proxies[(b, a)].cut(mode)

    def heal(self, a: int, b: int) -> None:
        self.proxies[(a, b)].heal()
        self.proxies[(b, a)].heal()

    def heal_all(self) -> None:
        for p in self.proxies.values():
            p.heal()

    def isolate(self, n: int, mode: str = HOLD) -> None:
        """Cut ``n`` from every other peer."""
        for other in self.peers:
            if other != n:
                self.cut(n, other, mode)

    def bridge(self, a: int, b: int, c: int, mode: str = HOLD) -> None:
        """``a``-``b`` and ``b``-``c`` connect, ``a``-``c`` do not."""
        self.cut(a, c, mode)

    def cut_pairs(self) -> list[tuple[int, int]]:
        """The unordered pairs currently cut, ascending."""
        return sorted({tuple(sorted(k)) for k, p in self.proxies.items() if p.is_cut})


# ---------------------------------------------------------------------------- a process

def _command(mesh: ProxyMesh, cmd: dict[str, Any]) -> dict[str, Any]:
    op = cmd.get("op")
    mode = cmd.get("mode", HOLD)
    if op == "cut":
        mesh.cut(int(cmd["a"]), int(cmd["b"]), mode)
    elif op == "heal":
        mesh.heal(int(cmd["a"]), int(cmd["b"]))
    elif op == "isolate":
        mesh.isolate(int(cmd["peer"]), mode)
    elif op == "bridge":
        a, b, c = (int(x) for x in cmd["peers"])
        mesh.bridge(a, b, c, mode)
    elif op == "heal_all":
        mesh.heal_all()
    elif op == "stats":
        return {"ok": True, "cut": mesh.cut_pairs(),
                "proxies": {f"{x}>{y}": {"bytes": p.relayed_bytes,
                                         "connections": p.connections, "mode": p.mode}
                            for (x, y), p in sorted(mesh.proxies.items())}}
    else:
        return {"ok": False, "error": f"unknown op {op!r}"}
    return {"ok": True, "cut": mesh.cut_pairs()}


async def _serve(peers: dict[int, str], host: str) -> None:
    mesh = await ProxyMesh(peers, host=host).start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ports": {f"{x}>{y}": p.port
                                for (x, y), p in sorted(mesh.proxies.items())}}), flush=True)
    try:
        while True:
            line = await reader.readline()
            if not line:
                break                      # the controller went away
            try:
                answer = _command(mesh, json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                answer = {"ok": False, "error": str(exc)}
            print(json.dumps(answer), flush=True)
    finally:
        await mesh.close()


def _parse_peer(text: str) -> tuple[int, str]:
    ident, sep, addr = text.partition("=")
    if not sep or not ident.isdigit() or ":" not in addr:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ID=HOST:PORT")
    return int(ident), addr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raftdir.testing.proxy",
        description="Relay Raft traffic between peers through proxies that can be cut "
                    "(one per ordered pair); commands as JSON lines on stdin.")
    parser.add_argument("--peer", action="append", type=_parse_peer, required=True,
                        metavar="ID=HOST:PORT",
                        help="a peer's id and real Raft address (repeat for every peer)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address the proxies listen on (default 127.0.0.1)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(dict(args.peer), args.host))
    except KeyboardInterrupt:
        pass
    return 0


class MeshProcess:
    """A ``ProxyMesh`` in a child process (``python -m raftdir.testing.proxy``), driven
    from the caller's event loop. ``ports[(x, y)]``: the port ``x`` dials to reach ``y``.
    Each command returns once the mesh process has applied it."""

    def __init__(self, peers: dict[int, str], host: str = "127.0.0.1") -> None:
        self.peers = dict(peers)
        self.host = host
        self.ports: dict[tuple[int, int], int] = {}
        self.proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def start(self, timeout: float = 20.0) -> "MeshProcess":
        args = [a for n, addr in sorted(self.peers.items()) for a in ("--peer", f"{n}={addr}")]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "raftdir.testing.proxy", "--host", self.host, *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("the proxy mesh process exited before listening")
        for key, port in json.loads(line)["ports"].items():
            x, y = key.split(">")
            self.ports[(int(x), int(y))] = int(port)
        return self

    def dial_args(self, x: int) -> list[str]:
        """The ``--dial`` arguments of peer ``x``'s launcher."""
        return [a for y in sorted(self.peers) if y != x
                for a in ("--dial", f"{self.peers[y]}={self.host}:{self.ports[(x, y)]}")]

    async def command(self, op: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise RuntimeError("the proxy mesh process is not running")
        async with self._lock:
            proc.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("the proxy mesh process exited")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise RuntimeError(f"proxy mesh: {op}: {answer.get('error')}")
        return answer

    async def cut(self, a: int, b: int, mode: str = HOLD) -> dict[str, Any]:
        return await self.command("cut", a=a, b=b, mode=mode)

    async def heal(self, a: int, b: int) -> dict[str, Any]:
        return await self.command("heal", a=a, b=b)

    async def isolate(self, peer: int, mode: str = HOLD) -> dict[str, Any]:
        return await self.command("isolate", peer=peer, mode=mode)

    async def bridge(self, a: int, b: int, c: int, mode: str = HOLD) -> dict[str, Any]:
        return await self.command("bridge", peers=[a, b, c], mode=mode)

    async def heal_all(self) -> dict[str, Any]:
        return await self.command("heal_all")

    async def stats(self) -> dict[str, Any]:
        return await self.command("stats")

    async def close(self, timeout: float = 5.0) -> None:
        """Close its stdin (it exits), then kill it by PID if it has not."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


if __name__ == "__main__":
    sys.exit(main())
