"""The embedding API: ``Daemon`` runs raftdir inside a host (a container daemon).

Owns: building the right pieces for the configured ``ClusterMode`` (a directory server on a
local or PySyncObj node, the HTTP API, a static prober, or a worker agent), their start and
clean stop, the host's callbacks (its own node's assignments, leadership changes), and
``status()``. The constructor does no I/O and starts nothing; ``start()`` / ``stop()``, the
async context manager and the sync context manager (which runs its own event loop on a
thread) do. The CLI's ``serve`` and ``worker`` commands use this class too.

Data directory layout: ``cluster_mode.yaml`` (the mode; missing means single-node),
``cluster.secret`` (0600, the same on every server), ``raft/`` (PySyncObj's journal and
msgpack dump), ``worker/identity/`` (a worker's identity).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from .assignments import AssignmentSet, Change
from .clock import Clock, SystemClock
from .cluster import Cluster, DirectoryCluster, StaticCluster, StaticControlPlane
from .codec import parse_addr
from .config import CLUSTER_MODE_FILE, load_cluster_mode
from .errors import ConfigError, RaftdirError, Reregister
from .model import (
    ClusterMode, InternalScaleRequest, RaftMode, SetEvent, SingleNodeMode, StaticMode,
    WorkerPollResponse, WorkerTierMode,
)
from .tasks import cancel_and_wait

__all__ = ["Daemon", "DaemonOptions", "TlsFiles"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS: the certificate chain, its key, and optionally the CA that
    clients (and peers) must present certificates from.

    A server serves the HTTP API with ``cert`` and ``key``; with ``ca``, every client must
    present a certificate that CA signed (mutual TLS). The daemon's own connections (a
    server's to the leader and to its peers, a worker's to the servers) present ``cert``
    and ``key`` as their client certificate, so with mutual TLS a server certificate needs
    the clientAuth usage too."""

    cert: str
    key: str
    ca: str | None = None


@dataclass(frozen=True)
class DaemonOptions:
    """Knobs a host may set besides the cluster mode (all have sane defaults)."""

    api_host: str | None = None          # bind host; default: the host of api_addr
    api_port: int | None = None          # single-node: serve the API on this port
    tls: TlsFiles | None = None
    tls_trust: str | None = None         # CA our own connections trust (default: tls.ca)
    checkpoint_interval: float = 5.0
    expiry_tick: float = 0.5
    reconcile_interval: float = 5.0
    raft_tuning: Any = None              # raftdir.replication.RaftTuning
    cluster_id: str | None = None
    advertise_addr: str | None = None    # a worker's own API address (its profile)
    replica_max_lag: float = 5.0         # a replica refuses polls beyond this lag (s)
    max_connections: int = 10_000        # API connections at once (a parked poll holds one)
    require_read_token: bool = False     # reads need a token on a loopback API too
    secret_check_interval: float = 1.0   # seconds between looks at the secret files


class Daemon:
    """raftdir embedded in a host process. Typical use::

        daemon = Daemon.from_data_dir("/var/lib/host")
        daemon.on_assignments(lambda change, current: ...)
        async with daemon:
            ...
    """

    def __init__(self, config: ClusterMode, data_dir: str | Path, *,
                 options: DaemonOptions | None = None, clock: Clock | None = None) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.options = options or DaemonOptions()
        self.clock = clock or SystemClock()
        self.assignments = AssignmentSet()
        self.server: Any = None
        self.api: Any = None
        self.agent: Any = None
        self.static: StaticCluster | None = None
        self._cluster: Cluster | None = None
        self._assignment_cbs: list[Callable[[Change, AssignmentSet], Any]] = []
        self._leadership_cbs: list[Callable[[bool, int], Any]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._started = False
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_data_dir(cls, data_dir: str | Path, **kwargs: Any) -> "Daemon":
        """Read ``cluster_mode.yaml`` in ``data_dir`` (missing: single-node). Raises
        ``ConfigError`` naming the file and the field."""
        config = load_cluster_mode(Path(data_dir) / CLUSTER_MODE_FILE)
        return cls(config, data_dir, **kwargs)

    # -- host callbacks ----------------------------------------------------------------
    def on_assignments(self, cb: Callable[[Change, AssignmentSet], Any]) -> None:
        """``cb(change, current)`` after this node's assignments changed (a ``full``
        change replaces the whole set). May be a coroutine function."""
        self._assignment_cbs.append(cb)

    def on_leadership(self, cb: Callable[[bool, int], Any]) -> None:
        """``cb(is_leader, term)`` when this node gains or loses leadership."""
        self._leadership_cbs.append(cb)

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise RuntimeError("the daemon is not started")
        return self._cluster

    @property
    def node_id(self) -> int | None:
        if self.agent is not None:
            return self.agent.node_id
        return getattr(self.config, "node_id", None) or (1 if isinstance(
            self.config, SingleNodeMode) else None)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        try:
            mode = self.config
            if isinstance(mode, StaticMode):
                await self._start_static(mode)
            elif isinstance(mode, WorkerTierMode) and mode.is_worker_tier_worker():
                await self._start_worker(mode)
            else:
                await self._start_directory(mode)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Answer parked polls, cancel timers, stop Raft. Safe to call twice."""
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)
        if self.server is not None:
            await self.server.stop()      # releases parked polls with a bookmark
        if self.api is not None:
            await self.api.close()
            self.api = None
        if self.static is not None:
            await self.static.stop()
        if self.agent is not None:
            await self.agent.stop()
        self._started = False

    async def __aenter__(self) -> "Daemon":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __enter__(self) -> "Daemon":
        """Run the daemon on its own event loop in a background thread."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._thread_loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="raftdir-daemon", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def __exit__(self, *exc: object) -> None:
        loop, thread = self._thread_loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)

    # -- modes -------------------------------------------------------------------------
    def _secrets(self) -> tuple[Any, tuple]:
        """The secret files as loaded now, and their stamp taken just before (a change in
        between is seen by the watcher as a change)."""
        from .replication.secret import load_secrets, secret_files_stamp
        stamp = secret_files_stamp(self.data_dir)
        return load_secrets(self.data_dir), stamp

    async def _watch_secrets(self, use: Callable[[Any], None], held: Any,
                             stamp: tuple) -> None:
        """Follow a roll of the cluster secret without a restart: when one of the secret
        files changes (``cluster.secret``, ``.next``, ``.prev``), load them and hand the set
        to ``use``. A set that cannot be read (a file copied half-way, a bad mode) or that
        ``use`` refuses is logged once and the secrets in use stay."""
        from .replication.secret import load_secrets, secret_files_stamp
        said: str | None = None
        while True:
            await self.clock.sleep(self.options.secret_check_interval)
            now = secret_files_stamp(self.data_dir)
            if now == stamp:
                continue
            try:
                found = load_secrets(self.data_dir)
                if found is None:
                    raise ConfigError(f"{self.data_dir}/cluster.secret is gone")
                if found != held:   # off the loop: new Raft keys take a PBKDF2 each
                    await asyncio.get_running_loop().run_in_executor(None, use, found)
                    held = found
                    said = None
                    described = found.describe()
                    log.info("cluster secrets changed: own %s, accepting %s (%s)",
                             described["primary"], ", ".join(described["accepts"]),
                             described["phase"])
                stamp = now
            except (RaftdirError, OSError) as exc:
                why = getattr(exc, "message", None) or f"{exc.filename}: {exc.strerror}"
                if why != said:
                    log.warning("cluster secret files not taken: %s; the secrets in use "
                                "stay", why)
                    said = why
                stamp = now

    def _ssl(self) -> Any:
        if self.options.tls is None:
            return None
        from .api.server import ssl_context_from_files
        t = self.options.tls
        return ssl_context_from_files(t.cert, t.key, t.ca)

    async def _start_api(self, cp: Any, api_addr: str) -> None:
        from .api.server import start_api
        host, port = parse_addr(api_addr)
        self.api = await start_api(cp, self.options.api_host or host, port,
                                   ssl_context=self._ssl(), forward_ssl=self._client_ssl(),
                                   max_connections=self.options.max_connections,
                                   require_read_token=self.options.require_read_token)

    async def _start_directory(self, mode: ClusterMode) -> None:
        from .api.client import RaftdirClient
        from .server import DirectoryServer, ServerSettings

        secrets, stamp = self._secrets()
        o = self.options
        settings = ServerSettings(
            node_id=self.node_id or 1, data_dir=str(self.data_dir / "raft"),
            checkpoint_interval=o.checkpoint_interval, expiry_tick=o.expiry_tick,
            reconcile_interval=o.reconcile_interval, raft_tuning=o.raft_tuning,
            api_scheme="https" if o.tls else "http", cluster_id=o.cluster_id,
            replica_max_lag=o.replica_max_lag)
        if isinstance(mode, (RaftMode, WorkerTierMode)):
            settings = replace(settings, peers=tuple(mode.peers))
        if isinstance(mode, WorkerTierMode):
            settings = replace(settings, ttl=mode.adaptive_ttl_config(),
                               placement_kinds=frozenset({"worker"}))
        api_addr = None
        if settings.peers:
            api_addr = next(p.api_addr for p in settings.peers if p.id == settings.node_id)
        elif o.api_port is not None:
            api_addr = f"{o.api_host or '127.0.0.1'}:{o.api_port}"
            settings = replace(settings, self_api_addr=api_addr)
        self.server = server = DirectoryServer(settings, secret=secrets, clock=self.clock)
        self.server.raft.add_leadership_listener(self._leadership_from_thread)
        self._cluster = DirectoryCluster(
            self.server, lambda servers: RaftdirClient(servers, admin_token=server.own_token(),
                                                       ssl=self._client_ssl()))
        await self.server.start()
        if api_addr is not None:
            await self._start_api(self.server, api_addr)
        if not settings.is_replica:   # a replica is no node of the directory: no share
            self._tasks.append(asyncio.ensure_future(self._watch_own_assignments()))
        if secrets is not None:
            self._tasks.append(asyncio.ensure_future(
                self._watch_secrets(server.use_secrets, secrets, stamp)))

    def _client_ssl(self) -> Any:
        """The ``ssl`` argument of this daemon's own connections (a server's to the leader
        and its peers, a worker's to the servers): None (plain HTTP) without any TLS
        option; else a context that checks the other side's certificate and name against
        ``tls_trust`` (default ``tls.ca``, else the system's CAs) and presents
        ``tls.cert`` when the other side asks for a client certificate."""
        tls, trust = self.options.tls, self.options.tls_trust
        if tls is None and trust is None:
            return None
        import ssl
        ctx = ssl.create_default_context(cafile=trust or (tls.ca if tls else None))
        if tls is not None:
            ctx.load_cert_chain(tls.cert, tls.key)
        return ctx

    async def _start_static(self, mode: StaticMode) -> None:
        from .auth import is_loopback_host
        from .replication.secret import SECRET_FILE
        secrets, stamp = self._secrets()
        self.static = StaticCluster(mode, clock=self.clock, scheme="https" if self.options.tls
                                    else "http", ssl=self._client_ssl(),
                                    deliver=self._deliver_static)
        self.static.leadership_listeners.append(
            lambda is_leader, term: self._fire(self._leadership_cbs, is_leader, term))
        self._cluster = self.static
        me = next(p for p in mode.peers if p.id == mode.node_id)
        host = self.options.api_host or parse_addr(me.api_addr)[0]
        if secrets is None and not is_loopback_host(host):
            # without a secret a static peer takes every call: only on loopback
            raise ConfigError(
                f"peers: node {me.id}'s API would listen on {host}, which is not a loopback "
                f"address, and no cluster secret is configured: anyone reaching it could "
                f"send scale orders. Create {SECRET_FILE} in the data dir (the same file on "
                "every peer)", field="peers")
        cp = StaticControlPlane(self.static, secrets)
        await self._start_api(cp, me.api_addr)
        await self.static.start()
        if secrets is not None:
            self._tasks.append(asyncio.ensure_future(
                self._watch_secrets(cp.use_secrets, secrets, stamp)))

    async def _start_worker(self, mode: WorkerTierMode) -> None:
        from .agent import WorkerAgent
        extra = {"api_addr": self.options.advertise_addr} if self.options.advertise_addr \
            else {}
        self.agent = WorkerAgent.from_config(mode, self.data_dir, clock=self.clock,
                                             ssl=self._client_ssl(), **extra)
        self.agent.on_change(self._deliver_change)
        self._cluster = self.agent.cluster()
        await self.agent.start()

    # -- own assignments -----------------------------------------------------------------
    async def _watch_own_assignments(self) -> None:
        """Directory modes: read this server's own assignments from its applied state."""
        node_id = self.node_id
        delay = 0.05
        while True:
            try:
                resp = await self.server.poll_local(node_id, self.assignments.revision, 30.0)
            except Reregister:      # the leader has not registered this peer yet
                await self.clock.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep watching; a bug here is logged
                log.exception("watching node %s's assignments failed", node_id)
                await self.clock.sleep(1.0)
                continue
            await self._deliver_response(resp)

    async def _deliver_response(self, resp: WorkerPollResponse) -> None:
        change = self.assignments.apply(resp)
        if not change.empty:
            await self._deliver_change(change, self.assignments)

    async def _deliver_change(self, change: Change, current: AssignmentSet) -> None:
        if current is not self.assignments:
            self.assignments = current
        for cb in list(self._assignment_cbs):
            try:
                result = cb(change, current)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # noqa: BLE001 - a host bug must not stop the watcher
                log.exception("assignment callback raised")

    async def _deliver_static(self, req: InternalScaleRequest) -> None:
        """static mode: an order for this node becomes a ``set`` (or a delete) for the
        host, at the next local revision."""
        rev = self.assignments.revision + 1
        if req.replicas == 0 and not req.assignments:
            from .model import DeleteEvent
            resp = WorkerPollResponse(revision=rev, events=(DeleteEvent(
                service=req.service, revision=rev),))
        else:
            resp = WorkerPollResponse(revision=rev, events=(SetEvent(
                service=req.service, assignments=req.groups(), revision=rev,
                spec=req.spec),))
        await self._deliver_response(resp)

    # -- leadership ----------------------------------------------------------------------
    def _leadership_from_thread(self, is_leader: bool, term: int) -> None:
        loop = self.server._loop if self.server is not None else None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fire, self._leadership_cbs, is_leader, term)

    def _fire(self, cbs: list[Callable[..., Any]], *args: Any) -> None:
        for cb in list(cbs):
            try:
                result = cb(*args)
                if inspect.isawaitable(result):
                    asyncio.ensure_future(result)
            except Exception:  # noqa: BLE001
                log.exception("leadership callback raised")

    # -- status --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        mode = self.config.TAG
        out: dict[str, Any] = {"mode": mode, "node_id": self.node_id,
                               "started": self._started,
                               "revision": self.assignments.revision,
                               "assignments": self.assignments.containers(),
                               "api": self.api.url if self.api is not None else None}
        if self._cluster is not None:
            out["is_leader"] = self._cluster.is_leader()
            out["leader"] = self._cluster.leader_addr()
        if self.server is not None:
            out["raft"] = self.server.peer_status()
        if self.agent is not None:
            out["agent"] = self.agent.status()
        return out

