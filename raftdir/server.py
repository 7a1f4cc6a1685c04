"""One control-plane server: the replicated directory, its Raft node, the worker protocol.

Owns: composing ``Directory`` + a ``RaftNode`` (``LocalNode`` or ``PySyncObjNode``) + the
``RevisionNotifier`` + ``LeaderServices`` for the current term, and implementing the
``ControlPlane`` protocol the HTTP API calls (``raftdir.api.contract``). Runs on one asyncio
event loop; PySyncObj applies entries on its own tick thread, so every read of the
directory goes through ``read()``, which holds the same lock as apply.

Heartbeats never write to Raft: a status report moves the node's deadline in the leader's
``LeaseTable`` (soft state). Raft writes happen on transitions and on the periodic
checkpoint. Must not import the agent or the CLI.
"""

from __future__ import annotations

import asyncio
import hmac
import hashlib
import logging
import math
import random
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, TypeVar

import msgpack
from prometheus_client import CollectorRegistry, Histogram

from .auth import (
    ADMIN_PRINCIPAL, Grant, access_token_matches, admin_token, check_admin_token,
    hash_access_token, hash_node_secret, is_admin_token, issue_access_token, issue_join_token,
    new_node_secret, node_secret_matches, parse_access_token, scope_allows, verify_join_token,
)
from .backup import encode_backup
from .clock import Clock, SystemClock
from .core.commands import (
    Command, CreateAccessToken, MarkDown, MarkReady, RegisterNode, RevokeAccessToken,
    UpdateProfile, command_to_plain, encode_command, pack_plain,
)
from .core.directory import Directory
from .core.result import Result
from .errors import (
    ERRORS_BY_CODE, Conflict, Forbidden, NoLeader, NotLeader, PayloadTooLarge, RaftdirError,
    ReplicaBehind, Reregister, Unauthorized, UnknownNode, UnknownService,
)
from .gcwatch import GcWatch
from .leader.aggregation import service_view
from .leader.leases import ExpiryPolicy, LeaseTable
from .leader.services import LeaderServices
from .limits import check_token
from .model import (
    AdaptiveTtlConfig, InternalScaleRequest, RaftPeer, WorkerPollRequest,
    WorkerPollResponse, WorkerProfile, WorkerRegisterRequest, WorkerRegisterResponse,
    WorkerStatusAck, WorkerStatusReport,
)
from .replication.base import MAX_COMMAND_BYTES, RaftNode
from .tasks import cancel_and_wait, finish_even_if_cancelled
from .replication.notifier import RevisionNotifier
from .replication.secret import SecretSet, derive_key
from .replication.tuning import RaftTuning

__all__ = ["ServerNode", "ServerSettings", "DirectoryServer", "GuardedDirectory",
           "MAX_POLL_WAIT_SECS"]

log = logging.getLogger(__name__)
T = TypeVar("T")

PROPOSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0)
POLL_WAIT_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)

#: A poll never parks longer than this, whatever it asks (directory.md §6).
MAX_POLL_WAIT_SECS = 60
#: The label of a server node that holds its Raft address.
RAFT_ADDR_LABEL = "raft_addr"
#: What an unknown node's secret is compared with: no secret hashes to it, and the
#: comparison costs what a real one does.
_NO_SECRET_HASH = "0" * 64


class _NotProven(Unauthorized):
    """An access token this server's applied state does not prove: no token with its id
    (perhaps not applied here yet), or not that token's secret. One answer for both."""


@dataclass(frozen=True)
class ServerNode:
    """A control-plane peer as a node of the directory (kind ``server``)."""

    node_id: int
    api_addr: str
    os: str = "linux"
    arch: str = "x86_64"
    raft_addr: str | None = None

    @property
    def profile(self) -> dict[str, Any]:
        """Its ``WorkerProfile``; the label ``raft_addr`` ties the id to its Raft address
        for the membership routes (on any leader, after any leader change)."""
        profile: dict[str, Any] = {"api_addr": self.api_addr, "os": self.os,
                                   "arch": self.arch}
        if self.raft_addr:
            profile["labels"] = {RAFT_ADDR_LABEL: self.raft_addr}
        return profile


@dataclass(frozen=True)
class ServerSettings:
    """How one server runs. ``peers`` empty means single-node (a ``LocalNode``)."""

    node_id: int
    peers: tuple[RaftPeer, ...] = ()
    data_dir: str | None = None
    ttl: AdaptiveTtlConfig = field(default_factory=AdaptiveTtlConfig)
    ttl_jitter: bool = False             # Nomad: add random [0, ttl) to spread heartbeats
    checkpoint_interval: float = 5.0     # seconds between renewal checkpoints
    expiry_tick: float = 0.5             # seconds between expiry sweeps
    reconcile_interval: float = 5.0      # seconds between re-placement/compaction passes
    keep_revisions: int = 10_000         # assignment events kept before compaction
    propose_timeout: float = 5.0
    expiry: ExpiryPolicy = field(default_factory=ExpiryPolicy)
    raft_tuning: RaftTuning | None = None
    placement_kinds: frozenset[str] = frozenset({"worker", "server"})
    api_scheme: str = "http"
    cluster_id: str | None = None        # fixed id for the bootstrap (None: random)
    self_api_addr: str | None = None     # single-node: this server's API address
    profile_os: str = "linux"
    profile_arch: str = "x86_64"
    #: A read-only replica refuses polls while it last held everything the leader had
    #: committed more than this many seconds ago (docs/config.md "Replicas").
    replica_max_lag: float = 5.0

    @property
    def voters(self) -> tuple[RaftPeer, ...]:
        """The peers that vote (every entry of ``peers`` but the replicas)."""
        return tuple(p for p in self.peers if not p.replica)

    @property
    def is_replica(self) -> bool:
        """This server's own entry in ``peers`` says ``replica: true``."""
        return any(p.id == self.node_id and p.replica for p in self.peers)

    @property
    def server_nodes(self) -> list[ServerNode]:
        if self.peers:   # the voters: a replica is a copy of the directory, not a node in it
            return [ServerNode(p.id, p.api_addr, self.profile_os, self.profile_arch,
                               p.raft_addr) for p in self.voters]
        addr = self.self_api_addr or "127.0.0.1:3669"
        return [ServerNode(self.node_id, addr, self.profile_os, self.profile_arch)]

    def endpoint(self, api_addr: str) -> str:
        return f"{self.api_scheme}://{api_addr}"


class GuardedDirectory:
    """The ``StateMachine`` handed to the Raft node: the directory behind a lock, so that
    readers on the event loop never see an apply half done."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.lock = threading.RLock()

    def apply_bytes(self, data: bytes) -> Result:
        with self.lock:
            return self.directory.apply_bytes(data)

    def to_snapshot(self) -> dict[str, Any]:
        with self.lock:
            return self.directory.to_snapshot()

    def restore(self, snapshot: dict[str, Any]) -> None:
        with self.lock:
            self.directory.restore(snapshot)

    @property
    def revision(self) -> int:
        return self.directory.revision

    def after_fork_in_child(self) -> None:
        """In a forked snapshot writer: another thread may have held the lock at the fork,
        and no thread of the child will ever release that copy. The child only reads."""
        self.lock = threading.RLock()


def error_for(result: Result) -> RaftdirError:
    cls = ERRORS_BY_CODE.get(result.code or "internal", RaftdirError)
    field_name = result.message.split(":", 1)[0] if ":" in result.message else None
    return cls(result.message or str(result.code), field=field_name)


class DirectoryServer:
    """One server of the control plane; implements ``raftdir.api.contract.ControlPlane``.

    The constructor does no I/O; ``await start()`` starts Raft (and so leadership),
    ``await stop()`` stops everything. ``raft`` may be injected (tests)."""

    def __init__(self, settings: ServerSettings, *, secret: str | SecretSet | None = None,
                 clock: Clock | None = None, raft: RaftNode | None = None,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        self.node_id = settings.node_id
        #: The cluster secrets this server holds (``None``: no secret, loopback only);
        #: ``use_secrets`` changes them during a roll.
        self.secrets: SecretSet | None = SecretSet(secret) if isinstance(secret, str) \
            else secret
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.directory = Directory()
        self.guard = GuardedDirectory(self.directory)
        self.raft = raft if raft is not None else self._make_raft()
        self.notifier = RevisionNotifier()
        # histograms /metrics serves beside ``metrics()`` (raftdir.api.metrics)
        self.metrics_registry = CollectorRegistry(auto_describe=True)
        self._propose_seconds = Histogram(
            "raftdir_propose_seconds", "From proposing a command to its result on this "
            "peer (commit and apply), by command type.", ["command"],
            buckets=PROPOSE_BUCKETS, registry=self.metrics_registry)
        self._poll_wait_seconds = Histogram(
            "raftdir_poll_wait_seconds", "How long a long-poll waited on this peer before "
            "its answer, by outcome (changes, bookmark).", ["outcome"],
            buckets=POLL_WAIT_BUCKETS, registry=self.metrics_registry)
        # a pause is worth a warning where it can cost an election: not in single-node
        self.gc_watch = GcWatch(self.metrics_registry, warn_over=(
            (settings.raft_tuning or RaftTuning()).raft_min_timeout if settings.peers
            else math.inf))
        self.leader: LeaderServices | None = None
        self._kept_leases: LeaseTable | None = None   # the last term's, when this peer led
        self.heartbeats = 0
        self.leadership_changes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._leadership_lock = asyncio.Lock()
        # the catch-up barriers of _authenticate: the one running, the one queued behind it
        self._catch_up_running: asyncio.Task[None] | None = None
        self._catch_up_queued: asyncio.Task[None] | None = None
        self.is_replica = settings.is_replica
        self._raft_to_api = {p.raft_addr: p.api_addr for p in settings.voters}
        self._raft_ids = {p.raft_addr: p.id for p in settings.voters}
        self.raft.add_apply_listener(self._on_apply)
        self.raft.add_leadership_listener(self._on_leadership)

    def _make_raft(self) -> RaftNode:
        s = self.settings
        if not s.peers:
            from .replication.local import LocalNode
            return LocalNode(self.guard, address=f"node-{s.node_id}", data_dir=s.data_dir)
        from .replication.pysyncobj_node import PySyncObjNode
        me = next(p for p in s.peers if p.id == s.node_id)
        if s.data_dir is None:
            raise ValueError("a raft server needs a data_dir")
        return PySyncObjNode(me.raft_addr, [p.raft_addr for p in s.voters], s.data_dir,
                             self.guard, secret=self.secret,
                             accept=self.secrets.accepted[1:] if self.secrets else (),
                             tuning=s.raft_tuning,
                             replica=(me.id, me.api_addr) if me.replica else None)

    # -- the cluster secret ---------------------------------------------------------------
    @property
    def secret(self) -> str | None:
        """This server's own cluster secret (``cluster.secret``), or None."""
        return self.secrets.primary if self.secrets is not None else None

    def use_secrets(self, secrets: SecretSet) -> None:
        """Take the secrets of a roll in progress (``raftdir.daemon`` calls it when the
        secret files change): the admin token and join tokens of every secret in the set
        are accepted, Raft traffic is read under all of them and sent under the first.
        Refused (``Conflict``) when this server has no secret (Raft without encryption
        cannot start encrypting while it runs) or when the new set shares no secret with
        the one in use (that would cut this server off: roll with next, promote, retire)."""
        if self.secrets is None:
            raise Conflict("this server started without a cluster secret; restart it to "
                           "use one", field="cluster_secret")
        if not set(secrets.accepted) & set(self.secrets.accepted):
            raise Conflict("the secret files share no secret with the ones in use; a server "
                           "that switched at once could not talk to the others: roll it "
                           "(raftdir secret create --next, promote, retire)",
                           field="cluster_secret")
        use = getattr(self.raft, "use_secrets", None)
        if use is not None:
            use(secrets.accepted)
        self.secrets = secrets

    def own_token(self) -> str | None:
        """The credential this server sends when it asks the other servers (its dashboard
        collector, its forwarded scale orders): the admin token of its own secret, which
        every server accepts at every step of a roll."""
        return admin_token(self.secret) if self.secret else None

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.notifier = RevisionNotifier(self.directory.revision, self._loop)
        self.gc_watch.install()
        await self._loop.run_in_executor(None, self.raft.start)

    async def stop(self) -> None:
        self.gc_watch.uninstall()
        self._stopping = True
        async with self._leadership_lock:
            if self.leader is not None:
                leader, self.leader = self.leader, None
                await leader.stop()
        await self._cancel_catch_up()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.raft.stop)
        # Release every parked poll: each wakes, sees _stopping and answers its bookmark.
        self.notifier.notify(2**63)

    async def __aenter__(self) -> "DirectoryServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- listeners (applying thread) ---------------------------------------------------
    def _on_apply(self, revision: int, result: Result | None) -> None:
        self.notifier.notify(revision)

    def _on_leadership(self, is_leader: bool, term: int) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(
            lambda: asyncio.ensure_future(self._change_leadership(is_leader, term)))

    async def _change_leadership(self, is_leader: bool, term: int) -> None:
        async with self._leadership_lock:
            if self._stopping:
                return
            old = self.leader
            if old is not None and (not is_leader or old.term != term):
                self.leader = None
                await old.stop()
                if old.ready.is_set():
                    self._kept_leases = old.leases
                log.info("node %d: leader services of term %d stopped", self.node_id,
                         old.term)
            if is_leader and self.leader is None and self.raft.is_leader():
                self.leadership_changes += 1
                self.leader = LeaderServices(self, term)
                self.leader.start()

    # -- the directory -----------------------------------------------------------------
    def read(self, fn: Callable[[Directory], T]) -> T:
        """Run a read of the directory under the apply lock (quick reads only)."""
        with self.guard.lock:
            return fn(self.directory)

    async def propose(self, cmd: Command) -> Result:
        """Commit ``cmd`` (stamped with the wall clock); a refusal raises its error class.
        ``NotLeader`` carries the leader's API endpoint, not its Raft address. A command
        over ``MAX_COMMAND_BYTES`` is refused (``PayloadTooLarge`` naming its largest
        field) before it reaches Raft."""
        cmd = _stamp(cmd, self.clock.wall_ms())
        data = encode_command(cmd)
        if len(data) > MAX_COMMAND_BYTES:
            plain = command_to_plain(cmd)
            largest = max((k for k in plain if k not in ("type", "v")),
                          key=lambda k: len(pack_plain(plain[k])))
            raise PayloadTooLarge(f"{largest}: the {cmd.TYPE} command would be {len(data)} "
                                  f"bytes, over the {MAX_COMMAND_BYTES} a Raft entry may "
                                  "carry", field=largest)
        started = time.monotonic()
        try:
            result = await self.raft.propose_async(data, self.settings.propose_timeout)
        except NotLeader as exc:
            raise NotLeader(exc.message, leader=self._endpoint_of_raft(exc.leader)) from None
        self._propose_seconds.labels(cmd.TYPE).observe(time.monotonic() - started)
        if not result.ok:
            raise error_for(result)
        return result

    def lease_now(self) -> float:
        """The lease clock (raftdir.leader.leases): this server's monotonic clock minus
        the time it held no leader lease."""
        return self.clock.monotonic() - self.raft.unleased_seconds()

    def kept_leases(self, previous_term: int | None) -> LeaseTable | None:
        """This peer's lease table of ``previous_term``, if this peer served that term as
        leader: the term a new leader's barrier found last in the directory, so no other
        leader acknowledged anything since (every acknowledgement needs a ready leader,
        and a leader is ready once its barrier committed). Taken once."""
        kept, self._kept_leases = self._kept_leases, None
        if kept is None or previous_term is None or kept.term != previous_term:
            return None
        return kept

    def _check_lease(self) -> None:
        """Before an answer that grants a worker a lease: this peer still holds its
        leader lease, so no other leader can have been elected (raft_rules)."""
        if not self.raft.has_lease():
            raise NoLeader(f"node {self.node_id}: a majority has not confirmed this "
                           "leader within the election timeout; retry shortly")

    def _endpoint_of_raft(self, raft_addr: str | None) -> str | None:
        api = self._raft_to_api.get(raft_addr or "")
        return self.settings.endpoint(api) if api else None

    # -- ControlPlane: who leads ---------------------------------------------------------
    def is_leader(self) -> bool:
        return self.leader is not None and self.leader.ready.is_set() and self.raft.is_leader()

    def leader_endpoint(self) -> str | None:
        if not self.settings.peers:
            return self.settings.endpoint(self.settings.server_nodes[0].api_addr)
        return self._endpoint_of_raft(self.raft.leader())

    def servers(self) -> list[str]:
        """Every server a worker may use: the voters (as configured, with membership
        changes since), then the read-only replicas this peer hears from (a leader hears
        from every connected one; a replica whose connection closed drops out)."""
        if self.settings.peers:
            out = [self.settings.endpoint(a) for a in self._raft_to_api.values()]
            for r in self.replicas():
                url = self.settings.endpoint(r["api_addr"])
                if url not in out:
                    out.append(url)
            return out
        return [self.settings.endpoint(n.api_addr) for n in self.settings.server_nodes]

    def replicas(self) -> list[dict[str, Any]]:
        """The read-only replicas the Raft node heard from lately: ``{node_id, api_addr,
        applied}`` (none on a single-node server)."""
        fn = getattr(self.raft, "replicas", None)
        return list(fn()) if fn is not None else []

    def replica_lag(self) -> tuple[float, int | None] | None:
        """On a replica: seconds since it last held everything the leader had committed,
        and the entries it is behind (``PySyncObjNode.replica_lag``); None elsewhere."""
        if not self.is_replica:
            return None
        return self.raft.replica_lag()  # type: ignore[attr-defined]

    def _check_replica_current(self) -> None:
        """A replica answers polls only while it is within ``replica_max_lag`` of the
        leader; otherwise it sends the worker elsewhere (the leader, else a voter)."""
        lag = self.replica_lag()
        if lag is None or lag[0] <= self.settings.replica_max_lag:
            return
        hint = self.leader_endpoint() or next(
            (self.settings.endpoint(a) for a in self._raft_to_api.values()), None)
        behind = "never caught up since it started" if lag[0] == float("inf") else \
            f"last held everything the leader committed {lag[0]:.1f} s ago"
        raise ReplicaBehind(f"replica {self.node_id} {behind} (limit "
                            f"{self.settings.replica_max_lag:g} s); poll another server",
                            leader=hint)

    def _leading(self) -> LeaderServices:
        leader = self.leader
        if leader is not None and leader.ready.is_set() and self.raft.is_leader():
            return leader
        hint = self.leader_endpoint()
        if hint is not None and self.raft.leader() not in (None, getattr(
                self.raft, "address", None)):
            raise NotLeader(f"node {self.node_id} is not the leader", leader=hint)
        raise NoLeader(f"node {self.node_id}: no leader is ready yet; retry shortly")

    # -- ControlPlane: worker protocol ---------------------------------------------------
    def _node_secret_for(self, request_id: str | None, token_id: str) -> str:
        """A retried registration (same request id, same token) must get the same secret
        back, so it is derived from both when there is a request id. The request id of a
        registration is therefore a credential: clients make it random (uuid4) and it is
        never logged."""
        if request_id and self.secrets is not None:
            # the secret every server of a roll in progress still holds: a retry that
            # reaches another leader gets the same node secret
            return hmac.new(derive_key(self.secrets.stable, "node-secret"),
                            f"{token_id}\x00{request_id}".encode("utf-8"),
                            hashlib.sha256).hexdigest()
        return new_node_secret()

    async def register(self, req: WorkerRegisterRequest, request_id: str | None,
                       node_secret: str | None = None) -> WorkerRegisterResponse:
        leader = self._leading()
        if self.secrets is None:
            raise Conflict("this cluster has no cluster secret, so it cannot check join "
                           "tokens", field="token")
        if node_secret and req.desired_node_id is not None:
            # A worker that already has an identity (its id and secret) gets its record
            # back even when its join token has expired since: it is not joining.
            node = self.read(lambda d: d.node(req.desired_node_id))
            stored = self.read(lambda d: d.secret_hash(req.desired_node_id))
            if node is not None and node["kind"] == "worker" \
                    and node_secret_matches(node_secret, stored):
                node = await self._follow_profile(leader, node, req.profile)
                return self._registered(leader, node, node_secret)
        cluster_id = self.read(lambda d: d.cluster_id) or ""
        claims = verify_join_token(req.token, self.secrets.accepted, cluster_id,
                                   self.clock.wall_ms() // 1000)
        secret = node_secret or self._node_secret_for(request_id, claims.token_id)
        live = self.read(lambda d: d.node_count("worker", "ready"))
        ttl = self._ttl(live + 1)
        result = await self.propose(RegisterNode(
            request_id=request_id, desired_node_id=req.desired_node_id, kind="worker",
            profile=req.profile.to_dict(), ttl_secs=ttl, grace_secs=self.settings.ttl.grace_secs,
            secret_hash=hash_node_secret(secret), token_id=claims.token_id,
            token_max_uses=claims.max_uses or None))
        return self._registered(leader, result.value, secret)

    async def _follow_profile(self, leader: LeaderServices, node: dict[str, Any],
                              profile: WorkerProfile) -> dict[str, Any]:
        """A worker registering again with its identity may bring another profile (a new
        address, labels, OS or resources): one ``update_profile`` records it, then the
        leader re-checks the placement constraints (a share that no longer fits moves,
        with its events). The same profile writes nothing."""
        if WorkerProfile.from_dict(node["profile"]) == profile:
            return node
        node_id = node["node_id"]
        result = await self.propose(UpdateProfile(node_id=node_id, profile=profile.to_dict()))
        log.info("node %d: profile updated (%s)", node_id,
                 ", ".join(result.value["changed"]) or "no change")
        await leader.reconcile()
        return self.read(lambda d: d.node(node_id)) or node

    def _registered(self, leader: LeaderServices, node: dict[str, Any], secret: str
                    ) -> WorkerRegisterResponse:
        self._check_lease()
        if leader.leases.entries.get(node["node_id"]) is None and node.get("state") != "down":
            leader.leases.arm_new(node["node_id"], ttl_secs=node["ttl_secs"],
                                  grace_secs=node["grace_secs"], now=self.lease_now(),
                                  now_wall_ms=self.clock.wall_ms())
        return WorkerRegisterResponse(
            node_id=node["node_id"], cluster_id=self.read(lambda d: d.cluster_id) or "",
            heartbeat_ttl_secs=node["ttl_secs"], heartbeat_grace_secs=node["grace_secs"],
            internal_token=secret, servers=tuple(self.servers()))

    def _check_secret(self, node_id: int, node_secret: str | None) -> dict[str, Any]:
        """The node's record if ``node_secret`` is its secret, from this peer's applied
        state; otherwise ``unauthorized``, one answer whatever the secret failed to prove
        (a wrong secret, another node's secret, a node id that does not exist or no longer
        does): telling them apart would tell any secret holder which node ids exist. A
        worker refused this way registers again (its join token, or its old identity)."""
        brief = self.read(lambda d: d.node_brief(node_id))
        stored = brief[4] if brief is not None else _NO_SECRET_HASH   # hashed either way
        if not node_secret_matches(node_secret, stored) or brief is None:
            raise Unauthorized(f"the node secret does not authenticate node {node_id} (a "
                               "wrong secret, or no such node any more): register again",
                               field="node_id")
        kind, state, ttl_secs, grace_secs, _ = brief
        return {"node_id": node_id, "kind": kind, "state": state, "ttl_secs": ttl_secs,
                "grace_secs": grace_secs}

    async def _authenticate(self, node_id: int, node_secret: str | None) -> dict[str, Any]:
        """``_check_secret``, made safe on a follower: a follower may not have applied a
        registration the leader just acknowledged, so before it refuses it commits a
        barrier (it then holds every acknowledged write) and checks again. A leader whose
        services are ready committed its own barrier when it took office, so it holds them
        all already; a peer that just won an election may not, and catches up too."""
        try:
            return self._check_secret(node_id, node_secret)
        except Unauthorized:
            if self.is_leader():
                raise
        await self._catch_up()
        return self._check_secret(node_id, node_secret)

    async def _catch_up(self) -> None:
        """``barrier()`` for ``_authenticate``, shared by the callers that arrive together:
        a flood of unauthenticated polls on a follower commits one barrier at a time, not
        one each.

        A caller needs a barrier *started after it arrived* (one already running may be
        ordered before the write the caller's worker was acknowledged), so it never joins
        the running one: it joins the barrier queued behind it, creating it if there is
        none. At most one runs and one waits; everyone who arrives while one runs shares
        the next. Its outcome (an error too) goes to every caller; a caller cancelled
        while it waits leaves the barrier to the others."""
        queued = self._catch_up_queued
        if queued is None:
            queued = asyncio.ensure_future(self._queued_catch_up(self._catch_up_running))
            self._catch_up_queued = queued
        try:
            await finish_even_if_cancelled(queued, "a catch-up barrier")
        except asyncio.CancelledError:
            if queued.cancelled() and self._stopping:   # stop() ended it, not our caller
                raise NoLeader(f"node {self.node_id}: this server is stopping") from None
            raise

    async def _cancel_catch_up(self) -> None:
        """On stop: end the catch-up barriers; their callers get ``NoLeader``."""
        tasks = [t for t in (self._catch_up_queued, self._catch_up_running) if t is not None]
        self._catch_up_queued = self._catch_up_running = None
        await cancel_and_wait(tasks)

    async def _queued_catch_up(self, ahead: asyncio.Task[None] | None) -> None:
        if ahead is not None:
            await asyncio.wait((ahead,))   # its outcome is its own callers'
        me = asyncio.current_task()
        # From here on this barrier starts: a caller arriving now needs the next one.
        self._catch_up_queued, self._catch_up_running = None, me
        try:
            await self.barrier()
        finally:
            if self._catch_up_running is me:
                self._catch_up_running = None

    def _ttl(self, live: int) -> int:
        ttl = self.settings.ttl.compute_ttl(live)
        if self.settings.ttl_jitter and ttl > 1:
            ttl = min(ttl + self.rng.randrange(ttl), 2**32 - 1)
        return ttl

    async def report(self, report: WorkerStatusReport, node_secret: str | None
                     ) -> WorkerStatusAck:
        leader = self._leading()
        node = self._check_secret(report.node_id, node_secret)   # the leader is current
        self.heartbeats += 1
        live = self.read(lambda d: d.node_count("worker", "ready"))
        ttl = self._ttl(live)
        if node["state"] == "down":
            # It is back. Decided from the directory, not from the lease table: a
            # mark_down whose answer was lost may have left an entry behind.
            await self.propose(MarkReady(term=leader.term, node_id=report.node_id,
                                         renewed_ms=self.clock.wall_ms()))
        self._check_lease()
        now, now_wall = self.lease_now(), self.clock.wall_ms()
        if leader.leases.renew(report.node_id, ttl_secs=ttl, now=now, now_wall_ms=now_wall,
                               report=report) is None:
            leader.leases.arm_new(report.node_id, ttl_secs=ttl, grace_secs=node["grace_secs"],
                                  now=now, now_wall_ms=now_wall)
            leader.leases.renew(report.node_id, ttl_secs=ttl, now=now, now_wall_ms=now_wall,
                                report=report)
        return WorkerStatusAck(next_ttl_secs=ttl, servers=tuple(self.servers()),
                               leader=self.leader_endpoint())

    async def poll(self, req: WorkerPollRequest, node_secret: str | None
                   ) -> WorkerPollResponse:
        self._check_replica_current()
        await self._authenticate(req.node_id, node_secret)
        return await self.poll_local(req.node_id, req.last_revision,
                                     min(req.max_wait_secs, MAX_POLL_WAIT_SECS))

    async def poll_local(self, node_id: int, last_revision: int, max_wait: float
                         ) -> WorkerPollResponse:
        """``_poll_local``, timed: how long polls wait here, by outcome (``changes``: events
        or a full set; ``bookmark``: the wait ran out)."""
        started = time.monotonic()
        resp = await self._poll_local(node_id, last_revision, max_wait)
        self._poll_wait_seconds.labels("changes" if resp.events or resp.full
                                       else "bookmark").observe(time.monotonic() - started)
        return resp

    async def _poll_local(self, node_id: int, last_revision: int, max_wait: float
                          ) -> WorkerPollResponse:
        """A poll answered from this peer's applied state, without authentication (the
        daemon reading its own node's assignments). Parks up to ``max_wait`` seconds; a
        timeout answers the bookmark, the current revision.

        A ``last_revision`` above this peer's revision: the peer catches up first (the
        shared barrier of ``_authenticate``; it then holds every acknowledged write). Still
        above, the revision is not of this cluster's history (a rebuilt or restored
        cluster), and the answer is at once the node's complete set at this peer's
        revision, ``full`` and ``behind``: the client resyncs rather than skip the events
        below its bookmark. A peer that cannot catch up raises the barrier's error."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        caught_up = False
        while True:
            try:
                revision, data = self.read(lambda d: (
                    d.revision, d.poll_data(node_id, last_revision)))
                if revision < last_revision and caught_up:
                    data = dict(self.read(lambda d: d.poll_data(node_id, 0)), behind=True)
                    return WorkerPollResponse.from_dict(data)
            except UnknownNode:
                raise Reregister(f"node {node_id} is not registered; register again",
                                 field="node_id") from None
            if revision < last_revision:
                await self._catch_up()
                caught_up = True
                continue
            # A full answer at revision 0 to a poll from 0 tells nothing new (no assignment
            # was ever made): answering it at once would make the poller spin.
            if data.get("events") or (data.get("full") and data["revision"] > 0):
                return WorkerPollResponse.from_dict(data)
            remaining = deadline - loop.time()
            if remaining <= 0 or self._stopping:
                return WorkerPollResponse(revision=revision)
            await self.notifier.wait_above(revision, remaining)

    # -- ControlPlane: who may do what ---------------------------------------------------
    def check_admin(self, token: str | None) -> None:
        """Raises Unauthorized unless ``token`` is the admin token (of any secret this
        server holds during a roll)."""
        if self.secrets is None:
            raise Unauthorized("this cluster has no cluster secret, so it has no admin token")
        check_admin_token(token, self.secrets.accepted)

    def check_token(self, token: str | None) -> Grant:
        """What ``token`` may do, from this server's applied state only (no barrier): the
        admin token, or an access token kept in the directory, not revoked and not expired
        (by this server's clock, or the directory's if that is ahead). Raises
        ``Unauthorized`` naming what failed, never the token."""
        if not token:
            raise Unauthorized("this needs a token: send Authorization: Bearer <token> (the "
                               "admin token, or one from `raftdir token create --scope`)")
        if self.secrets is not None and is_admin_token(token, self.secrets.accepted):
            return Grant("admin", ADMIN_PRINCIPAL)
        token_id = parse_access_token(token)
        if token_id is None:
            raise Unauthorized("the token is neither the admin token nor an access token of "
                               "this cluster")
        row = self.read(lambda d: (lambda r: None if r is None else (
            r.token_hash, r.scope, r.expires_ms, r.revoked_ms, r.name, d.now_ms))(
                d.access_token(token_id)))
        stored = row[0] if row is not None else _NO_SECRET_HASH   # hashed either way
        if not access_token_matches(token, stored) or row is None:
            raise _NotProven(f"access token {token_id} is not valid here (unknown, or not "
                             "its secret)")
        _hash, scope, expires_ms, revoked_ms, name, state_ms = row
        if revoked_ms:
            raise Unauthorized(f"access token {token_id} was revoked")
        if expires_ms <= max(self.clock.wall_ms(), state_ms):
            raise Unauthorized(f"access token {token_id} has expired")
        return Grant(scope, f"token {token_id}" + (f" ({name})" if name else ""), token_id)

    def _state_is_current(self) -> bool:
        """This server's applied state holds every committed write: it leads, its
        services are ready (its own barrier of this term is applied) and it holds its
        leader lease (no other leader can have committed anything since)."""
        return self.is_leader() and self.raft.has_lease()

    async def authorize(self, token: str | None, scope: str) -> Grant:
        """What ``token`` may do, if it allows ``scope``; ``Unauthorized`` (401) for a
        missing, unknown, wrong, revoked or expired token, ``Forbidden`` (403) for a valid
        one of a lower scope.

        For ``operate`` and ``admin`` a revocation is refused on every server as soon as
        it is committed: a server accepts such a token from its applied state only when
        that state holds every committed write (a ready leader with its lease); otherwise,
        a follower or a leader unsure of its lease, it first commits a barrier that started
        after the request arrived (one barrier shared by the requests that arrive together,
        as for node secrets) and checks again, so a revocation committed before the
        request is applied here before the token is accepted. Those routes write through
        the leader anyway, so the barrier costs them no availability. A ``read`` is
        checked against the applied state as it is (etcd's serializable reads do the
        same): reads, ``/metrics`` and the dashboard keep working on a follower while the
        leader fails over, and a revocation holds there from the moment it is applied
        there. A token this state does not know (created through the leader a moment ago)
        gets the catch-up before it is refused, whatever the scope. The admin token needs
        no state."""
        try:
            grant = self.check_token(token)
        except _NotProven:
            if self._state_is_current():
                raise
            await self._catch_up()
            grant = self.check_token(token)
        else:
            if grant.token_id is not None and scope != "read" and \
                    not self._state_is_current():
                await self._catch_up()
                grant = self.check_token(token)
        if not scope_allows(grant.scope, scope):
            raise Forbidden(f"this needs a token of scope {scope}; {grant.principal} has "
                            f"scope {grant.scope}")
        return grant

    # -- ControlPlane: operators' writes --------------------------------------------------
    async def scale(self, req: InternalScaleRequest, request_id: str | None
                    ) -> dict[int, InternalScaleRequest]:
        try:
            return await self._leading().scale(req, request_id)
        except PayloadTooLarge as exc:
            # the placement command holds every index twice (the groups and where each
            # runs): too many of them is the request's replicas or assignments
            field = {"spec": "spec"}.get(exc.field or "",
                                         "assignments" if req.is_phase2 else "replicas")
            raise PayloadTooLarge(exc.message.replace(f"{exc.field}:", f"{field}:", 1),
                                  field=field) from None

    async def distribute_scale(self, req: InternalScaleRequest, request_id: str | None
                               ) -> dict[int, InternalScaleRequest]:
        return await self.scale(req, request_id)

    async def drain(self, node_id: int, request_id: str | None) -> dict[str, Any]:
        return await self._leading().drain(node_id, request_id)

    async def undrain(self, node_id: int, request_id: str | None) -> dict[str, Any]:
        return await self._leading().undrain(node_id, request_id)

    async def deregister(self, node_id: int, request_id: str | None) -> dict[str, Any]:
        return await self._leading().evict(node_id, request_id)

    async def create_token(self, valid_for_secs: int, max_uses: int) -> dict[str, Any]:
        check_token(valid_for_secs, max_uses)
        self._leading()
        if not self.secret:
            raise Conflict("this cluster has no cluster secret to sign tokens with")
        cluster_id = self.read(lambda d: d.cluster_id)
        token, claims = issue_join_token(self.secret, cluster_id or "",
                                         valid_for_secs=valid_for_secs, max_uses=max_uses,
                                         now_unix_secs=self.clock.wall_ms() // 1000)
        return {"token": token, "token_id": claims.token_id,
                "expires_unix_secs": claims.expires_unix_secs, "max_uses": claims.max_uses}

    # -- access tokens (``raftdir token create --scope | list | revoke``) ------------------
    async def create_access_token(self, scope: str, valid_for_secs: int, name: str,
                                  creator: str, request_id: str | None, *,
                                  seed: str | None = None) -> dict[str, Any]:
        """Leader only: a new access token, returned once with its metadata; the directory
        keeps only its hash. With the client's ``seed`` the token derives from it (a retry
        of the same creation, which sends the same seed and request id, gets the same token
        back); without, it is random. Its expiry counts from the directory's time if that
        is ahead of this leader's clock (an earlier leader's clock ran ahead)."""
        check_token(valid_for_secs, 0)
        self._leading()
        token, token_id = issue_access_token(seed)
        now = max(self.clock.wall_ms(), self.read(lambda d: d.now_ms))
        result = await self.propose(CreateAccessToken(
            request_id=request_id, token_id=token_id, name=name, scope=scope,
            token_hash=hash_access_token(token),
            expires_ms=now + valid_for_secs * 1000, creator=creator))
        value = {k: v for k, v in result.value.items() if k != "dropped"}
        log.info("access token %s%s created: scope %s, by %s", token_id,
                 f" ({name})" if name else "", scope, creator)
        # the record as it stands now: a retry answered from the first result may find it
        # revoked or expired since
        current = next((r for r in self.access_tokens() if r["token_id"] == token_id),
                       None)
        state = current["state"] if current is not None else "active"
        return dict(value, token=token, state=state)

    def access_tokens(self) -> list[dict[str, Any]]:
        """Every access token kept (never a token or its hash), with its ``state``:
        ``active``, ``expired`` or ``revoked``, from this server's applied state."""
        rows, state_ms = self.read(lambda d: (d.access_tokens(), d.now_ms))
        now = max(self.clock.wall_ms(), state_ms)
        for row in rows:
            row["state"] = ("revoked" if row["revoked_ms"] else
                            "expired" if row["expires_ms"] <= now else "active")
        return rows

    async def revoke_access_token(self, token_id: str, request_id: str | None
                                  ) -> dict[str, Any]:
        """Leader only: revoke an access token; every server refuses it from the moment
        this is committed (``authorize``)."""
        self._leading()
        result = await self.propose(RevokeAccessToken(request_id=request_id,
                                                      token_id=token_id))
        if result.value["revoked"]:
            log.info("access token %s revoked", token_id)
        return result.value

    # -- dynamic membership (``raftdir peers add|remove``; not in the ControlPlane) -------
    # A change names a peer twice, by its id and by its Raft address, and both must agree
    # with what the cluster knows: the current Raft members, the directory's server records
    # (their ``raft_addr`` label, or the configured peers for records written before the
    # label) and their state. A live peer's id or addresses are never taken, and every
    # change is undone by the opposite call with the same body (a removed peer comes back
    # only as it was: same id, Raft address and API address).

    def _membership_view(self) -> "_Membership":
        status = self.raft.status()
        members = {status.get("self")} | set(status.get("partners") or {})
        configured = {p.id: p.raft_addr for p in self.settings.peers}
        servers = {n["node_id"]: n for n in self.read(lambda d: d.nodes(kind="server"))}
        return _Membership(members - {None}, configured, servers)

    async def add_peer(self, peer_id: int, raft_addr: str, api_addr: str | None
                       ) -> dict[str, Any]:
        """Leader only: add one voting Raft peer (one change at a time; start the new peer
        with the full peer list after this returned), or add back one removed before."""
        self._membership_supported("add_peer")
        leader = self._leading()
        view = self._membership_view()
        record = view.servers.get(peer_id)
        if record is None and self.read(lambda d: d.node(peer_id)) is not None:
            raise Conflict(f"id: node {peer_id} is a worker; a peer needs an id of its own",
                           field="id")
        owner = view.owner(raft_addr)
        if owner is not None and owner != peer_id:
            raise Conflict(f"raft_addr: {raft_addr} is the Raft address of peer {owner}",
                           field="raft_addr")
        if view.live(peer_id):
            where = view.raft_addr_of(peer_id)
            raise Conflict(f"{'raft_addr' if where == raft_addr else 'id'}: peer {peer_id} "
                           f"is a live peer at {where}" + (" already" if where == raft_addr
                                                          else "; its id cannot be taken"),
                           field="raft_addr" if where == raft_addr else "id")
        if record is not None:   # a peer removed before comes back only as it was
            was_raft, was_api = view.raft_addr_of(peer_id), record["profile"]["api_addr"]
            if was_raft is not None and was_raft != raft_addr:
                raise Conflict(f"raft_addr: peer {peer_id} was at {was_raft}; add it back "
                               "there, or give the new peer a new id", field="raft_addr")
            if api_addr != was_api:
                raise Conflict(f"api_addr: peer {peer_id} was at {was_api}; add it back "
                               "there, or give the new peer a new id", field="api_addr")
        taken = view.live_api_addrs().get(api_addr or "")
        if taken is not None and taken != peer_id:
            raise Conflict(f"api_addr: {api_addr} is the API address of peer {taken}",
                           field="api_addr")
        if raft_addr not in view.members:   # else an earlier add got this far: finish it
            await self._change_membership("add_peer", raft_addr)
        self._raft_ids[raft_addr] = peer_id
        if api_addr:
            self._raft_to_api[raft_addr] = api_addr
        if record is None:      # the new peer is a node of the directory, as configured ones
            s = self.settings
            await self.propose(RegisterNode(
                desired_node_id=peer_id, kind="server", ttl_secs=0, grace_secs=0,
                profile=ServerNode(peer_id, api_addr or "", s.profile_os, s.profile_arch,
                                   raft_addr).profile, secret_hash="0"))
        elif record["state"] == "down":
            await self.propose(MarkReady(term=leader.term, node_id=peer_id,
                                         renewed_ms=self.clock.wall_ms()))
        return {"id": peer_id, "raft_addr": raft_addr, "api_addr": api_addr, "added": True}

    async def remove_peer(self, peer_id: int, raft_addr: str, api_addr: str | None
                          ) -> dict[str, Any]:
        """Leader only: remove one Raft peer (stop it first). Its node record goes down
        (its replicas move; the record stays, for adding it back)."""
        self._membership_supported("remove_peer")
        leader = self._leading()
        view = self._membership_view()
        if raft_addr not in view.members:
            # Not a member (any more): a peer lost with a majority (`raftdir recover`), or
            # a removal whose answer was lost. Its record still goes down, so the replicas
            # placed on it move; nothing else to do.
            node = view.servers.get(peer_id)
            if node is None or view.raft_addr_of(peer_id) not in (None, raft_addr):
                raise Conflict(f"raft_addr: {raft_addr} is not a member of the Raft "
                               "cluster", field="raft_addr")
            if node["state"] != "down":
                await self.propose(MarkDown(term=leader.term, node_ids=(peer_id,)))
            return {"id": peer_id, "raft_addr": raft_addr, "removed": False,
                    "marked_down": node["state"] != "down"}
        owner = view.owner(raft_addr)
        if owner is not None and owner != peer_id:
            raise Conflict(f"id: {raft_addr} is the Raft address of peer {owner}, not of "
                           f"{peer_id}", field="id")
        if owner is None and (peer_id not in view.servers
                              or view.raft_addr_of(peer_id) not in (None, raft_addr)):
            raise Conflict(f"id: no server node {peer_id} at {raft_addr}", field="id")
        # the leader itself: the Raft node hands leadership over first and raises
        # NotLeader naming the new leader, where the request goes on
        await self._change_membership("remove_peer", raft_addr)
        self._raft_to_api.pop(raft_addr, None)
        self._raft_ids.pop(raft_addr, None)
        node = view.servers.get(peer_id)
        if node is not None and node["state"] != "down":
            await self.propose(MarkDown(term=leader.term, node_ids=(peer_id,)))
        return {"id": peer_id, "raft_addr": raft_addr, "removed": True}

    def _membership_supported(self, op: str) -> None:
        if getattr(self.raft, op, None) is None:
            raise Conflict(f"{op}: this server runs single-node; membership changes need "
                           "raft mode", field="raft_addr")

    async def _change_membership(self, op: str, raft_addr: str) -> None:
        self._membership_supported(op)
        self._leading()
        try:
            await asyncio.get_running_loop().run_in_executor(None, getattr(self.raft, op),
                                                             raft_addr)
        except NotLeader as exc:
            raise NotLeader(exc.message, leader=self._endpoint_of_raft(exc.leader)) from None

    # -- ControlPlane: reads -------------------------------------------------------------
    async def barrier(self) -> None:
        try:
            await self.raft.barrier_async(self.settings.propose_timeout)
        except NotLeader as exc:
            raise NotLeader(exc.message, leader=self._endpoint_of_raft(exc.leader)) from None

    async def backup(self) -> bytes:
        """A backup file of the directory (``raftdir.backup``): a barrier through the
        leader first, so it holds every write acknowledged before the call; then the
        state, taken under the apply lock."""
        await self.barrier()
        status = self.raft.status()
        snapshot = self.read(lambda d: d.to_snapshot())
        return encode_backup(snapshot, node_id=self.node_id, term=int(status.get("term", 0)),
                             applied_index=int(status.get("last_applied", 0)),
                             now_ms=self.clock.wall_ms())

    def service_state(self, service: str) -> dict[str, Any]:
        """Raises ``UnknownService`` for a service the directory never placed and no node
        reports containers of."""
        leader = self._leading()
        stored = self.read(lambda d: d.placement(service))
        placement = stored or {}
        reports = {n: e.report for n, e in leader.leases.entries.items() if e.report}
        view = service_view(service, reports, placement).to_dict()
        if stored is None and not any(n["containers"] for n in view["nodes"]):
            raise UnknownService(f"service {service!r} is not known: not placed (never "
                                 "scaled, or scaled to 0) and no node reports containers "
                                 "of it", field="service")
        view["assigned"] = [{"node_id": n, "replicas": sum(len(i) for i in roles.values())}
                            for n, roles in sorted(placement.items())]
        return view

    def service_containers(self, service: str) -> list[dict[str, Any]]:
        return [c for n in self.service_state(service)["nodes"] for c in n["containers"]]

    def peer_status(self) -> dict[str, Any]:
        status = dict(self.raft.status())
        status["node_id"] = self.node_id
        status["leader_api"] = self.leader_endpoint()
        status["is_leader"] = self.is_leader()
        status["revision"] = self.directory.revision
        # which secrets this server holds (fingerprints only), for `raftdir secret status`
        status["secrets"] = self.secrets.describe() if self.secrets is not None else None
        # who the Raft members are, so that a peer that does not answer can be named
        status["members"] = [{"id": self._raft_ids.get(r), "raft_addr": r,
                              "api_addr": self._raft_to_api.get(r)}
                             for r in sorted(set(self._raft_ids) | set(self._raft_to_api))]
        status["replica"] = self.is_replica
        status["replicas"] = [dict(r, api_addr=self.settings.endpoint(r["api_addr"]))
                              for r in self.replicas()]
        lag = self.replica_lag()
        if lag is not None:
            status["lag_secs"] = None if lag[0] == float("inf") else round(lag[0], 3)
            status["lag_entries"] = lag[1]
            status["behind"] = lag[0] > self.settings.replica_max_lag
        return status

    def digest(self) -> dict[str, Any]:
        """This peer's applied index and a sha256 of its directory's hard state (msgpack of
        ``Directory.to_snapshot()``, taken under the apply lock), for comparing peers
        (``GET /api/v1/cluster/digest``). PySyncObj counts an entry applied just after
        applying it, so ``last_applied`` is read before and after the snapshot: compare
        peers only on answers where the two are equal (``stable``), and retry on a
        mismatch (an entry may sit between an apply and its count)."""
        before = int(self.raft.status().get("last_applied", 0))
        snapshot, revision = self.read(lambda d: (d.to_snapshot(), d.revision))
        after = int(self.raft.status().get("last_applied", 0))
        return {"node_id": self.node_id, "last_applied": before,
                "last_applied_after": after, "stable": before == after,
                "revision": revision,
                "sha256": hashlib.sha256(msgpack.packb(snapshot)).hexdigest()}

    def read_each(self, ids: list[int], fn: Callable[[Directory, int], T],
                  chunk: int = 2000) -> list[T]:
        """``fn(directory, id)`` for every id, taking the apply lock one chunk at a time:
        a listing of 100,000 nodes never holds PySyncObj's tick thread for long."""
        out: list[T] = []
        for start in range(0, len(ids), chunk):
            part = ids[start:start + chunk]
            out.extend(self.read(lambda d: [fn(d, n) for n in part]))
        return out

    def workers(self) -> list[dict[str, Any]]:
        ids = self.read(lambda d: d.node_ids())
        nodes = [n for n in self.read_each(ids, lambda d, n: d.node(n)) if n is not None]
        leader = self.leader if self.is_leader() else None
        now = self.lease_now()
        for node in nodes:
            entry = leader.leases.entries.get(node["node_id"]) if leader else None
            node["ttl_left_secs"] = None if entry is None else round(entry.deadline - now, 3)
            node["last_report_secs_ago"] = (None if entry is None or entry.last_report is None
                                            else round(now - entry.last_report, 3))
        return nodes

    def leases(self) -> list[tuple[dict[str, Any], float | None]]:
        """Every worker's lease as its ``WorkerLease`` wire dict (the directory's own
        checked data: no object per lease for a listing of the whole fleet) and its
        seconds left on this leader (None elsewhere)."""
        ids = self.read(lambda d: d.node_ids(kind="worker"))
        rows = [r for r in self.read_each(ids, lambda d, n: d.lease_data(n)) if r is not None]
        leader = self.leader if self.is_leader() else None
        now = self.lease_now()
        return [(r, None if leader is None else leader.leases.time_left(r["node_id"], now))
                for r in rows]

    def metrics(self) -> dict[str, float]:
        status = self.raft.status()
        counts = self.read(lambda d: (d.node_count("worker", "ready"),
                                      d.node_count("worker", "down"),
                                      d.node_count("worker", "draining"), d.revision))
        return {
            "raftdir_raft_term": status.get("term", 0),
            "raftdir_raft_is_leader": 1.0 if self.is_leader() else 0.0,
            "raftdir_raft_commit_index": status.get("commit_index", 0),
            "raftdir_raft_last_applied": status.get("last_applied", 0),
            "raftdir_workers_ready": counts[0],
            "raftdir_workers_down": counts[1],
            "raftdir_workers_draining": counts[2],
            "raftdir_assignment_revision": counts[3],
            "raftdir_heartbeats_received_total": self.heartbeats,
            "raftdir_lease_expiries_total": self.leader.expired_total if self.leader else 0,
            "raftdir_parked_polls": self.notifier.waiting,
            # read-only replicas this peer hears from (on the leader: every connected one)
            "raftdir_replicas": len(self.replicas()),
            **self._replica_metrics(),
        }

    def _replica_metrics(self) -> dict[str, float]:
        lag = self.replica_lag()
        if lag is None:
            return {}
        return {"raftdir_replica": 1,
                "raftdir_replica_lag_seconds": lag[0],
                "raftdir_replica_lag_entries": -1 if lag[1] is None else lag[1],
                "raftdir_replica_behind": 1 if lag[0] > self.settings.replica_max_lag else 0}


@dataclass
class _Membership:
    """What the leader knows of the peers: the Raft members' addresses, the configured
    ``id -> raft_addr``, and the directory's server records by id."""

    members: set[str]
    configured: dict[int, str]
    servers: dict[int, dict[str, Any]]

    def raft_addr_of(self, peer_id: int) -> str | None:
        record = self.servers.get(peer_id)
        label = ((record or {}).get("profile") or {}).get("labels", {}).get(RAFT_ADDR_LABEL)
        return label or self.configured.get(peer_id)

    def live(self, peer_id: int) -> bool:
        """A server whose record is not down and whose Raft address is a member."""
        record = self.servers.get(peer_id)
        return record is not None and record["state"] != "down" \
            and self.raft_addr_of(peer_id) in self.members

    def owner(self, raft_addr: str) -> int | None:
        """The id that a member address belongs to: a live peer's first, else any known."""
        ids = [i for i in sorted(set(self.servers) | set(self.configured))
               if self.raft_addr_of(i) == raft_addr]
        live = [i for i in ids if self.live(i)]
        return (live or ids or [None])[0] if raft_addr in self.members else None

    def live_api_addrs(self) -> dict[str, int]:
        return {r["profile"]["api_addr"]: i for i, r in self.servers.items() if self.live(i)}


def _stamp(cmd: Command, now_ms: int) -> Command:
    return cmd if cmd.ts_ms else replace(cmd, ts_ms=now_ms)
