"""The async HTTP client of raftdir, used by the worker agent and the CLI.

Owns: the server list and which server is preferred, leader following (421 hints), retries
with exponential backoff and jitter under one ``X-Request-Id`` per logical call (so a
retried write is applied once), failover across servers, and turning error bodies back
into ``raftdir.errors`` classes. Speaks msgpack. Runs on the caller's event loop; the
constructor does no I/O (the HTTP session is made on the first request). Imports the wire
types, the codec and the errors; must not import the server side.

Retry rules, per call:

- ``421 not_leader`` with a leader: the leader becomes the preferred server and the call
  goes there at once (at most a few hops per call);
- a connection error or client-side timeout: the next server in the list, at once; after
  every server has failed once, a backoff round;
- ``503 replica_behind`` (a lagging replica) with a server named: that server, at once,
  without making it the preferred one;
- ``503 overloaded`` (a server at its connection cap, or keeping its last connections
  for reports and writes, so refusing a poll): a backoff round, then the next server;
- ``503`` (no leader yet), ``504`` (outcome unknown), ``502``, or ``421`` without a leader:
  a backoff round, then the same call again;
- anything else is raised as its error class.

Polls are spread over every server in the list (replicas included) and leave the
preferred server (the leader, where reports go) alone: each worker's polls go to its home
server, the one ``poll_home`` picks for its node id (rendezvous hashing: when a server
joins or leaves the list, only the workers homed on it move). When another server had to
answer instead, polls stay there for ``POLL_DETOUR_SECS`` before trying home again.

After ``retries`` backoff rounds the last error is raised: ``Unreachable`` (a
``NoLeader``) when no server answered, ``TimeoutOutcomeUnknown`` when a write timed out,
otherwise the server's error.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
import time
import uuid
from typing import Any, Callable

import aiohttp

from ..codec import ENDPOINT, dumps_msgpack, from_dict, loads_json, loads_msgpack, to_dict
from ..errors import (
    NoLeader, Overloaded, RaftdirError, ReplicaBehind, TimeoutOutcomeUnknown, error_from_body,
)
from ..model import (
    ClusterContainerSummary, InternalScaleRequest, NodeServiceState, WorkerLease,
    WorkerPollRequest, WorkerPollResponse, WorkerRegisterRequest, WorkerRegisterResponse,
    WorkerStatusAck, WorkerStatusReport,
)

__all__ = ["RaftdirClient", "Unreachable", "normalize_endpoint", "poll_home",
           "POLL_DETOUR_SECS"]

MSGPACK = "application/msgpack"
_RETRY_STATUSES = frozenset({502, 503, 504})
#: Seconds a worker keeps polling the server that answered when its home server did not.
POLL_DETOUR_SECS = 30.0


def poll_home(node_id: int, servers: list[str] | tuple[str, ...]) -> str:
    """The server that node ``node_id`` sends its polls to: the highest
    ``blake2b(node_id, server)`` (rendezvous hashing), so polls spread evenly over the
    servers and a change of the list moves only the workers homed where it changed."""
    if not servers:
        raise ValueError("poll_home: no server")
    return max(servers, key=lambda s: hashlib.blake2b(f"{node_id}|{s}".encode(),
                                                      digest_size=8).digest())


class Unreachable(NoLeader):
    """No server of the list answered (client side only; never on the wire). ``errors``
    holds each server's last failure."""

    def __init__(self, message: str, errors: dict[str, BaseException] | None = None) -> None:
        super().__init__(message)
        self.errors = dict(errors or {})


def normalize_endpoint(server: str, *, default_scheme: str = "http") -> str:
    """``host:port``, ``http://host:port`` or ``https://host:port`` as a base URL."""
    text = ENDPOINT.decode(server.strip(), "server")
    return text if "://" in text else f"{default_scheme}://{text}"


class RaftdirClient:
    """Talks to a raftdir control plane. ``servers``: endpoints tried in order (the first
    is preferred until a leader is learned). ``node_secret``: sent as ``Authorization:
    Bearer`` on polls and reports (taken from a successful ``register``). ``admin_token``:
    the operator's token (the admin token, or an access token from ``raftdir token create
    --scope``), sent on every call but a worker's own (reads too: a server off loopback
    answers them only with a token of scope ``read`` or higher). ``timeout``: seconds per attempt (a poll adds its own wait).
    ``retries``: backoff rounds per call; ``backoff``: (first delay, cap) in seconds.
    ``ssl``: aiohttp's ``ssl`` argument (an ``SSLContext`` for a private CA). ``rng`` and
    ``clock`` (anything with ``async sleep``) are injectable for tests."""

    def __init__(self, servers: list[str], *, node_secret: str | None = None,
                 admin_token: str | None = None, timeout: float = 10.0, retries: int = 6,
                 backoff: tuple[float, float] = (0.05, 2.0), ssl: Any = None,
                 rng: random.Random | None = None, clock: Any = None,
                 max_connections: int = 100) -> None:
        scheme = "https" if ssl not in (None, False) else "http"
        self.servers: list[str] = []
        for s in servers:
            url = normalize_endpoint(s, default_scheme=scheme)
            if url not in self.servers:
                self.servers.append(url)
        if not self.servers:
            raise ValueError("RaftdirClient needs at least one server")
        self._scheme = scheme
        self.preferred = self.servers[0]
        self.leader: str | None = None
        #: the server that answered the last call that succeeded (read it right after the
        #: await: a concurrent call may answer next)
        self.answered: str | None = None
        self.node_secret = node_secret
        self.admin_token = admin_token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.ssl = ssl
        self.rng = rng or random.Random()
        self.clock = clock
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._poll_detour: tuple[str, float] | None = None   # (server, until monotonic)

    # -- lifecycle ----------------------------------------------------------------------
    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "RaftdirClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, ssl=self.ssl))
        return self._session

    async def _sleep(self, seconds: float) -> None:
        if self.clock is not None:
            await self.clock.sleep(seconds)
        else:
            await asyncio.sleep(seconds)

    def backoff_delay(self, round_no: int) -> float:
        """Exponential backoff with jitter: half of ``min(cap, first * 2**round)`` plus a
        random part up to the other half."""
        first, cap = self.backoff
        ceiling = min(cap, first * (2 ** round_no))
        return ceiling / 2 + self.rng.random() * ceiling / 2

    # -- server list ----------------------------------------------------------------------
    def _adopt(self, servers: tuple | list | None = None, leader: str | None = None) -> None:
        if servers:
            fresh = []
            for s in servers:
                url = normalize_endpoint(s, default_scheme=self._scheme)
                if url not in fresh:
                    fresh.append(url)
            self.servers = fresh
            if self.preferred not in fresh:
                self.preferred = fresh[0]
        if leader:
            url = normalize_endpoint(leader, default_scheme=self._scheme)
            if url not in self.servers:
                self.servers.insert(0, url)
            self.leader = self.preferred = url

    def _next_server(self, current: str) -> str:
        try:
            i = self.servers.index(current)
        except ValueError:
            return self.servers[0]
        return self.servers[(i + 1) % len(self.servers)]

    # -- one call, with retries ------------------------------------------------------------
    async def _call(self, method: str, path: str, body: Any = None, *, auth: str | None = None,
                    server: str | None = None, timeout: float | None = None,
                    write: bool = False, text: bool = False, raw: bool = False,
                    query: dict[str, str] | None = None,
                    request_id: str | None = None, start: str | None = None,
                    answered: list[str] | None = None) -> Any:
        """Send one logical request; ``server`` pins it to one server (one attempt, no
        failover, no leader following). ``start``: the server to try first instead of the
        preferred one, which then stays as it is. ``answered``: the server that answered
        is appended to it."""
        payload = dumps_msgpack(body) if body is not None else None
        headers = {"Accept": MSGPACK}
        if payload is not None:
            headers["Content-Type"] = MSGPACK
        if write:
            headers["X-Request-Id"] = request_id or uuid.uuid4().hex
        token = self.node_secret if auth == "node" else self.admin_token \
            if auth in ("admin", "read") else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        pinned = server is not None
        target = normalize_endpoint(server, default_scheme=self._scheme) if pinned \
            else start or self.preferred
        per_attempt = self.timeout if timeout is None else timeout
        failures: dict[str, BaseException] = {}
        unreachable_in_round: set[str] = set()
        rounds = hops = 0
        last: BaseException | None = None
        while True:
            try:
                status, ctype, data = await self._send(method, target + path, payload,
                                                       headers, per_attempt, query)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                failures[target] = exc
                # A write that may have reached a server (anything but a failed connect)
                # may have committed: the caller must learn that, not "unreachable".
                if write and not isinstance(exc, (aiohttp.ClientConnectorError,
                                                  ConnectionRefusedError)):
                    last = TimeoutOutcomeUnknown(
                        f"{method} {path} at {target}: {_describe(exc)}; the write may still "
                        "commit: retry with the same request id")
                if pinned:
                    raise last or Unreachable(f"{target}: {_describe(exc)}", failures) from exc
                unreachable_in_round.add(target)
                if len(unreachable_in_round) < len(self.servers):
                    target = self._next_server(target)
                    continue
                unreachable_in_round.clear()
                rounds += 1
                if rounds > self.retries:
                    raise last or Unreachable(
                        "no server reachable: " + "; ".join(
                            f"{s}: {_describe(e)}" for s, e in failures.items()),
                        failures) from exc
                await self._sleep(self.backoff_delay(rounds - 1))
                target = self._next_server(target)
                continue
            if 200 <= status < 300:
                self.answered = target
                if target != self.preferred and not pinned and start is None:
                    self.preferred = target  # it answered: keep using it
                if answered is not None:
                    answered.append(target)
                if text:
                    return data.decode("utf-8")
                if raw:
                    return data
                return _decode(ctype, data) if data else None
            err = _error(status, ctype, data)
            if pinned:
                raise err
            if isinstance(err, ReplicaBehind) and err.leader \
                    and hops <= len(self.servers) + 1:
                hint = normalize_endpoint(err.leader, default_scheme=self._scheme)
                if hint != target:   # a lagging replica: ask the server it names
                    if hint not in self.servers:
                        self.servers.append(hint)
                    hops += 1
                    target = hint
                    continue
            if err.status == 421 and err.leader and hops <= len(self.servers) + 1:
                leader = normalize_endpoint(err.leader, default_scheme=self._scheme)
                if leader != target:
                    hops += 1
                    self._adopt(leader=leader)
                    target = leader
                    continue
            if status in _RETRY_STATUSES or err.status in _RETRY_STATUSES \
                    or err.status == 421:
                rounds += 1
                if rounds > self.retries:
                    raise err
                await self._sleep(self.backoff_delay(rounds - 1))
                if err.status == 421 or isinstance(err, Overloaded):
                    target = self._next_server(target)   # no usable hint, or no room
                continue
            raise err

    async def _send(self, method: str, url: str, payload: bytes | None,
                    headers: dict[str, str], timeout: float,
                    query: dict[str, str] | None) -> tuple[int, str, bytes]:
        async with self._http().request(method, url, data=payload, headers=headers,
                                        params=query,
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.read()

    @staticmethod
    def _query(consistent: bool) -> dict[str, str] | None:
        return {"consistent": "1"} if consistent else None

    # -- the worker protocol ----------------------------------------------------------------
    async def register(self, req: WorkerRegisterRequest, *, request_id: str | None = None
                       ) -> WorkerRegisterResponse:
        """Register; adopts the response's server list and node secret. A client that
        already holds a node secret (a worker registering again with its stored identity)
        sends it as ``Authorization: Bearer``. ``request_id``: keep one for every try of the
        same registration (a lost answer then gives the same node, not a second one); it
        is a credential (the node secret derives from it), so make it random and keep it
        private."""
        data = await self._call("POST", "/api/v1/workers/register", to_dict(req), write=True,
                                auth="node" if self.node_secret else None,
                                request_id=request_id)
        resp = from_dict(WorkerRegisterResponse, data)
        self.node_secret = resp.internal_token
        self._adopt(servers=resp.servers)
        return resp

    async def report(self, report: WorkerStatusReport) -> WorkerStatusAck:
        """Send a status report; adopts the ack's server list and leader."""
        data = await self._call("POST", "/api/v1/workers/status", to_dict(report),
                                auth="node", write=True)
        ack = from_dict(WorkerStatusAck, data)
        self._adopt(servers=ack.servers, leader=ack.leader)
        return ack

    def poll_server(self, node_id: int) -> str:
        """Where the next poll of ``node_id`` goes: the server that answered its last poll
        when its home server did not, for ``POLL_DETOUR_SECS``; else its home."""
        detour = self._poll_detour
        if detour is not None and detour[0] in self.servers \
                and time.monotonic() < detour[1]:
            return detour[0]
        return poll_home(node_id, self.servers)

    async def poll(self, req: WorkerPollRequest) -> WorkerPollResponse:
        """Long-poll the worker's poll server (``poll_server``); the per-attempt timeout is
        ``timeout`` plus the poll's own wait. A poll from ahead of the cluster
        (``last_revision`` above its revision: not of its history) is answered ``full`` and
        ``behind`` at the cluster's lower revision: apply it as the complete set
        (``AssignmentSet.apply`` does), not as a stale answer."""
        wait = min(req.max_wait_secs, 60)
        start = self.poll_server(req.node_id)
        answered: list[str] = []
        data = await self._call("POST", "/api/v1/workers/poll", to_dict(req), auth="node",
                                timeout=self.timeout + wait, start=start,
                                answered=answered)
        if answered and answered[0] != poll_home(req.node_id, self.servers):
            if answered[0] != start or self._poll_detour is None:
                self._poll_detour = (answered[0], time.monotonic() + POLL_DETOUR_SECS)
        elif answered:
            self._poll_detour = None
        return from_dict(WorkerPollResponse, data)

    # -- admin --------------------------------------------------------------------------------
    async def scale(self, req: InternalScaleRequest) -> dict[int, InternalScaleRequest]:
        data = await self._call("POST", "/api/v1/internal/scale", to_dict(req), auth="admin",
                                write=True)
        return {int(item["node_id"]): from_dict(InternalScaleRequest, item["request"])
                for item in data["nodes"]}

    async def drain(self, node_id: int) -> dict[str, Any]:
        return await self._call("POST", f"/api/v1/workers/{int(node_id)}/drain",
                                auth="admin", write=True)

    async def undrain(self, node_id: int) -> dict[str, Any]:
        return await self._call("DELETE", f"/api/v1/workers/{int(node_id)}/drain",
                                auth="admin", write=True)

    async def evict(self, node_id: int) -> dict[str, Any]:
        return await self._call("DELETE", f"/api/v1/workers/{int(node_id)}", auth="admin",
                                write=True)

    async def create_token(self, valid_for_secs: int, max_uses: int = 1) -> dict[str, Any]:
        return await self._call("POST", "/api/v1/cluster/tokens",
                                {"valid_for_secs": valid_for_secs, "max_uses": max_uses},
                                auth="admin", write=True)

    async def create_access_token(self, scope: str, valid_for_secs: int, name: str = ""
                                  ) -> dict[str, Any]:
        """A new access token (admin): ``{token, token_id, name, scope, created_ms,
        expires_ms, creator, revoked_ms, state}``; the token is in no other answer."""
        # one fresh seed per token, the same in every retry of this call (the same
        # X-Request-Id): a retry after a lost answer gets the same token back
        return await self._call("POST", "/api/v1/cluster/access-tokens",
                                {"scope": scope, "valid_for_secs": valid_for_secs,
                                 "name": name, "seed": secrets.token_urlsafe(32)},
                                auth="admin", write=True)

    async def access_tokens(self, *, server: str | None = None, consistent: bool = False
                            ) -> list[dict[str, Any]]:
        """Every access token kept (admin), never a token or its hash."""
        return await self._call("GET", "/api/v1/cluster/access-tokens", auth="admin",
                                server=server, query=self._query(consistent))

    async def revoke_access_token(self, token_id: str) -> dict[str, Any]:
        """Revoke an access token (admin): ``{token_id, revoked, revoked_ms}``."""
        return await self._call("DELETE", f"/api/v1/cluster/access-tokens/{_seg(token_id)}",
                                auth="admin", write=True)

    async def add_peer(self, peer_id: int, raft_addr: str, api_addr: str) -> dict[str, Any]:
        """Add one voting Raft peer (admin; the leader makes one change at a time)."""
        return await self._call("POST", "/api/v1/cluster/peers",
                                {"id": peer_id, "raft_addr": raft_addr, "api_addr": api_addr},
                                auth="admin", write=True)

    async def remove_peer(self, peer_id: int, raft_addr: str) -> dict[str, Any]:
        """Remove one Raft peer (admin; stop it first; not the leader itself)."""
        return await self._call("DELETE", "/api/v1/cluster/peers",
                                {"id": peer_id, "raft_addr": raft_addr}, auth="admin",
                                write=True)

    # -- reads ----------------------------------------------------------------------------------
    async def peers(self, *, server: str | None = None, consistent: bool = False
                    ) -> dict[str, Any]:
        return await self._call("GET", "/api/v1/cluster/peers", server=server, auth="read",
                                query=self._query(consistent))

    async def workers(self, *, server: str | None = None, consistent: bool = False
                      ) -> list[dict[str, Any]]:
        return await self._call("GET", "/api/v1/cluster/workers", server=server, auth="read",
                                query=self._query(consistent))

    async def leases(self, *, server: str | None = None, consistent: bool = False
                     ) -> list[tuple[WorkerLease, float | None]]:
        data = await self._call("GET", "/api/v1/cluster/leases", server=server, auth="read",
                                query=self._query(consistent))
        out = []
        for item in data:
            item = dict(item)
            left = item.pop("ttl_left_secs", None)
            out.append((from_dict(WorkerLease, item), left))
        return out

    async def service_state(self, service: str, *, server: str | None = None,
                            consistent: bool = False) -> dict[str, Any]:
        """``{service, running, healthy, nodes: [NodeServiceState], unknown: [ids]}``."""
        data = await self._call("GET", f"/api/v1/internal/services/{_seg(service)}/state",
                                server=server, auth="read", query=self._query(consistent))
        data["nodes"] = [from_dict(NodeServiceState, n) for n in data.get("nodes", [])]
        return data

    async def containers(self, service: str, *, server: str | None = None,
                         consistent: bool = False) -> list[ClusterContainerSummary]:
        data = await self._call("GET",
                                f"/api/v1/internal/services/{_seg(service)}/containers",
                                server=server, auth="read", query=self._query(consistent))
        return [from_dict(ClusterContainerSummary, c) for c in data]

    async def health(self, server: str | None = None) -> dict[str, Any]:
        return await self._call("GET", "/health", server=server)

    async def metrics(self, server: str | None = None) -> str:
        return await self._call("GET", "/metrics", server=server, auth="read", text=True)

    async def backup(self, *, server: str | None = None, timeout: float | None = None
                     ) -> bytes:
        """A backup file of the directory (admin token; see ``raftdir.backup``)."""
        return await self._call("GET", "/api/v1/cluster/backup", auth="admin",
                                server=server, timeout=timeout, raw=True)

    async def per_server(self, method: str | Callable[..., Any], *args: Any, **kwargs: Any
                         ) -> dict[str, Any]:
        """Ask every server in the list the same question at once (e.g. ``"peers"``):
        ``{server: answer or the exception it raised}``, one attempt each."""
        fn = getattr(self, method) if isinstance(method, str) else method
        name = getattr(fn, "__name__", "")
        servers = list(self.servers)

        async def one(s: str) -> Any:
            try:
                if name in ("health", "metrics"):
                    return await fn(s, *args, **kwargs)
                return await fn(*args, server=s, **kwargs)
            except RaftdirError as exc:
                return exc

        answers = await asyncio.gather(*(one(s) for s in servers))
        return dict(zip(servers, answers))


def _seg(text: str) -> str:
    from urllib.parse import quote
    return quote(text, safe="")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _decode(ctype: str, data: bytes) -> Any:
    media = ctype.split(";", 1)[0].strip().lower()
    if "msgpack" in media:
        return loads_msgpack(data)
    return loads_json(data)


def _error(status: int, ctype: str, data: bytes) -> RaftdirError:
    try:
        body = _decode(ctype, data) if data else None
    except RaftdirError:
        body = data[:200].decode("utf-8", "replace")
    err = error_from_body(body, status)
    if not isinstance(body, dict):
        err.message = f"HTTP {status}: {err.message}"
    return err
