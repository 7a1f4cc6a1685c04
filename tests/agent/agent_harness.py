"""In-process control plane for the worker-agent tests: one ``DirectoryServer`` on a
``LocalNode`` behind one or more real HTTP APIs on 127.0.0.1 (OS-chosen ports), a join
token on disk, and agents configured for quick retries. Helpers wait on conditions with
deadlines; nothing sleeps a fixed time."""

from __future__ import annotations

import asyncio
import random
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from raftdir.agent import AgentState, WorkerAgent
from raftdir.api.server import ApiServer, start_api
from raftdir.clock import Clock, ManualClock, SystemClock
from raftdir.model import (
    AdaptiveTtlConfig, InternalScaleRequest, WorkerProfile, WorkerRegisterRequest,
    WorkerResourceUsage, WorkerStatusReport,
)
from raftdir.server import DirectoryServer, ServerSettings

SECRET = "a9" * 32
HOST = "127.0.0.1"


async def until(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
                ) -> None:
    """Yield to the loop until ``cond()`` holds; fail after ``timeout`` real seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


async def settle(rounds: int = 30) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


def closed_port() -> int:
    """A port nothing listens on (bound by the OS, then released)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class ControlPlane:
    """A directory server and its APIs. ``apis[i]`` may be closed and reopened on the same
    port. The server advertises every API as a server and the first open one as leader."""

    def __init__(self, server: DirectoryServer, clock: Clock) -> None:
        self.server = server
        self.clock = clock
        self.apis: list[ApiServer | None] = []
        self.ports: list[int] = []
        self.advertised: list[int] | None = None   # which APIs acks list (None: all)
        self.server.servers = self._servers            # type: ignore[method-assign]
        self.server.leader_endpoint = self._leader     # type: ignore[method-assign]

    def url(self, i: int = 0) -> str:
        return f"http://{HOST}:{self.ports[i]}"

    def _servers(self) -> list[str]:
        which = range(len(self.ports)) if self.advertised is None else self.advertised
        return [self.url(i) for i in which]

    def _leader(self) -> str | None:
        return next((self.url(i) for i, api in enumerate(self.apis) if api is not None), None)

    async def open_api(self, i: int | None = None) -> ApiServer:
        port = 0 if i is None else self.ports[i]
        api = await start_api(self.server, HOST, port, shutdown_timeout=0.2)
        if i is None:
            self.apis.append(api)
            self.ports.append(api.port)
            if len(self.ports) == 1:
                self.server.settings = replace(self.server.settings,
                                               self_api_addr=f"{HOST}:{api.port}")
        else:
            self.apis[i] = api
        return api

    async def close_api(self, i: int = 0) -> None:
        api = self.apis[i]
        self.apis[i] = None
        if api is not None:
            await api.close()

    async def stop(self) -> None:
        for i in range(len(self.apis)):
            await self.close_api(i)
        await self.server.stop()

    async def token(self, max_uses: int = 0) -> str:
        return (await self.server.create_token(3600, max_uses))["token"]

    async def token_file(self, directory: Path, max_uses: int = 0) -> Path:
        path = directory / "join.token"
        path.write_text(await self.token(max_uses) + "\n")
        return path

    async def scale(self, service: str, replicas: int) -> dict:
        return await self.server.scale(InternalScaleRequest.legacy(service, replicas), None)

    def node(self, node_id: int) -> dict | None:
        return self.server.read(lambda d: d.node(node_id))

    def state(self, node_id: int) -> str | None:
        node = self.node(node_id)
        return None if node is None else node["state"]

    def containers_of(self, node_id: int) -> list[str]:
        """What the directory says ``node_id`` runs, as container names."""
        resp = self.server.read(lambda d: d.events_since(node_id, 0))
        return sorted(f"{ev.service}-{g.role}-{i}" for ev in resp.events
                      if getattr(ev, "service", None) and hasattr(ev, "assignments")
                      for g in ev.assignments for i in g.indices)

    async def direct_worker(self) -> Any:
        """A worker registered and reported straight through the server (no agent)."""
        reg = await self.server.register(WorkerRegisterRequest(
            token=await self.token(),
            profile=WorkerProfile(api_addr="127.0.0.1:9999", os="linux", arch="x86_64")),
            None)
        await self.report_direct(reg)
        return reg

    async def report_direct(self, reg: Any) -> None:
        await self.server.report(WorkerStatusReport(
            node_id=reg.node_id, ts_ns=self.clock.wall_ms() * 1_000_000,
            resources=WorkerResourceUsage(cpu_used=0.0, memory_used_bytes=0, gpu_used=0)),
            reg.internal_token)


async def control_plane(*, clock: Clock | None = None, apis: int = 1, min_ttl: int = 10,
                        grace: int = 10, **settings: Any) -> ControlPlane:
    clock = clock or SystemClock()
    base: dict[str, Any] = dict(node_id=1, placement_kinds=frozenset({"worker"}),
                                checkpoint_interval=5.0, expiry_tick=0.5,
                                reconcile_interval=5.0,
                                ttl=AdaptiveTtlConfig(min_ttl_secs=min_ttl, grace_secs=grace))
    base.update(settings)
    server = DirectoryServer(ServerSettings(**base), secret=SECRET, clock=clock)
    await server.start()
    await until(server.is_leader, what="the server to lead")
    cp = ControlPlane(server, clock)
    for _ in range(apis):
        await cp.open_api()
    return cp


def make_agent(data_dir: Path, servers: list[str], token_file: Path | None, *,
               clock: Clock | None = None, manual: bool = False, **kw: Any) -> WorkerAgent:
    """An agent with quick retries. ``manual``: no client-side retry rounds, so every wait
    is the agent's own (on the manual clock)."""
    opts: dict[str, Any] = dict(
        identity_dir=data_dir / "worker" / "identity", token_file=token_file,
        api_addr="127.0.0.1:9001", labels={"zone": "test"}, clock=clock or SystemClock(),
        rng=random.Random(7), backoff=(0.05, 0.5), client_backoff=(0.01, 0.05),
        request_timeout=5.0, client_retries=0 if manual else 2)
    opts.update(kw)
    return WorkerAgent(servers, **opts)


async def step(clock: ManualClock, seconds: float, agents: list[WorkerAgent] = (),
               *, wait_idle: bool = True, tick: float = 0.5,
               between: Callable[[], Any] | None = None) -> None:
    """Advance the manual clock ``tick`` at a time; after each tick let the loop run and
    (``wait_idle``) wait until each agent's session has finished what became due."""
    moved = 0.0
    while moved < seconds - 1e-9:
        clock.advance(tick)
        moved += tick
        await settle()
        if between is not None:
            result = between()
            if asyncio.iscoroutine(result):
                await result
        if wait_idle:
            for agent in agents:
                await until(lambda a=agent: a.activity == "idle", what="the agent's session "
                            "to finish its work")
        await settle()


def transitions(agent: WorkerAgent) -> list[AgentState]:
    seen: list[AgentState] = []
    agent.on_state_change(lambda old, new, reason: seen.append(new))
    return seen
