"""Behaviour of the wire types themselves (wire-types.md §2-§21): ClusterMode validation
(§2.6) and derived values (§2.5), compute_ttl (§6), is_expired (§8), the legacy and Phase-2
scale shapes (§18, §19) and container naming."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftdir.codec import from_dict, to_dict
from raftdir.errors import BadRequest
from raftdir.model import (
    AdaptiveTtlConfig, ClusterMode, InternalScaleRequest, RaftMode, RaftPeer, ScaleAssignment,
    SingleNodeMode, StaticMode, StaticPeer, WorkerContainerStatus, WorkerLease, WorkerProfile,
    WorkerTierMode, WorkerTierRole, container_name,
)

try:  # pytest's default "prepend" import mode puts tests/ on sys.path
    from strategies import STRATEGIES
except ImportError:  # pragma: no cover - tests/ turned into a package
    from tests.strategies import STRATEGIES

FAST = settings(max_examples=100, deadline=None)


def peers3(**override):
    peers = [{"id": i, "raft_addr": f"10.0.0.{i}:9000", "api_addr": f"10.0.0.{i}:3669"}
             for i in (1, 2, 3)]
    for key, value in override.items():
        index, field = key.split("__")
        peers[int(index[1:])][field] = value
    return peers


def raft(node_id=1, peers=None, **kw):
    return from_dict(ClusterMode, {"mode": "raft", "node_id": node_id,
                                   "peers": peers if peers is not None else peers3(), **kw})


def static(node_id=2, peers=None, **kw):
    if peers is None:
        peers = [{"id": 1, "api_addr": "10.0.0.10:3669"}, {"id": 2, "api_addr": "10.0.0.11:3669"},
                 {"id": 3, "api_addr": "[fd00::3]:3669", "os": "windows"}]
    return from_dict(ClusterMode, {"mode": "static", "node_id": node_id, "peers": peers, **kw})


def server(**kw):
    doc = {"mode": "worker-tier", "role": "server", "node_id": 1, "peers": peers3()}
    doc.update(kw)
    return from_dict(ClusterMode, {k: v for k, v in doc.items() if v is not ...})


def worker(**kw):
    doc = {"mode": "worker-tier", "role": "worker", "servers": ["http://10.0.0.1:3669"],
           "token_file": "/etc/raftdir/token"}
    doc.update(kw)
    return from_dict(ClusterMode, {k: v for k, v in doc.items() if v is not ...})


def invalid(mode, message):
    """``mode.validate()`` fails with exactly ``message``; field is the path."""
    with pytest.raises(BadRequest) as info:
        mode.validate()
    assert str(info.value) == message
    assert info.value.field == message.split(": ", 1)[0]
    assert info.value.code == "bad_request"


# ============================================================================ §6 compute_ttl

TTL_VECTORS = [(0, 10), (10, 10), (100, 10), (500, 10), (501, 11), (1000, 20), (1001, 21),
               (10000, 200), (100000, 600)]


@pytest.mark.parametrize("n,ttl", TTL_VECTORS)
def test_compute_ttl_vectors(n, ttl):
    cfg = AdaptiveTtlConfig()
    assert (cfg.min_ttl_secs, cfg.max_ttl_secs, cfg.max_heartbeats_per_second) == (10, 600, 50)
    assert cfg.compute_ttl(n) == ttl


@pytest.mark.parametrize("n", [0, 10, 100000])
def test_compute_ttl_rate_zero_gives_max(n):
    assert AdaptiveTtlConfig(max_heartbeats_per_second=0).compute_ttl(n) == 600
    assert AdaptiveTtlConfig(max_heartbeats_per_second=0, max_ttl_secs=77).compute_ttl(n) == 77


def test_compute_ttl_other_settings():
    cfg = AdaptiveTtlConfig(min_ttl_secs=1, max_ttl_secs=2**32 - 1, max_heartbeats_per_second=1)
    assert cfg.compute_ttl(0) == 1
    assert cfg.compute_ttl(12345) == 12345
    assert cfg.compute_ttl(2**32 - 1) == 2**32 - 1
    cfg = AdaptiveTtlConfig(min_ttl_secs=15, max_ttl_secs=600, max_heartbeats_per_second=100)
    assert [cfg.compute_ttl(n) for n in (1500, 1501, 59999, 60001)] == [15, 16, 600, 600]


@FAST
@given(cfg=STRATEGIES[AdaptiveTtlConfig], n=st.integers(0, 2**32 - 1))
def test_compute_ttl_matches_the_reference(cfg, n):
    def reference(cfg, n):                       # wire-types.md §6, verbatim
        if cfg.max_heartbeats_per_second == 0:
            return cfg.max_ttl_secs
        raw = -(-n // cfg.max_heartbeats_per_second)
        return max(cfg.min_ttl_secs, min(raw, cfg.max_ttl_secs))
    ttl = cfg.compute_ttl(n)
    assert ttl == reference(cfg, n)
    assert cfg.min_ttl_secs <= ttl <= cfg.max_ttl_secs


# ============================================================================ §8 is_expired

def lease(renewed=1000, ttl=30, grace=10):
    profile = WorkerProfile(api_addr="10.0.0.5:3669", os="linux", arch="x86_64")
    return WorkerLease(node_id=1, profile=profile, acquired_unix_secs=renewed - 500,
                       renewed_unix_secs=renewed, ttl_secs=ttl, grace_secs=grace)


@pytest.mark.parametrize("now,expired", [(900, False), (1000, False), (1025, False),
                                         (1040, False), (1041, True)])
def test_is_expired_vectors(now, expired):
    assert lease().is_expired(now, 10) is expired
    assert lease().is_expired(now) is expired          # defaults to the lease's own grace


@pytest.mark.parametrize("now,grace,expired", [
    (1041, 20, False), (1050, 20, False), (1051, 20, True),       # a larger grace stretches it
    (1300, 300, False), (1330, 300, False), (1331, 300, True),
    (1030, 0, False), (1031, 0, True),                            # a smaller one is honoured too
])
def test_is_expired_with_a_larger_grace(now, grace, expired):
    assert lease().is_expired(now, grace) is expired


def test_is_expired_edges():
    assert not lease(ttl=0, grace=0).is_expired(1000)
    assert lease(ttl=0, grace=0).is_expired(1001)
    assert not lease().is_expired(-(2**63))                        # clock far behind: 0 elapsed
    big = lease(ttl=2**32 - 1, grace=2**32 - 1)
    assert not big.is_expired(1000 + 2 * (2**32 - 1))
    assert big.is_expired(1000 + 2 * (2**32 - 1) + 1)
    assert lease(renewed=-(2**63)).is_expired(2**63 - 1)


# ============================================================================ §18, §19 shapes

def test_container_name():
    assert container_name("db", "read", 2) == "db-read-2"
    s = WorkerContainerStatus(service="web", role="default", replica=0, state="running")
    assert s.name == "web-default-0"


def test_legacy_shape():
    req = InternalScaleRequest.legacy("web", 3)
    assert to_dict(req) == {"service": "web", "replicas": 3}
    assert not req.is_phase2
    assert req.groups() == (ScaleAssignment(role="default", indices=(0, 1, 2)),)
    assert req.container_names() == ["web-default-0", "web-default-1", "web-default-2"]


def test_legacy_zero_replicas_means_none():
    req = from_dict(InternalScaleRequest, {"service": "web", "replicas": 0})
    assert req.groups() == ()
    assert req.container_names() == []


def test_legacy_shape_with_spec():
    req = InternalScaleRequest.legacy("web", 1, {"image": "nginx"})
    assert to_dict(req) == {"service": "web", "replicas": 1, "spec": {"image": "nginx"}}
    assert req.container_names() == ["web-default-0"]


def test_phase2_shape():
    req = InternalScaleRequest.phase2("db", [("primary", [0]), ("replica", [2, 1])])
    assert req.replicas == 3
    assert req.is_phase2
    assert to_dict(req) == {"service": "db", "replicas": 3, "assignments": [
        {"role": "primary", "indices": [0]}, {"role": "replica", "indices": [1, 2]}]}
    assert req.container_names() == ["db-primary-0", "db-replica-1", "db-replica-2"]
    same = InternalScaleRequest.phase2("db", [ScaleAssignment(role="primary", indices=(0,)),
                                              ScaleAssignment(role="replica", indices=(1, 2))])
    assert to_dict(same) == to_dict(req)
    assert from_dict(InternalScaleRequest, to_dict(req)).groups() == same.groups()


@FAST
@given(req=st.one_of(
    STRATEGIES[InternalScaleRequest].filter(lambda r: r.is_phase2),
    st.builds(InternalScaleRequest.legacy, st.text(min_size=1, max_size=5), st.integers(0, 300))))
def test_scale_groups_and_names(req):
    # (legacy groups() materialises range(replicas), so keep legacy replicas small here)
    groups = req.groups()
    if req.is_phase2:
        assert groups == req.assignments
        assert req.replicas == sum(len(g.indices) for g in groups)
    elif req.replicas:
        assert groups == (ScaleAssignment(role="default", indices=tuple(range(req.replicas))),)
    else:
        assert groups == ()
    assert req.container_names() == [container_name(req.service, g.role, i)
                                     for g in groups for i in sorted(g.indices)]
    assert len(req.container_names()) == (req.replicas if not req.is_phase2 else
                                          sum(len(g.indices) for g in groups))


def test_scale_assignment_names_are_ascending():
    assert ScaleAssignment(role="read", indices=(2, 0)).container_names("db") == [
        "db-read-0", "db-read-2"]


# ============================================================================ §2.5 derived

def test_adaptive_ttl_config_from_worker_tier():
    mode = server(heartbeat_min_ttl=15, heartbeat_max_ttl=900, heartbeat_grace=12,
                  max_heartbeats_per_second=100, failover_heartbeat_ttl=301)
    assert mode.adaptive_ttl_config() == AdaptiveTtlConfig(
        min_ttl_secs=15, max_ttl_secs=900, grace_secs=12, max_heartbeats_per_second=100,
        failover_ttl_secs=301)
    assert worker().adaptive_ttl_config() == AdaptiveTtlConfig()


def test_adaptive_ttl_config_saturates_seconds():
    big = 2**40
    mode = server(heartbeat_min_ttl=2**32, heartbeat_max_ttl=2**64 - 1, heartbeat_grace=big,
                  failover_heartbeat_ttl=2**32 - 1, max_heartbeats_per_second=2**32 - 1)
    assert mode.validate() == []
    assert mode.adaptive_ttl_config() == AdaptiveTtlConfig(
        min_ttl_secs=4294967295, max_ttl_secs=4294967295, grace_secs=4294967295,
        max_heartbeats_per_second=4294967295, failover_ttl_secs=4294967295)


def test_adaptive_ttl_config_is_none_for_other_modes():
    for mode in (SingleNodeMode(), raft(), static()):
        assert mode.adaptive_ttl_config() is None
        assert not mode.is_worker_tier_server()
        assert not mode.is_worker_tier_worker()


def test_is_worker_tier_server_and_worker():
    assert server().is_worker_tier_server() and not server().is_worker_tier_worker()
    assert worker().is_worker_tier_worker() and not worker().is_worker_tier_server()
    assert server().role is WorkerTierRole.SERVER and worker().role is WorkerTierRole.WORKER


# ============================================================================ §2.6 validation

def test_valid_modes_validate_without_warnings():
    assert SingleNodeMode().validate() == []
    assert raft().validate() == []
    assert static().validate() == []
    assert server().validate() == []
    assert worker().validate() == []
    assert worker(token_file=...).validate() == []     # token presence is checked at start


@pytest.mark.parametrize("make", [raft, static, server], ids=["raft", "static", "server"])
def test_node_id_must_be_a_peer(make):
    invalid(make(node_id=9), "node_id: 9 is not the id of any entry in peers")


def test_duplicate_peer_id_reported_at_the_later_one():
    peers = peers3(p2__id=1)
    invalid(raft(peers=peers), "peers[2].id: duplicate peer id 1")
    invalid(server(peers=peers), "peers[2].id: duplicate peer id 1")
    sp = [{"id": 1, "api_addr": "10.0.0.1:1"}, {"id": 2, "api_addr": "10.0.0.2:1"},
          {"id": 2, "api_addr": "10.0.0.3:1"}]
    invalid(static(peers=sp), "peers[2].id: duplicate peer id 2")


def test_duplicate_addresses():
    invalid(raft(peers=peers3(p1__api_addr="10.0.0.1:3669")),
            "peers[1].api_addr: '10.0.0.1:3669' is already used by peers[0].api_addr")
    invalid(raft(peers=peers3(p1__raft_addr="10.0.0.1:9000")),
            "peers[1].raft_addr: '10.0.0.1:9000' is already used by peers[0].raft_addr")
    # raft_addr and api_addr share one space, also within one peer
    invalid(raft(peers=peers3(p2__raft_addr="10.0.0.2:3669")),
            "peers[2].raft_addr: '10.0.0.2:3669' is already used by peers[1].api_addr")
    invalid(raft(peers=peers3(p0__api_addr="10.0.0.1:9000")),
            "peers[0].api_addr: '10.0.0.1:9000' is already used by peers[0].raft_addr")
    # compared as parsed addresses: the same IPv6 address written two ways
    invalid(raft(peers=peers3(p0__api_addr="[fd00::1]:1", p1__api_addr="[FD00:0::1]:01")),
            "peers[1].api_addr: '[fd00::1]:1' is already used by peers[0].api_addr")
    invalid(server(peers=peers3(p1__api_addr="10.0.0.1:3669")),
            "peers[1].api_addr: '10.0.0.1:3669' is already used by peers[0].api_addr")
    sp = [{"id": 1, "api_addr": "10.0.0.1:1"}, {"id": 2, "api_addr": "10.0.0.1:1"}]
    invalid(static(node_id=1, peers=sp),
            "peers[1].api_addr: '10.0.0.1:1' is already used by peers[0].api_addr")
    # same host, other port: fine
    assert raft(peers=peers3(p1__api_addr="10.0.0.1:3670")).validate() == []


@pytest.mark.parametrize("addr,shown", [("0.0.0.0:9000", "0.0.0.0:9000"),
                                        ("[::]:9000", "[::]:9000"),
                                        ("[0:0::0]:9000", "[::]:9000")])
def test_unspecified_host_in_peer_addr(addr, shown):
    problem = f"{shown!r} uses the unspecified host; other nodes must be able to dial it"
    invalid(raft(peers=peers3(p1__raft_addr=addr)), f"peers[1].raft_addr: {problem}")
    invalid(raft(peers=peers3(p0__api_addr=addr)), f"peers[0].api_addr: {problem}")
    invalid(server(peers=peers3(p2__api_addr=addr)), f"peers[2].api_addr: {problem}")
    sp = [{"id": 1, "api_addr": "10.0.0.1:1"}, {"id": 2, "api_addr": addr}]
    invalid(static(node_id=1, peers=sp), f"peers[1].api_addr: {problem}")


def test_worker_grpc_addr_may_use_the_unspecified_host():
    assert server(worker_grpc_addr="0.0.0.0:3670").validate() == []
    assert server(worker_grpc_addr="[::]:3670").validate() == []


def test_worker_tier_server_needs_node_id_and_peers():
    invalid(server(node_id=...), "node_id: required for a worker-tier server")
    invalid(server(node_id=None), "node_id: required for a worker-tier server")
    invalid(server(peers=...), "peers: a worker-tier server needs its control-plane peers")
    invalid(server(peers=[]), "peers: a worker-tier server needs its control-plane peers")


def test_worker_needs_servers():
    invalid(worker(servers=...), "servers: a worker-tier worker needs at least one server")
    invalid(worker(servers=[]), "servers: a worker-tier worker needs at least one server")


@pytest.mark.parametrize("interval,threshold,ok", [
    (5, 15, True), (1, 2, True), (14, 15, True),
    (15, 15, False), (16, 15, False), (0, 15, False), (0, 0, False), (1, 1, False)])
def test_static_heartbeat_interval(interval, threshold, ok):
    mode = static(heartbeat_interval=interval, failure_threshold=threshold)
    if ok:
        assert mode.validate() == []
    else:
        invalid(mode, f"heartbeat_interval: {interval} must be at least 1 and below "
                      f"failure_threshold ({threshold})")


@pytest.mark.parametrize("make", [server, worker], ids=["server", "worker"])
@pytest.mark.parametrize("lo,hi,ok", [(10, 600, True), (1, 1, True), (600, 600, True),
                                      (601, 600, False), (0, 600, False), (0, 0, False),
                                      (2, 1, False)])
def test_heartbeat_min_ttl(make, lo, hi, ok):
    mode = make(heartbeat_min_ttl=lo, heartbeat_max_ttl=hi)
    if ok:
        assert mode.validate() == []
    else:
        invalid(mode, f"heartbeat_min_ttl: {lo} must be at least 1 and at most "
                      f"heartbeat_max_ttl ({hi})")


def test_validate_does_not_run_on_decode():
    # decoding accepts what validation refuses; the config loader runs both
    mode = raft(node_id=9)
    assert isinstance(mode, RaftMode) and mode.node_id == 9


def test_other_role_fields_give_warnings():
    w = worker(node_id=5, peers=peers3(), worker_grpc_addr="10.0.0.9:3670",
               worker_ca_dir="/ca", max_heartbeats_per_second=10, failover_heartbeat_ttl=60)
    assert w.validate() == [
        "node_id: only used by a server; ignored for role worker",
        "peers: only used by a server; ignored for role worker",
        "worker_grpc_addr: only used by a server; ignored for role worker",
        "worker_ca_dir: only used by a server; ignored for role worker",
        "max_heartbeats_per_second: only used by a server; ignored for role worker",
        "failover_heartbeat_ttl: only used by a server; ignored for role worker",
    ]
    s = server(servers=["10.0.0.1:3669"], token_file="/t", identity_dir="/i")
    assert s.validate() == [
        "servers: only used by a worker; ignored for role server",
        "token_file: only used by a worker; ignored for role server",
        "identity_dir: only used by a worker; ignored for role server",
    ]
    # other-role fields at their defaults are not warned about, however written
    assert worker(worker_grpc_addr="0.0.0.0:03670", max_heartbeats_per_second=50,
                  failover_heartbeat_ttl=300, peers=[]).validate() == []
    # shared fields never warn
    assert worker(labels={"zone": "a"}, heartbeat_grace=3).validate() == []
    # the other role's fields are not validated (a worker's peers may be anything)
    assert worker(node_id=9, peers=peers3(p1__id=1)).validate() == [
        "node_id: only used by a server; ignored for role worker",
        "peers: only used by a server; ignored for role worker"]


def test_warning_fields_are_still_round_tripped():
    w = worker(node_id=5)
    assert to_dict(w)["node_id"] == 5


@FAST
@given(mode=st.one_of(STRATEGIES[RaftMode], STRATEGIES[StaticMode],
                      STRATEGIES[WorkerTierMode]))
def test_generated_cluster_modes_are_valid(mode):
    assert mode.validate() == []
    if isinstance(mode, WorkerTierMode):
        cfg = mode.adaptive_ttl_config()
        assert cfg.min_ttl_secs <= cfg.max_ttl_secs


# ============================================================================ §5, §7 misc

def test_static_peer_os_default_and_labels():
    p = from_dict(StaticPeer, {"id": 1, "api_addr": "10.0.0.1:1"})
    assert p.os == "linux" and p.labels == {}
    assert to_dict(p) == {"id": 1, "api_addr": "10.0.0.1:1", "os": "linux"}


def test_profile_macos_means_darwin():
    p = from_dict(WorkerProfile, {"api_addr": "10.0.0.5:3669", "os": "macos",
                                  "arch": "aarch64"})
    assert p.os == "macos" and p.placement_os == "darwin"
    assert WorkerProfile(api_addr="10.0.0.5:1", os="linux", arch="x86_64").placement_os == "linux"


def test_objects_are_frozen():
    peer = RaftPeer(id=1, raft_addr="10.0.0.1:1", api_addr="10.0.0.1:2")
    with pytest.raises(Exception):
        peer.id = 2  # type: ignore[misc]


def test_golden_like_yaml_shape_of_zlayer_server_validates():
    doc = json.loads("""{"mode": "worker-tier", "role": "server", "node_id": 1,
      "peers": [{"id": 1, "raft_addr": "10.0.0.1:9000", "api_addr": "10.0.0.1:3669"},
                {"id": 2, "raft_addr": "10.0.0.2:9000", "api_addr": "10.0.0.2:3669"},
                {"id": 3, "raft_addr": "10.0.0.3:9000", "api_addr": "10.0.0.3:3669"}],
      "worker_grpc_addr": "0.0.0.0:3670", "heartbeat_min_ttl": 10, "heartbeat_max_ttl": 600,
      "heartbeat_grace": 10, "max_heartbeats_per_second": 50, "failover_heartbeat_ttl": 300}""")
    mode = from_dict(ClusterMode, doc)
    assert mode.validate() == []
    out = to_dict(mode)
    assert "worker_grpc_addr" not in out
    assert out == {k: v for k, v in doc.items() if k != "worker_grpc_addr"}
    assert RaftPeer(id=2, raft_addr="10.0.0.2:9000", api_addr="10.0.0.2:3669") in mode.peers


def test_a_legacy_scale_cannot_expand_to_billions_of_indices():
    import pytest as _pytest
    from raftdir import BadRequest, InternalScaleRequest
    from raftdir.model import MAX_LEGACY_REPLICAS
    assert len(InternalScaleRequest.legacy("web", MAX_LEGACY_REPLICAS).groups()[0].indices) \
        == MAX_LEGACY_REPLICAS
    with _pytest.raises(BadRequest, match="replicas: 4294967295 is above the limit"):
        InternalScaleRequest.legacy("web", 2**32 - 1).groups()
