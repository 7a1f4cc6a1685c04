"""A real single-node directory server with its HTTP API, running on an event loop in a
background thread, for driving the CLI (click's CliRunner, or subprocesses) against it."""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

from click.testing import CliRunner, Result

from raftdir.api.server import start_api
from raftdir.auth import admin_token
from raftdir.cli import cli
from raftdir.clock import ManualClock
from raftdir.model import (
    WorkerContainerStatus, WorkerProfile, WorkerRegisterRequest, WorkerResourceUsage,
    WorkerStatusReport,
)
from raftdir.server import DirectoryServer, ServerSettings

T = TypeVar("T")

CLEAN_ENV = {"RAFTDIR_SERVER": None, "RAFTDIR_ADMIN_TOKEN": None, "RAFTDIR_TOKEN": None,
             "RAFTDIR_TLS_CA": None, "RAFTDIR_TLS_CERT": None, "RAFTDIR_TLS_KEY": None}

SECRET = "c1" * 32
ADMIN = admin_token(SECRET)
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port nothing listens on (bound, then closed): connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``DirectoryServer`` (LocalNode, manual clock) + ``start_api`` on 127.0.0.1:0, on a
    loop thread. ``url`` is the API's base URL; ``call(coro_fn)`` runs on the loop."""

    def __init__(self, **api: Any) -> None:
        self.api_options = api      # more arguments of start_api (require_read_token)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cli-test-server",
                                       daemon=True)
        self.server: DirectoryServer | None = None
        self.api: Any = None
        self.clock = ManualClock()
        self._token: str | None = None

    @property
    def url(self) -> str:
        return self.api.url

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout)

    def start(self) -> "LiveServer":
        self.thread.start()

        async def go() -> None:
            settings = ServerSettings(node_id=1, placement_kinds=frozenset({"worker"}))
            self.server = DirectoryServer(settings, secret=SECRET, clock=self.clock)
            await self.server.start()
            deadline = asyncio.get_running_loop().time() + 5
            while not self.server.is_leader():
                assert asyncio.get_running_loop().time() < deadline, "never led"
                await asyncio.sleep(0.001)
            self.api = await start_api(self.server, "127.0.0.1", 0, **self.api_options)
            # single-node: the server's own API address, for /health's leader
            self.server.settings = replace(settings, self_api_addr=f"127.0.0.1:{self.api.port}")

        self.call(go)
        return self

    def stop(self) -> None:
        async def go() -> None:
            if self.api is not None:
                await self.api.close()
            if self.server is not None:
                await self.server.stop()

        try:
            self.call(go)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)

    # -- making state ----------------------------------------------------------------------
    def register(self, labels: dict[str, str] | None = None, os: str = "linux",
                 arch: str = "x86_64", api_addr: str = "127.0.0.1:9000") -> tuple[int, str]:
        """Register a worker; returns (node id, node secret)."""

        async def go() -> tuple[int, str]:
            assert self.server is not None
            if self._token is None:
                self._token = (await self.server.create_token(3600, 0))["token"]
            resp = await self.server.register(WorkerRegisterRequest(
                token=self._token, profile=WorkerProfile(
                    api_addr=api_addr, os=os, arch=arch, labels=labels or {})),
                None)
            return resp.node_id, resp.internal_token

        return self.call(go)

    def report(self, node_id: int, secret: str,
               containers: tuple[WorkerContainerStatus, ...] = ()) -> None:
        async def go() -> None:
            assert self.server is not None
            await self.server.report(WorkerStatusReport(
                node_id=node_id, ts_ns=self.clock.wall_ms() * 1_000_000,
                containers=containers,
                resources=WorkerResourceUsage(cpu_used=0.0, memory_used_bytes=0,
                                              gpu_used=0)), secret)

        self.call(go)

    def node(self, node_id: int) -> dict[str, Any] | None:
        assert self.server is not None
        return self.server.read(lambda d: d.node(node_id))

    def placement(self, service: str) -> dict[int, Any]:
        assert self.server is not None
        return self.server.read(lambda d: d.placement(service)) or {}


def run_cli(*args: str, env: dict[str, str | None] | None = None,
            input: str | None = None) -> Result:
    """Invoke the CLI in process; fails the test on a traceback (an exception that
    escaped click)."""
    result = CliRunner().invoke(cli, [str(a) for a in args], env={**CLEAN_ENV, **(env or {})},
                                input=input, catch_exceptions=True, prog_name="raftdir")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"raftdir {' '.join(map(str, args))} raised "
                             f"{result.exception!r}\n{result.output}") from result.exception
    assert "Traceback" not in result.output
    return result
