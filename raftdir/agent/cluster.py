"""The ``Cluster`` protocol as a worker sees it (``raftdir.cluster.Cluster``).

Owns: the worker-tier worker's answers to the host daemon's questions: its own node id,
never the leader, the leader's address from the last status ack, the node listing through
the servers' ``/api/v1/cluster/workers`` (cached; ``list_nodes()`` is synchronous, so it
returns the last listing and refreshes it in the background when it is older than
``max_age``; ``refresh_nodes()`` fetches now), service states through the client. Those
reads are the servers' ``read`` routes, which need a token when the servers' API is not on
loopback: the agent's ``admin_token`` (an access token of scope ``read``, or ``operate`` to
scale too) is sent with them; its node secret is not a token for them. A worker has no
operator rights: scale orders raise ``Forbidden`` unless the agent was given a token, in
which case ``forward_scale`` goes to the leader. Runs on the agent's event loop.
Must not import the server side.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..cluster import NodeInfo
from ..codec import reachable_addr
from ..errors import Forbidden, NoLeader, NotLeader, RaftdirError
from ..model import InternalScaleRequest, NodeServiceState

if TYPE_CHECKING:  # pragma: no cover
    from .agent import WorkerAgent

__all__ = ["WorkerCluster", "node_info"]

log = logging.getLogger(__name__)

#: Directory node states as the host sees them.
_STATES = {"ready": "ready", "draining": "draining", "down": "unreachable"}


def node_info(node: dict[str, Any]) -> NodeInfo:
    """A ``/api/v1/cluster/workers`` entry as a ``NodeInfo``."""
    profile = node.get("profile") or {}
    state = _STATES.get(node.get("state", ""), "unreachable")
    if node.get("draining") and state == "ready":
        state = "draining"
    return NodeInfo(node_id=int(node["node_id"]),
                    api_addr=reachable_addr(str(profile.get("api_addr", ""))),
                    labels=dict(profile.get("labels") or {}), os=str(profile.get("os", "linux")),
                    state=state, last_seen_secs_ago=node.get("last_report_secs_ago"))


def _host_port(endpoint: str | None) -> str | None:
    return None if endpoint is None else endpoint.split("://", 1)[-1].rstrip("/")


class WorkerCluster:
    """The worker's ``Cluster``. ``max_age``: seconds a node listing is reused by
    ``list_nodes()`` before a background refresh (a fleet of workers must not list every
    node on every call)."""

    def __init__(self, agent: "WorkerAgent", *, max_age: float = 5.0) -> None:
        self.agent = agent
        self.max_age = max_age
        self._nodes: list[NodeInfo] = []
        self._fetched_at: float | None = None
        self._refresh: asyncio.Task[Any] | None = None

    @property
    def node_id(self) -> int:
        node_id = self.agent.node_id
        if node_id is None:
            raise NoLeader("this worker is not registered yet")
        return node_id

    def is_leader(self) -> bool:
        return False

    def leader_addr(self) -> str | None:
        return _host_port(self.agent.leader)

    def _client(self) -> Any:
        client = self.agent.client
        if client is None:
            raise RuntimeError("the worker agent is not started")
        return client

    async def refresh_nodes(self) -> list[NodeInfo]:
        """Fetch the node listing now (from any server; reads may lag the leader)."""
        nodes = [node_info(n) for n in await self._client().workers()]
        self._nodes = nodes
        self._fetched_at = self.agent.clock.monotonic()
        return list(nodes)

    def list_nodes(self) -> list[NodeInfo]:
        """The last listing fetched (empty before the first); starts a background refresh
        when it is older than ``max_age``."""
        now = self.agent.clock.monotonic()
        stale = self._fetched_at is None or now - self._fetched_at > self.max_age
        if stale and self.agent.client is not None and \
                (self._refresh is None or self._refresh.done()):
            try:
                self._refresh = asyncio.get_running_loop().create_task(self._refresh_quietly())
            except RuntimeError:  # no loop running here: the caller gets the cache
                pass
        return list(self._nodes)

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh_nodes()
        except RaftdirError as exc:
            log.warning("cannot list the nodes: %s", exc.message)

    def _admin(self, what: str) -> Any:
        client = self._client()
        if not self.agent.admin_token:
            raise Forbidden(f"{what}: a worker has no operator rights; give the worker agent "
                            "a token of scope operate (admin_token=) or ask a server")
        return client

    async def dispatch_scale(self, node_id: int, req: InternalScaleRequest) -> None:
        """A direct order to one node runs on the leader; a worker is never it."""
        self._admin("dispatch_scale")
        raise NotLeader("dispatch_scale runs on the leader; this node is a worker",
                        leader=self.agent.leader)

    async def forward_scale(self, req: InternalScaleRequest
                            ) -> dict[int, InternalScaleRequest]:
        """Have the leader place the service over the cluster (needs the admin token)."""
        client = self._admin("forward_scale")
        return await client.scale(req)

    async def service_states(self, service: str) -> list[NodeServiceState]:
        view = await self._client().service_state(service)
        return list(view["nodes"])
