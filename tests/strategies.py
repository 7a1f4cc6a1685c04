"""Hypothesis strategies producing VALID objects of every concrete wire type (wire-types.md).

``STRATEGIES`` maps each class of ``raftdir.model.WIRE_TYPES`` to a strategy; the test
``test_every_wire_type_has_a_strategy`` fails when the model grows a type without one.

Every value is already in the form the decoder produces (canonical IP literals, lowercase
DNS names, ascending unique indices, tuples for lists, finite floats), so that
``decode(encode(x)) == x`` holds exactly. ClusterMode strategies also satisfy §2.6, so their
``validate()`` passes without warnings.
"""

from __future__ import annotations

import dataclasses

from hypothesis import strategies as st

from raftdir.model import (
    CONTAINER_STATES, KNOWN_ARCH, KNOWN_OS, NO_API_ADDR, AdaptiveTtlConfig,
    ClusterContainerSummary, DeleteEvent, DrainEvent, UndrainEvent,
    InternalScaleRequest, NodeServiceState, RaftMode, RaftPeer, ScaleAssignment, SetEvent,
    SingleNodeMode, StaticMode, StaticPeer, WorkerContainerStatus, WorkerLease,
    WorkerPollRequest, WorkerPollResponse, WorkerProfile, WorkerRegisterRequest,
    WorkerRegisterResponse, WorkerResourceUsage, WorkerStatusAck, WorkerStatusReport,
    WorkerTierMode, WorkerTierRole,
)

__all__ = ["STRATEGIES", "addrs", "endpoints", "ips", "labels", "specs"]

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

u32 = st.integers(0, U32_MAX)
u64 = st.integers(0, U64_MAX)
i64 = st.integers(-(2**63), 2**63 - 1)
seconds = u64
text = st.text(max_size=12)
nonempty_text = st.text(min_size=1, max_size=12)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
labels = st.dictionaries(text, text, max_size=4)

# ---------------------------------------------------------------------------- addresses

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)          # str() is the compressed lowercase form
ips = st.one_of(ipv4, ipv6)

_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?", fullmatch=True)
_top = st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)   # has a letter
dns_names = st.builds(lambda parts, top: ".".join([*parts, top]),
                      st.lists(_label, max_size=3), _top)
ports = st.integers(1, 65535)
hosts = st.one_of(ipv4, ipv6.map(lambda h: f"[{h}]"), dns_names)
addrs = st.builds(lambda h, p: f"{h}:{p}", hosts, ports)


def _unspecified(addr: str) -> bool:
    return addr.rpartition(":")[0] in ("0.0.0.0", "[::]")


peer_addrs = addrs.filter(lambda a: not _unspecified(a))
endpoints = st.one_of(addrs, addrs.map("http://{}".format), addrs.map("https://{}".format))

# ---------------------------------------------------------------------------- opaque spec

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), U64_MAX),
                         finite_floats, text)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(text, inner, max_size=3)),
    max_leaves=8)
specs = st.dictionaries(text, json_values, max_size=4)
opt_specs = st.one_of(st.none(), specs)

# ---------------------------------------------------------------------------- §4-§6


@st.composite
def _peer_set(draw, make, addr_fields: int):
    """(node_id, peers): unique ids including node_id, pairwise distinct dialable addrs."""
    ids = draw(st.lists(u64, min_size=1, max_size=5, unique=True))
    all_addrs = draw(st.lists(peer_addrs, min_size=len(ids) * addr_fields,
                              max_size=len(ids) * addr_fields, unique=True))
    peers = tuple(make(pid, all_addrs[i * addr_fields:(i + 1) * addr_fields], draw)
                  for i, pid in enumerate(ids))
    return draw(st.sampled_from(ids)), peers


def _raft_peer(pid, a, draw):
    return RaftPeer(id=pid, raft_addr=a[0], api_addr=a[1])


def _static_peer(pid, a, draw):
    return StaticPeer(id=pid, api_addr=a[0], os=draw(st.sampled_from(["linux", "windows",
                                                                       "darwin"])),
                      labels=draw(labels))


raft_peers = st.builds(RaftPeer, id=u64, raft_addr=addrs, api_addr=addrs)
static_peers = st.builds(StaticPeer, id=u64, api_addr=addrs, os=text, labels=labels)


@st.composite
def adaptive_ttl_configs(draw):
    lo = draw(u32)
    return AdaptiveTtlConfig(min_ttl_secs=lo, max_ttl_secs=draw(st.integers(lo, U32_MAX)),
                             grace_secs=draw(u32), max_heartbeats_per_second=draw(u32),
                             failover_ttl_secs=draw(u32))


# ---------------------------------------------------------------------------- §2 ClusterMode


@st.composite
def raft_modes(draw):
    node_id, peers = draw(_peer_set(_raft_peer, 2))
    return RaftMode(node_id=node_id, peers=peers)


@st.composite
def static_modes(draw):
    node_id, peers = draw(_peer_set(_static_peer, 1))
    interval = draw(st.integers(1, 2**40))
    return StaticMode(node_id=node_id, peers=peers, heartbeat_interval=interval,
                      failure_threshold=draw(st.integers(interval + 1, U64_MAX)))


@st.composite
def worker_tier_modes(draw):
    lo = draw(st.integers(1, 2**40))
    common = dict(heartbeat_min_ttl=lo, heartbeat_max_ttl=draw(st.integers(lo, U64_MAX)),
                  heartbeat_grace=draw(seconds), labels=draw(labels))
    if draw(st.booleans()):
        node_id, peers = draw(_peer_set(_raft_peer, 2))
        return WorkerTierMode(
            role=WorkerTierRole.SERVER, node_id=node_id, peers=peers,
            worker_grpc_addr=draw(st.one_of(st.just("0.0.0.0:3670"), addrs)),
            worker_ca_dir=draw(st.one_of(st.none(), nonempty_text)),
            max_heartbeats_per_second=draw(u32), failover_heartbeat_ttl=draw(seconds),
            **common)
    return WorkerTierMode(
        role=WorkerTierRole.WORKER,
        servers=tuple(draw(st.lists(endpoints, min_size=1, max_size=3))),
        token_file=draw(st.one_of(st.none(), nonempty_text)),
        identity_dir=draw(st.one_of(st.none(), nonempty_text)),
        **common)


# ---------------------------------------------------------------------------- §7-§21

# open strings: the values known today, and anything else (kept as received)
os_names = st.one_of(st.sampled_from(KNOWN_OS), text)
arch_names = st.one_of(st.sampled_from(KNOWN_ARCH), text)
container_states = st.one_of(st.sampled_from(CONTAINER_STATES), text)

profiles = st.builds(WorkerProfile, api_addr=st.one_of(addrs, st.just(NO_API_ADDR)),
                     os=os_names, arch=arch_names, labels=labels,
                     cpu_total=u32, memory_total_bytes=u64)

scale_assignments = st.builds(
    ScaleAssignment, role=nonempty_text,
    indices=st.lists(u32, max_size=5, unique=True).map(lambda xs: tuple(sorted(xs))))

assignment_groups = st.lists(scale_assignments, max_size=4,
                             unique_by=lambda a: a.role).map(tuple)

set_events = st.builds(SetEvent, service=nonempty_text, assignments=assignment_groups,
                       revision=u64, spec=opt_specs)
delete_events = st.builds(DeleteEvent, service=text, revision=u64)
drain_events = st.builds(DrainEvent, revision=u64)
undrain_events = st.builds(UndrainEvent, revision=u64)
events = st.one_of(set_events, delete_events, drain_events, undrain_events)


@st.composite
def poll_responses(draw):
    """Events ascending by revision, the response revision at least as high as each."""
    evs = draw(st.lists(events, max_size=4))
    revs = sorted(draw(st.lists(u64, min_size=len(evs), max_size=len(evs))))
    evs = tuple(dataclasses.replace(e, revision=r) for e, r in zip(evs, revs))
    top = draw(st.integers(revs[-1] if revs else 0, U64_MAX))
    return WorkerPollResponse(revision=top, events=evs, full=draw(st.booleans()),
                              behind=draw(st.booleans()))


@st.composite
def scale_requests(draw):
    if draw(st.booleans()):
        return InternalScaleRequest.legacy(draw(nonempty_text), draw(u32), draw(opt_specs))
    groups = draw(st.lists(scale_assignments, min_size=1, max_size=4,
                           unique_by=lambda a: a.role))
    req = InternalScaleRequest.phase2(draw(nonempty_text), groups, draw(opt_specs))
    assert req.replicas == sum(len(g.indices) for g in req.assignments)
    return req


container_statuses = st.builds(WorkerContainerStatus, service=text, role=text, replica=u32,
                               state=container_states,
                               overlay_ip=st.one_of(st.none(), ips))
resource_usages = st.builds(WorkerResourceUsage, cpu_used=finite_floats,
                            memory_used_bytes=u64, gpu_used=u32)
container_summaries = st.builds(ClusterContainerSummary, node_id=u64, id=text, service=text,
                                replica=u32, image=text,
                                state=container_states,
                                pid=st.one_of(st.none(), u32),
                                overlay_ip=st.one_of(st.none(), text))

STRATEGIES: dict[type, st.SearchStrategy] = {
    RaftPeer: raft_peers,
    StaticPeer: static_peers,
    AdaptiveTtlConfig: adaptive_ttl_configs(),
    SingleNodeMode: st.just(SingleNodeMode()),
    RaftMode: raft_modes(),
    StaticMode: static_modes(),
    WorkerTierMode: worker_tier_modes(),
    WorkerProfile: profiles,
    WorkerLease: st.builds(WorkerLease, node_id=u64, profile=profiles,
                           acquired_unix_secs=i64, renewed_unix_secs=i64, ttl_secs=u32,
                           grace_secs=u32),
    ScaleAssignment: scale_assignments,
    SetEvent: set_events,
    DeleteEvent: delete_events,
    DrainEvent: drain_events,
    UndrainEvent: undrain_events,
    WorkerRegisterRequest: st.builds(WorkerRegisterRequest, token=text,
                                     desired_node_id=st.one_of(st.none(), u64),
                                     profile=profiles),
    WorkerRegisterResponse: st.builds(WorkerRegisterResponse, node_id=u64, cluster_id=text,
                                      heartbeat_ttl_secs=u32, heartbeat_grace_secs=u32,
                                      internal_token=text,
                                      servers=st.lists(endpoints, max_size=3).map(tuple)),
    WorkerPollRequest: st.builds(WorkerPollRequest, node_id=u64, last_revision=u64,
                                 max_wait_secs=u32),
    WorkerPollResponse: poll_responses(),
    WorkerContainerStatus: container_statuses,
    WorkerResourceUsage: resource_usages,
    WorkerStatusReport: st.builds(
        WorkerStatusReport, node_id=u64, ts_ns=st.integers(2**53 + 1, U64_MAX),
        containers=st.lists(container_statuses, max_size=3).map(tuple),
        resources=resource_usages),
    WorkerStatusAck: st.builds(WorkerStatusAck, next_ttl_secs=u32,
                               servers=st.lists(endpoints, max_size=3).map(tuple),
                               leader=st.one_of(st.none(), endpoints)),
    InternalScaleRequest: scale_requests(),
    ClusterContainerSummary: container_summaries,
    NodeServiceState: st.builds(NodeServiceState, node_id=u64, running=u32,
                                healthy=st.booleans(),
                                containers=st.lists(container_summaries,
                                                    max_size=3).map(tuple)),
}
