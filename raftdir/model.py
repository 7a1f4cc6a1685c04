"""Every wire and config type of raftdir (wire-types.md §2-§21), as frozen dataclasses.

Owns: the shapes ZLayer's ``zlayer-types`` cluster module exchanges, their field order and
presence rules (declared with ``wire(...)`` and executed by ``raftdir.codec``), and the small
behaviours that belong to a type: ``AdaptiveTtlConfig.compute_ttl``,
``WorkerLease.is_expired``, the legacy/Phase-2 views of ``InternalScaleRequest`` and
container naming. Pure; callable from any thread. Imports only ``raftdir.codec`` and
``raftdir.errors``.

Unknown keys follow ZLayer's serde attributes (``crates/zlayer-types/src/cluster.rs``): the
cluster config (``ClusterMode``) and the two peer types refuse them, as ZLayer's
``deny_unknown_fields`` does; every worker, scale and aggregation record skips them
(``IGNORE_UNKNOWN_KEYS``), so the next field ZLayer adds does not make raftdir refuse the
record. Open strings stay open: a container ``state``, a profile's ``os`` and ``arch`` are
kept as received, whatever their value (``CONTAINER_STATES``, ``KNOWN_OS`` and ``KNOWN_ARCH``
are the values known today, not a check).

Lists are tuples (the objects are frozen); maps are plain dicts and must not be mutated.
Cross-field rules of a ClusterMode (wire-types.md §2.6) live in ``ClusterMode.validate()``;
the decode-time checks of §18/§19 run in ``check()`` on every decode.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

from .codec import (
    ADDR, ANY_MAP, BOOL, ENDPOINT, F64, I64, IP, NONEMPTY_STR, SECONDS, SOCKET_ADDR, STR,
    STR_MAP, U32, U64, EnumOf, ListOf, Nested, Presence, Wire, _fail, join_path, parse_addr,
    reachable_addr, wire,
)

__all__ = [
    "WorkerTierRole", "RaftPeer", "StaticPeer",
    "ClusterMode", "SingleNodeMode", "RaftMode", "StaticMode", "WorkerTierMode",
    "AdaptiveTtlConfig", "WorkerProfile", "WorkerLease",
    "WorkerRegisterRequest", "WorkerRegisterResponse",
    "WorkerPollRequest", "WorkerPollResponse",
    "WorkerAssignmentEvent", "SetEvent", "DeleteEvent", "DrainEvent", "UndrainEvent",
    "WorkerStatusReport", "WorkerContainerStatus", "WorkerResourceUsage", "WorkerStatusAck",
    "InternalScaleRequest", "ScaleAssignment", "NodeServiceState", "ClusterContainerSummary",
    "container_name", "WIRE_TYPES", "CONTAINER_STATES", "KNOWN_OS", "KNOWN_ARCH",
    "NO_API_ADDR", "U32_MAX", "MAX_LEGACY_REPLICAS",
]

U32_MAX = 2**32 - 1
#: The most replicas a legacy-shape scale order may expand to (the u32 field would
#: otherwise let one request allocate billions of indices).
MAX_LEGACY_REPLICAS = 100_000
OPT = Presence.OPTIONAL_OMITTED
OPT_NULL = Presence.OPTIONAL_NULL
DEF = Presence.DEFAULT
DEF_OMIT = Presence.DEFAULT_OMITTED

#: The container states ZLayer writes today: its agent's ``ContainerState::as_str``
#: (``crates/zlayer-agent/src/runtime.rs``: pending, initializing, running, stopping, exited,
#: failed) and the gRPC phase names (``crates/zlayer-cluster-rpc/src/convert.rs``: unknown,
#: starting, degraded, stopped; it also reads creating and created). Any other string is
#: kept as received; only ``running`` counts as running.
CONTAINER_STATES = ("pending", "initializing", "creating", "created", "starting", "running",
                    "degraded", "stopping", "stopped", "exited", "failed", "unknown")
#: Rust's ``std::env::consts::OS`` values, which ZLayer's worker sends as is, plus ``darwin``
#: (raftdir's and ZLayer's static peers' name for macOS). Others are kept as received.
KNOWN_OS = ("linux", "windows", "macos", "darwin", "android", "ios", "freebsd", "dragonfly",
            "netbsd", "openbsd", "solaris", "illumos", "aix", "haiku", "hurd", "fuchsia",
            "redox", "nto", "vxworks", "espidf", "horizon", "emscripten", "wasi", "uefi")
#: Rust's ``std::env::consts::ARCH`` values; others are kept as received.
KNOWN_ARCH = ("x86", "x86_64", "arm", "aarch64", "m68k", "mips", "mips32r6", "mips64",
              "mips64r6", "csky", "powerpc", "powerpc64", "riscv32", "riscv64", "s390x",
              "sparc", "sparc64", "hexagon", "loongarch32", "loongarch64")
#: The API address ZLayer stores for a worker that registered over gRPC: no reachable API.
NO_API_ADDR = "0.0.0.0:0"

frozen = dataclass(frozen=True, kw_only=True)


def container_name(service: str, role: str, index: int) -> str:
    """The name of the container for one (role, index) of a service: ``db-read-2``."""
    return f"{service}-{role}-{index}"


# ---------------------------------------------------------------------------- §3-§5

class WorkerTierRole(str, enum.Enum):
    """What role a node plays in a worker-tier cluster (§3)."""

    SERVER = "server"
    WORKER = "worker"


@frozen
class RaftPeer(Wire):
    """A Raft peer's identity and reachability (§4). raftdir's one extension: an entry with
    ``replica: true`` is a read-only replica (PySyncObj's ``SyncObj(None, partners)``): it
    receives the log and serves reads but never votes, so it has no ``raft_addr`` (it binds
    nothing; it dials the voters). Every other entry needs one, as in ZLayer."""

    id: int = wire(U64)
    raft_addr: str | None = wire(ADDR, OPT)
    api_addr: str = wire(ADDR)
    replica: bool = wire(BOOL, DEF_OMIT, False)

    def check(self, path: str) -> None:
        if self.replica and self.raft_addr is not None:
            raise _fail(join_path(path, "raft_addr"),
                        "a replica has no Raft address (it never votes, binds nothing and "
                        "dials the voters); remove raft_addr or replica: true")
        if not self.replica and self.raft_addr is None:
            raise _fail(join_path(path, "raft_addr"), "required field missing")


@frozen
class StaticPeer(Wire):
    """A static-cluster peer's identity, reachability and labels (§5)."""

    id: int = wire(U64)
    api_addr: str = wire(ADDR)
    os: str = wire(STR, DEF, "linux")
    labels: dict = wire(STR_MAP, DEF_OMIT, dict)


# ---------------------------------------------------------------------------- §6

@frozen
class AdaptiveTtlConfig(Wire):
    """Adaptive-TTL heartbeat configuration (§6): Nomad's design, where the leader caps the
    cluster-wide heartbeat rate by stretching each worker's TTL as the cluster grows."""

    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    min_ttl_secs: int = wire(U32, default=10)
    max_ttl_secs: int = wire(U32, default=600)
    grace_secs: int = wire(U32, default=10)
    max_heartbeats_per_second: int = wire(U32, default=50)
    failover_ttl_secs: int = wire(U32, default=300)

    def check(self, path: str) -> None:
        if self.min_ttl_secs > self.max_ttl_secs:
            raise _fail(join_path(path, "min_ttl_secs"),
                        f"{self.min_ttl_secs} is above max_ttl_secs {self.max_ttl_secs}")

    def compute_ttl(self, live_workers: int) -> int:
        """The TTL to hand out when ``live_workers`` workers are alive: ceil(n / rate),
        clamped to [min, max]; ``max_ttl_secs`` when the rate is 0."""
        if self.max_heartbeats_per_second == 0:
            return self.max_ttl_secs
        raw = -(-live_workers // self.max_heartbeats_per_second)
        return max(self.min_ttl_secs, min(raw, self.max_ttl_secs))


# ---------------------------------------------------------------------------- §2 ClusterMode

class ClusterMode(Wire):
    """How the daemon takes part in cluster membership: one of ``SingleNodeMode``,
    ``RaftMode``, ``StaticMode``, ``WorkerTierMode``, tagged by ``mode`` (§2)."""

    TAG_KEY: ClassVar[str | None] = "mode"

    def adaptive_ttl_config(self) -> AdaptiveTtlConfig | None:
        return None

    def is_worker_tier_server(self) -> bool:
        return False

    def is_worker_tier_worker(self) -> bool:
        return False

    def validate(self) -> list[str]:
        """Run the cross-field rules of §2.6. Raises ``BadRequest`` at the first broken rule;
        returns warnings (fields accepted but ignored)."""
        return []


def _check_peers(node_id: int | None, peers: tuple, addr_fields: tuple[str, ...]) -> None:
    """§2.6 rules shared by raft, static and worker-tier servers."""
    if not peers:
        # what `zlayer node init` writes when its advertise address is a host name: ZLayer
        # rebuilds the list from its Raft state; raftdir listens where this entry says
        raise _fail("peers", f"empty; list this node (id {node_id}) with the "
                             f"{' and '.join(addr_fields)} it listens on, and the peers it "
                             "joins (host names are accepted)")
    if not any(p.id == node_id for p in peers):
        raise _fail("node_id", f"{node_id} is not the id of any entry in peers")
    if not any(not getattr(p, "replica", False) for p in peers):
        raise _fail("peers", "every entry is a replica; a cluster needs voters (entries "
                             "with a raft_addr) for its replicas to follow")
    seen_ids: set[int] = set()
    seen_addrs: dict[tuple[str, int], str] = {}
    for i, peer in enumerate(peers):
        if peer.id in seen_ids:
            raise _fail(f"peers[{i}].id", f"duplicate peer id {peer.id}")
        seen_ids.add(peer.id)
        for name in addr_fields:
            path = f"peers[{i}].{name}"
            value = getattr(peer, name)
            if value is None:   # a replica's raft_addr
                continue
            host, port = parse_addr(value)
            if host in ("0.0.0.0", "::"):
                raise _fail(path, f"{value!r} uses the unspecified host; other nodes must be "
                                  "able to dial it")
            if (host, port) in seen_addrs:
                raise _fail(path, f"{value!r} is already used by {seen_addrs[(host, port)]}")
            seen_addrs[(host, port)] = path


@frozen
class SingleNodeMode(ClusterMode):
    """No peers, no consensus network; the node is always leader (§2.1)."""

    TAG: ClassVar[str | None] = "single-node"


@frozen
class RaftMode(ClusterMode):
    """Every peer runs the replicated directory and is a node itself (§2.2)."""

    TAG: ClassVar[str | None] = "raft"
    node_id: int = wire(U64)
    peers: tuple = wire(ListOf(Nested(RaftPeer)))

    def validate(self) -> list[str]:
        _check_peers(self.node_id, self.peers, ("raft_addr", "api_addr"))
        return []


@frozen
class StaticMode(ClusterMode):
    """No consensus: peers probe each other; the lowest reachable id leads (§2.3)."""

    TAG: ClassVar[str | None] = "static"
    node_id: int = wire(U64)
    peers: tuple = wire(ListOf(Nested(StaticPeer)))
    heartbeat_interval: int = wire(SECONDS, DEF, 5)
    failure_threshold: int = wire(SECONDS, DEF, 15)

    def validate(self) -> list[str]:
        _check_peers(self.node_id, self.peers, ("api_addr",))
        if not 1 <= self.heartbeat_interval < self.failure_threshold:
            raise _fail("heartbeat_interval",
                        f"{self.heartbeat_interval} must be at least 1 and below "
                        f"failure_threshold ({self.failure_threshold})")
        return []


def _addr_key(addr: str) -> tuple[str, int]:
    return parse_addr(addr)


_SERVER = frozenset({"server"})
_WORKER = frozenset({"worker"})


@frozen
class WorkerTierMode(ClusterMode):
    """Servers run the replicated directory and the worker API; workers register, report
    and poll (§2.4)."""

    TAG: ClassVar[str | None] = "worker-tier"
    role: WorkerTierRole = wire(EnumOf(WorkerTierRole))
    node_id: int | None = wire(U64, OPT, roles=_SERVER)
    peers: tuple = wire(ListOf(Nested(RaftPeer)), DEF_OMIT, tuple, roles=_SERVER)
    worker_grpc_addr: str = wire(ADDR, DEF_OMIT, "0.0.0.0:3670", roles=_SERVER,
                                 compare=_addr_key)
    servers: tuple = wire(ListOf(ENDPOINT), DEF_OMIT, tuple, roles=_WORKER)
    token_file: str | None = wire(STR, OPT, roles=_WORKER)
    identity_dir: str | None = wire(STR, OPT, roles=_WORKER)
    worker_ca_dir: str | None = wire(STR, OPT, roles=_SERVER)
    heartbeat_min_ttl: int = wire(SECONDS, DEF, 10)
    heartbeat_max_ttl: int = wire(SECONDS, DEF, 600)
    heartbeat_grace: int = wire(SECONDS, DEF, 10)
    max_heartbeats_per_second: int = wire(U32, DEF, 50, roles=_SERVER)
    failover_heartbeat_ttl: int = wire(SECONDS, DEF, 300, roles=_SERVER)
    labels: dict = wire(STR_MAP, DEF_OMIT, dict)

    def adaptive_ttl_config(self) -> AdaptiveTtlConfig:
        def sat(v: int) -> int:
            return min(v, U32_MAX)
        return AdaptiveTtlConfig(
            min_ttl_secs=sat(self.heartbeat_min_ttl),
            max_ttl_secs=sat(self.heartbeat_max_ttl),
            grace_secs=sat(self.heartbeat_grace),
            max_heartbeats_per_second=self.max_heartbeats_per_second,
            failover_ttl_secs=sat(self.failover_heartbeat_ttl),
        )

    def is_worker_tier_server(self) -> bool:
        return self.role is WorkerTierRole.SERVER

    def is_worker_tier_worker(self) -> bool:
        return self.role is WorkerTierRole.WORKER

    def validate(self) -> list[str]:
        if self.heartbeat_min_ttl < 1 or self.heartbeat_min_ttl > self.heartbeat_max_ttl:
            raise _fail("heartbeat_min_ttl",
                        f"{self.heartbeat_min_ttl} must be at least 1 and at most "
                        f"heartbeat_max_ttl ({self.heartbeat_max_ttl})")
        if self.is_worker_tier_server():
            if self.node_id is None:
                raise _fail("node_id", "required for a worker-tier server")
            if not self.peers:
                raise _fail("peers", "a worker-tier server needs its control-plane peers")
            _check_peers(self.node_id, self.peers, ("raft_addr", "api_addr"))
        elif not self.servers:
            raise _fail("servers", "a worker-tier worker needs at least one server")
        return self.other_role_fields()

    def other_role_fields(self) -> list[str]:
        """Warnings for fields set that only the other role uses (accepted and ignored)."""
        from .codec import _field_default, _wire_fields
        warnings = []
        for f in _wire_fields(type(self)):
            roles = f.metadata["roles"]
            if roles is None or self.role.value in roles:
                continue
            value = getattr(self, f.name)
            compare = f.metadata["compare"] or (lambda v: v)
            default = _field_default(f)
            if value is not None and value != () and compare(value) != compare(default):
                warnings.append(f"{f.name}: only used by a {next(iter(roles))}; ignored for "
                                f"role {self.role.value}")
        return warnings


# ---------------------------------------------------------------------------- §7-§8

@frozen
class WorkerProfile(Wire):
    """What a worker says about itself when it registers (§7)."""

    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    api_addr: str = wire(SOCKET_ADDR)
    os: str = wire(STR)
    arch: str = wire(STR)
    labels: dict = wire(STR_MAP, DEF_OMIT, dict)
    cpu_total: int = wire(U32, DEF, 0)
    memory_total_bytes: int = wire(U64, DEF, 0)

    @property
    def reachable_api_addr(self) -> str | None:
        """``api_addr`` when it can be dialled; None for ZLayer's ``0.0.0.0:0`` (a worker
        registered over gRPC) or any other unspecified host or port 0."""
        return reachable_addr(self.api_addr)

    @property
    def placement_os(self) -> str:
        """The OS placement matches on: ZLayer's ``macos`` counts as ``darwin``."""
        return "darwin" if self.os == "macos" else self.os


@frozen
class WorkerLease(Wire):
    """A worker's lease in the directory: the record that decides whether it is alive (§8)."""

    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    node_id: int = wire(U64)
    profile: WorkerProfile = wire(Nested(WorkerProfile))
    acquired_unix_secs: int = wire(I64)
    renewed_unix_secs: int = wire(I64)
    ttl_secs: int = wire(U32)
    grace_secs: int = wire(U32)

    def is_expired(self, now_unix_secs: int, grace_secs: int | None = None) -> bool:
        """True when more than ``ttl + grace`` seconds passed since the last renewal (strictly).
        A clock behind the renewal counts as no time passed. ``grace_secs`` defaults to the
        lease's own; pass a larger one to stretch leases (a leader change)."""
        grace = self.grace_secs if grace_secs is None else grace_secs
        elapsed = max(0, now_unix_secs - self.renewed_unix_secs)
        return elapsed > self.ttl_secs + grace


# ---------------------------------------------------------------------------- §19, §13

@frozen
class ScaleAssignment(Wire):
    """One role group of a scale order: the indices of that role a node runs (§19)."""

    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    role: str = wire(NONEMPTY_STR)
    indices: tuple = wire(ListOf(U32, ascending=True))

    def check(self, path: str) -> None:
        seen: set[int] = set()
        for j, index in enumerate(self.indices):
            if index in seen:
                raise _fail(join_path(path, f"indices[{j}]"), f"duplicate index {index}")
            seen.add(index)

    def container_names(self, service: str) -> list[str]:
        return [container_name(service, self.role, i) for i in sorted(self.indices)]


def _check_groups(assignments: tuple, path: str) -> None:
    roles: set[str] = set()
    for i, group in enumerate(assignments):
        if group.role in roles:
            raise _fail(join_path(path, f"assignments[{i}].role"),
                        f"duplicate role {group.role!r}")
        roles.add(group.role)


class WorkerAssignmentEvent(Wire):
    """One change to a worker's assignment set, tagged by ``kind``: ``SetEvent``,
    ``DeleteEvent``, ``DrainEvent`` (§13) or ``UndrainEvent`` (raftdir's)."""

    TAG_KEY: ClassVar[str | None] = "kind"
    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True


@frozen
class SetEvent(WorkerAssignmentEvent):
    """The worker's complete share of ``service``: run exactly these containers."""

    TAG: ClassVar[str | None] = "set"
    service: str = wire(NONEMPTY_STR)
    assignments: tuple = wire(ListOf(Nested(ScaleAssignment)))
    revision: int = wire(U64)
    spec: dict | None = wire(ANY_MAP, OPT)

    def check(self, path: str) -> None:
        _check_groups(self.assignments, path)


@frozen
class DeleteEvent(WorkerAssignmentEvent):
    """Stop every container of ``service`` and forget it."""

    TAG: ClassVar[str | None] = "delete"
    service: str = wire(STR)
    revision: int = wire(U64)


@frozen
class DrainEvent(WorkerAssignmentEvent):
    """Take no new work; exit once the remaining containers have stopped."""

    TAG: ClassVar[str | None] = "drain"
    revision: int = wire(U64)


@frozen
class UndrainEvent(WorkerAssignmentEvent):
    """An operator undid the drain (``raftdir drain --undo``): take work again and do not
    exit. A raftdir extension: ZLayer's cluster module has no such event."""

    TAG: ClassVar[str | None] = "undrain"
    revision: int = wire(U64)


# ---------------------------------------------------------------------------- §9-§12

@frozen
class WorkerRegisterRequest(Wire):
    """Bootstrap join request from a new worker (§9)."""

    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    token: str = wire(STR)
    desired_node_id: int | None = wire(U64, OPT)
    profile: WorkerProfile = wire(Nested(WorkerProfile))


@frozen
class WorkerRegisterResponse(Wire):
    """Successful registration (§10)."""

    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    node_id: int = wire(U64)
    cluster_id: str = wire(STR)
    heartbeat_ttl_secs: int = wire(U32)
    heartbeat_grace_secs: int = wire(U32)
    internal_token: str = wire(STR)
    servers: tuple = wire(ListOf(ENDPOINT), DEF_OMIT, tuple)


@frozen
class WorkerPollRequest(Wire):
    """Long-poll for assignment events newer than ``last_revision`` (§11)."""

    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    node_id: int = wire(U64)
    last_revision: int = wire(U64, DEF, 0)
    max_wait_secs: int = wire(U32, DEF, 30)


@frozen
class WorkerPollResponse(Wire):
    """Events newer than the poll's ``last_revision``; ``full`` means the complete set (§12).
    ``behind`` (raftdir extension): the poll's ``last_revision`` was above this server's
    revision even after it caught up with the leader, so it is not of this cluster's
    history; the answer is then the complete set (``full``) at the server's revision."""

    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    revision: int = wire(U64)
    events: tuple = wire(ListOf(Nested(WorkerAssignmentEvent)), DEF_OMIT, tuple)
    full: bool = wire(BOOL, DEF_OMIT, False)
    behind: bool = wire(BOOL, DEF_OMIT, False)


# ---------------------------------------------------------------------------- §14-§17

@frozen
class WorkerContainerStatus(Wire):
    """One container in a worker's status report (§15)."""

    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    service: str = wire(STR)
    role: str = wire(STR)
    replica: int = wire(U32)
    state: str = wire(STR)
    overlay_ip: str | None = wire(IP, OPT)

    @property
    def name(self) -> str:
        return container_name(self.service, self.role, self.replica)


@frozen
class WorkerResourceUsage(Wire):
    """A worker's current resource use (§16)."""

    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    cpu_used: float = wire(F64)
    memory_used_bytes: int = wire(U64)
    gpu_used: int = wire(U32)


@frozen
class WorkerStatusReport(Wire):
    """Periodic status from a worker; also renews its lease (§14)."""

    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    node_id: int = wire(U64)
    ts_ns: int = wire(U64)
    containers: tuple = wire(ListOf(Nested(WorkerContainerStatus)), DEF, tuple)
    resources: WorkerResourceUsage = wire(Nested(WorkerResourceUsage))


@frozen
class WorkerStatusAck(Wire):
    """Answer to a status report: when to report next, and who serves (§17)."""

    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    next_ttl_secs: int = wire(U32)
    servers: tuple = wire(ListOf(ENDPOINT), DEF_OMIT, tuple)
    leader: str | None = wire(ENDPOINT, OPT)


# ---------------------------------------------------------------------------- §18, §20, §21

@frozen
class InternalScaleRequest(Wire):
    """A scale order for one service, sent to one node (§18). Legacy shape: ``replicas``
    only (one ``default`` group, indices 0..replicas-1). Phase-2 shape: ``assignments``,
    with ``replicas`` the number of indices over all groups."""

    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    service: str = wire(NONEMPTY_STR)
    replicas: int = wire(U32, DEF, 0)
    assignments: tuple = wire(ListOf(Nested(ScaleAssignment)), DEF_OMIT, tuple)
    spec: dict | None = wire(ANY_MAP, OPT)

    def check(self, path: str) -> None:
        if self.assignments:
            total = sum(len(g.indices) for g in self.assignments)
            if self.replicas != total:
                raise _fail(join_path(path, "replicas"),
                            f"{self.replicas} does not match the {total} indices in "
                            "assignments")
            _check_groups(self.assignments, path)

    @classmethod
    def legacy(cls, service: str, replicas: int, spec: dict | None = None
               ) -> "InternalScaleRequest":
        return cls(service=service, replicas=replicas, spec=spec)

    @classmethod
    def phase2(cls, service: str, assignments: Any, spec: dict | None = None
               ) -> "InternalScaleRequest":
        groups = tuple(a if isinstance(a, ScaleAssignment) else
                       ScaleAssignment(role=a[0], indices=tuple(a[1])) for a in assignments)
        return cls(service=service, replicas=sum(len(g.indices) for g in groups),
                   assignments=groups, spec=spec)

    @property
    def is_phase2(self) -> bool:
        return bool(self.assignments)

    def groups(self) -> tuple[ScaleAssignment, ...]:
        """The role groups this order stands for; the legacy shape is one ``default``
        group holding indices 0..replicas-1 (none when replicas is 0)."""
        if self.assignments:
            return self.assignments
        if self.replicas == 0:
            return ()
        if self.replicas > MAX_LEGACY_REPLICAS:
            raise _fail("replicas", f"{self.replicas} is above the limit of "
                                    f"{MAX_LEGACY_REPLICAS} replicas per service")
        return (ScaleAssignment(role="default", indices=tuple(range(self.replicas))),)

    def container_names(self) -> list[str]:
        return [n for g in self.groups() for n in g.container_names(self.service)]


@frozen
class ClusterContainerSummary(Wire):
    """A container as listed across the cluster, tagged with its node (§21)."""

    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    node_id: int = wire(U64)
    id: str = wire(STR)
    service: str = wire(STR)
    replica: int = wire(U32)
    image: str = wire(STR)
    state: str = wire(STR)
    pid: int | None = wire(U32, OPT_NULL)
    overlay_ip: str | None = wire(STR, OPT_NULL)


@frozen
class NodeServiceState(Wire):
    """One node's view of one service (§20)."""

    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    node_id: int = wire(U64)
    running: int = wire(U32)
    healthy: bool = wire(BOOL)
    containers: tuple = wire(ListOf(Nested(ClusterContainerSummary)))


def _all_concrete(base: type) -> Iterator[type]:
    for sub in base.__subclasses__():
        if getattr(sub, "__dataclass_fields__", None) is not None:
            yield sub
        yield from _all_concrete(sub)


#: Every concrete wire type the model defines (tests check each has a strategy).
WIRE_TYPES: tuple[type, ...] = tuple(dict.fromkeys(_all_concrete(Wire)))
