"""The partition machinery: the cuttable TCP proxies (``raftdir.testing.proxy``) and the
peer launcher's dial map (``raftdir.testing.nemesis_peer``). Loopback only, OS-chosen
ports, every wait bounded."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from raftdir.testing.nemesis_peer import parse_dials
from raftdir.testing.proxy import HOLD, RESET, MeshProcess, PairProxy, ProxyMesh

T = 2.0   # seconds: any relay on loopback takes far less


class Echo:
    """An upstream that echoes and counts the connections it accepted."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def __aenter__(self) -> "Echo":
        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.accepted += 1
            try:
                while data := await r.read(1024):
                    w.write(data)
                    await w.drain()
            except ConnectionError:
                pass
            finally:
                w.close()
        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def nothing_within(reader: asyncio.StreamReader, seconds: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(reader.read(100), seconds)
    except asyncio.TimeoutError:
        return True
    return False


async def closed(reader: asyncio.StreamReader) -> bool:
    """The connection ends (EOF or reset) within ``T``."""
    try:
        return await asyncio.wait_for(reader.read(100), T) == b""
    except ConnectionError:
        return True


async def test_a_held_cut_relays_nothing_either_way_and_healing_delivers_it():
    async with Echo() as echo:
        proxy = await PairProxy("a", "b", ("127.0.0.1", echo.port)).start()
        try:
            r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
            w.write(b"one")
            assert await asyncio.wait_for(r.read(100), T) == b"one"

            proxy.cut(HOLD)
            assert proxy.is_cut
            w.write(b"two")
            assert await nothing_within(r)
            # a new connection is accepted but never reaches the upstream while cut
            r2, w2 = await asyncio.open_connection("127.0.0.1", proxy.port)
            w2.write(b"new")
            assert await nothing_within(r2)
            assert echo.accepted == 1

            proxy.heal()
            assert await asyncio.wait_for(r.read(100), T) == b"two"
            assert await asyncio.wait_for(r2.read(100), T) == b"new"
            assert echo.accepted == 2
            w.close()
            w2.close()
        finally:
            await proxy.close()


async def test_a_reset_cut_aborts_connections_until_healed():
    async with Echo() as echo:
        proxy = await PairProxy("a", "b", ("127.0.0.1", echo.port)).start()
        try:
            r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
            w.write(b"x")
            assert await asyncio.wait_for(r.read(100), T) == b"x"
            proxy.cut(RESET)
            assert await closed(r)
            r2, _w2 = await asyncio.open_connection("127.0.0.1", proxy.port)
            assert await closed(r2)           # a new one too, while the cut lasts
            proxy.heal()
            r3, w3 = await asyncio.open_connection("127.0.0.1", proxy.port)
            w3.write(b"back")
            assert await asyncio.wait_for(r3.read(100), T) == b"back"
            w3.close()
        finally:
            await proxy.close()


async def test_the_mesh_cuts_pairs_isolates_and_bridges():
    async with Echo() as echo:
        addr = f"127.0.0.1:{echo.port}"
        mesh = await ProxyMesh({1: addr, 2: addr, 3: addr}).start()
        try:
            assert len(mesh.proxies) == 6
            assert set(mesh.dial_map(1)) == {addr}    # one identity here; all peers share it
            mesh.isolate(2)
            assert mesh.cut_pairs() == [(1, 2), (2, 3)]
            mesh.heal_all()
            mesh.bridge(1, 2, 3)
            assert mesh.cut_pairs() == [(1, 3)]
            assert not mesh.proxies[(1, 2)].is_cut and mesh.proxies[(3, 1)].is_cut
            mesh.heal(1, 3)
            assert mesh.cut_pairs() == []
        finally:
            await mesh.close()


async def test_the_mesh_process_applies_a_command_before_it_answers():
    async with Echo() as echo:
        mesh = await MeshProcess({1: f"127.0.0.1:{echo.port}",
                                  2: f"127.0.0.1:{echo.port}"}).start()
        try:
            assert set(mesh.ports) == {(1, 2), (2, 1)}
            assert mesh.dial_args(1) == ["--dial",
                                         f"127.0.0.1:{echo.port}=127.0.0.1:{mesh.ports[(1, 2)]}"]
            r, w = await asyncio.open_connection("127.0.0.1", mesh.ports[(1, 2)])
            w.write(b"a")
            assert await asyncio.wait_for(r.read(100), T) == b"a"
            assert (await mesh.isolate(1))["cut"] == [[1, 2]]
            w.write(b"b")
            assert await nothing_within(r)
            assert (await mesh.heal_all())["cut"] == []
            assert await asyncio.wait_for(r.read(100), T) == b"b"
            stats = await mesh.stats()
            assert stats["proxies"]["1>2"]["bytes"] >= 4
            w.close()
        finally:
            proc = mesh.proc
            await mesh.close()
            assert proc is not None and proc.returncode is not None


def test_dial_arguments_are_checked():
    assert parse_dials(["127.0.0.1:7102=127.0.0.1:40001"]) == {
        "127.0.0.1:7102": ("127.0.0.1", 40001)}
    for bad in ("127.0.0.1:7102", "=127.0.0.1:1", "127.0.0.1:7102=127.0.0.1:x",
                "127.0.0.1:7102=127.0.0.1:0", "nocolon=127.0.0.1:1"):
        with pytest.raises(ValueError, match="--dial"):
            parse_dials([bad])


def test_the_launcher_redirects_only_where_a_peer_dials():
    """In a fresh interpreter (the patch is process-wide): a mapped identity is dialled at
    the proxy, its id (what PySyncObj compares and announces) unchanged; others as before."""
    code = (
        "from raftdir.testing.nemesis_peer import install_dial_map, parse_dials\n"
        "install_dial_map(parse_dials(['127.0.0.1:7102=127.0.0.1:40001']))\n"
        "from pysyncobj.node import TCPNode\n"
        "a, b = TCPNode('127.0.0.1:7102'), TCPNode('127.0.0.1:7103')\n"
        "print(a.id, a.address, a.ip, a.port, b.ip, b.port)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["127.0.0.1:7102", "127.0.0.1:7102", "127.0.0.1", "40001", "127.0.0.1",
                   "7103"]


def test_the_launcher_refuses_bad_arguments_with_status_2():
    for args in (["serve"], ["--dial", "x", "--", "--version"], ["--bogus", "--", "--version"]):
        proc = subprocess.run([sys.executable, "-m", "raftdir.testing.nemesis_peer", *args],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
