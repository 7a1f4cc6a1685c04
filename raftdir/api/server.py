"""The HTTP API of a raftdir server (aiohttp): routes, body codecs, auth headers, status
codes, forwarding of writes to the leader, and the API's own metrics.

Owns: the route table (``ROUTES``: path, body type, auth, forwarding, the errors each route
can answer), content negotiation (msgpack or JSON by ``Content-Type`` / ``Accept``), the body
size limit, the mapping of ``raftdir.errors`` to statuses and error bodies, the forwarding
proxy to the leader, ``/health`` and ``/metrics``. It calls only the ``ControlPlane``
protocol (``raftdir.api.contract``); it must not import the core, replication, leader or
the server that implements the protocol.

Runs on one asyncio event loop; every handler is a coroutine and none blocks it. A parked
long-poll is a coroutine waiting inside ``ControlPlane.poll``: no thread per request. Under
``start_api`` a client that disconnects cancels its poll (``handler_cancellation``); writes
are shielded from that cancellation so a half-done write is never abandoned mid-call.

Error bodies are ``{code, message, field?, leader?}`` with the status of the error class
(``raftdir.errors``). An unexpected exception is logged and answered ``500 internal``; the
server keeps serving.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import aiohttp
import yarl
from aiohttp import web
from multidict import CIMultiDict

from ..auth import (
    ACCESS_SEED_RE, ADMIN_PRINCIPAL, SCOPES, Grant, bearer_token, is_loopback_host,
    presented_token,
)
from ..codec import (
    ADDR, STR, U32, U64, Presence, Wire, dumps_json, dumps_msgpack, from_dict, loads_json,
    loads_msgpack, to_dict, wire,
)
from ..errors import (
    BadRequest, Conflict, Forbidden, NodeNotReady, NoLeader, NotLeader, Overloaded,
    PayloadTooLarge, RaftdirError, ReplicaBehind, RequestTimeout, TimeoutOutcomeUnknown,
    TokenExhausted, TokenInvalid, Unauthorized, UnknownNode, UnknownService, UnknownToken,
)
from ..limits import (
    check_request, check_service_name, check_token, check_token_name, parse_node_id,
    parse_token_id,
)
from ..model import (
    InternalScaleRequest, WorkerPollRequest, WorkerRegisterRequest, WorkerStatusReport,
)
from ..tasks import finish_even_if_cancelled
from .contract import ControlPlane
from .dashboard import add_dashboard
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, ApiMetrics
from .zlayer import ZLAYER_TOKEN_HEADER, with_zlayer_form, zlayer_forms

__all__ = [
    "make_app", "start_api", "ApiServer", "ssl_context_from_files", "ROUTES", "Route",
    "CreateTokenRequest", "MSGPACK", "JSON", "FORWARDED_HEADER", "REQUEST_ID_HEADER",
    "ZLAYER_TOKEN_HEADER", "parked_polls", "MEMBERSHIP_ROUTES", "PeerChangeRequest",
    "BACKUP_ROUTE", "BACKUP_TYPE", "DIGEST_ROUTE", "ACCESS_TOKEN_ROUTES",
    "CreateAccessTokenRequest", "ALL_ROUTES",
]

log = logging.getLogger("raftdir.api")

MSGPACK = "application/msgpack"
JSON = "application/json"
_MSGPACK_TYPES = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})
FORWARDED_HEADER = "X-Raftdir-Forwarded"
REQUEST_ID_HEADER = "X-Request-Id"
#: Headers a follower passes on to the leader (besides its own ``X-Raftdir-Forwarded``).
_FORWARD_HEADERS = ("Authorization", ZLAYER_TOKEN_HEADER, REQUEST_ID_HEADER, "Content-Type",
                    "Accept")
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:\-]{1,128}\Z")


# ---------------------------------------------------------------------------- bodies

@dataclass(frozen=True, kw_only=True)
class CreateTokenRequest(Wire):
    """Body of ``POST /api/v1/cluster/tokens``: how long the join token is valid (at most
    ``MAX_TOKEN_VALID_SECS``) and how many registrations it allows (0: no limit; at most
    ``MAX_TOKEN_USES``)."""

    valid_for_secs: int = wire(U64, Presence.REQUIRED)
    max_uses: int = wire(U32, Presence.REQUIRED)

    def check(self, path: str) -> None:
        check_token(self.valid_for_secs, self.max_uses)


@dataclass(frozen=True, kw_only=True)
class CreateAccessTokenRequest(Wire):
    """Body of ``POST /api/v1/cluster/access-tokens``: the scope (``read``, ``operate`` or
    ``admin``), how long the token is valid (at most ``MAX_TOKEN_VALID_SECS``), an
    optional name (1-64 of ``A-Z a-z 0-9 . _ @ : -``) and an optional ``seed`` (22-86 of
    base64url: the client's fresh random seed of this token, the same in every retry, so
    a retry makes the same token; without it the token is random)."""

    scope: str = wire(STR, Presence.REQUIRED)
    valid_for_secs: int = wire(U64, Presence.REQUIRED)
    name: str = wire(STR, Presence.DEFAULT, "")
    seed: str | None = wire(STR, Presence.OPTIONAL_OMITTED)

    def check(self, path: str) -> None:
        if self.scope not in SCOPES:
            raise BadRequest(f"scope: {self.scope!r} is not one of {', '.join(SCOPES)}",
                             field="scope")
        check_token(self.valid_for_secs, 0)
        check_token_name(self.name)
        if self.seed is not None and not ACCESS_SEED_RE.match(self.seed):
            raise BadRequest("seed: expected 22-86 characters of A-Z a-z 0-9 _ - (at "
                             "least 128 random bits)", field="seed")


def _plain(value: Any) -> Any:
    """Wire objects (and containers of them) as plain maps and lists."""
    if isinstance(value, Wire):
        return to_dict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------- routes

def _encode_plain(result: Any, call: "Call") -> Any:
    return _plain(result)


@dataclass
class Call:
    """What a route's handler hands to its ``ControlPlane`` call."""

    body: Any = None
    request_id: str | None = None
    secret: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    grant: Grant | None = None      # what the caller's token may do (scoped routes)


@dataclass(frozen=True)
class Route:
    """One endpoint. ``call`` runs against the control plane (sync or async); ``encode``
    turns its result into the plain response body. ``auth``: ``none``, ``node`` (the node
    secret), or the scope a token needs: ``read`` (open on a loopback-only API unless
    reads are closed there too), ``operate`` or ``admin``. ``forward``: on ``NotLeader`` a
    follower proxies it to the leader. ``read``: takes ``?consistent=1``. ``errors``: every error it can answer
    (besides 400 for a malformed request, 413, 421/503 for forwarding, 500), for the docs
    and the tests."""

    name: str
    method: str
    path: str
    call: Callable[[ControlPlane, Call], Any]
    body: type | None = None
    auth: str = "none"
    forward: bool = False
    read: bool = False
    parks: bool = False
    encode: Callable[[Any, Call], Any] = _encode_plain
    errors: tuple[type[RaftdirError], ...] = ()
    summary: str = ""
    binary: str | None = None   # the call returns bytes, sent as is with this media type


def _encode_scale(split: dict[int, InternalScaleRequest], call: Call) -> dict[str, Any]:
    return {"service": call.body.service,
            "nodes": [{"node_id": n, "request": to_dict(req)}
                      for n, req in sorted(split.items())]}


def _encode_leases(leases: list, call: Call) -> list[dict[str, Any]]:
    out = []
    for lease, left in leases:
        item = dict(lease) if isinstance(lease, dict) else to_dict(lease)
        item["ttl_left_secs"] = None if left is None else float(left)
        out.append(item)
    return out


def _health(cp: ControlPlane, call: Call) -> dict[str, Any]:
    return {"ok": True, "node_id": cp.node_id, "is_leader": cp.is_leader(),
            "leader": cp.leader_endpoint()}


_WRITE_ERRORS = (NotLeader, NoLeader, TimeoutOutcomeUnknown)
#: What a plain read can answer: its token refused, or its ``?consistent=1`` barrier (or
#: the catch-up barrier of a follower checking a token) failing (421 when a follower
#: cannot hand it to the leader).
_READ_ERRORS = (Unauthorized, Forbidden, NotLeader, NoLeader, TimeoutOutcomeUnknown)
#: What a route that needs a token answers when it is missing, wrong, revoked or expired
#: (401), or of a lower scope (403).
_ADMIN_ERRORS = (Unauthorized, Forbidden)

ROUTES: tuple[Route, ...] = (
    Route("register", "POST", "/api/v1/workers/register",
          lambda cp, c: cp.register(c.body, c.request_id, c.secret),
          body=WorkerRegisterRequest, forward=True,
          errors=(TokenInvalid, TokenExhausted, Conflict) + _WRITE_ERRORS,
          summary="Register a worker with a join token (WorkerRegisterRequest -> "
                  "WorkerRegisterResponse). A worker that registers again sends its node "
                  "secret as Bearer and gets its existing record back."),
    Route("poll", "POST", "/api/v1/workers/poll",
          lambda cp, c: cp.poll(c.body, c.secret),
          body=WorkerPollRequest, auth="node", parks=True,
          errors=(Unauthorized, NotLeader, NoLeader, ReplicaBehind, TimeoutOutcomeUnknown),
          summary="Long-poll the worker's assignment events (WorkerPollRequest -> "
                  "WorkerPollResponse). Answered by any server; never forwarded. A "
                  "replica behind the leader answers 503 replica_behind naming another "
                  "server in `leader`."),
    Route("status", "POST", "/api/v1/workers/status",
          lambda cp, c: cp.report(c.body, c.secret),
          body=WorkerStatusReport, auth="node", forward=True,
          errors=(Unauthorized,) + _WRITE_ERRORS,
          summary="Status report and lease renewal (WorkerStatusReport -> "
                  "WorkerStatusAck)."),
    Route("scale", "POST", "/api/v1/internal/scale",
          lambda cp, c: cp.scale(c.body, c.request_id),
          body=InternalScaleRequest, auth="operate", forward=True, encode=_encode_scale,
          errors=_ADMIN_ERRORS + (BadRequest, NodeNotReady, Conflict) + _WRITE_ERRORS,
          summary="Scale a service; returns the per-node split."),
    Route("distribute_scale", "POST", "/api/v1/cluster/scale",
          lambda cp, c: cp.distribute_scale(c.body, c.request_id),
          body=InternalScaleRequest, auth="operate", forward=True, encode=_encode_scale,
          errors=_ADMIN_ERRORS + (BadRequest, NodeNotReady, Conflict) + _WRITE_ERRORS,
          summary="Have the leader place a service over the cluster; returns the split. "
                  "The same as /internal/scale on a directory server; on a static peer, "
                  "where /internal/scale is an order for that peer alone, the leader "
                  "distributes."),
    Route("service_state", "GET", "/api/v1/internal/services/{service}/state",
          lambda cp, c: cp.service_state(c.params["service"]),
          auth="read", read=True, forward=True,
          errors=(UnknownService,) + _READ_ERRORS,
          summary="A service's NodeServiceState per node plus totals (leader only)."),
    Route("service_containers", "GET", "/api/v1/internal/services/{service}/containers",
          lambda cp, c: cp.service_containers(c.params["service"]),
          auth="read", read=True, forward=True,
          errors=(UnknownService,) + _READ_ERRORS,
          summary="A service's containers across the cluster (ClusterContainerSummary "
                  "list; leader only)."),
    Route("peers", "GET", "/api/v1/cluster/peers",
          lambda cp, c: cp.peer_status(), auth="read", read=True,
          errors=_READ_ERRORS,
          summary="This peer's Raft status."),
    Route("workers", "GET", "/api/v1/cluster/workers",
          lambda cp, c: cp.workers(), auth="read", read=True,
          errors=_READ_ERRORS,
          summary="Every node of the directory: node_id, kind, state, profile, ..."),
    Route("leases", "GET", "/api/v1/cluster/leases",
          lambda cp, c: cp.leases(), auth="read", read=True, encode=_encode_leases,
          errors=_READ_ERRORS,
          summary="Every worker's WorkerLease plus ttl_left_secs (null when unknown here)."),
    Route("drain", "POST", "/api/v1/workers/{id}/drain",
          lambda cp, c: cp.drain(c.params["id"], c.request_id),
          auth="operate", forward=True,
          errors=_ADMIN_ERRORS + (BadRequest, UnknownNode, Conflict) + _WRITE_ERRORS,
          summary="Drain a node: no new placement; its share moves away."),
    Route("undrain", "DELETE", "/api/v1/workers/{id}/drain",
          lambda cp, c: cp.undrain(c.params["id"], c.request_id),
          auth="operate", forward=True,
          errors=_ADMIN_ERRORS + (BadRequest, UnknownNode) + _WRITE_ERRORS,
          summary="Undo a drain: the node takes placement again."),
    Route("deregister", "DELETE", "/api/v1/workers/{id}",
          lambda cp, c: cp.deregister(c.params["id"], c.request_id),
          auth="operate", forward=True,
          errors=_ADMIN_ERRORS + (BadRequest, UnknownNode, Conflict) + _WRITE_ERRORS,
          summary="Remove a node's record (it must register again)."),
    Route("create_token", "POST", "/api/v1/cluster/tokens",
          lambda cp, c: cp.create_token(c.body.valid_for_secs, c.body.max_uses),
          body=CreateTokenRequest, auth="operate", forward=True,
          errors=_ADMIN_ERRORS + (Conflict,) + _WRITE_ERRORS,
          summary="Issue a join token."),
    Route("health", "GET", "/health", _health,
          summary="Liveness: {ok, node_id, is_leader, leader}. HEAD answers the same "
                  "status without a body."),
)


# ---------------------------------------------------------------------------- membership
# Dynamic Raft membership (``raftdir peers add|remove``), one change at a time. Kept apart
# from ``ROUTES`` so the ControlPlane protocol stays as it is: a control plane that has no
# ``add_peer`` / ``remove_peer`` (single-node, static, the test fake) answers 409.

@dataclass(frozen=True, kw_only=True)
class PeerChangeRequest(Wire):
    """Body of ``POST`` / ``DELETE /api/v1/cluster/peers``: the peer's id, its Raft address
    and (to add it) its API address."""

    id: int = wire(U64, Presence.REQUIRED)
    raft_addr: str = wire(ADDR, Presence.REQUIRED)
    api_addr: str | None = wire(ADDR, Presence.OPTIONAL_OMITTED)


def _membership(op: str) -> Callable[[ControlPlane, Call], Any]:
    def call(cp: ControlPlane, c: Call) -> Any:
        fn = getattr(cp, op, None)
        if fn is None:
            raise Conflict(f"{op}: this server has no dynamic membership (not a raft "
                           "cluster)", field="raft_addr")
        if op == "add_peer" and c.body.api_addr is None:
            raise BadRequest("api_addr: required to add a peer", field="api_addr")
        return fn(c.body.id, c.body.raft_addr, c.body.api_addr)
    return call


MEMBERSHIP_ROUTES: tuple[Route, ...] = (
    Route("add_peer", "POST", "/api/v1/cluster/peers", _membership("add_peer"),
          body=PeerChangeRequest, auth="admin", forward=True,
          errors=_ADMIN_ERRORS + (BadRequest, Conflict) + _WRITE_ERRORS,
          summary="Add one voting Raft peer (leader; one change at a time)."),
    Route("remove_peer", "DELETE", "/api/v1/cluster/peers", _membership("remove_peer"),
          body=PeerChangeRequest, auth="admin", forward=True,
          errors=_ADMIN_ERRORS + (BadRequest, Conflict) + _WRITE_ERRORS,
          summary="Remove one Raft peer (stop it first; not the leader itself)."),
)


# ---------------------------------------------------------------------------- backup, digest
# Calls only a server with a replicated directory has: one without them (a static peer)
# answers 409, like the membership routes.

def _directory_call(op: str) -> Callable[[ControlPlane, Call], Any]:
    def call(cp: ControlPlane, c: Call) -> Any:
        fn = getattr(cp, op, None)
        if fn is None:
            raise Conflict(f"{op}: this server keeps no replicated directory")
        return fn()
    return call


#: A backup file of the directory (raftdir/backup.py), sent as is: consistent (a barrier
#: through the leader first), so any server can answer it.
BACKUP_TYPE = "application/vnd.raftdir.backup"
BACKUP_ROUTE = Route(
    "backup", "GET", "/api/v1/cluster/backup", _directory_call("backup"), auth="admin",
    binary=BACKUP_TYPE, errors=_ADMIN_ERRORS + (Conflict,) + _READ_ERRORS,
    summary="A backup file of the directory (msgpack, with its cluster id, revision and "
            "checksum), taken after a barrier: every write acknowledged before the call "
            "is in it.")

#: A diagnostic for fault-injection runs (``scripts/nemesis``): this peer's applied index
#: and a hash of its directory's hard state, so a caller can check that every peer holds
#: the same state at the same index.
DIGEST_ROUTE = Route(
    "digest", "GET", "/api/v1/cluster/digest", _directory_call("digest"), auth="admin",
    errors=_ADMIN_ERRORS + (Conflict,),
    summary="This peer's last applied index (read before and after), its assignment "
            "revision and a sha256 of its directory's hard state.")



# ---------------------------------------------------------------------------- access tokens
# Scoped tokens kept by the directory (``raftdir token create --scope | list | revoke``):
# a server without a replicated directory (a static peer) answers 409, as for backups.

def _directory_method(op: str) -> Callable[[ControlPlane, Call], Any]:
    def call(cp: ControlPlane, c: Call) -> Any:
        fn = getattr(cp, op, None)
        if fn is None:
            raise Conflict(f"{op}: this server keeps no replicated directory")
        return fn
    return call


ACCESS_TOKEN_ROUTES: tuple[Route, ...] = (
    Route("list_access_tokens", "GET", "/api/v1/cluster/access-tokens",
          lambda cp, c: _directory_method("access_tokens")(cp, c)(), auth="admin",
          read=True, errors=_ADMIN_ERRORS + (Conflict,) + _READ_ERRORS,
          summary="Every access token kept: id, name, scope, created, expires, creator, "
                  "revoked, state (never a token or its hash)."),
    Route("create_access_token", "POST", "/api/v1/cluster/access-tokens",
          lambda cp, c: _directory_method("create_access_token")(cp, c)(
              c.body.scope, c.body.valid_for_secs, c.body.name,
              c.grant.principal if c.grant is not None else ADMIN_PRINCIPAL, c.request_id,
              seed=c.body.seed),
          body=CreateAccessTokenRequest, auth="admin", forward=True,
          errors=_ADMIN_ERRORS + (BadRequest, Conflict) + _WRITE_ERRORS,
          summary="Issue a scoped access token; the answer is the only place it appears."),
    Route("revoke_access_token", "DELETE", "/api/v1/cluster/access-tokens/{token_id}",
          lambda cp, c: _directory_method("revoke_access_token")(cp, c)(
              c.params["token_id"], c.request_id),
          auth="admin", forward=True,
          errors=_ADMIN_ERRORS + (UnknownToken, Conflict) + _WRITE_ERRORS,
          summary="Revoke an access token: every server refuses it from the commit on."),
)

#: Every route of the table-driven handler.
ALL_ROUTES: tuple[Route, ...] = ROUTES + MEMBERSHIP_ROUTES + (BACKUP_ROUTE, DIGEST_ROUTE) \
    + ACCESS_TOKEN_ROUTES


# ---------------------------------------------------------------------------- negotiation

def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def _request_format(request: web.Request) -> str | None:
    """The body format by ``Content-Type``; None when there is none. A ``charset`` other
    than UTF-8 is refused (bodies are UTF-8 JSON or msgpack, whose strings are UTF-8)."""
    header = request.headers.get("Content-Type")
    media = _media_type(header)
    if not media:
        return None
    if media in _MSGPACK_TYPES:
        fmt = MSGPACK
    elif media == JSON or media.endswith("+json"):
        fmt = JSON
    else:
        raise BadRequest(f"Content-Type: {media!r} is not supported; use {MSGPACK} or {JSON}",
                         field="Content-Type")
    for param in (header or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" \
                and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise BadRequest(f"Content-Type: charset {value.strip()!r} is not supported; "
                             "bodies are UTF-8", field="Content-Type")
    return fmt


def _response_format(request: web.Request) -> str:
    """The answer's format by ``Accept`` (by q, then order); default: the request's format,
    else JSON."""
    try:
        default = _request_format(request) or JSON
    except BadRequest:
        default = JSON
    accept = request.headers.get("Accept")
    if not accept:
        return default
    ranked = []
    for i, part in enumerate(accept.split(",")):
        media, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        ranked.append((-q, i, media.lower()))
    for negq, _, media in sorted(ranked):
        if negq == 0:
            continue
        if media in _MSGPACK_TYPES:
            return MSGPACK
        if media == JSON:
            return JSON
        if media in ("*/*", "application/*"):
            return default
    return default


def _respond(request: web.Request, body: Any, status: int = 200) -> web.Response:
    fmt = _response_format(request)
    data = dumps_msgpack(body) if fmt == MSGPACK else dumps_json(body)
    return web.Response(status=status, body=data, content_type=fmt)


def _error_response(request: web.Request, err: RaftdirError) -> web.Response:
    return _respond(request, err.to_body(), err.status)


async def _read_body(request: web.Request, max_body: int, timeout: float) -> bytes:
    """The request body, refusing more than ``max_body`` bytes (the declared length first,
    then what actually arrives) and a body not complete within ``timeout`` seconds
    (``RequestTimeout``). The deadline sets the error on the body's stream, so the read
    stays in the handler's own task: a client that goes away cancels it as it would any
    handler (a ``wait_for`` would turn that cancellation into a logged connection error)."""
    declared = request.content_length
    if declared is not None and declared > max_body:
        raise PayloadTooLarge(f"body of {declared} bytes is over the limit of {max_body}")
    deadline = asyncio.get_running_loop().call_later(
        timeout, request.content.set_exception,
        RequestTimeout(f"the body did not arrive within {timeout:g} s"))
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            chunk = await request.content.readany()
            if not chunk:
                break
            size += len(chunk)
            if size > max_body:
                raise PayloadTooLarge(f"body is over the limit of {max_body} bytes")
            chunks.append(chunk)
    finally:
        deadline.cancel()
    return b"".join(chunks)


def _decode_body(request: web.Request, raw: bytes) -> Any:
    """The body as plain data; a problem with the body as a whole (syntax, an empty body)
    names the field ``body``."""
    fmt = _request_format(request) or JSON
    try:
        return loads_msgpack(raw) if fmt == MSGPACK else loads_json(raw)
    except BadRequest as err:
        if err.field is None:
            raise BadRequest(f"body: {err.message}", field="body") from None
        raise


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name)
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise BadRequest(f"{name}: expected 1 or 0, got {value!r}", field=name)


def _node_secret(request: web.Request) -> str | None:
    return (bearer_token(request.headers.get("Authorization"))
            or presented_token(request.headers.get(ZLAYER_TOKEN_HEADER) or None))


def _admin_token(request: web.Request) -> str | None:
    # the same headers: ZLayer's daemons send their cluster-wide token (our admin token's
    # counterpart) in X-ZLayer-Internal-Token
    return _node_secret(request)


# ---------------------------------------------------------------------------- metrics

_CP = web.AppKey("raftdir_cp", object)
_METRICS = web.AppKey("raftdir_metrics", ApiMetrics)
_STATE = web.AppKey("raftdir_state", dict)


def parked_polls(app: web.Application) -> int:
    """How many polls are waiting inside ``ControlPlane.poll`` on this app now."""
    return app[_METRICS].parked


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class _Api:
    """The handlers of one application (bound to its control plane and settings)."""

    def __init__(self, app: web.Application, cp: ControlPlane, *, max_body: int,
                 forward: bool, forward_ssl: Any, forward_timeout: float,
                 clock: Any, body_timeout: float, open_reads: bool) -> None:
        self.app = app
        self.cp = cp
        self.open_reads = open_reads
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.forward_enabled = forward
        self.forward_ssl = forward_ssl
        self.forward_timeout = forward_timeout
        self.monotonic = clock.monotonic if clock is not None else time.monotonic
        self.metrics = app[_METRICS]
        self._session: aiohttp.ClientSession | None = None

    # -- middleware: errors and metrics -----------------------------------------------
    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        started = self.monotonic()
        status = 500
        conn = _Connection.of(request)
        if conn is not None:
            conn.request_started()
        try:
            try:
                if request.version < aiohttp.HttpVersion10:
                    raise BadRequest("HTTP/0.9 is not served: send HTTP/1.0 or HTTP/1.1",
                                     field="HTTP version")
                response = await handler(request)
            except RaftdirError as err:
                response = _error_response(request, err)
                if isinstance(err, (RequestTimeout, Overloaded)):
                    response.force_close()   # a late body is not awaited; a shed poll
                                             # gives its connection back
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                code = re.sub(r"[^a-z]+", "_", (exc.reason or "error").lower()).strip("_")
                response = _respond(request, {"code": code, "message": exc.reason or code},
                                    exc.status)
                for name in ("Allow",):
                    if name in exc.headers:
                        response.headers[name] = exc.headers[name]
            except (asyncio.CancelledError, ConnectionResetError):
                status = 499  # the client went away
                raise
            except Exception:  # noqa: BLE001 - the server must keep serving
                log.exception("unexpected error answering %s %s", request.method,
                              request.path)
                response = _error_response(request,
                                           RaftdirError("internal error; see the server log"))
            status = response.status
            return response
        finally:
            if conn is not None:
                conn.request_finished()
            self.metrics.observe(route, request.method, status, self.monotonic() - started)

    # -- the generic route handler ----------------------------------------------------
    def handler(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            call = Call()
            if route.auth in SCOPES:
                if not (route.auth == "read" and self.open_reads):
                    call.grant = await self.authorize(request, route.auth)
            else:
                call.secret = _node_secret(request)
            if route.auth == "node":
                if call.secret is None:
                    raise Unauthorized("missing node secret: send Authorization: Bearer "
                                       "<internal_token>")
            rid = request.headers.get(REQUEST_ID_HEADER)
            if rid is not None and not _REQUEST_ID_RE.match(rid):
                raise BadRequest(f"{REQUEST_ID_HEADER}: expected 1-128 characters of "
                                 "[A-Za-z0-9._:-]", field=REQUEST_ID_HEADER)
            call.request_id = rid
            for key, value in request.match_info.items():
                if key == "service":
                    check_service_name(value, key)
                elif key == "token_id":
                    value = parse_token_id(value, key)
                call.params[key] = parse_node_id(value, key) if key == "id" else value
            raw = b""
            if request.method in ("POST", "PUT", "DELETE", "PATCH"):
                try:
                    raw = await _read_body(request, self.max_body, self.body_timeout)
                except RequestTimeout:
                    self.metrics.request_timeouts += 1
                    raise
            if route.body is not None:
                data = _decode_body(request, raw)
                try:
                    call.body = from_dict(route.body, data)
                except BadRequest as err:
                    if err.field is not None:
                        raise
                    raise BadRequest(f"body: {err.message}", field="body") from None
                check_request(call.body)
            elif raw.strip():
                data = _decode_body(request, raw)
                if data != {}:
                    raise BadRequest("body: this endpoint takes no body (or an empty map)",
                                     field="body")
            consistent = route.read and _flag(request, "consistent")
            try:
                if consistent:
                    # A follower that cannot commit the barrier itself hands the whole
                    # read to the leader (below), which can.
                    await self.cp.barrier()
                if route.parks:
                    conn = _Connection.of(request)
                    if conn is not None and not conn.owner.room_for_a_poll():
                        self.metrics.polls_shed += 1
                        raise Overloaded(
                            f"this server keeps its last {conn.owner.reserve} connections "
                            "for reports and writes; poll another server")
                    result = await self._parked(route, call)
                elif route.forward and request.method != "GET":
                    # A write runs to its end even if the client disconnects.
                    result = await finish_even_if_cancelled(
                        _maybe_await(route.call(self.cp, call)), f"{route.name} request")
                else:
                    result = await _maybe_await(route.call(self.cp, call))
            except NotLeader as err:
                if (route.forward or consistent) and self.forward_enabled and err.leader \
                        and FORWARDED_HEADER not in request.headers:
                    return await self._forward(route, request, raw, err)
                raise
            if route.binary:
                return web.Response(body=result, content_type=route.binary)
            try:
                return _respond(request, route.encode(result, call))
            except BadRequest as exc:  # our own answer does not encode: a bug here
                raise RuntimeError(f"cannot encode the answer of {route.name}: "
                                   f"{exc.message}") from exc

        handle.__name__ = f"handle_{route.name}"
        return handle

    async def _parked(self, route: Route, call: Call) -> Any:
        self.metrics.parked += 1
        try:
            return await _maybe_await(route.call(self.cp, call))
        finally:
            self.metrics.parked -= 1

    # -- forwarding to the leader -----------------------------------------------------
    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ssl=self.forward_ssl)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=self.forward_timeout))
        return self._session

    async def close(self, _app: web.Application | None = None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _forward(self, route: Route, request: web.Request, raw: bytes,
                       err: NotLeader) -> web.StreamResponse:
        leader = err.leader or ""
        base = leader if "://" in leader else f"{request.scheme}://{leader}"
        # The request as it came: the raw path and query (no '..' resolved, no %2F
        # decoded), every copy of each header passed on, and no header the leader would
        # not have seen (aiohttp adds Content-Type, Accept and Accept-Encoding by default).
        url = yarl.URL(base.rstrip("/") + request.raw_path, encoded=True)
        headers = CIMultiDict()
        for name in _FORWARD_HEADERS:
            for value in request.headers.getall(name, ()):
                headers.add(name, value)
        headers[FORWARDED_HEADER] = "1"
        skip = [name for name in ("Content-Type", "Accept", "Accept-Encoding")
                if name not in request.headers]
        try:
            async with self._client().request(request.method, url, data=raw or None,
                                              headers=headers,
                                              skip_auto_headers=skip) as resp:
                body = await resp.read()
                out = web.Response(status=resp.status, body=body)
                if "Content-Type" in resp.headers:
                    out.headers["Content-Type"] = resp.headers["Content-Type"]
        except asyncio.TimeoutError:
            self.metrics.forward(route.path, "timeout")
            raise TimeoutOutcomeUnknown(
                f"forwarded to the leader {leader} and got no answer in "
                f"{self.forward_timeout:g} s; the write may still commit: retry with the same "
                f"{REQUEST_ID_HEADER}", leader=leader) from None
        except (aiohttp.ClientError, OSError) as exc:
            self.metrics.forward(route.path, "failed")
            log.warning("forwarding %s to the leader %s failed: %s", request.path, leader, exc)
            raise NotLeader(f"{err.message}; forwarding to the leader {leader} failed: {exc}",
                            leader=leader) from None
        self.metrics.forward(route.path, "ok")
        return out

    # -- who may do what ---------------------------------------------------------------
    async def authorize(self, request: web.Request, scope: str) -> Grant:
        """The request's token (``Authorization: Bearer``, or ZLayer's header) checked for
        ``scope`` by the control plane (``ControlPlane.authorize``); a control plane with
        no scoped tokens (a static peer) takes the admin token for every scope."""
        token = _admin_token(request)
        authorize = getattr(self.cp, "authorize", None)
        if authorize is None:
            await _maybe_await(self.cp.check_admin(token))
            return Grant("admin", ADMIN_PRINCIPAL)
        return await _maybe_await(authorize(token, scope))

    # -- /metrics -----------------------------------------------------------------------
    async def handle_metrics(self, request: web.Request) -> web.StreamResponse:
        if not self.open_reads:
            await self.authorize(request, "read")
        return web.Response(body=self.metrics.render(),
                            headers={"Content-Type": METRICS_CONTENT_TYPE,
                                     "X-Content-Type-Options": "nosniff"})


def make_app(cp: ControlPlane, *, max_body: int = 1 << 20, forward: bool = True,
             clock: Any = None, forward_ssl: Any = None,
             forward_timeout: float = 30.0, body_timeout: float = 30.0,
             open_reads: bool = False) -> web.Application:
    """The aiohttp application of the API over ``cp``.

    ``open_reads``: the ``read`` routes and ``/metrics`` answer without a token (what
    ``start_api`` does on a loopback address unless told otherwise); by default every
    route but ``/health``, the page of the dashboard and the workers' own routes needs
    one.

    ``max_body``: the largest request body in bytes (413 above); ``body_timeout``: seconds
    for the whole body to arrive once the head has (408 above). ``forward``: followers
    proxy writes to the leader (else they answer 421 with the leader). ``clock``: anything
    with ``monotonic()`` (latency metrics). ``forward_ssl``: the ``ssl`` argument for the
    connections to the leader (an ``SSLContext`` for a private CA). ``forward_timeout``:
    seconds to wait for the leader's answer (then 504 ``timeout_outcome_unknown``).

    Run it with ``handler_cancellation=True`` (``start_api`` does) so that a client that
    disconnects cancels its parked poll at once; otherwise the poll ends at its deadline.
    """
    app = web.Application(client_max_size=max_body)
    app[_CP] = cp
    app[_METRICS] = ApiMetrics()
    app[_METRICS].attach(cp.metrics, lambda: getattr(cp, "metrics_registry", None))
    api = _Api(app, cp, max_body=max_body, forward=forward, forward_ssl=forward_ssl,
               forward_timeout=forward_timeout, clock=clock, body_timeout=body_timeout,
               open_reads=open_reads)
    app[_STATE] = {"api": api}
    app.middlewares.append(api.middleware)
    forms = zlayer_forms()    # ZLayer's node-local forms of two paths (api/zlayer.py)
    for route in ALL_ROUTES:
        handler = api.handler(route)
        if route.name in forms:
            handler = with_zlayer_form(handler, api.handler(forms[route.name]))
        if route.method == "GET":  # GET routes answer HEAD too (aiohttp sends no body)
            app.router.add_get(route.path, handler, name=route.name)
        else:
            app.router.add_route(route.method, route.path, handler, name=route.name)
    app.router.add_get("/metrics", api.handle_metrics, name="metrics")
    add_dashboard(app, cp, ssl=forward_ssl)   # /ui (api/dashboard.py)
    app.on_cleanup.append(api.close)
    return app


# ---------------------------------------------------------------------------- serving

def _canned(error: RaftdirError) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, for the connection layer, which
    answers before (or instead of) aiohttp."""
    body = dumps_json(error.to_body())
    reason = {408: "Request Timeout", 503: "Service Unavailable"}.get(error.status, "Error")
    return (f"HTTP/1.1 {error.status} {reason}\r\nContent-Type: {JSON}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode("ascii") + body


#: How long a connection answered before its request was read (408, 413, 503) may still
#: send before it is closed: what it sends is read and dropped, so that the answer is not
#: lost to a reset.
_LINGER = 2.0

#: One connection in this many is kept for requests other than polls (``reserve``).
_POLL_RESERVE_SHARE = 20


class _Connections:
    """The protocol factory ``start_api`` listens with: it wraps each of aiohttp's
    connections in a ``_Connection`` that counts it against ``max_connections`` and times
    out a request head that does not arrive in ``header_timeout`` seconds."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], metrics: ApiMetrics, *,
                 max_connections: int, header_timeout: float) -> None:
        self.factory = factory
        self.metrics = metrics
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.all: set[_Connection] = set()

    def __call__(self) -> asyncio.Protocol:
        return _Connection(self)

    @property
    def reserve(self) -> int:
        """Connections kept for everything but polls (reports, registrations, admin
        calls): a server whose every connection holds a parked poll could not hear the
        reports that keep its workers' leases, and would mark live workers down."""
        return self.max_connections // _POLL_RESERVE_SHARE

    def room_for_a_poll(self) -> bool:
        return self.metrics.connections <= self.max_connections - self.reserve

    def close(self) -> None:
        """Close the connections answered already (408, 503) and still lingering; the
        others are aiohttp's to shut down (their running handlers get ``shutdown_timeout``)."""
        for conn in list(self.all):
            if conn.inner is None:
                conn.abort()


class _Connection(asyncio.Protocol):
    """One client connection: aiohttp's ``RequestHandler`` behind a thin front that owns
    the head timeout and the connection cap. While no request runs, a head must be
    complete within ``header_timeout`` of the connection or of the first byte of the next
    request, or the connection gets ``408 request_timeout`` and is closed; an idle
    connection between requests is aiohttp's (``keepalive_timeout``)."""

    def __init__(self, owner: _Connections) -> None:
        self.owner = owner
        self.inner: asyncio.Protocol | None = None      # None: refused, bytes are dropped
        self.handler: asyncio.Protocol | None = None    # aiohttp's, told when it closes
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.busy = 0

    @staticmethod
    def of(request: web.Request) -> "_Connection | None":
        transport = request.transport
        conn = transport.get_protocol() if transport is not None else None
        return conn if isinstance(conn, _Connection) else None

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        owner = self.owner
        owner.all.add(self)
        if owner.metrics.connections >= owner.max_connections:
            owner.metrics.connections_refused += 1
            self._refuse(Overloaded(f"this server is at its limit of {owner.max_connections} "
                                    "connections; retry, or ask another server"))
            return
        owner.metrics.connections += 1
        self.inner = self.handler = owner.factory()
        self._arm()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return                    # refused: what it still sends is dropped
        if self.busy == 0 and self.timer is None:
            self._arm()               # the first byte of the next request
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.inner is None:
            self.abort()
            return None
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.owner.all.discard(self)
        self.inner = None
        if self.handler is not None:
            self.owner.metrics.connections -= 1
            handler, self.handler = self.handler, None
            handler.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # -- requests (told by the middleware) -----------------------------------------------
    def request_started(self) -> None:
        self.busy += 1
        self._disarm()

    def request_finished(self) -> None:
        self.busy -= 1

    # -- the head timeout ----------------------------------------------------------------
    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.owner.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _head_timed_out(self) -> None:
        self.timer = None
        if self.busy or self.transport is None or self.transport.is_closing():
            return
        self.owner.metrics.request_timeouts += 1
        self._refuse(RequestTimeout(f"the request head did not arrive within "
                                    f"{self.owner.header_timeout:g} s"))

    def _refuse(self, error: RaftdirError) -> None:
        """Answer ``error`` and close: after the answer, stop writing, drop what still
        arrives, and close when the client does (at most ``_LINGER`` seconds later)."""
        transport = self.transport
        assert transport is not None
        self.inner = None             # aiohttp hears of the connection again when it closes
        transport.write(_canned(error))
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:           # the client reset it meanwhile (ENOTCONN): it is gone
                transport.abort()
                return
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(_LINGER, self.abort)
        else:
            transport.close()

    def abort(self) -> None:
        self._disarm()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class _Site(web.BaseSite):
    """``web.TCPSite`` with the ``_Connections`` front in the protocol factory."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, *,
                 connections: Callable[[Callable[[], asyncio.Protocol]], _Connections],
                 ssl_context: ssl.SSLContext | None, backlog: int,
                 handshake_timeout: float) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host, self._port = host, port
        self._make_connections = connections
        self._handshake_timeout = handshake_timeout
        self.connections: _Connections | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        assert self._runner.server is not None
        self.connections = self._make_connections(self._runner.server)
        extra = {"ssl_handshake_timeout": self._handshake_timeout} if self._ssl_context \
            else {}
        self._server = await loop.create_server(
            self.connections, self._host, self._port, ssl=self._ssl_context,
            backlog=self._backlog, reuse_address=True, **extra)

    async def stop(self) -> None:
        await super().stop()
        if self.connections is not None:
            self.connections.close()


#: The connection cap never takes more than this share of the process's file descriptors
#: (the rest: Raft sockets, the journal, forwarding, logs).
_FD_SHARE = 0.8


def connection_cap(max_connections: int) -> int:
    """``max_connections``, lowered to 80% of the process's open-file limit when that is
    smaller (past it, ``accept`` would fail instead of answering 503), with a warning."""
    try:
        import resource
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return max_connections
    if soft == resource.RLIM_INFINITY or int(soft * _FD_SHARE) >= max_connections:
        return max_connections
    cap = max(1, int(soft * _FD_SHARE))
    log.warning("API connections capped at %d (80%% of the open-file limit, %d) instead of "
                "%d: raise the limit (LimitNOFILE=, ulimit -n) where this server holds "
                "more parked polls", cap, soft, max_connections)
    return cap


@dataclass
class ApiServer:
    """A running API: ``url`` is ``http(s)://host:port`` with the bound port."""

    app: web.Application
    runner: web.AppRunner
    host: str
    port: int
    scheme: str
    max_connections: int = 0
    open_reads: bool = False     # reads answered without a token (loopback, not closed)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def parked_polls(self) -> int:
        return parked_polls(self.app)

    @property
    def connections(self) -> int:
        """Client connections open now."""
        return self.app[_METRICS].connections

    async def close(self) -> None:
        await self.runner.cleanup()

    async def __aenter__(self) -> "ApiServer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_api(cp: ControlPlane, host: str, port: int, *,
                    ssl_context: ssl.SSLContext | None = None, max_body: int = 1 << 20,
                    forward: bool = True, forward_ssl: Any = None,
                    forward_timeout: float = 30.0, clock: Any = None,
                    backlog: int = 4096, header_timeout: float = 10.0,
                    body_timeout: float = 30.0, keepalive_timeout: float = 30.0,
                    max_connections: int = 10_000,
                    shutdown_timeout: float = 1.0,
                    require_read_token: bool = False) -> ApiServer:
    """Serve the API on ``host:port`` (port 0: the OS chooses; see ``ApiServer.port``).

    Connections: a request head (request line and headers) must arrive within
    ``header_timeout`` seconds of the connection, or of the first byte of the next request
    on a kept-alive one, and its body within ``body_timeout`` seconds (else ``408
    request_timeout``; a TLS handshake gets ``header_timeout`` too); a connection idle
    between requests is closed after ``keepalive_timeout`` seconds; a request being
    answered (a parked poll) is never cut by these. At most ``max_connections`` are open at
    once (lowered to 80% of the open-file limit); one more is answered ``503 overloaded``
    and closed. ``backlog`` is the listen queue. A client that disconnects cancels its
    handler; ``close()`` waits at most ``shutdown_timeout`` seconds for running handlers
    (parked polls are then cancelled).

    Reads (listings, service state, ``/metrics``) answer without a token only when
    ``host`` is a loopback address (127.0.0.0/8, ``::1``, ``localhost``) and
    ``require_read_token`` is off; bound to anything else, they need a token of scope
    ``read`` or higher.
    """
    open_reads = not require_read_token and is_loopback_host(host)
    app = make_app(cp, max_body=max_body, forward=forward, clock=clock,
                   forward_ssl=forward_ssl, forward_timeout=forward_timeout,
                   body_timeout=body_timeout, open_reads=open_reads)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           handler_cancellation=True, keepalive_timeout=keepalive_timeout,
                           lingering_time=_LINGER, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    cap = connection_cap(max_connections)

    def connections(factory: Callable[[], asyncio.Protocol]) -> _Connections:
        return _Connections(factory, app[_METRICS], max_connections=cap,
                            header_timeout=header_timeout)

    try:
        site = _Site(runner, host, port, connections=connections, ssl_context=ssl_context,
                     backlog=backlog, handshake_timeout=header_timeout)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = port
    server = site._server
    if server is not None and server.sockets:
        bound = server.sockets[0].getsockname()[1]
    return ApiServer(app=app, runner=runner, host=host, port=bound,
                     scheme="https" if ssl_context is not None else "http",
                     max_connections=cap, open_reads=open_reads)


def ssl_context_from_files(cert: str, key: str, ca: str | None = None) -> ssl.SSLContext:
    """A server-side TLS context from PEM files: the certificate chain and its key. With
    ``ca``, clients must present a certificate signed by that CA (mutual TLS)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if ca is not None:
        ctx.load_verify_locations(cafile=ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
