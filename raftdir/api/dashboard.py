"""The dashboard: ``/ui`` on every server, a live picture of the directory in a browser.

Owns: the dashboard's routes (the static page shipped in ``raftdir/api/ui/``, ``GET
/ui/session``, ``GET /ui/events`` and their CORS preflights), the one check of who may read
it (``may_read_dashboard``: any token of scope ``read`` or higher), the ``Feed``
that builds its frames, and ``timeline_events``, the pure diff of two frames that makes the
timeline (leader changes, expiries, scales, placement changes).

Where a frame's data comes from: this server's ``ControlPlane`` and the existing API
routes of the other servers, as ``raftdir peers`` and ``raftdir workers`` get them. The
peers table is ``peerview.peer_rows`` over every server of ``ControlPlane.servers()``; the
workers and services come from the leader (only it knows TTLs left and status reports):
this server's own ``workers()`` / ``service_state()`` when it leads, else the leader's
``/api/v1/cluster/workers`` and ``/api/v1/internal/services/{s}/state``; with no leader
reachable, this server's applied state (TTLs unknown).

One ``Feed`` per application collects a frame every ``interval`` seconds while anyone
watches (it stops ``idle_stop`` seconds after the last viewer left and keeps its timeline),
so the load on the cluster does not grow with the number of open pages. Frames are pushed
as server-sent events. ``EventSource`` cannot send a header, so the page reads the stream
with ``fetch`` and sends the token in ``Authorization``, never in the URL. The events route
allows any origin (CORS): it takes a bearer token and no cookie, so another site's page can
read nothing without the token; that is what lets a page loaded from one server follow the
cluster to another when its server dies.

Runs on the API's event loop. Imports the API client, ``peerview`` and the errors; must not
import the core, replication, leader or ``raftdir.server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web

from ..auth import bearer_token
from ..codec import to_dict
from ..errors import RaftdirError, Unauthorized, UnknownService
from .contract import ControlPlane
from .peerview import hostport, peer_rows

__all__ = ["add_dashboard", "may_read_dashboard", "still_valid", "Feed", "FeedSettings", "timeline_events",
           "ASSETS", "asset_bytes", "UI_PATH", "EVENTS_PATH", "SESSION_PATH"]

log = logging.getLogger("raftdir.api.dashboard")

UI_PATH = "/ui"
EVENTS_PATH = "/ui/events"
SESSION_PATH = "/ui/session"
#: The files of the page (package data of ``raftdir.api``, directory ``ui``) and their types.
ASSETS = {
    "index.html": "text/html",
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Authorization, Accept",
    "Access-Control-Allow-Methods": "GET, OPTIONS",
    "Access-Control-Max-Age": "600",
}
#: How many timeline events a frame carries (the feed keeps ``FeedSettings.history``).
TIMELINE_SENT = 60


def asset_bytes(name: str) -> bytes:
    """One file of the page, as installed with the package."""
    return resources.files(__package__).joinpath("ui", name).read_bytes()


# ---------------------------------------------------------------------------- who may read

async def may_read_dashboard(cp: ControlPlane, token: str | None) -> str:
    """Raise ``Unauthorized`` unless ``token`` may read the dashboard; return its scope
    (``read``, ``operate`` or ``admin``).

    The one place that decides it: any token of scope ``read`` or higher
    (``ControlPlane.authorize``: the admin token, or an access token of the directory, not
    revoked, not expired; a follower confirms it has applied every revocation first). A
    control plane without access tokens (a static peer) takes the admin token only. The
    dashboard always needs a token, on a loopback address too."""
    authorize = getattr(cp, "authorize", None)
    if authorize is None:
        await _maybe_await(cp.check_admin(token))
        return "admin"
    grant = await _maybe_await(authorize(token, "read"))
    return grant.scope


def still_valid(cp: ControlPlane, token: str | None) -> bool:
    """Whether a stream opened with ``token`` may go on: the token is not revoked or
    expired in this server's applied state (checked before every frame, without a
    barrier: the stream stops within a frame of this server applying a revocation)."""
    check = getattr(cp, "check_token", None)
    if check is None:
        return True
    try:
        check(token)
    except Unauthorized:
        return False
    return True


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


# ---------------------------------------------------------------------------- the timeline

def _leader_text(lead: dict[str, Any]) -> str:
    return f"peer {lead['node_id']} leads (term {lead['term']})"


def _ids(ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:8])
    return shown + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")


def timeline_events(prev: dict[str, Any] | None, cur: dict[str, Any], at_ms: int
                    ) -> list[dict[str, Any]]:
    """What changed from frame ``prev`` to frame ``cur``, as timeline events ``{at_ms,
    kind, text, service?}``; ``kind`` is ``leader``, ``down``, ``up``, ``registered``,
    ``removed``, ``scale`` or ``placement``. The first frame (``prev`` None) tells only who
    leads. Pure."""
    out: list[dict[str, Any]] = []

    def add(kind: str, text: str, **extra: Any) -> None:
        out.append({"at_ms": at_ms, "kind": kind, "text": text, **extra})

    lead = cur.get("leader")
    if prev is None:
        if lead:
            add("leader", _leader_text(lead))
        return out
    was = prev.get("leader")
    if lead and (not was or (was["node_id"], was["term"]) != (lead["node_id"], lead["term"])):
        after = f", after peer {was['node_id']}" if was and was["node_id"] != lead["node_id"] \
            else ""
        add("leader", _leader_text(lead) + after)
    elif was and not lead:
        add("leader", f"no leader answers (peer {was['node_id']} led term {was['term']})")

    before = {w["node_id"]: w for w in prev.get("workers", [])}
    now = {w["node_id"]: w for w in cur.get("workers", [])}
    went_down = sorted(n for n, w in now.items() if w["state"] == "down"
                       and n in before and before[n]["state"] != "down")
    came_up = sorted(n for n, w in now.items() if w["state"] != "down"
                     and n in before and before[n]["state"] == "down")
    whole = not prev.get("workers_truncated") and not cur.get("workers_truncated")
    new = sorted(set(now) - set(before)) if whole else []
    gone = sorted(set(before) - set(now)) if whole else []
    for kind, ids, one, many in (
            ("down", went_down, "down (lease expired)", "down (leases expired)"),
            ("up", came_up, "ready again", "ready again"),
            ("registered", new, "registered", "registered"),
            ("removed", gone, "removed", "removed")):
        if ids:
            add(kind, f"worker {ids[0]} {one}" if len(ids) == 1
                else f"{len(ids)} workers {many}: {_ids(ids)}")

    old_services = {s["service"]: s for s in prev.get("services", [])}
    for svc in cur.get("services", []):
        name = svc["service"]
        old = old_services.pop(name, None)
        before_total = old["replicas"] if old else 0
        if svc["replicas"] != before_total:
            add("scale", f"scale {name}: {before_total} \u2192 {svc['replicas']} replicas",
                service=name)
        shares = {a["node_id"]: a["replicas"] for a in (old or {}).get("assigned", [])}
        for a in svc.get("assigned", []):
            was_n = shares.pop(a["node_id"], 0)
            if a["replicas"] != was_n:
                add("placement", f"{name} on {a['node_id']}: {was_n} \u2192 {a['replicas']}",
                    service=name)
        for node_id, was_n in sorted(shares.items()):
            if was_n:
                add("placement", f"{name} on {node_id}: {was_n} \u2192 0", service=name)
    for name, old in sorted(old_services.items()):
        add("scale", f"{name} removed (had {old['replicas']} replicas)", service=name)
    return out


# ---------------------------------------------------------------------------- the feed

@dataclass(frozen=True)
class FeedSettings:
    """``interval``: seconds between frames. ``peer_timeout``: seconds to wait for another
    server's answer. ``max_workers``: workers listed in a frame (down ones first; the
    counts cover all). ``history``: timeline events kept. ``idle_stop``: seconds without a
    viewer before collecting stops. ``max_stream_secs``: a stream ends after this long (the
    page reconnects at once, and its token is checked again)."""

    interval: float = 0.5
    peer_timeout: float = 1.0
    max_workers: int = 500
    history: int = 200
    idle_stop: float = 5.0
    max_stream_secs: float = 300.0


def _worker_row(node: dict[str, Any]) -> dict[str, Any]:
    profile = node.get("profile") or {}
    return {"node_id": node["node_id"], "state": node.get("state"),
            "draining": bool(node.get("draining")), "ttl_secs": node.get("ttl_secs"),
            "grace_secs": node.get("grace_secs"), "ttl_left_secs": node.get("ttl_left_secs"),
            "last_report_secs_ago": node.get("last_report_secs_ago"),
            "os": profile.get("os"), "arch": profile.get("arch"),
            "labels": profile.get("labels") or {}, "services": node.get("services") or []}


def _service_row(view: dict[str, Any]) -> dict[str, Any]:
    nodes = [to_dict(n) if not isinstance(n, dict) else n for n in view.get("nodes", [])]
    assigned = [{"node_id": a["node_id"], "replicas": a["replicas"]}
                for a in view.get("assigned", [])]
    return {"service": view["service"], "replicas": sum(a["replicas"] for a in assigned),
            "assigned": assigned, "running": view.get("running", 0),
            "healthy": view.get("healthy", 0), "unknown": list(view.get("unknown", [])),
            "running_by_node": {str(n["node_id"]): n.get("running", 0) for n in nodes}}


def _complete_peers(rows: list[dict[str, Any]], nodes: list[dict[str, Any]],
                    raft_addrs: dict[str, str]) -> list[dict[str, Any]]:
    """``peer_rows`` for a picture: a server that does not answer gets its node id (from
    the directory's server nodes) and its Raft address (as it last answered, or, when it
    is the only one missing, the one Raft member no answer covers), and is one row, not
    two."""
    ids = {hostport(n["profile"]["api_addr"]): n["node_id"] for n in nodes
           if n.get("kind") == "server" and (n.get("profile") or {}).get("api_addr")}
    for r in rows:
        if r["asked"] and r["error"] is None and r["raft_addr"]:
            raft_addrs[r["api_addr"]] = r["raft_addr"]
    silent = [r for r in rows if r["asked"] and r["raft_addr"] is None]
    unasked = [r for r in rows if not r["asked"]]
    for r in silent:
        r["raft_addr"] = raft_addrs.get(r["api_addr"])
    if len(silent) == 1 and len(unasked) == 1 and silent[0]["raft_addr"] is None:
        silent[0]["raft_addr"] = unasked[0]["raft_addr"]
    covered = {r["raft_addr"] for r in rows if r["asked"] and r["raft_addr"]}
    rows = [r for r in rows if r["asked"] or r["raft_addr"] not in covered]
    for r in rows:
        if r["id"] is None and r["api_addr"] in ids:
            r["id"] = ids[r["api_addr"]]
    rows.sort(key=lambda r: (r["id"] is None, r["id"] or 0, r["api_addr"] or "",
                             r["raft_addr"] or ""))
    return rows


class Feed:
    """Frames of one server's dashboard, shared by every viewer of that server."""

    def __init__(self, cp: ControlPlane, *, ssl: Any = None,
                 settings: FeedSettings | None = None) -> None:
        self.cp = cp
        self.ssl = ssl
        self.settings = settings or FeedSettings()
        self.frame: dict[str, Any] | None = None
        self.history: deque[dict[str, Any]] = deque(maxlen=self.settings.history)
        self.viewers = 0
        self.frames_made = 0
        self._new = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._services: set[str] = set()
        self._raft_addrs: dict[str, str] = {}   # API address -> Raft address, as answered

    # -- viewers ------------------------------------------------------------------------
    async def frames(self) -> Any:
        """Every new frame from now on (an async iterator); the first at once if there is a
        current one. Use it under ``contextlib.aclosing``, so that a viewer who stops
        counts as gone at once (the feed stops when none is left)."""
        self.viewers += 1
        self._ensure_running()
        try:
            seen = -1
            while not self._closed:
                if self.frames_made == seen or self.frame is None:
                    await self._new.wait()
                    continue
                seen = self.frames_made
                yield self.frame
        finally:
            self.viewers -= 1

    def _ensure_running(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        self._closed = True
        self._publish()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _publish(self) -> None:
        new, self._new = self._new, asyncio.Event()
        new.set()

    # -- collecting ---------------------------------------------------------------------
    async def _run(self) -> None:
        from .client import RaftdirClient
        loop = asyncio.get_running_loop()
        client: RaftdirClient | None = None
        seen: dict[str, float] = {}
        prev: dict[str, Any] | None = None
        idle_since: float | None = None
        try:
            while not self._closed:
                started = loop.time()
                servers = _servers(self.cp)
                if servers and client is None:
                    client = RaftdirClient(servers, timeout=self.settings.peer_timeout,
                                           retries=0, ssl=self.ssl)
                if client is not None:   # this server's own credential, as it is now
                    client.admin_token = _own_token(self.cp)
                try:
                    frame = await self.collect(client, seen)
                except Exception:  # noqa: BLE001 - the next frame may do better
                    log.exception("dashboard: building a frame failed")
                    frame = None
                if frame is not None:
                    now_ms = int(time.time() * 1000)
                    self.history.extend(timeline_events(prev, frame, now_ms))
                    frame["timeline"] = list(self.history)[-TIMELINE_SENT:]
                    prev = frame
                    self.frame = frame
                    self.frames_made += 1
                    self._publish()
                if self.viewers == 0:
                    idle_since = started if idle_since is None else idle_since
                    if started - idle_since >= self.settings.idle_stop:
                        break
                else:
                    idle_since = None
                await asyncio.sleep(max(0.0, self.settings.interval
                                        - (loop.time() - started)))
        finally:
            self._task = None if self._task is asyncio.current_task() else self._task
            self.frame = None   # a stale frame is never served to the next viewer
            if client is not None:
                await client.close()

    async def collect(self, client: Any, seen: dict[str, float]) -> dict[str, Any]:
        """One frame: peers, leader, workers, services (no timeline yet)."""
        cp = self.cp
        problems: list[str] = []
        servers: list[str] = []
        rows: list[dict[str, Any]] = []
        if client is not None:
            from .client import normalize_endpoint
            servers = [normalize_endpoint(s) for s in cp.servers()]
            client.servers[:] = servers
            rows = await peer_rows(client, seen)
            for row in rows:
                row.pop("status", None)
        lead_row = next((r for r in rows if r["role"] == "leader"), None)
        leader = None if lead_row is None else {
            "node_id": lead_row["id"], "term": lead_row["term"],
            "url": next((s for s in servers if s.endswith("//" + (lead_row["api_addr"] or ""))),
                        lead_row["api_addr"])}
        try:
            local = cp.peer_status()
        except RaftdirError as exc:
            local = {}
            problems.append(f"this server's Raft status: {exc.message}")
        if not rows and local:   # no server list: this server alone
            leader = {"node_id": cp.node_id, "term": local.get("term"),
                      "url": cp.leader_endpoint()} if cp.is_leader() else None
        leader_url = cp.leader_endpoint()
        leads_here = cp.is_leader()

        nodes, ttl_known = await self._nodes(client, leader_url, leads_here, problems)
        rows = _complete_peers(rows, nodes, self._raft_addrs)
        workers = [_worker_row(n) for n in nodes if n.get("kind", "worker") == "worker"]
        by_state: dict[str, int] = {}
        for w in workers:
            by_state[w["state"]] = by_state.get(w["state"], 0) + 1
        workers.sort(key=lambda w: (w["state"] != "down", w["node_id"]))
        shown = workers[:self.settings.max_workers]
        shown.sort(key=lambda w: w["node_id"])
        services = await self._service_rows(client, leader_url, leads_here, nodes, problems)
        return {"v": 1, "node_id": cp.node_id, "servers": servers,
                "at_ms": int(time.time() * 1000), "leader": leader,
                "revision": local.get("revision"), "peers": rows, "workers": shown,
                "workers_total": len(workers), "workers_by_state": by_state,
                "workers_truncated": len(shown) < len(workers), "ttl_known": ttl_known,
                "services": services, "problems": problems}

    async def _nodes(self, client: Any, leader_url: str | None, leads_here: bool,
                     problems: list[str]) -> tuple[list[dict[str, Any]], bool]:
        """Every node, from the leader when this server can reach it (TTLs left)."""
        if not leads_here and leader_url and client is not None:
            try:
                return await client.workers(server=leader_url), True
            except (RaftdirError, OSError, asyncio.TimeoutError) as exc:
                problems.append(f"the leader's workers ({leader_url}): "
                                f"{getattr(exc, 'message', None) or type(exc).__name__}")
        return list(self.cp.workers()), leads_here

    async def _service_rows(self, client: Any, leader_url: str | None, leads_here: bool,
                            nodes: list[dict[str, Any]], problems: list[str]
                            ) -> list[dict[str, Any]]:
        names = {s for n in nodes for s in (n.get("services") or [])} | self._services
        if not leads_here and (not leader_url or client is None):
            return self._stale_services(names)
        rows = []
        for name in sorted(names):
            try:
                if leads_here:
                    view = await _maybe_await(self.cp.service_state(name))
                else:
                    view = await client.service_state(name, server=leader_url)
            except UnknownService:
                self._services.discard(name)
                continue
            except (RaftdirError, OSError, asyncio.TimeoutError) as exc:
                problems.append(f"service {name}: "
                                f"{getattr(exc, 'message', None) or type(exc).__name__}")
                return self._stale_services(names)
            self._services.add(name)
            rows.append(_service_row(view))
        return rows

    def _stale_services(self, names: set[str]) -> list[dict[str, Any]]:
        """The last frame's services (the leader cannot be asked now), marked stale."""
        last = {s["service"]: s for s in (self.frame or {}).get("services", [])}
        return [dict(last[n], stale=True) for n in sorted(names) if n in last]


# ---------------------------------------------------------------------------- routes

_FEED = web.AppKey("raftdir_dashboard_feed", Feed)


def _page_headers(cp: ControlPlane) -> dict[str, str]:
    others = " ".join(sorted({s.rstrip("/") for s in _servers(cp)}))
    return {
        "Content-Security-Policy":
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            f"connect-src 'self' {others}".rstrip() + "; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-cache",
    }


def _own_token(cp: ControlPlane) -> str | None:
    """The token this server asks the other servers with (their reads may need one)."""
    own = getattr(cp, "own_token", None)
    return own() if own is not None else None


def _servers(cp: ControlPlane) -> list[str]:
    try:
        return list(cp.servers())
    except Exception:  # noqa: BLE001 - the page is served without the list
        return []


def _asset_handler(cp: ControlPlane, name: str) -> Any:
    body = asset_bytes(name)
    ctype = ASSETS[name]

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=ctype,
                            charset=None if ctype.startswith("image/") else "utf-8",
                            headers=_page_headers(cp))
    handle.__name__ = f"dashboard_{name.replace('.', '_')}"
    return handle


async def _preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=_CORS)


def _error(request: web.Request, err: RaftdirError) -> web.Response:
    from .server import _error_response   # the API's error body and content negotiation
    resp = _error_response(request, err)
    resp.headers.update(_CORS)
    return resp


def add_dashboard(app: web.Application, cp: ControlPlane, *, ssl: Any = None,
                  settings: FeedSettings | None = None) -> None:
    """Add ``/ui`` and its routes to the API application ``app`` over ``cp``. ``ssl``: as
    the API's ``forward_ssl``, for asking the other servers."""
    feed = Feed(cp, ssl=ssl, settings=settings)
    app[_FEED] = feed

    async def session(request: web.Request) -> web.Response:
        from .server import _respond
        try:
            scope = await may_read_dashboard(cp, bearer_token(request.headers.get(
                "Authorization")))
        except RaftdirError as err:
            return _error(request, err)
        resp = _respond(request, {"ok": True, "scope": scope, "node_id": cp.node_id})
        resp.headers.update(_CORS)
        return resp

    async def events(request: web.Request) -> web.StreamResponse:
        try:
            token = bearer_token(request.headers.get("Authorization"))
            await may_read_dashboard(cp, token)
        except RaftdirError as err:
            return _error(request, err)
        resp = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no", **_CORS})
        await resp.prepare(request)
        await resp.write(b"retry: 1000\n\n")
        loop = asyncio.get_running_loop()
        ends = loop.time() + feed.settings.max_stream_secs
        async with contextlib.aclosing(feed.frames()) as frames:
            async for frame in frames:
                if not still_valid(cp, token):
                    break     # revoked or expired: the page reconnects and is refused
                data = json.dumps(frame, separators=(",", ":"), allow_nan=False)
                await resp.write(b"event: frame\ndata: " + data.encode("utf-8") + b"\n\n")
                if loop.time() >= ends:
                    break
        return resp

    for name in ASSETS:
        handler = _asset_handler(cp, name)
        app.router.add_get(f"{UI_PATH}/{name}", handler)
        if name == "index.html":
            app.router.add_get(UI_PATH, handler, name="dashboard")
            app.router.add_get(UI_PATH + "/", handler)
    app.router.add_get(SESSION_PATH, session, name="dashboard_session")
    app.router.add_route("OPTIONS", SESSION_PATH, _preflight)
    app.router.add_get(EVENTS_PATH, events, name="dashboard_events")
    app.router.add_route("OPTIONS", EVENTS_PATH, _preflight)
    app.on_shutdown.append(lambda _app: feed.close())
