"""An in-process directory server (LocalNode, manual clock) for the leader-side tests."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from raftdir.clock import ManualClock
from raftdir.model import (
    WorkerProfile, WorkerRegisterRequest, WorkerResourceUsage, WorkerStatusReport,
)
from raftdir.server import DirectoryServer, ServerSettings

SECRET = "5e" * 32
PROFILE = WorkerProfile(api_addr="127.0.0.1:9000", os="linux", arch="x86_64")


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the loop until ``cond()`` holds; fail after ``timeout`` real seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.001)


async def settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


class Harness:
    def __init__(self, server: DirectoryServer, clock: ManualClock) -> None:
        self.server = server
        self.clock = clock
        self.token: str | None = None

    async def register(self, n: int = 1, **kw) -> list:
        if self.token is None:
            self.token = (await self.server.create_token(3600, 0))["token"]
        out = []
        for _ in range(n):
            out.append(await self.server.register(
                WorkerRegisterRequest(token=self.token, profile=kw.get("profile", PROFILE)),
                None))
        return out

    async def report(self, reg) -> object:
        return await self.server.report(WorkerStatusReport(
            node_id=reg.node_id, ts_ns=self.clock.wall_ms() * 1_000_000,
            resources=WorkerResourceUsage(cpu_used=0.0, memory_used_bytes=0, gpu_used=0)),
            reg.internal_token)

    async def advance(self, seconds: float) -> None:
        """Move the clock and let the leader's timers run."""
        self.clock.advance(seconds)
        await settle()

    def state(self, node_id: int) -> str:
        return self.server.read(lambda d: d.node(node_id))["state"]


def make_settings(**kw) -> ServerSettings:
    base = dict(node_id=1, placement_kinds=frozenset({"worker"}), checkpoint_interval=5.0,
                expiry_tick=0.5, reconcile_interval=5.0)
    base.update(kw)
    return ServerSettings(**base)


async def harness(**kw) -> Harness:
    """A started server that leads; the caller stops it (``await h.server.stop()``)."""
    clock = ManualClock()
    server = DirectoryServer(make_settings(**kw), secret=SECRET, clock=clock)
    await server.start()
    await until(server.is_leader)
    await settle()   # let the leader's timers start sleeping on the manual clock
    return Harness(server, clock)


def run(coro_fn: Callable[..., Awaitable[None]]):
    """Decorator: run an async test body on a fresh loop."""
    import functools

    @functools.wraps(coro_fn)
    def wrapper(*args, **kwargs):
        asyncio.run(coro_fn(*args, **kwargs))
    return wrapper
