"""What the HTTP API needs from the server it fronts: the ``ControlPlane`` protocol.

Owns: the seam between the HTTP layer (``raftdir.api.server``: decoding, auth headers,
status codes, forwarding) and the directory server (``raftdir.server.DirectoryServer``:
Raft, leader services, soft state). The API is tested against a fake that implements this
protocol; the real server implements it too. Imports only ``raftdir.model`` and errors.

Errors are raised as ``raftdir.errors`` classes; the API maps them to status codes. A
write on a follower raises ``NotLeader(leader=<leader's API endpoint>)`` (or ``NoLeader``);
the API then forwards the request to that leader or answers 421.

Every coroutine runs on the API's event loop; none may block it.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..model import (
    InternalScaleRequest, WorkerLease, WorkerPollRequest, WorkerPollResponse,
    WorkerRegisterRequest, WorkerRegisterResponse, WorkerStatusAck, WorkerStatusReport,
)

__all__ = ["ControlPlane"]


class ControlPlane(Protocol):
    node_id: int

    # -- who leads -------------------------------------------------------------------
    def is_leader(self) -> bool: ...

    def leader_endpoint(self) -> str | None:
        """The leader's API endpoint (``http://host:port``), when known."""
        ...

    def servers(self) -> list[str]:
        """Every control-plane server's API endpoint."""
        ...

    # -- worker protocol -------------------------------------------------------------
    async def register(self, req: WorkerRegisterRequest, request_id: str | None,
                       node_secret: str | None = None) -> WorkerRegisterResponse:
        """Leader only. ``node_secret``: a worker registering again with its identity
        (same desired id and secret gets the same record). Raises TokenInvalid,
        TokenExhausted, NotLeader, NoLeader, TimeoutOutcomeUnknown."""
        ...

    async def report(self, report: WorkerStatusReport, node_secret: str | None
                     ) -> WorkerStatusAck:
        """Leader only. Raises Unauthorized when the secret does not authenticate the
        report's node (a wrong secret, another node's, or no such node: one answer, so
        that no caller learns which ids exist), NotLeader."""
        ...

    async def poll(self, req: WorkerPollRequest, node_secret: str | None
                   ) -> WorkerPollResponse:
        """Any server, from its own applied state; parks up to min(max_wait, 60) s.
        Authentication as for ``report``."""
        ...

    # -- who may do what ---------------------------------------------------------------
    # Optional, and what a server with a directory has: ``authorize(token, scope) ->
    # raftdir.auth.Grant`` (may be a coroutine: a follower confirms it applied every
    # revocation first; raises Unauthorized, or Forbidden for a lower scope),
    # ``check_token(token) -> Grant`` (the same from this server's applied state only),
    # ``own_token() -> str | None`` (what this server sends to the others). Without
    # ``authorize`` the API takes the admin token (``check_admin``) for every scope.
    def check_admin(self, token: str | None) -> None:
        """Raises Unauthorized unless ``token`` is the admin token."""
        ...

    # -- operators' writes (leader only) ------------------------------------------------

    async def scale(self, req: InternalScaleRequest, request_id: str | None
                    ) -> dict[int, InternalScaleRequest]:
        """Place the service and commit it; returns the per-node split."""
        ...

    async def distribute_scale(self, req: InternalScaleRequest, request_id: str | None
                               ) -> dict[int, InternalScaleRequest]:
        """The leader places the service over the cluster (``scale`` on a directory
        server; on a static peer ``scale`` is an order for that peer only)."""
        ...

    async def drain(self, node_id: int, request_id: str | None) -> dict[str, Any]: ...

    async def undrain(self, node_id: int, request_id: str | None) -> dict[str, Any]:
        """Undo a drain: the node takes placement again (its worker gets ``undrain``)."""
        ...

    async def deregister(self, node_id: int, request_id: str | None) -> dict[str, Any]: ...

    async def create_token(self, valid_for_secs: int, max_uses: int) -> dict[str, Any]:
        """``{"token": str, "token_id": str, "expires_unix_secs": int, "max_uses": int}``"""
        ...

    # -- reads (any server; ``consistent`` commits a barrier first) -------------------
    async def barrier(self) -> None: ...

    def service_state(self, service: str) -> dict[str, Any]:
        """``{"service", "running", "healthy", "nodes": [NodeServiceState dict...],
        "unknown": [node ids]}``; leader only (reports are leader soft state)."""
        ...

    def service_containers(self, service: str) -> list[dict[str, Any]]:
        """ClusterContainerSummary dicts across the cluster; leader only."""
        ...

    def peer_status(self) -> dict[str, Any]:
        """This peer's Raft status (self, leader, term, commit_index, ...)."""
        ...

    def workers(self) -> list[dict[str, Any]]:
        """Every node: ``{node_id, kind, state, profile, ...}``."""
        ...

    def leases(self) -> list[tuple[WorkerLease | dict[str, Any], float | None]]:
        """Every worker's lease (a ``WorkerLease`` or its wire dict) and its seconds left
        (None when unknown here)."""
        ...

    def metrics(self) -> dict[str, float]:
        """Gauges and counters for ``/metrics`` (name -> value)."""
        ...
