"""The four cluster modes behind one ``Cluster`` protocol (directory.md §9).

Owns: what the host daemon asks of its cluster whatever the mode: who this node is, who
leads, which nodes exist and whether they are reachable, how a scale order reaches one node
(``dispatch_scale``) or the whole cluster through the leader (``forward_scale``), and the
cluster-wide view of a service.

- ``DirectoryCluster``: ``single-node``, ``raft`` and ``worker-tier`` servers; the answers
  come from the replicated directory (``DirectoryServer``);
- ``StaticCluster``: ``static``; no consensus. Every peer probes the others with
  ``HEAD /health`` every ``heartbeat_interval``; a peer is unreachable when its last good
  probe is older than ``failure_threshold`` (strictly); the leader is the lowest id among
  this node and the reachable peers. Each node decides alone, so during a partition two
  leaders can exist (each side elects its own lowest id); scale orders then follow
  whichever leader the caller reached.

Runs on the daemon's event loop. Must not import the CLI.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

import aiohttp

from .auth import admin_token, matches_any
from .clock import Clock, SystemClock
from .codec import reachable_addr, to_dict
from .errors import (
    BadRequest, NodeNotReady, NoLeader, NotLeader, Unauthorized, UnknownNode, error_from_body,
)
from .leader.placement import Candidate, constraints_from_spec, eligible, place
from .model import InternalScaleRequest, NodeServiceState, StaticMode
from .tasks import cancel_and_wait

if TYPE_CHECKING:  # pragma: no cover
    from .replication.secret import SecretSet

__all__ = ["NodeInfo", "Cluster", "DirectoryCluster", "StaticCluster", "StaticControlPlane"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeInfo:
    """A node as the host daemon sees it. ``api_addr`` is None when the node has no API
    anyone can dial: ZLayer records ``0.0.0.0:0`` for a worker that registered over its
    gRPC path; such a node is reached only through the directory (its polls)."""

    node_id: int
    api_addr: str | None
    labels: dict[str, str] = field(default_factory=dict)
    os: str = "linux"
    state: str = "ready"                 # ready | unreachable | draining
    last_seen_secs_ago: float | None = None


class Cluster(Protocol):
    node_id: int

    def is_leader(self) -> bool: ...

    def leader_addr(self) -> str | None:
        """The leader's API address (``host:port``), when known."""
        ...

    def list_nodes(self) -> list[NodeInfo]: ...

    async def dispatch_scale(self, node_id: int, req: InternalScaleRequest) -> None:
        """Give exactly this order to one node."""
        ...

    async def forward_scale(self, req: InternalScaleRequest
                            ) -> dict[int, InternalScaleRequest]:
        """Have the leader place the service over the cluster; returns the split."""
        ...

    async def service_states(self, service: str) -> list[NodeServiceState]: ...


def _host_port(endpoint: str | None) -> str | None:
    if endpoint is None:
        return None
    return endpoint.split("://", 1)[-1]


_STATE_NAMES = {"ready": "ready", "draining": "draining", "down": "unreachable"}


class DirectoryCluster:
    """The cluster of a directory server (single-node, raft, worker-tier server).
    ``client_factory(servers)`` builds the API client used to reach the leader."""

    def __init__(self, server: Any, client_factory: Callable[[list[str]], Any]) -> None:
        self.server = server
        self.node_id = server.node_id
        self._client_factory = client_factory

    def is_leader(self) -> bool:
        return self.server.is_leader()

    def leader_addr(self) -> str | None:
        return _host_port(self.server.leader_endpoint())

    def list_nodes(self) -> list[NodeInfo]:
        connected = self.server.raft.status().get("partners", {})
        by_api = {p.api_addr: p.raft_addr for p in self.server.settings.peers}
        out = []
        for node in self.server.workers():
            profile = node["profile"]
            state = _STATE_NAMES.get(node["state"], node["state"])
            if node["kind"] == "server" and node["node_id"] != self.node_id:
                raft_addr = by_api.get(profile["api_addr"])
                if raft_addr in connected and not connected[raft_addr]:
                    state = "unreachable"
            out.append(NodeInfo(node["node_id"], reachable_addr(profile["api_addr"]),
                                dict(profile.get("labels", {})), profile["os"], state,
                                node.get("last_report_secs_ago")))
        return out

    async def _on_leader(self, local: Callable[[], Awaitable[Any]],
                         remote: Callable[[Any], Awaitable[Any]]) -> Any:
        if self.server.is_leader():
            return await local()
        leader = self.server.leader_endpoint()
        if leader is None:
            raise NoLeader("no leader is known; retry shortly")
        async with self._client_factory([leader]) as client:
            return await remote(client)

    async def dispatch_scale(self, node_id: int, req: InternalScaleRequest) -> None:
        async def local() -> None:
            await self.server.leader.assign(node_id, req)
        async def remote(client: Any) -> None:
            raise NotLeader("dispatch_scale runs on the leader",
                            leader=self.server.leader_endpoint())
        await self._on_leader(local, remote)

    async def forward_scale(self, req: InternalScaleRequest
                            ) -> dict[int, InternalScaleRequest]:
        return await self._on_leader(lambda: self.server.scale(req, None),
                                     lambda client: client.scale(req))

    async def service_states(self, service: str) -> list[NodeServiceState]:
        view = await self._on_leader(lambda: _async(self.server.service_state, service),
                                     lambda client: client.service_state(service))
        return [NodeServiceState.from_dict(n) for n in view["nodes"]]


async def _async(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


# ---------------------------------------------------------------------------- static

class StaticCluster:
    """The ``static`` mode: probes, lowest reachable id leads, scale by HTTP."""

    def __init__(self, mode: StaticMode, *, clock: Clock | None = None,
                 admin_token: str | None = None, scheme: str = "http",
                 ssl: Any = None, deliver: Callable[[InternalScaleRequest], Any] | None = None,
                 local_view: Callable[[str], NodeServiceState] | None = None) -> None:
        self.mode = mode
        self.node_id = mode.node_id
        self.clock = clock or SystemClock()
        self.admin_token = admin_token
        self.scheme = scheme
        self.ssl = ssl
        self.deliver = deliver          # the host's handler for orders to this node
        self.local_view = local_view    # the host's view of one service on this node
        self.peers = {p.id: p for p in mode.peers}
        self.last_good: dict[int, float] = {}
        self.leadership_listeners: list[Callable[[bool, int], None]] = []
        self._was_leader: bool | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    # lifecycle
    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
            total=max(1.0, self.mode.heartbeat_interval)))
        self._note_leadership()
        self._task = asyncio.ensure_future(self._probe_loop())

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
        if self._session is not None:
            await self._session.close()

    # probing
    def reachable(self, peer_id: int) -> bool:
        if peer_id == self.node_id:
            return True
        seen = self.last_good.get(peer_id)
        return seen is not None and self.clock.monotonic() - seen <= \
            self.mode.failure_threshold

    async def probe_once(self) -> None:
        async def probe(peer_id: int) -> None:
            url = f"{self.scheme}://{self.peers[peer_id].api_addr}/health"
            try:
                assert self._session is not None
                async with self._session.head(url, ssl=self.ssl) as resp:
                    if resp.status == 200:
                        self.last_good[peer_id] = self.clock.monotonic()
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass
        await asyncio.gather(*(probe(p) for p in self.peers if p != self.node_id))
        self._note_leadership()

    async def _probe_loop(self) -> None:
        while True:
            await self.probe_once()
            await self.clock.sleep(self.mode.heartbeat_interval)

    def _note_leadership(self) -> None:
        now = self.is_leader()
        if now != self._was_leader:
            self._was_leader = now
            for cb in list(self.leadership_listeners):
                try:
                    cb(now, 0)
                except Exception:  # noqa: BLE001 - a host callback must not stop probing
                    log.exception("leadership callback raised")

    # Cluster
    def leader_id(self) -> int:
        return min(p for p in self.peers if self.reachable(p))

    def is_leader(self) -> bool:
        return self.leader_id() == self.node_id

    def leader_addr(self) -> str | None:
        return self.peers[self.leader_id()].api_addr

    def list_nodes(self) -> list[NodeInfo]:
        now = self.clock.monotonic()
        out = []
        for pid, peer in sorted(self.peers.items()):
            seen = 0.0 if pid == self.node_id else (
                None if pid not in self.last_good else now - self.last_good[pid])
            out.append(NodeInfo(pid, peer.api_addr, dict(peer.labels), peer.os,
                                "ready" if self.reachable(pid) else "unreachable", seen))
        return out

    async def _post(self, addr: str, path: str, req: InternalScaleRequest) -> Any:
        assert self._session is not None
        headers = self._auth_headers()
        async with self._session.post(f"{self.scheme}://{addr}{path}", json=to_dict(req),
                                      headers=headers, ssl=self.ssl) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise error_from_body(body, resp.status)
            return body

    async def dispatch_scale(self, node_id: int, req: InternalScaleRequest) -> None:
        if node_id not in self.peers:
            raise UnknownNode(f"node {node_id} is not a peer", field="node_id")
        if node_id == self.node_id:
            await self.receive(req)
            return
        if not self.reachable(node_id):
            raise NodeNotReady(f"node {node_id} is unreachable", field="node_id")
        await self._post(self.peers[node_id].api_addr, "/api/v1/internal/scale", req)

    async def forward_scale(self, req: InternalScaleRequest
                            ) -> dict[int, InternalScaleRequest]:
        if not self.is_leader():
            body = await self._post(self.leader_addr() or "", "/api/v1/cluster/scale", req)
            return {int(n["node_id"]): InternalScaleRequest.from_dict(n["request"])
                    for n in body["nodes"]}
        return await self.distribute(req)

    async def distribute(self, req: InternalScaleRequest) -> dict[int, InternalScaleRequest]:
        """On the leader: place over the reachable peers, then send each its share (a
        peer whose share fell to zero gets replicas 0)."""
        nodes = eligible((Candidate(n.node_id, n.os, n.labels) for n in self.list_nodes()
                          if n.state == "ready"), constraints_from_spec(req.spec))
        placement = place(req.groups(), nodes)
        split = {n: InternalScaleRequest.phase2(req.service, sorted(roles.items()), req.spec)
                 for n, roles in placement.items()}
        for node in self.list_nodes():
            if node.node_id not in split and node.state == "ready":
                split[node.node_id] = InternalScaleRequest.legacy(req.service, 0, req.spec)
        await asyncio.gather(*(self.dispatch_scale(n, r) for n, r in split.items()))
        return {n: r for n, r in split.items() if r.replicas}

    async def receive(self, req: InternalScaleRequest) -> None:
        """An order for this node: hand it to the host."""
        if self.deliver is not None:
            result = self.deliver(req)
            if asyncio.iscoroutine(result):
                await result

    def _auth_headers(self) -> dict[str, str]:
        """What this peer's requests to the others carry: its admin token, if it has one."""
        return {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}

    def local_state(self, service: str) -> NodeServiceState:
        if self.local_view is None:
            return NodeServiceState(node_id=self.node_id, running=0, healthy=True,
                                    containers=())
        return self.local_view(service)

    async def service_states(self, service: str) -> list[NodeServiceState]:
        """This node's view plus every reachable peer's, fetched over HTTP; a peer that
        does not answer is left out (it is unreachable, not idle)."""
        async def fetch(pid: int) -> NodeServiceState | None:
            assert self._session is not None
            url = (f"{self.scheme}://{self.peers[pid].api_addr}/api/v1/internal/services/"
                   f"{service}/state")
            try:   # the route needs scope read off loopback: our admin token
                async with self._session.get(url, ssl=self.ssl,
                                             headers=self._auth_headers()) as resp:
                    if resp.status != 200:
                        return None
                    body = await resp.json(content_type=None)
                    return NodeServiceState.from_dict(body["nodes"][0])
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, KeyError,
                    IndexError, BadRequest):
                return None
        others = await asyncio.gather(*(fetch(p) for p in sorted(self.peers)
                                        if p != self.node_id and self.reachable(p)))
        return sorted([self.local_state(service)] + [s for s in others if s is not None],
                      key=lambda s: s.node_id)


class StaticControlPlane:
    """The HTTP face of a static peer: ``/health``, ``/api/v1/internal/scale`` (an order for
    this node) and ``/api/v1/cluster/scale`` (the leader distributes). Everything else of
    the directory API answers 400: a static cluster has no directory."""

    def __init__(self, cluster: StaticCluster, secrets: "SecretSet | str | None") -> None:
        """``secrets``: the cluster secrets this peer holds (their admin tokens are
        accepted; the first one's is what this peer sends to the others), or one admin
        token, or None (no secret: every call is taken)."""
        self.cluster = cluster
        self.node_id = cluster.node_id
        self._admins: tuple[str, ...] | None = None
        if isinstance(secrets, str):
            self._admins = (secrets,)
            cluster.admin_token = secrets
        elif secrets is not None:
            self.use_secrets(secrets)

    def use_secrets(self, secrets: "SecretSet") -> None:
        """A roll of the cluster secret: accept the admin token of every secret of the set,
        send the first one's."""
        self._admins = tuple(admin_token(s) for s in secrets.accepted)
        self.cluster.admin_token = self._admins[0]

    def is_leader(self) -> bool:
        return self.cluster.is_leader()

    def own_token(self) -> str | None:
        """What this peer sends when it asks the others (its dashboard collector): the
        admin token of its own secret."""
        return self.cluster.admin_token

    def leader_endpoint(self) -> str | None:
        addr = self.cluster.leader_addr()
        return None if addr is None else f"{self.cluster.scheme}://{addr}"

    def servers(self) -> list[str]:
        return [f"{self.cluster.scheme}://{p.api_addr}" for p in self.cluster.peers.values()]

    def check_admin(self, token: str | None) -> None:
        if self._admins is not None and not matches_any(token, self._admins):
            raise Unauthorized("this operation needs the admin token")

    def service_state(self, service: str) -> dict[str, Any]:
        state = self.cluster.local_state(service)
        return {"service": service, "running": state.running, "healthy": state.healthy,
                "nodes": [to_dict(state)], "unknown": []}

    def service_containers(self, service: str) -> list[dict[str, Any]]:
        return [to_dict(c) for c in self.cluster.local_state(service).containers]

    async def scale(self, req: InternalScaleRequest, request_id: str | None
                    ) -> dict[int, InternalScaleRequest]:
        await self.scale_local(req)
        return {self.node_id: req}

    async def scale_local(self, req: InternalScaleRequest) -> None:
        """An order for this peer alone (also ZLayer's form of /internal/scale)."""
        await self.cluster.receive(req)

    def local_service_state(self, service: str) -> NodeServiceState:
        """This peer's own view (ZLayer's form of /internal/services/{svc}/state)."""
        return self.cluster.local_state(service)

    async def distribute_scale(self, req: InternalScaleRequest, request_id: str | None
                               ) -> dict[int, InternalScaleRequest]:
        if not self.cluster.is_leader():
            raise NotLeader("not the static leader", leader=self.leader_endpoint())
        return await self.cluster.distribute(req)

    def peer_status(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "mode": "static", "is_leader": self.is_leader(),
                "leader_api": self.leader_endpoint(),
                "peers": [to_dict_node(n) for n in self.cluster.list_nodes()]}

    def metrics(self) -> dict[str, float]:
        return {"raftdir_static_is_leader": 1.0 if self.is_leader() else 0.0,
                "raftdir_static_reachable_peers": sum(
                    1 for n in self.cluster.list_nodes() if n.state == "ready")}

    def __getattr__(self, name: str) -> Any:
        async def unsupported(*args: Any, **kwargs: Any) -> Any:
            raise BadRequest(f"{name} is not available in static mode (no directory)")
        if name in ("register", "report", "poll", "drain", "undrain", "deregister",
                    "create_token", "barrier"):
            return unsupported
        if name in ("workers", "leases"):
            def unsupported_sync(*args: Any, **kwargs: Any) -> Any:
                raise BadRequest(f"{name} is not available in static mode (no directory)")
            return unsupported_sync
        raise AttributeError(name)


def to_dict_node(n: NodeInfo) -> dict[str, Any]:
    return {"node_id": n.node_id, "api_addr": n.api_addr, "labels": n.labels, "os": n.os,
            "state": n.state, "last_seen_secs_ago": n.last_seen_secs_ago}

