"""The worker agent: register, report, poll, back off, fail over (directory.md §4-§6).

Owns: one worker's session with the control plane:

- its identity (``identity.py``): registered once with the join token read from
  ``token_file``, stored in the identity directory, reused after a restart (the restarted
  worker reports and polls as the same node with its stored secret and consumes no token
  use); an identity from another cluster is refused loudly;
- the lease: a ``WorkerStatusReport`` before each TTL with a safety margin (at ``ttl/2``,
  never later than ``ttl - 2`` s), the TTL taken from every ack;
- the assignments: a continuous long-poll whose responses go through
  ``AssignmentSet.apply``; each non-empty ``Change`` is handed to the host's callbacks;
- errors: backoff with jitter from the injected ``rng``; the ``RaftdirClient`` follows
  leader hints and fails over between servers; a refused identity (``unauthorized``:
  the record was removed, or the secret is not its; ``reregister`` and ``forbidden``
  from older servers) registers again, with its identity and then with the token, or goes
  ``LOST`` saying why when there is none; a ``behind`` poll answer resyncs the set;
- the connection state, an explicit enum as in kazoo (``AgentState``);
- one agent per identity: ``start()`` takes ``agent.lock`` (``lock.py``) and ``stop()``
  releases it;
- the profile following the host: a stored identity whose recorded profile differs from
  this host's registers again with its node secret (the server records the new profile);
- its own view, ``view()``, kept in ``status.json`` (``status.py``) when it changes, and
  a log line at info for each applied change of assignments.

Three tasks run on the host's event loop: the session (registration and reports), the
poll loop and a watchdog that moves the state as time passes. The constructor does no I/O;
``start()`` reads the disk and spawns the tasks; ``stop()`` cancels them and closes the
client. Clocks, sleeps and randomness are injected (``clock=``, ``rng=``).

Must not import the server side (``raftdir.server``, ``raftdir.api.server``, the leader or
the core).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import inspect
import ipaddress
import logging
import os
import random
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from ..api.client import RaftdirClient, Unreachable, normalize_endpoint
from ..assignments import AssignmentSet, Change
from ..auth import peek_join_token
from ..clock import Clock, SystemClock
from ..codec import from_dict, to_dict
from ..errors import (
    BadRequest, ConfigError, Forbidden, NoLeader, NotLeader, RaftdirError, Reregister,
    TimeoutOutcomeUnknown, TokenExhausted, TokenInvalid, Unauthorized,
)
from ..model import (
    WorkerContainerStatus, WorkerPollRequest, WorkerProfile, WorkerRegisterRequest,
    WorkerResourceUsage, WorkerStatusAck, WorkerStatusReport, WorkerTierMode,
)
from ..tasks import cancel_and_wait
from .identity import Identity, default_identity_dir, load_identity, store_identity
from .lock import AgentLock
from .profile import detect_profile
from .status import write_status

__all__ = ["AgentState", "WorkerAgent", "StatusProvider", "report_interval",
           "DEFAULT_API_ADDR", "loopback_warning"]

log = logging.getLogger(__name__)

#: The worker's API address when the host gives none (servers cannot dial it: pass one).
DEFAULT_API_ADDR = "127.0.0.1:3669"

#: ``status_provider() -> (containers, resources)``; may be a coroutine function.
StatusProvider = Callable[[], Any]

ZERO_USAGE = WorkerResourceUsage(cpu_used=0.0, memory_used_bytes=0, gpu_used=0)


class AgentState(str, enum.Enum):
    """The worker's connection to the control plane (kazoo's states).

    - ``CONNECTED``: the last report was acknowledged less than a TTL ago;
    - ``SUSPENDED``: reports are failing (or none is acknowledged yet), but the lease is not
      yet past ``ttl + grace``: the node is still alive in the directory;
    - ``LOST``: more than ``ttl + grace`` without an acknowledged report (the leader may
      have marked the node down), or the worker cannot register (no token, token refused,
      another cluster). ``status()["reason"]`` says why. Not final: the agent keeps
      trying, and a later acknowledged report makes it ``CONNECTED`` again.
    """

    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"


def report_interval(ttl_secs: float) -> float:
    """Seconds between reports for a TTL: half of it, never later than ``ttl - 2`` s, and
    never below a quarter of it (for tiny TTLs)."""
    ttl = max(float(ttl_secs), 0.1)
    return max(ttl / 4, min(ttl / 2, ttl - 2.0))


def token_cluster_id(token: str) -> str | None:
    """The cluster id a join token claims, read WITHOUT checking the signature: only a
    hint to catch an identity from another cluster before use (the server checks)."""
    claims = peek_join_token(token)
    return claims.cluster_id or None if claims is not None else None


def _host(addr: str) -> str:
    """The host of ``host:port``, ``[v6]:port`` or ``scheme://host:port``."""
    return urlsplit(addr if "://" in addr else f"//{addr}").hostname or ""


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() == "localhost" or host.lower().endswith(".localhost")


def loopback_warning(api_addr: str, servers: Iterable[str]) -> str | None:
    """Why servers cannot dial this worker, when its advertised ``api_addr`` is a loopback
    address and some of its servers are not (they run on other hosts); else None."""
    if not _is_loopback(_host(api_addr)):
        return None
    remote = [s for s in servers if not _is_loopback(_host(s))]
    if not remote:
        return None
    return (f"api_addr: {api_addr} is a loopback address, but the servers "
            f"({', '.join(remote)}) are not: they cannot reach this worker there; pass "
            "--api-addr HOST:PORT (the address servers should dial, the profile's api_addr)")


def _describe_change(change: Change, current: AssignmentSet) -> str:
    """One log line's worth of an applied change: what was set, deleted or drained."""
    def share(ev: Any) -> str:
        return f"{ev.service} " + " ".join(
            f"{g.role}={','.join(map(str, sorted(g.indices)))}" for g in ev.assignments)
    if change.full:
        parts = ["full resync: " + ("; ".join(share(current.services[name])
                                                for name in sorted(current.services))
                                      or "nothing assigned")]
    else:
        parts = [f"set {share(ev)}" for ev in change.set]
        parts += [f"deleted {name}" for name in change.deleted]
    if change.drained:
        parts.append("draining")
    count = len(current.containers())
    return f"{'; '.join(parts)} ({count} container{'' if count == 1 else 's'})"


def _transient(exc: RaftdirError) -> bool:
    """An error worth retrying soon: nobody answered, no leader yet, outcome unknown, a
    server-side failure. Anything else is the server refusing."""
    return isinstance(exc, (NoLeader, NotLeader, TimeoutOutcomeUnknown)) or exc.status >= 500


def _identity_refused(exc: RaftdirError) -> bool:
    """The server does not (or no longer) accept this identity: register again."""
    return isinstance(exc, (Reregister, Forbidden)) or (
        isinstance(exc, Unauthorized) and not isinstance(exc, TokenInvalid))


class WorkerAgent:
    """One worker's agent. Typical use::

        agent = WorkerAgent.from_config(mode, data_dir, api_addr="10.0.0.7:3669")
        agent.on_change(lambda change, current: ...)
        await agent.start()
        ...
        await agent.stop()

    ``servers``: the control-plane endpoints (``http://host:port`` or ``host:port``).
    ``identity_dir``: where ``identity.json`` is kept. ``token_file``: a file whose single
    line is the join token (read when a registration is needed, so a new token can be
    dropped in). ``heartbeat_ttl`` / ``heartbeat_grace``: what to assume until the servers
    say (the config's ``heartbeat_min_ttl`` and ``heartbeat_grace``). ``status_provider``:
    ``() -> (containers, resources)`` for the reports; by default every assigned container
    is reported ``running`` with zero resource use. ``admin_token``: an operator's token
    (an access token) the agent's ``cluster()`` sends with its reads (``list_nodes``,
    ``service_states``: the servers' ``read`` routes need one when their API is not on
    loopback) and that lets it forward scale orders (scope ``operate``). ``backoff``: (first delay, cap) in seconds for the agent's own
    retries; the client adds its quick failover rounds underneath. ``client_factory``:
    builds the ``RaftdirClient`` (tests)."""

    def __init__(self, servers: Iterable[str], *, identity_dir: str | os.PathLike[str],
                 token_file: str | os.PathLike[str] | None = None,
                 api_addr: str = DEFAULT_API_ADDR, labels: dict[str, str] | None = None,
                 heartbeat_ttl: int = 10, heartbeat_grace: int = 10,
                 clock: Clock | None = None, rng: random.Random | None = None,
                 status_provider: StatusProvider | None = None,
                 admin_token: str | None = None, expected_cluster_id: str | None = None,
                 poll_wait_secs: int = 30, backoff: tuple[float, float] = (0.5, 10.0),
                 request_timeout: float = 10.0, client_retries: int = 2,
                 client_backoff: tuple[float, float] = (0.05, 1.0), ssl: Any = None,
                 profile: WorkerProfile | None = None,
                 client_factory: Callable[..., RaftdirClient] | None = None) -> None:
        self.seeds: list[str] = list(servers)
        if not self.seeds:
            raise ConfigError("servers: a worker needs at least one server", field="servers")
        self._registration: tuple[tuple[str, int | None], str] | None = None
        self.identity_dir = Path(identity_dir)
        self.token_file = Path(token_file) if token_file is not None else None
        self.api_addr = api_addr
        self.labels = dict(labels or {})
        self.default_ttl = heartbeat_ttl
        self.default_grace = heartbeat_grace
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.status_provider = status_provider
        self.admin_token = admin_token
        self.expected_cluster_id = expected_cluster_id
        self.poll_wait_secs = poll_wait_secs
        self.backoff = backoff
        self.request_timeout = request_timeout
        self.client_retries = client_retries
        self.client_backoff = client_backoff
        self.ssl = ssl
        self.client_factory = client_factory or RaftdirClient
        self._profile_override = profile

        # session state (all touched on the event loop only)
        self.identity: Identity | None = None
        self.assignments = AssignmentSet()
        self.state = AgentState.SUSPENDED
        self.reason = "not started"
        self.leader: str | None = None
        self.report_server: str | None = None      # the server that acked the last report
        self.servers: list[str] = list(self.seeds)
        self.ttl: float = heartbeat_ttl
        self.grace: float = heartbeat_grace
        self.last_ack: float | None = None         # clock.monotonic() of the last ack
        self.last_ack_unix_ms: int | None = None   # the same, on the wall clock
        self.state_since_unix_ms: int | None = None
        self.next_report_at: float | None = None   # when the next report is due
        self.activity = "idle"      # the session: idle | registering | reporting
        self.stats = {"registrations": 0, "reports_acked": 0, "reports_failed": 0,
                      "polls": 0, "poll_errors": 0, "changes": 0, "resyncs": 0}
        self.profile: WorkerProfile | None = None
        self._client: RaftdirClient | None = None
        self._change_cbs: list[Callable[[Change, AssignmentSet], Any]] = []
        self._state_cbs: list[Callable[[AgentState, AgentState, str], Any]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._running = False
        self._started_at = 0.0
        self._generation = 0            # bumped at each registration
        self._register_needed = False
        self._refusal: str | None = None   # why the server refused our identity
        self._fatal: str | None = None     # why we cannot register (LOST until cleared)
        self._failure: str | None = None   # the last report failure (SUSPENDED)
        self._need_full = True
        self._acked = False
        self._registered: asyncio.Event | None = None
        self._wake_session: asyncio.Event | None = None
        self._wake_watch: asyncio.Event | None = None
        self._connected: asyncio.Event | None = None
        self._inflight_poll: asyncio.Future[Any] | None = None
        self._abandoned: asyncio.Future[Any] | None = None
        self._cluster: Any = None
        self._lock: AgentLock | None = None
        self._profile_sync = False      # registering again only to send a new profile
        self._published: dict[str, Any] | None = None
        self._status_failed = False     # the status file could not be written (said once)

    # -- construction from the config ---------------------------------------------------
    @classmethod
    def from_config(cls, mode: WorkerTierMode, data_dir: str | os.PathLike[str], *,
                    clock: Clock | None = None, **kwargs: Any) -> "WorkerAgent":
        """An agent for a ``worker-tier`` worker config (wire-types.md §2.4):
        ``servers``, ``token_file``, ``identity_dir`` (default
        ``<data_dir>/worker/identity/``; both relative to ``data_dir`` unless absolute),
        ``heartbeat_min_ttl``, ``heartbeat_grace``,
        ``labels``. Other keyword arguments go to the constructor (``api_addr``, ``rng``,
        ``status_provider``, ``admin_token``, ...). No I/O."""
        if not isinstance(mode, WorkerTierMode) or not mode.is_worker_tier_worker():
            raise ConfigError("mode: the worker agent needs a worker-tier config with role "
                              "worker", field="mode")
        def in_data_dir(path: str | None) -> Path | None:   # relative paths: to data_dir
            return None if path is None else Path(data_dir) / path

        identity_dir = in_data_dir(mode.identity_dir) or default_identity_dir(data_dir)
        kwargs.setdefault("labels", dict(mode.labels))
        return cls(list(mode.servers), identity_dir=identity_dir,
                   token_file=in_data_dir(mode.token_file),
                   heartbeat_ttl=mode.heartbeat_min_ttl, heartbeat_grace=mode.heartbeat_grace,
                   clock=clock, **kwargs)

    # -- host callbacks -----------------------------------------------------------------
    def on_change(self, cb: Callable[[Change, AssignmentSet], Any]) -> None:
        """``cb(change, current)`` after each poll response that changed the assignments
        (``change.full``: the whole set was replaced). May be a coroutine function; it is
        awaited before the next poll, so keep it short."""
        self._change_cbs.append(cb)

    def on_state_change(self, cb: Callable[[AgentState, AgentState, str], Any]) -> None:
        """``cb(old, new, reason)`` when the connection state changes. May be a coroutine
        function (run as a task)."""
        self._state_cbs.append(cb)

    # -- read-only views ------------------------------------------------------------------
    @property
    def node_id(self) -> int | None:
        return self.identity.node_id if self.identity is not None else None

    @property
    def cluster_id(self) -> str | None:
        return self.identity.cluster_id if self.identity is not None else None

    @property
    def client(self) -> RaftdirClient | None:
        return self._client

    def view(self) -> dict[str, Any]:
        """What this worker knows of itself, as plain data (the status file's content,
        ``raftdir worker status``): node_id, cluster_id, state (and why, and since when),
        the server that acknowledged its last report (a follower forwards reports to the
        leader), the leader and the server list, the revision it holds, its assignments (container names) and services (service -> role ->
        indices), draining, the last acknowledged report (wall clock, Unix ms), the TTL
        and grace, and the profile it registers with (api_addr, labels)."""
        profile = self.profile
        return {
            "node_id": self.node_id, "cluster_id": self.cluster_id,
            "state": self.state.value, "reason": self.reason,
            "state_since_unix_ms": self.state_since_unix_ms,
            "report_server": self.report_server,
            "leader": self.leader, "servers": list(self.servers),
            "revision": self.assignments.revision,
            "assignments": self.assignments.containers(),
            "services": {name: {g.role: sorted(g.indices) for g in ev.assignments}
                         for name, ev in sorted(self.assignments.services.items())},
            "draining": self.assignments.draining,
            "last_ack_unix_ms": self.last_ack_unix_ms,
            "ttl_secs": self.ttl, "grace_secs": self.grace,
            "api_addr": profile.api_addr if profile is not None else self.api_addr,
            "labels": dict(profile.labels) if profile is not None else dict(self.labels),
        }

    def status(self) -> dict[str, Any]:
        """``view()`` plus the seconds since the last ack (monotonic), what the session is
        doing, and the counters."""
        now = self.clock.monotonic()
        return {
            **self.view(),
            "last_ack_secs_ago": None if self.last_ack is None
            else round(now - self.last_ack, 3),
            "activity": self.activity, **self.stats,
        }

    def cluster(self) -> Any:
        """The ``Cluster`` as this worker sees it (``raftdir.agent.cluster.WorkerCluster``)."""
        if self._cluster is None:
            from .cluster import WorkerCluster
            self._cluster = WorkerCluster(self)
        return self._cluster

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the state is ``CONNECTED`` (``asyncio.TimeoutError`` after
        ``timeout`` seconds of the event loop's clock)."""
        if self._connected is None:
            raise RuntimeError("the agent is not started")
        await asyncio.wait_for(self._connected.wait(), timeout)

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Read the stored identity and the token, then run the session, poll and watchdog
        tasks. Raises ``ConfigError`` when the worker cannot ever join: neither a token
        file nor a stored identity, an unreadable identity, or an identity from another
        cluster than the token's (or ``expected_cluster_id``); and when another agent runs
        with this identity (``agent.lock`` in the identity directory, naming its pid).

        A stored identity whose recorded profile differs from this host's (a new
        ``api_addr``, labels, OS or resources) is registered again with its node secret,
        so the directory records the new profile (``update_profile``)."""
        if self._running:
            return
        lock = AgentLock(self.identity_dir)
        lock.acquire()
        try:
            self._begin()
        except BaseException:
            lock.release()
            raise
        self._lock = lock
        self._publish()

    def _begin(self) -> None:
        identity = load_identity(self.identity_dir)
        token_cid = None
        if self.token_file is not None:
            try:
                token_cid = token_cluster_id(self._read_token_text())
            except ConfigError:
                if identity is None:
                    raise
                log.warning("token_file %s is unreadable; using the stored identity of node "
                            "%d", self.token_file, identity.node_id)
        elif identity is None:
            raise ConfigError(
                f"token_file: not set, and no identity is stored in {self.identity_dir}; a "
                "new worker needs a join token (raftdir token create) to register",
                field="token_file")
        if identity is not None:
            for source, cid in (("expected_cluster_id", self.expected_cluster_id),
                                (f"the join token in {self.token_file}", token_cid)):
                if cid is not None and cid != identity.cluster_id:
                    raise ConfigError(
                        f"{self.identity_dir / 'identity.json'}: this worker's stored "
                        f"identity (node {identity.node_id}) belongs to cluster "
                        f"{identity.cluster_id!r}, but {source} is for cluster {cid!r}; "
                        "refusing to mix clusters: remove the identity file to join the "
                        "other cluster as a new node", file=str(self.identity_dir))
        self.profile = self._profile_override or detect_profile(self.api_addr, self.labels)
        self.identity = identity
        servers = _dedupe(list(identity.servers if identity else ()) + self.seeds)
        self.servers = servers
        problem = loopback_warning(self.profile.api_addr, servers)
        if problem is not None:
            log.warning("%s", problem)
        self._client = self.client_factory(
            servers, node_secret=identity.internal_token if identity else None,
            admin_token=self.admin_token, timeout=self.request_timeout,
            retries=self.client_retries, backoff=self.client_backoff, ssl=self.ssl,
            rng=self.rng, clock=self.clock)
        if identity is not None:
            self.ttl = identity.heartbeat_ttl_secs or self.default_ttl
            self.grace = identity.heartbeat_grace_secs or self.default_grace
        self._registered = asyncio.Event()
        self._wake_session = asyncio.Event()
        self._wake_watch = asyncio.Event()
        self._connected = asyncio.Event()
        if identity is not None:
            self._registered.set()
        # the host changed since the directory last heard (or the file predates profiles)
        self._profile_sync = identity is not None and identity.profile != to_dict(self.profile)
        self._register_needed = identity is None or self._profile_sync
        self._fatal = self._failure = self._refusal = None
        self._need_full = True
        self.last_ack = None
        self._acked = False
        self._started_at = self.clock.monotonic()
        self.last_ack_unix_ms = None
        self.state, self.reason = AgentState.SUSPENDED, "connecting"
        self.state_since_unix_ms = self.clock.wall_ms()
        self._running = True
        self._tasks = [asyncio.ensure_future(self._session_loop()),
                       asyncio.ensure_future(self._poll_loop()),
                       asyncio.ensure_future(self._watch_loop())]
        log.info("worker agent started%s; servers %s%s",
                 f" as node {identity.node_id}" if identity else " (not registered yet)",
                 ", ".join(servers),
                 "; its profile changed, registering it again" if self._profile_sync else "")

    async def stop(self) -> None:
        """Cancel the tasks and close the client. Safe to call twice."""
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)
        refresh = getattr(self._cluster, "_refresh", None)
        if refresh is not None and not refresh.done():
            refresh.cancel()
        if self._client is not None:
            await self._client.close()
        if self._running:
            self._running = False
            self._set_state(AgentState.LOST, "stopped")
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    async def __aenter__(self) -> "WorkerAgent":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the session: registration and reports -----------------------------------------
    async def _session_loop(self) -> None:
        attempt = 0
        while True:
            if self.identity is None or self._register_needed:
                self.activity = "registering"
                try:
                    registered = await self._register()
                finally:
                    self.activity = "idle"
                if not registered:
                    attempt += 1
                    slow = self._fatal is not None
                    await self._pause(self._retry_delay(attempt, slow=slow))
                    continue
                attempt = 0
            assert self._client is not None and self.identity is not None
            generation = self._generation
            sent = self.clock.monotonic()
            self.activity = "reporting"
            try:
                report = await self._build_report()
                ack = await self._client.report(report)
                self.report_server = self._client.answered
            except asyncio.CancelledError:
                raise
            except RaftdirError as exc:
                self.activity = "idle"
                if _identity_refused(exc):
                    self._identity_refused(generation, exc)
                    continue
                attempt += 1
                self._report_failed(exc)
                await self._pause(self._retry_delay(attempt, cap=max(self.backoff[0],
                                                                     self.ttl / 4)))
                continue
            except Exception as exc:  # noqa: BLE001 - a host or client bug: keep the lease
                self.activity = "idle"
                log.exception("status report failed unexpectedly")
                attempt += 1
                self._report_failed(exc)
                await self._pause(self._retry_delay(attempt))
                continue
            attempt = 0
            self._report_ok(ack, sent)
            self.next_report_at = sent + report_interval(self.ttl)
            self.activity = "idle"
            await self._pause(max(0.0, self.next_report_at - self.clock.monotonic()))

    async def _register(self) -> bool:
        """One registration attempt; True when a new identity is in place."""
        assert self._client is not None
        token, problem = self._read_token()
        previous = self.identity
        sync = self._profile_sync and previous is not None
        if token is None:
            if not sync:
                self._cannot_register(f"cannot register: {problem}")
                return False
            token = ""   # the server takes the identity (node secret), not a token
        profile = self.profile
        assert profile is not None
        req = WorkerRegisterRequest(token=token, profile=profile,
                                    desired_node_id=previous.node_id if previous else None)
        expected = (previous.cluster_id if previous else None) or self.expected_cluster_id \
            or token_cluster_id(token)
        sent = self.clock.monotonic()
        # One request id for every try of this registration: if an answer is lost (a
        # leader change), the retry gets the same node instead of making a second one.
        if self._registration is None or self._registration[0] != (token, req.desired_node_id):
            self._registration = ((token, req.desired_node_id), uuid.uuid4().hex)
        try:
            resp = await self._client.register(req, request_id=self._registration[1])
        except asyncio.CancelledError:
            raise
        except (TokenInvalid, TokenExhausted) as exc:
            if not token:   # the record is gone, and there is no token to join again with
                self._cannot_register(f"cannot register: {problem}")
            else:
                self._cannot_register(f"registration refused ({exc.code}): {exc.message}")
            return False
        except RaftdirError as exc:
            if _transient(exc):
                self._failure = f"cannot register yet: {exc.message}"
                self._wake(self._wake_watch)
                log.warning("registration failed, will retry: %s", exc.message)
            else:
                self._cannot_register(f"registration refused ({exc.code}): {exc.message}")
            return False
        if expected is not None and resp.cluster_id != expected:
            # The client took the new secret: put the old one back, store nothing.
            self._client.node_secret = previous.internal_token if previous else None
            self._set_fatal(f"refusing the registration: the server is in cluster "
                            f"{resp.cluster_id!r}, this worker belongs to {expected!r}")
            log.error("%s", self._fatal)
            return False
        self._registration = None
        identity = Identity(node_id=resp.node_id, cluster_id=resp.cluster_id,
                            internal_token=resp.internal_token,
                            servers=tuple(resp.servers) or tuple(self.servers),
                            heartbeat_ttl_secs=resp.heartbeat_ttl_secs,
                            heartbeat_grace_secs=resp.heartbeat_grace_secs,
                            registered_unix_ms=self.clock.wall_ms(),
                            profile=to_dict(profile))
        self._store(identity)
        self._adopt_identity(identity, resp.heartbeat_ttl_secs, resp.heartbeat_grace_secs,
                             sent)
        if previous is not None and previous.node_id != identity.node_id:
            log.warning("registered again as node %d (was %d)", identity.node_id,
                        previous.node_id)
        elif sync:
            log.info("node %d: the directory has its new profile (api_addr %s, labels %s)",
                     identity.node_id, profile.api_addr,
                     ",".join(f"{k}={v}" for k, v in sorted(profile.labels.items())) or "none")
        else:
            log.info("registered as node %d in cluster %s", identity.node_id,
                     identity.cluster_id)
        return True

    def _cannot_register(self, problem: str) -> None:
        """LOST, saying why, and why a registration was needed at all."""
        self._set_fatal(f"{self._refusal}; {problem}" if self._refusal else problem)

    def _adopt_identity(self, identity: Identity, ttl: float, grace: float,
                        sent: float) -> None:
        self.identity = identity
        self.stats["registrations"] += 1
        self._generation += 1
        self._register_needed = False
        self._fatal = self._refusal = self._failure = None
        self._profile_sync = False
        self.ttl, self.grace = ttl, grace
        self._mark_ack(sent)            # registration grants the first lease ...
        self._acked = False             # ... but CONNECTED waits for a report's ack
        if identity.servers:
            self.servers = list(identity.servers)
        # The assignments belonged to the old record: resync from scratch, and drop a
        # poll still parked for the old identity.
        self._need_full = True
        if self._wake_session is not None:
            self._wake_session.clear()
        poll = self._inflight_poll
        if poll is not None and not poll.done():
            self._abandoned = poll
            poll.cancel()
        assert self._registered is not None
        self._registered.set()
        self._wake(self._wake_watch)

    def _identity_refused(self, generation: int, exc: RaftdirError) -> None:
        """A report or poll was refused for the identity itself (evicted, wrong secret):
        register again (once, whoever saw it first)."""
        if generation != self._generation or self._register_needed:
            return
        node = self.node_id
        self._refusal = f"node {node} was refused ({exc.code}): {exc.message}"
        log.warning("%s; registering again", self._refusal)
        self._register_needed = True
        self._profile_sync = False      # a registration proper now: it needs the token
        assert self._registered is not None
        self._registered.clear()
        self._failure = self._refusal
        self._wake(self._wake_session)
        self._wake(self._wake_watch)

    def _report_ok(self, ack: WorkerStatusAck, sent: float) -> None:
        self.stats["reports_acked"] += 1
        self._mark_ack(sent)
        self._acked = True
        self.ttl = max(1, ack.next_ttl_secs)
        self._failure = None
        self._fatal = None
        self.leader = ack.leader
        if ack.servers and list(ack.servers) != self.servers:
            self.servers = list(ack.servers)
            if self.identity is not None and tuple(ack.servers) != self.identity.servers:
                self.identity = dataclasses.replace(self.identity, servers=tuple(ack.servers))
                self._store(self.identity)
        self._publish()
        self._wake(self._wake_watch)

    def _mark_ack(self, sent: float) -> None:
        """An acknowledgement of what was sent at ``sent`` (monotonic)."""
        self.last_ack = sent
        self.last_ack_unix_ms = self.clock.wall_ms() - round(
            1000 * max(0.0, self.clock.monotonic() - sent))

    def _report_failed(self, exc: BaseException) -> None:
        self.stats["reports_failed"] += 1
        message = exc.message if isinstance(exc, RaftdirError) else repr(exc)
        first = self._failure is None
        self._failure = f"status report failed: {message}"
        (log.warning if first else log.debug)("%s", self._failure)
        if isinstance(exc, Unreachable):
            self._add_seeds()
        self._wake(self._wake_watch)

    def _add_seeds(self) -> None:
        """Every server we learned failed: add the configured ones back, so the worker is
        never pinned to a list of dead servers."""
        client = self._client
        if client is None:
            return
        scheme = "https" if self.ssl not in (None, False) else "http"
        for seed in self.seeds:
            url = normalize_endpoint(seed, default_scheme=scheme)
            if url not in client.servers:
                client.servers.append(url)

    async def _build_report(self) -> WorkerStatusReport:
        assert self.identity is not None
        containers: Any = None
        resources: Any = ZERO_USAGE
        if self.status_provider is not None:
            try:
                result = self.status_provider()
                if inspect.isawaitable(result):
                    result = await result
                containers, resources = result
                containers = tuple(c if isinstance(c, WorkerContainerStatus)
                                   else from_dict(WorkerContainerStatus, c)
                                   for c in containers)
                if not isinstance(resources, WorkerResourceUsage):
                    resources = from_dict(WorkerResourceUsage, resources)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the lease matters more than the details
                log.exception("status_provider failed; reporting the assigned containers "
                              "as unknown")
                containers, resources = self._assigned_containers("unknown"), ZERO_USAGE
        if containers is None:
            containers = self._assigned_containers("running")
        return WorkerStatusReport(node_id=self.identity.node_id,
                                  ts_ns=self.clock.wall_ms() * 1_000_000,
                                  containers=containers, resources=resources)

    def _assigned_containers(self, state: str) -> tuple[WorkerContainerStatus, ...]:
        return tuple(WorkerContainerStatus(service=ev.service, role=g.role, replica=i,
                                           state=state)
                     for _name, ev in sorted(self.assignments.services.items())
                     for g in ev.assignments for i in sorted(g.indices))

    # -- the poll loop ----------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        attempt = 0
        assert self._registered is not None
        while True:
            await self._registered.wait()
            assert self._client is not None and self.identity is not None
            generation = self._generation
            last = 0 if self._need_full else self.assignments.revision
            req = WorkerPollRequest(node_id=self.identity.node_id, last_revision=last,
                                    max_wait_secs=self.poll_wait_secs)
            started = self.clock.monotonic()
            call = asyncio.ensure_future(self._client.poll(req))
            self._inflight_poll = call
            try:
                resp = await call
            except asyncio.CancelledError:
                if call is self._abandoned and call.cancelled():
                    self._abandoned = None
                    continue        # dropped for a new identity
                call.cancel()
                raise
            except RaftdirError as exc:
                self.stats["poll_errors"] += 1
                if _identity_refused(exc):
                    self._identity_refused(generation, exc)
                    continue
                attempt += 1
                (log.warning if attempt == 1 else log.debug)("poll failed: %s", exc.message)
                if isinstance(exc, Unreachable):
                    self._add_seeds()
                await self.clock.sleep(self._retry_delay(attempt))
                continue
            except Exception:  # noqa: BLE001 - a bug: log it, do not spin
                self.stats["poll_errors"] += 1
                attempt += 1
                log.exception("poll failed unexpectedly")
                await self.clock.sleep(self._retry_delay(attempt))
                continue
            finally:
                if self._inflight_poll is call:
                    self._inflight_poll = None
            if generation != self._generation:
                continue            # an answer for the previous identity
            self.stats["polls"] += 1
            attempt = 0
            if last == 0 or resp.full:
                self._need_full = False
            if resp.behind:
                # Our revision is not of this cluster's history (a rebuilt or restored
                # cluster): the answer is the complete set at its revision; take it.
                self.stats["resyncs"] += 1
                log.warning("poll: the servers are at revision %d, below ours (%d): not "
                            "this cluster's history; resynced from the complete set",
                            resp.revision, last)
            change = self.assignments.apply(resp)
            if not change.empty:
                self.stats["changes"] += 1
                log.info("assignments at revision %d: %s", change.revision,
                         _describe_change(change, self.assignments))
            self._publish()
            if not change.empty:
                await self._emit_change(change)
            elif not resp.events and resp.revision <= last and self.poll_wait_secs > 0 \
                    and self.clock.monotonic() - started < min(1.0, self.poll_wait_secs / 10):
                # A bookmark that came back at once (a stopping server): do not spin.
                await self.clock.sleep(self._retry_delay(1))

    async def _emit_change(self, change: Change) -> None:
        for cb in list(self._change_cbs):
            try:
                result = cb(change, self.assignments)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a host bug must not stop the polls
                log.exception("assignment callback raised")

    # -- the connection state -----------------------------------------------------------------
    def _evaluate(self) -> tuple[AgentState, str]:
        if self._fatal is not None:
            return AgentState.LOST, self._fatal
        now = self.clock.monotonic()
        ref = self.last_ack if self.last_ack is not None else self._started_at
        age = now - ref
        if age > self.ttl + self.grace:
            what = "no acknowledged report" if self.last_ack is not None else \
                "not connected"
            detail = f"; {self._failure}" if self._failure else ""
            return AgentState.LOST, (f"{what} for {age:.1f} s, past ttl {self.ttl:g} s + "
                                     f"grace {self.grace:g} s{detail}")
        if self.last_ack is not None and age <= self.ttl and self._failure is None:
            if self._acked:
                return AgentState.CONNECTED, "reports acknowledged"
            return AgentState.SUSPENDED, "registered; waiting for the first report's ack"
        if self._failure is not None:
            return AgentState.SUSPENDED, self._failure
        if self.last_ack is None:
            return AgentState.SUSPENDED, "connecting"
        return AgentState.SUSPENDED, f"last acknowledged report {age:.1f} s ago"

    def _next_boundary(self) -> float | None:
        if self._fatal is not None:
            return None
        ref = self.last_ack if self.last_ack is not None else self._started_at
        age = self.clock.monotonic() - ref
        if self.last_ack is not None and age <= self.ttl:
            return self.ttl - age
        if age <= self.ttl + self.grace:
            return self.ttl + self.grace - age
        return None

    async def _watch_loop(self) -> None:
        assert self._wake_watch is not None
        while True:
            self._wake_watch.clear()
            self._set_state(*self._evaluate())
            delay = self._next_boundary()
            await self._pause(None if delay is None else delay + 1e-3, self._wake_watch)

    def _set_fatal(self, reason: str) -> None:
        if self._fatal != reason:
            log.error("worker agent: %s", reason)
        self._fatal = reason
        self._wake(self._wake_watch)

    def _set_state(self, new: AgentState, reason: str) -> None:
        old = self.state
        self.reason = reason
        if new is old:
            self._publish()
            return
        self.state = new
        self.state_since_unix_ms = self.clock.wall_ms()
        self._publish()
        (log.info if new is AgentState.CONNECTED else log.warning)(
            "worker agent %s -> %s: %s", old.value, new.value, reason)
        if self._connected is not None:
            if new is AgentState.CONNECTED:
                self._connected.set()
            else:
                self._connected.clear()
        for cb in list(self._state_cbs):
            try:
                result = cb(old, new, reason)
                if inspect.isawaitable(result):
                    asyncio.ensure_future(result)
            except Exception:  # noqa: BLE001 - a host bug must not stop the agent
                log.exception("state callback raised")

    # -- helpers ------------------------------------------------------------------------------
    def _retry_delay(self, attempt: int, *, slow: bool = False,
                     cap: float | None = None) -> float:
        """Exponential backoff with jitter: half of ``min(cap, first * 2**(attempt-1))``
        plus a random part up to the other half; ``slow`` waits the full cap."""
        first, limit = self.backoff
        if cap is not None:
            limit = min(limit, cap)
        ceiling = limit if slow else min(limit, first * (2 ** max(0, attempt - 1)))
        return ceiling / 2 + self.rng.random() * ceiling / 2

    async def _pause(self, delay: float | None, event: asyncio.Event | None = None) -> None:
        """Sleep ``delay`` seconds on the injected clock (forever when None), returning early
        when ``event`` (default: the session's wake-up) is set."""
        event = event if event is not None else self._wake_session
        assert event is not None
        if event.is_set():
            event.clear()
            return
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(event.wait())]
        if delay is not None:
            waiters.append(asyncio.ensure_future(self.clock.sleep(delay)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if event is self._wake_session:
            event.clear()

    @staticmethod
    def _wake(event: asyncio.Event | None) -> None:
        if event is not None:
            event.set()

    def _read_token_text(self) -> str:
        assert self.token_file is not None
        try:
            text = self.token_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ConfigError(f"token_file: cannot read {self.token_file}: {problem}",
                              field="token_file", file=str(self.token_file)) from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) != 1:
            raise ConfigError(f"token_file: {self.token_file} must hold exactly one line "
                              f"(the join token), found {len(lines)}", field="token_file",
                              file=str(self.token_file))
        return lines[0]

    def _read_token(self) -> tuple[str | None, str]:
        if self.token_file is None:
            return None, "no token_file is configured"
        try:
            return self._read_token_text(), ""
        except ConfigError as exc:
            return None, exc.message

    def _publish(self) -> None:
        """Rewrite the status file (``status.py``) when the view changed; only while this
        agent holds the identity's lock (never over another agent's file)."""
        if self._lock is None:
            return
        doc = dict(self.view(), pid=os.getpid())
        if doc == self._published:
            return
        try:
            write_status(self.identity_dir, dict(doc, updated_unix_ms=self.clock.wall_ms()))
        except OSError as exc:
            if not self._status_failed:
                log.warning("cannot write the status file in %s (raftdir worker status will "
                            "be out of date): %s", self.identity_dir, exc)
            self._status_failed = True
            return
        self._status_failed = False
        self._published = doc

    def _store(self, identity: Identity) -> None:
        try:
            store_identity(self.identity_dir, identity)
        except OSError as exc:
            log.error("cannot store the identity in %s (%s): after a restart this worker "
                      "would register as a new node", self.identity_dir, exc)


def _dedupe(servers: list[str]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for s in servers:
        try:
            key = normalize_endpoint(s)
        except BadRequest:
            key = s
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out
