"""ZLayer's node-local forms of two routes, served beside raftdir's own on the same paths.

Owns: telling a ZLayer-shaped request from a raftdir one, and what such a request gets.
ZLayer's daemons call each other's ``POST /api/v1/internal/scale`` (an order for the node
that receives it, answered with an ``InternalScaleResponse``) and
``GET /api/v1/internal/services/{service}/state`` (that node's own ``NodeServiceState``),
both with the cluster-wide ``X-ZLayer-Internal-Token`` header (BlackLeafDigital/ZLayer:
``crates/zlayer-api/src/handlers/internal.rs``, ``crates/zlayer-scheduler/src/cluster.rs``).
raftdir's own forms of the same paths are the leader's placement over the cluster and the
cluster total, with ``Authorization: Bearer <admin token>`` (docs/api.md, "Compared with
ZLayer").

A request carrying ``X-ZLayer-Internal-Token`` and no ``Authorization`` is ZLayer's form.
The token is checked as the admin token (the one cluster-wide secret raftdir has). Only a
control plane that is one node of its own (a ``static`` peer: ``scale_local`` and
``local_service_state``) takes them; a directory server answers ``409 conflict``, since
its nodes get their orders from the leader through their polls.

Runs on the API's event loop. Imports the API server module only inside ``zlayer_forms``
(which the server calls when it builds its app).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from aiohttp import web

from ..codec import to_dict
from ..errors import BadRequest, Conflict, Unauthorized
from ..model import InternalScaleRequest

__all__ = ["ZLAYER_TOKEN_HEADER", "MAX_ZLAYER_REPLICAS", "is_zlayer_form", "zlayer_forms",
           "with_zlayer_form"]

ZLAYER_TOKEN_HEADER = "X-ZLayer-Internal-Token"
#: ZLayer's receiver refuses a scale order above this many replicas (400).
MAX_ZLAYER_REPLICAS = 100

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_zlayer_form(request: web.Request) -> bool:
    """ZLayer's daemons send ``X-ZLayer-Internal-Token`` and never ``Authorization``."""
    return ZLAYER_TOKEN_HEADER in request.headers and "Authorization" not in request.headers


def with_zlayer_form(ours: Handler, zlayer: Handler) -> Handler:
    """One handler for a path both forms share: ZLayer's requests go to ``zlayer``."""
    async def handle(request: web.Request) -> web.StreamResponse:
        return await (zlayer if is_zlayer_form(request) else ours)(request)
    handle.__name__ = getattr(ours, "__name__", "handle")
    return handle


def _local(cp: Any, name: str) -> Any:
    fn = getattr(cp, name, None)
    if fn is None:
        raise Conflict(f"{ZLAYER_TOKEN_HEADER}: this server keeps a directory: its leader "
                       "places replicas and each node's own view lives with the leader; it "
                       "takes no node-local order or read (ZLayer's form). Send the admin "
                       "token as Authorization: Bearer for raftdir's form",
                       field=ZLAYER_TOKEN_HEADER)
    return fn


async def _scale_local(cp: Any, call: Any) -> InternalScaleRequest:
    req: InternalScaleRequest = call.body
    if req.replicas > MAX_ZLAYER_REPLICAS:      # as ZLayer's receiver answers it
        raise BadRequest(f"replicas: {req.replicas} is above {MAX_ZLAYER_REPLICAS}, the most "
                         "a node-local scale order may ask", field="replicas")
    await _local(cp, "scale_local")(req)
    return req


def _encode_scale_response(req: InternalScaleRequest, call: Any) -> dict[str, Any]:
    """ZLayer's ``InternalScaleResponse``: ``replicas`` is what this node now runs."""
    return {"success": True, "service": req.service, "replicas": req.replicas}


def zlayer_forms() -> dict[str, Any]:
    """The ZLayer form of each raftdir route (by name) that shares its path."""
    from .server import Route  # noqa: PLC0415 - the server imports this module

    auth_errors = (Unauthorized, Conflict)
    return {
        "scale": Route(
            "zlayer_scale", "POST", "/api/v1/internal/scale", _scale_local,
            body=InternalScaleRequest, auth="admin", encode=_encode_scale_response,
            errors=auth_errors + (BadRequest,),
            summary="ZLayer's node-local scale order (static peers)."),
        "service_state": Route(
            "zlayer_service_state", "GET", "/api/v1/internal/services/{service}/state",
            lambda cp, c: to_dict(_local(cp, "local_service_state")(c.params["service"])),
            auth="admin", errors=auth_errors,
            summary="This node's NodeServiceState, as ZLayer's nodes answer it."),
    }
