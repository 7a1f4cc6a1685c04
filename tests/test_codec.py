"""The strict codec (wire-types.md §1) over every wire type: round trips through dict, msgpack
and JSON, the §22 golden examples, the presence rules of every table, key order, canonical
forms, and the rejections, each with its exact ``<path>: <problem>`` message."""

from __future__ import annotations

import dataclasses
import json
import math

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftdir import model
from raftdir.codec import (
    dumps_msgpack, from_dict, from_json, from_msgpack, loads_json, loads_msgpack, to_dict,
    to_json, to_msgpack,
)
from raftdir.errors import BadRequest
from raftdir.model import (
    AdaptiveTtlConfig, ClusterContainerSummary, ClusterMode, DeleteEvent, DrainEvent,
    UndrainEvent,
    InternalScaleRequest, NodeServiceState, RaftMode, RaftPeer, ScaleAssignment, SetEvent,
    SingleNodeMode, StaticMode, StaticPeer, WorkerAssignmentEvent, WorkerContainerStatus,
    WorkerLease, WorkerPollRequest, WorkerPollResponse, WorkerProfile, WorkerRegisterRequest,
    WorkerRegisterResponse, WorkerResourceUsage, WorkerStatusAck, WorkerStatusReport,
    WorkerTierMode, WorkerTierRole,
)

try:  # pytest's default "prepend" import mode puts tests/ on sys.path
    from strategies import STRATEGIES
except ImportError:  # pragma: no cover - tests/ turned into a package
    from tests.strategies import STRATEGIES

ROUND_TRIP = settings(max_examples=100, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow])


def bad(cls, data, message):
    """Decoding ``data`` (a plain map) as ``cls`` fails with exactly ``message``; the error's
    field is the path before the first ': '."""
    with pytest.raises(BadRequest) as info:
        from_dict(cls, data)
    assert str(info.value) == message
    assert info.value.message == message
    assert info.value.code == "bad_request" and info.value.status == 400
    assert info.value.field == message.split(": ", 1)[0]
    return info.value


def union_base(cls):
    for base in (ClusterMode, WorkerAssignmentEvent):
        if issubclass(cls, base):
            return base
    return None


def plain(value):
    """True when ``value`` is a tree of dict/list/str/int/float/bool/None only."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


# ============================================================================ round trips

def test_every_wire_type_has_a_strategy():
    missing = [cls.__name__ for cls in model.WIRE_TYPES if cls not in STRATEGIES]
    assert missing == [], f"wire types without a strategy in tests/strategies.py: {missing}"
    extra = [cls.__name__ for cls in STRATEGIES if cls not in model.WIRE_TYPES]
    assert extra == []


def test_wire_types_lists_every_concrete_type():
    names = {cls.__name__ for cls in model.WIRE_TYPES}
    assert names == {
        "RaftPeer", "StaticPeer", "AdaptiveTtlConfig", "SingleNodeMode", "RaftMode",
        "StaticMode", "WorkerTierMode", "WorkerProfile", "WorkerLease", "ScaleAssignment",
        "SetEvent", "DeleteEvent", "DrainEvent", "UndrainEvent", "WorkerRegisterRequest",
        "WorkerRegisterResponse", "WorkerPollRequest", "WorkerPollResponse",
        "WorkerContainerStatus", "WorkerResourceUsage", "WorkerStatusReport",
        "WorkerStatusAck", "InternalScaleRequest", "ClusterContainerSummary",
        "NodeServiceState"}
    assert ClusterMode not in model.WIRE_TYPES
    assert WorkerAssignmentEvent not in model.WIRE_TYPES


@pytest.mark.parametrize("cls", model.WIRE_TYPES, ids=lambda c: c.__name__)
@ROUND_TRIP
@given(data=st.data())
def test_round_trip(cls, data):
    x = data.draw(STRATEGIES[cls])
    assert type(x) is cls

    # dict
    d = to_dict(x)
    assert plain(d)
    assert from_dict(cls, d) == x
    assert to_dict(from_dict(cls, d)) == d
    base = union_base(cls)
    if base is not None:
        assert list(d)[0] == base.TAG_KEY and d[base.TAG_KEY] == cls.TAG
        assert from_dict(base, d) == x

    # keys are a subsequence of the table order (tag first)
    order = ([cls.TAG_KEY] if cls.TAG else []) + [f.name for f in dataclasses.fields(cls)]
    keys = list(d)
    assert keys == [k for k in order if k in d]

    # msgpack bytes
    b = to_msgpack(x)
    y = from_msgpack(cls, b)
    assert y == x
    assert to_msgpack(y) == b
    assert loads_msgpack(b) == d

    # JSON bytes
    j = to_json(x)
    z = from_json(cls, j)
    assert z == x
    assert to_json(z) == j
    assert loads_json(j) == d
    assert from_json(cls, j.decode("utf-8")) == x

    if base is ClusterMode:
        assert x.validate() == []


# ============================================================================ §22 goldens

GOLDEN_SERVER = """
{
  "mode": "worker-tier", "role": "server", "node_id": 1,
  "peers": [
    {"id": 1, "raft_addr": "10.0.0.1:9000", "api_addr": "10.0.0.1:3669"},
    {"id": 2, "raft_addr": "10.0.0.2:9000", "api_addr": "10.0.0.2:3669"},
    {"id": 3, "raft_addr": "10.0.0.3:9000", "api_addr": "10.0.0.3:3669"}
  ],
  "heartbeat_min_ttl": 15, "heartbeat_max_ttl": 600, "heartbeat_grace": 10,
  "max_heartbeats_per_second": 100, "failover_heartbeat_ttl": 300,
  "labels": {"zone": "eu-1a"}
}
"""

GOLDEN_STATIC = """
{
  "mode": "static", "node_id": 2,
  "peers": [
    {"id": 1, "api_addr": "10.0.0.10:3669", "os": "linux"},
    {"id": 2, "api_addr": "10.0.0.11:3669", "os": "linux", "labels": {"gpu": "a100"}},
    {"id": 3, "api_addr": "[fd00::3]:3669", "os": "windows"}
  ],
  "heartbeat_interval": 5, "failure_threshold": 15
}
"""

GOLDEN_POLL_REQUEST = """{"node_id": 1000001, "last_revision": 40,
"max_wait_secs": 30}"""

GOLDEN_POLL_RESPONSE = """
{
  "revision": 42,
  "events": [
    {"kind": "set", "service": "web",
     "assignments": [{"role": "default", "indices": [0, 2]}], "revision": 41},
    {"kind": "delete", "service": "cache", "revision": 42}
  ]
}
"""

GOLDEN_SCALE_LEGACY = """{"service": "web", "replicas": 3}"""

GOLDEN_SCALE_PHASE2 = """{"service": "db", "replicas": 3,
 "assignments": [{"role": "primary", "indices": [0]}, {"role": "replica", "indices": [1, 2]}]}"""

GOLDEN_STATUS_REPORT = """
{
  "node_id": 1000001, "ts_ns": 1767225600000000000,
  "containers": [
    {"service": "web", "role": "default", "replica": 0, "state": "running",
     "overlay_ip": "10.200.0.17"},
    {"service": "web", "role": "default", "replica": 2, "state": "starting"}
  ],
  "resources": {"cpu_used": 1.5, "memory_used_bytes": 536870912, "gpu_used": 0}
}
"""

GOLDENS = [
    ("worker-tier-server", ClusterMode, WorkerTierMode, GOLDEN_SERVER),
    ("static", ClusterMode, StaticMode, GOLDEN_STATIC),
    ("poll-request", WorkerPollRequest, WorkerPollRequest, GOLDEN_POLL_REQUEST),
    ("poll-response", WorkerPollResponse, WorkerPollResponse, GOLDEN_POLL_RESPONSE),
    ("scale-legacy", InternalScaleRequest, InternalScaleRequest, GOLDEN_SCALE_LEGACY),
    ("scale-phase2", InternalScaleRequest, InternalScaleRequest, GOLDEN_SCALE_PHASE2),
    ("status-report", WorkerStatusReport, WorkerStatusReport, GOLDEN_STATUS_REPORT),
]


@pytest.mark.parametrize("name,cls,concrete,text", GOLDENS, ids=[g[0] for g in GOLDENS])
def test_golden_decodes_and_reencodes_to_the_same_map(name, cls, concrete, text):
    expected = json.loads(text)
    obj = from_json(cls, text.encode("utf-8"))
    assert type(obj) is concrete
    assert to_dict(obj) == expected
    # "exactly what the encoder writes": the same keys in the same order, at every level
    assert json.dumps(to_dict(obj)) == json.dumps(expected)
    assert json.loads(to_json(obj)) == expected
    assert from_msgpack(cls, dumps_msgpack(expected)) == obj
    assert loads_msgpack(to_msgpack(obj)) == expected
    if cls is ClusterMode:
        assert obj.validate() == []


def test_golden_server_fields():
    mode = from_json(ClusterMode, GOLDEN_SERVER)
    assert mode.role is WorkerTierRole.SERVER
    assert mode.worker_grpc_addr == "0.0.0.0:3670"   # default, so left out
    assert mode.worker_ca_dir is None
    assert mode.peers[2] == RaftPeer(id=3, raft_addr="10.0.0.3:9000", api_addr="10.0.0.3:3669")
    assert mode.labels == {"zone": "eu-1a"}
    assert mode.is_worker_tier_server() and not mode.is_worker_tier_worker()


def test_golden_static_fields():
    mode = from_json(ClusterMode, GOLDEN_STATIC)
    assert mode.peers[2] == StaticPeer(id=3, api_addr="[fd00::3]:3669", os="windows")
    assert mode.peers[0].labels == {}
    assert "labels" not in to_dict(mode.peers[0])
    assert to_dict(mode.peers[0])["os"] == "linux"     # written although it is the default


def test_golden_poll_response_fields():
    resp = from_json(WorkerPollResponse, GOLDEN_POLL_RESPONSE)
    assert resp.full is False
    assert resp.events == (
        SetEvent(service="web", assignments=(ScaleAssignment(role="default", indices=(0, 2)),),
                 revision=41),
        DeleteEvent(service="cache", revision=42))
    req = from_json(WorkerPollRequest, GOLDEN_POLL_REQUEST)
    assert req == WorkerPollRequest(node_id=1000001, last_revision=40, max_wait_secs=30)


def test_golden_legacy_scale_shape():
    req = from_json(InternalScaleRequest, GOLDEN_SCALE_LEGACY)
    assert not req.is_phase2
    assert req.groups() == (ScaleAssignment(role="default", indices=(0, 1, 2)),)
    assert req.container_names() == ["web-default-0", "web-default-1", "web-default-2"]
    assert req == InternalScaleRequest.legacy("web", 3)


def test_golden_phase2_scale_shape():
    req = from_json(InternalScaleRequest, GOLDEN_SCALE_PHASE2)
    assert req.is_phase2
    assert req.groups() == (ScaleAssignment(role="primary", indices=(0,)),
                            ScaleAssignment(role="replica", indices=(1, 2)))
    assert req.container_names() == ["db-primary-0", "db-replica-1", "db-replica-2"]
    assert req == InternalScaleRequest.phase2("db", [("primary", [0]), ("replica", [1, 2])])


def test_golden_status_report_keeps_ts_ns_exact():
    rep = from_json(WorkerStatusReport, GOLDEN_STATUS_REPORT)
    assert rep.ts_ns == 1767225600000000000 and rep.ts_ns > 2**53
    assert b'"ts_ns":1767225600000000000' in to_json(rep)
    assert from_msgpack(WorkerStatusReport, to_msgpack(rep)).ts_ns == 1767225600000000000
    assert rep.containers[0].overlay_ip == "10.200.0.17"
    assert rep.containers[1].overlay_ip is None
    assert "overlay_ip" not in to_dict(rep.containers[1])
    assert rep.resources.cpu_used == 1.5


# ============================================================================ presence

# Every table of wire-types.md, transcribed: (field, term, default V); a full valid document.
REQ, DEF, DEF_OMIT, OPT, OPT_NULL = ("required", "default", "default, omitted",
                                     "optional, omitted", "optional, null")
REQ_UNLESS_REPLICA = "required unless replica"
#: Fields a full document leaves out because they exclude another one.
EXCLUSIVE = {RaftPeer: {"replica"}}
PROFILE = {"api_addr": "10.0.0.5:3669", "os": "linux", "arch": "x86_64",
           "labels": {"zone": "a"}, "cpu_total": 8, "memory_total_bytes": 1 << 34}
TABLES = {
    # raftdir's extension: ``replica: true`` entries have no raft_addr (every other one
    # needs it), so no full document holds both: see EXCLUSIVE
    RaftPeer: ([("id", REQ, None), ("raft_addr", REQ_UNLESS_REPLICA, None),
                ("api_addr", REQ, None), ("replica", DEF_OMIT, False)],
               {"id": 1, "raft_addr": "10.0.0.1:9000", "api_addr": "10.0.0.1:3669"}),
    StaticPeer: ([("id", REQ, None), ("api_addr", REQ, None), ("os", DEF, "linux"),
                  ("labels", DEF_OMIT, {})],
                 {"id": 1, "api_addr": "10.0.0.1:3669", "os": "windows",
                  "labels": {"gpu": "a100"}}),
    RaftMode: ([("node_id", REQ, None), ("peers", REQ, None)],
               {"mode": "raft", "node_id": 1,
                "peers": [{"id": 1, "raft_addr": "10.0.0.1:9000",
                           "api_addr": "10.0.0.1:3669"}]}),
    StaticMode: ([("node_id", REQ, None), ("peers", REQ, None),
                  ("heartbeat_interval", DEF, 5), ("failure_threshold", DEF, 15)],
                 {"mode": "static", "node_id": 1,
                  "peers": [{"id": 1, "api_addr": "10.0.0.1:3669", "os": "linux"}],
                  "heartbeat_interval": 2, "failure_threshold": 9}),
    WorkerTierMode: ([("role", REQ, None), ("node_id", OPT, None), ("peers", DEF_OMIT, []),
                      ("worker_grpc_addr", DEF_OMIT, "0.0.0.0:3670"),
                      ("servers", DEF_OMIT, []), ("token_file", OPT, None),
                      ("identity_dir", OPT, None), ("worker_ca_dir", OPT, None),
                      ("heartbeat_min_ttl", DEF, 10), ("heartbeat_max_ttl", DEF, 600),
                      ("heartbeat_grace", DEF, 10), ("max_heartbeats_per_second", DEF, 50),
                      ("failover_heartbeat_ttl", DEF, 300), ("labels", DEF_OMIT, {})],
                     {"mode": "worker-tier", "role": "server", "node_id": 1,
                      "peers": [{"id": 1, "raft_addr": "10.0.0.1:9000",
                                 "api_addr": "10.0.0.1:3669"}],
                      "worker_grpc_addr": "10.0.0.1:3670",
                      "servers": ["https://10.0.0.1:3669"], "token_file": "/t",
                      "identity_dir": "/i", "worker_ca_dir": "/ca",
                      "heartbeat_min_ttl": 11, "heartbeat_max_ttl": 601,
                      "heartbeat_grace": 12, "max_heartbeats_per_second": 51,
                      "failover_heartbeat_ttl": 301, "labels": {"zone": "b"}}),
    AdaptiveTtlConfig: ([("min_ttl_secs", REQ, None), ("max_ttl_secs", REQ, None),
                         ("grace_secs", REQ, None), ("max_heartbeats_per_second", REQ, None),
                         ("failover_ttl_secs", REQ, None)],
                        {"min_ttl_secs": 10, "max_ttl_secs": 600, "grace_secs": 10,
                         "max_heartbeats_per_second": 50, "failover_ttl_secs": 300}),
    WorkerProfile: ([("api_addr", REQ, None), ("os", REQ, None), ("arch", REQ, None),
                     ("labels", DEF_OMIT, {}), ("cpu_total", DEF, 0),
                     ("memory_total_bytes", DEF, 0)], PROFILE),
    WorkerLease: ([("node_id", REQ, None), ("profile", REQ, None),
                   ("acquired_unix_secs", REQ, None), ("renewed_unix_secs", REQ, None),
                   ("ttl_secs", REQ, None), ("grace_secs", REQ, None)],
                  {"node_id": 7, "profile": PROFILE, "acquired_unix_secs": 100,
                   "renewed_unix_secs": 200, "ttl_secs": 30, "grace_secs": 10}),
    WorkerRegisterRequest: ([("token", REQ, None), ("desired_node_id", OPT, None),
                             ("profile", REQ, None)],
                            {"token": "tok", "desired_node_id": 9, "profile": PROFILE}),
    WorkerRegisterResponse: ([("node_id", REQ, None), ("cluster_id", REQ, None),
                              ("heartbeat_ttl_secs", REQ, None),
                              ("heartbeat_grace_secs", REQ, None),
                              ("internal_token", REQ, None), ("servers", DEF_OMIT, [])],
                             {"node_id": 9, "cluster_id": "c", "heartbeat_ttl_secs": 10,
                              "heartbeat_grace_secs": 10, "internal_token": "it",
                              "servers": ["10.0.0.1:3669", "http://10.0.0.2:3669"]}),
    WorkerPollRequest: ([("node_id", REQ, None), ("last_revision", DEF, 0),
                         ("max_wait_secs", DEF, 30)],
                        {"node_id": 9, "last_revision": 4, "max_wait_secs": 5}),
    WorkerPollResponse: ([("revision", REQ, None), ("events", DEF_OMIT, []),
                          ("full", DEF_OMIT, False), ("behind", DEF_OMIT, False)],
                         {"revision": 5, "events": [{"kind": "drain", "revision": 5}],
                          "full": True, "behind": True}),
    SetEvent: ([("service", REQ, None), ("assignments", REQ, None), ("revision", REQ, None),
                ("spec", OPT, None)],
               {"kind": "set", "service": "web",
                "assignments": [{"role": "default", "indices": [0]}], "revision": 3,
                "spec": {"image": "nginx", "nested": {"x": [1, 2.5, None, True]}}}),
    DeleteEvent: ([("service", REQ, None), ("revision", REQ, None)],
                  {"kind": "delete", "service": "web", "revision": 3}),
    DrainEvent: ([("revision", REQ, None)], {"kind": "drain", "revision": 3}),
    # raftdir's own (no table in wire-types.md): an operator undid the drain
    UndrainEvent: ([("revision", REQ, None)], {"kind": "undrain", "revision": 4}),
    WorkerStatusReport: ([("node_id", REQ, None), ("ts_ns", REQ, None),
                          ("containers", DEF, []), ("resources", REQ, None)],
                         {"node_id": 9, "ts_ns": 2**60,
                          "containers": [{"service": "web", "role": "default", "replica": 0,
                                          "state": "running"}],
                          "resources": {"cpu_used": 0.5, "memory_used_bytes": 1,
                                        "gpu_used": 0}}),
    WorkerContainerStatus: ([("service", REQ, None), ("role", REQ, None),
                             ("replica", REQ, None), ("state", REQ, None),
                             ("overlay_ip", OPT, None)],
                            {"service": "web", "role": "default", "replica": 1,
                             "state": "exited", "overlay_ip": "fd00::17"}),
    WorkerResourceUsage: ([("cpu_used", REQ, None), ("memory_used_bytes", REQ, None),
                           ("gpu_used", REQ, None)],
                          {"cpu_used": 2.25, "memory_used_bytes": 10, "gpu_used": 1}),
    WorkerStatusAck: ([("next_ttl_secs", REQ, None), ("servers", DEF_OMIT, []),
                       ("leader", OPT, None)],
                      {"next_ttl_secs": 30, "servers": ["https://[fd00::1]:3669"],
                       "leader": "https://[fd00::1]:3669"}),
    InternalScaleRequest: ([("service", REQ, None), ("replicas", DEF, 0),
                            ("assignments", DEF_OMIT, []), ("spec", OPT, None)],
                           # zero indices in total, so that dropping `replicas` still holds
                           {"service": "web", "replicas": 0,
                            "assignments": [{"role": "default", "indices": []}],
                            "spec": {"image": "nginx"}}),
    ScaleAssignment: ([("role", REQ, None), ("indices", REQ, None)],
                      {"role": "read", "indices": [1, 4]}),
    NodeServiceState: ([("node_id", REQ, None), ("running", REQ, None),
                        ("healthy", REQ, None), ("containers", REQ, None)],
                       {"node_id": 1, "running": 0, "healthy": True, "containers": []}),
    ClusterContainerSummary: ([("node_id", REQ, None), ("id", REQ, None),
                               ("service", REQ, None), ("replica", REQ, None),
                               ("image", REQ, None), ("state", REQ, None),
                               ("pid", OPT_NULL, None), ("overlay_ip", OPT_NULL, None)],
                              {"node_id": 1, "id": "web-0", "service": "web", "replica": 0,
                               "image": "nginx:1", "state": "running", "pid": 42,
                               "overlay_ip": "10.200.0.2"}),
}
SingleNodeTable = ([], {"mode": "single-node"})
ALL_TABLES = {**TABLES, SingleNodeMode: SingleNodeTable}
PRESENCE_CASES = [(cls, name, term, default)
                  for cls, (rows, _doc) in TABLES.items() for name, term, default in rows]


def test_tables_cover_every_wire_type():
    assert set(ALL_TABLES) == set(model.WIRE_TYPES)


@pytest.mark.parametrize("cls", list(ALL_TABLES), ids=lambda c: c.__name__)
def test_full_document_round_trips_in_table_order(cls):
    rows, doc = ALL_TABLES[cls]
    obj = from_dict(cls, doc)
    out = to_dict(obj)
    assert out == doc
    tag = [cls.TAG_KEY] if cls.TAG else []
    assert list(out) == tag + [name for name, _t, _d in rows      # table-row order, tag first
                               if name not in EXCLUSIVE.get(cls, ())]
    assert [f.name for f in dataclasses.fields(cls)] == [name for name, _t, _d in rows]


@pytest.mark.parametrize("cls,name,term,default", PRESENCE_CASES,
                         ids=[f"{c.__name__}.{n}" for c, n, _t, _d in PRESENCE_CASES])
def test_presence(cls, name, term, default):
    _rows, doc = TABLES[cls]
    missing = {k: v for k, v in doc.items() if k != name}
    null = {**doc, name: None}
    if term == REQ:
        bad(cls, missing, f"{name}: required field missing")
        bad(cls, null, f"{name}: must not be null")
        return
    if term == REQ_UNLESS_REPLICA:
        bad(cls, missing, f"{name}: required field missing")
        bad(cls, null, f"{name}: required field missing")
        replica = from_dict(cls, {**missing, "replica": True})
        assert getattr(replica, name) is None and to_dict(replica) == {**missing,
                                                                       "replica": True}
        bad(cls, {**doc, "replica": True}, f"{name}: a replica has no Raft address (it "
            "never votes, binds nothing and dials the voters); remove raft_addr or "
            "replica: true")
        return
    if term in (DEF, DEF_OMIT):
        bad(cls, null, f"{name}: must not be null")
    obj = from_dict(cls, missing)
    value = getattr(obj, name)
    if term in (OPT, OPT_NULL):
        assert value is None
        assert from_dict(cls, null) == obj
    else:
        assert to_dict(obj).get(name, default) == default
        assert value == (tuple(default) if isinstance(default, list) else default)
    out = to_dict(obj)
    if term == DEF:
        assert name in out and out[name] == default              # always written
    elif term == OPT_NULL:
        assert name in out and out[name] is None                 # written as null
    else:
        assert name not in out                                   # left out
    assert list(out) == [k for k in doc if k in out]


def test_poll_response_without_events_is_just_the_revision():
    assert to_dict(WorkerPollResponse(revision=42)) == {"revision": 42}
    assert to_json(WorkerPollResponse(revision=42)) == b'{"revision":42}'
    assert from_json(WorkerPollResponse, b'{"revision": 42}') == WorkerPollResponse(revision=42)
    assert to_dict(WorkerPollResponse(revision=7, full=True)) == {"revision": 7, "full": True}
    assert to_dict(from_dict(WorkerPollResponse, {"revision": 7, "events": [], "full": False})
                   ) == {"revision": 7}


def test_default_fields_always_written():
    assert to_dict(from_dict(WorkerPollRequest, {"node_id": 1})) == {
        "node_id": 1, "last_revision": 0, "max_wait_secs": 30}
    assert to_dict(from_dict(WorkerProfile, {"api_addr": "10.0.0.1:1", "os": "linux",
                                             "arch": "aarch64"})) == {
        "api_addr": "10.0.0.1:1", "os": "linux", "arch": "aarch64", "cpu_total": 0,
        "memory_total_bytes": 0}
    assert to_dict(from_dict(InternalScaleRequest, {"service": "web"})) == {
        "service": "web", "replicas": 0}
    rep = from_dict(WorkerStatusReport, {"node_id": 1, "ts_ns": 5, "resources": {
        "cpu_used": 0, "memory_used_bytes": 0, "gpu_used": 0}})
    assert rep.containers == ()
    assert to_dict(rep)["containers"] == []                        # even when empty
    assert to_dict(rep)["resources"]["cpu_used"] == 0.0
    assert to_dict(NodeServiceState(node_id=1, running=0, healthy=True, containers=())) == {
        "node_id": 1, "running": 0, "healthy": True, "containers": []}


def test_worker_tier_defaults():
    mode = from_dict(ClusterMode, {"mode": "worker-tier", "role": "worker",
                                   "servers": ["10.0.0.1:3669"]})
    assert (mode.heartbeat_min_ttl, mode.heartbeat_max_ttl, mode.heartbeat_grace,
            mode.max_heartbeats_per_second, mode.failover_heartbeat_ttl) == (10, 600, 10, 50, 300)
    assert mode.worker_grpc_addr == "0.0.0.0:3670"
    assert mode.peers == () and mode.labels == {} and mode.node_id is None
    assert to_dict(mode) == {"mode": "worker-tier", "role": "worker",
                             "servers": ["10.0.0.1:3669"], "heartbeat_min_ttl": 10,
                             "heartbeat_max_ttl": 600, "heartbeat_grace": 10,
                             "max_heartbeats_per_second": 50, "failover_heartbeat_ttl": 300}


def test_set_event_assignments_written_even_when_empty():
    assert to_dict(SetEvent(service="web", assignments=(), revision=3)) == {
        "kind": "set", "service": "web", "assignments": [], "revision": 3}
    ev = from_dict(WorkerAssignmentEvent, {"kind": "set", "service": "web",
                                           "assignments": [], "revision": 3, "spec": None})
    assert ev.spec is None and ev.assignments == ()


def test_optional_null_fields_always_written_as_null():
    s = ClusterContainerSummary(node_id=1, id="web-0", service="web", replica=0, image="",
                                state="running")
    assert to_dict(s) == {"node_id": 1, "id": "web-0", "service": "web", "replica": 0,
                          "image": "", "state": "running", "pid": None, "overlay_ip": None}
    assert b'"pid":null,"overlay_ip":null' in to_json(s)
    assert from_dict(ClusterContainerSummary, to_dict(s)) == s
    # overlay_ip is a plain string here (not checked as an IP)
    assert from_dict(ClusterContainerSummary, {**to_dict(s), "overlay_ip": "not-an-ip"}
                     ).overlay_ip == "not-an-ip"


@pytest.mark.parametrize("written", ["0.0.0.0:3670", "0.0.0.0:03670"])
def test_worker_grpc_addr_equal_to_default_is_omitted(written):
    mode = from_dict(ClusterMode, {**json.loads(GOLDEN_SERVER), "worker_grpc_addr": written})
    assert mode.worker_grpc_addr == "0.0.0.0:3670"
    assert "worker_grpc_addr" not in to_dict(mode)
    assert to_dict(mode) == json.loads(GOLDEN_SERVER)
    # built in code, not canonical: still compared as a parsed address
    built = WorkerTierMode(role=WorkerTierRole.SERVER, node_id=1, peers=mode.peers,
                           worker_grpc_addr=written)
    assert "worker_grpc_addr" not in to_dict(built)


@pytest.mark.parametrize("written,encoded", [("0.0.0.0:3671", "0.0.0.0:3671"),
                                             ("[::]:3670", "[::]:3670"),
                                             ("10.0.0.1:3670", "10.0.0.1:3670")])
def test_worker_grpc_addr_other_than_default_is_written(written, encoded):
    mode = from_dict(ClusterMode, {**json.loads(GOLDEN_SERVER), "worker_grpc_addr": written})
    out = to_dict(mode)
    assert out["worker_grpc_addr"] == encoded
    assert list(out)[:5] == ["mode", "role", "node_id", "peers", "worker_grpc_addr"]


def test_key_order_tag_first_in_nested_unions():
    ev = SetEvent(service="s", assignments=(ScaleAssignment(role="r", indices=(2, 1)),),
                  revision=1, spec={"z": 1, "a": 2})
    out = to_dict(WorkerPollResponse(revision=1, events=(ev, DrainEvent(revision=1)),
                                     full=True))
    assert list(out) == ["revision", "events", "full"]
    assert list(out["events"][0]) == ["kind", "service", "assignments", "revision", "spec"]
    assert list(out["events"][0]["spec"]) == ["z", "a"]          # opaque: passes unchanged
    assert out["events"][0]["assignments"][0]["indices"] == [1, 2]   # written ascending
    assert list(out["events"][1]) == ["kind", "revision"]


def test_msgpack_bytes_are_str_and_float64():
    assert to_msgpack(DrainEvent(revision=1)) == b"\x82\xa4kind\xa5drain\xa8revision\x01"
    b = to_msgpack(WorkerResourceUsage(cpu_used=2, memory_used_bytes=0, gpu_used=0))
    assert b[:11] == b"\x83\xa8cpu_used\xcb"                      # float64, though given 2
    assert msgpack.unpackb(b, raw=True)[b"cpu_used"] == 2.0
    assert b'"cpu_used":2.0' in to_json(WorkerResourceUsage(cpu_used=2, memory_used_bytes=0,
                                                            gpu_used=0))


def test_f64_accepts_an_int_and_decodes_a_float():
    u = from_json(WorkerResourceUsage, b'{"cpu_used": 2, "memory_used_bytes": 0, "gpu_used": 0}')
    assert u.cpu_used == 2.0 and type(u.cpu_used) is float


def test_spec_is_opaque_and_passes_through():
    spec = {"image": "nginx", "Unknown_Key": {"deep": [1, "x", None, 2.5, {"k": False}]},
            "ports": [{"port": 80}]}
    req = from_dict(InternalScaleRequest, {"service": "web", "replicas": 1, "spec": spec})
    assert req.spec == spec
    assert to_dict(req)["spec"] == spec
    assert from_msgpack(InternalScaleRequest, to_msgpack(req)) == req
    assert from_json(InternalScaleRequest, to_json(req)) == req
    bad(InternalScaleRequest, {"service": "web", "spec": [1]},
        "spec: expected a map, got list")
    bad(WorkerPollResponse, {"revision": 1, "events": [
        {"kind": "set", "service": "w", "assignments": [], "revision": 1, "spec": "x"}]},
        "events[0].spec: expected a map, got string")


# ============================================================================ rejections

RAFT_DOC = {"mode": "raft", "node_id": 1, "peers": [
    {"id": 1, "raft_addr": "10.0.0.1:9000", "api_addr": "10.0.0.1:3669"},
    {"id": 2, "raft_addr": "10.0.0.2:9000", "api_addr": "10.0.0.2:3669"},
    {"id": 3, "raft_addr": "10.0.0.3:9000", "api_addr": "10.0.0.3:3669"}]}


def raft_with_peer1(**changes):
    peer = {k: v for k, v in RAFT_DOC["peers"][1].items() if k not in changes}
    peer.update({k: v for k, v in changes.items() if v is not ...})
    peers = list(RAFT_DOC["peers"])
    peers[1] = peer
    return {**RAFT_DOC, "peers": peers}


def test_unknown_key_with_did_you_mean():
    doc = raft_with_peer1(raft_addr=..., raftaddr="10.0.0.2:9000")
    bad(ClusterMode, doc, "peers[1].raftaddr: unknown key; did you mean 'raft_addr'?")
    bad(ClusterMode, {**RAFT_DOC, "node-id": 1},
        "node-id: unknown key; did you mean 'node_id'?")
    bad(StaticPeer, {"id": 1, "api_addr": "10.0.0.1:3669", "label": {}},
        "label: unknown key; did you mean 'labels'?")


def test_unknown_key_without_close_match():
    bad(ClusterMode, raft_with_peer1(zzz=1), "peers[1].zzz: unknown key")
    bad(ClusterMode, {"mode": "single-node", "node_id": 1}, "node_id: unknown key")


def test_unknown_keys_are_checked_before_fields():
    # a map's unknown keys first, then its fields in table order
    bad(RaftPeer, {"bogus": 1}, "bogus: unknown key")
    bad(RaftPeer, {"api_addr": 5}, "id: required field missing")
    bad(RaftPeer, {"id": True, "raft_addr": 5}, "id: expected an integer (u64), got bool")


# ---------------------------------------------------------------------------- unknown keys

#: Which types refuse an unknown key, as ZLayer's serde attributes have them
#: (crates/zlayer-types/src/cluster.rs): ``deny_unknown_fields`` on ``ClusterMode``,
#: ``RaftPeer`` and ``StaticPeer`` only. ``single-node`` is raftdir's own strictness: ZLayer
#: reads that unit variant ignoring other keys (serde's InternallyTaggedUnitVisitor), and
#: raftdir keeps refusing them as a likely typo in a config file.
REFUSES_UNKNOWN_KEYS = {SingleNodeMode, RaftMode, StaticMode, WorkerTierMode, RaftPeer,
                        StaticPeer}


@pytest.mark.parametrize("cls", list(ALL_TABLES), ids=lambda c: c.__name__)
def test_unknown_keys_per_type_as_zlayer(cls):
    _rows, doc = ALL_TABLES[cls]
    future = {**doc, "zz_added_later": {"nested": [1, "x"]}, "zz_flag": True}
    if cls in REFUSES_UNKNOWN_KEYS:
        assert not cls.IGNORE_UNKNOWN_KEYS
        bad(cls, future, "zz_added_later: unknown key")
        return
    # skipped on decode and never written back: the record is the one without the keys
    assert cls.IGNORE_UNKNOWN_KEYS
    obj = from_dict(cls, future)
    assert obj == from_dict(cls, doc)
    assert to_dict(obj) == doc
    assert from_msgpack(cls, dumps_msgpack(future)) == obj
    assert from_json(cls, json.dumps(future)) == obj


def test_unknown_keys_skipped_at_every_depth_of_a_tolerant_record():
    report = json.loads(GOLDEN_STATUS_REPORT)
    report["containers"][0]["restart_count"] = 3          # a field ZLayer's proto has
    report["resources"]["disk_used_bytes"] = 10
    report["cluster"] = "c1"
    assert from_dict(WorkerStatusReport, report) == from_json(WorkerStatusReport,
                                                              GOLDEN_STATUS_REPORT)
    lease = {**TABLES[WorkerLease][1], "profile": {**PROFILE, "version": "0.9"}}
    assert to_dict(from_dict(WorkerLease, lease)) == TABLES[WorkerLease][1]
    poll = {"revision": 1, "events": [{"kind": "drain", "revision": 1, "service": "web"}]}
    assert from_dict(WorkerPollResponse, poll).events == (DrainEvent(revision=1),)
    # a strict record inside a config still refuses, wherever it is
    bad(ClusterMode, {**RAFT_DOC, "peers": [{**RAFT_DOC["peers"][0], "role": "x"}]},
        "peers[0].role: unknown key")
    # what the keys are is still checked: the tag, the types of known fields
    bad(WorkerPollResponse, {"revision": 1, "events": [{"kind": "upsert", "revision": 1}]},
        "events[0].kind: unknown variant 'upsert'; expected set, delete, drain, undrain")
    bad(WorkerPollRequest, {"node_id": "1", "extra": 1},
        "node_id: expected an integer (u64), got string")


def test_missing_required_field():
    bad(ClusterMode, raft_with_peer1(raft_addr=...), "peers[1].raft_addr: required field missing")
    bad(ClusterMode, {"mode": "raft", "peers": []}, "node_id: required field missing")
    bad(WorkerLease, {"node_id": 1}, "profile: required field missing")


def test_not_a_map():
    bad(ClusterMode, {**RAFT_DOC, "peers": ["10.0.0.1:9000"]},
        "peers[0]: expected a map, got string")
    bad(ClusterMode, {**RAFT_DOC, "peers": {"id": 1}}, "peers: expected a list, got map")
    with pytest.raises(BadRequest) as info:
        from_dict(WorkerPollRequest, [1])
    assert str(info.value) == "expected a map, got list" and info.value.field is None


@pytest.mark.parametrize("value,problem", [
    (True, "expected an integer (u64), got bool"),
    (False, "expected an integer (u64), got bool"),
    (3.0, "expected an integer (u64), got float"),
    ("3", "expected an integer (u64), got string"),
    (-1, "-1 is out of range for u64"),
    (2**64, "18446744073709551616 is out of range for u64"),
])
def test_wrong_type_or_range_for_u64(value, problem):
    bad(WorkerPollRequest, {"node_id": 1, "last_revision": value}, f"last_revision: {problem}")


@pytest.mark.parametrize("value,problem", [
    (True, "expected an integer (u32), got bool"),
    (3.0, "expected an integer (u32), got float"),
    (4294967296, "4294967296 is out of range for u32"),
    (-1, "-1 is out of range for u32"),
    (None, "must not be null"),
])
def test_wrong_type_or_range_for_u32(value, problem):
    bad(WorkerPollRequest, {"node_id": 1, "max_wait_secs": value}, f"max_wait_secs: {problem}")


def test_integer_bounds_accepted():
    assert from_dict(WorkerPollRequest, {"node_id": 2**64 - 1, "max_wait_secs": 2**32 - 1,
                                         "last_revision": 0}).node_id == 2**64 - 1
    lease = dict(TABLES[WorkerLease][1])
    for v in (-(2**63), 2**63 - 1):
        assert from_dict(WorkerLease, {**lease, "acquired_unix_secs": v}).acquired_unix_secs == v
    bad(WorkerLease, {**lease, "acquired_unix_secs": -(2**63) - 1},
        "acquired_unix_secs: -9223372036854775809 is out of range for i64")
    bad(WorkerLease, {**lease, "renewed_unix_secs": 2**63},
        "renewed_unix_secs: 9223372036854775808 is out of range for i64")
    bad(WorkerLease, {**lease, "renewed_unix_secs": 1.5},
        "renewed_unix_secs: expected an integer (i64), got float")
    # msgpack carries u64 above 2**63 and i64 below 0 unchanged
    big = WorkerPollRequest(node_id=2**64 - 1, last_revision=2**63, max_wait_secs=0)
    assert from_msgpack(WorkerPollRequest, to_msgpack(big)) == big


def test_int_where_a_string_belongs():
    bad(WorkerRegisterRequest, {"token": 5, "profile": PROFILE},
        "token: expected a string, got int")
    bad(WorkerRegisterRequest, {"token": "t", "profile": {**PROFILE, "api_addr": 3669}},
        "profile.api_addr: expected an address string host:port, got int")
    bad(WorkerContainerStatus, {"service": "s", "role": True, "replica": 0, "state": "running"},
        "role: expected a string, got bool")


@pytest.mark.parametrize("value,problem", [
    ("5s", "expected a whole number of seconds, got string '5s'"),
    ("5", "expected a whole number of seconds, got string '5'"),
    (5.0, "expected a whole number of seconds, got float 5.0"),
    (True, "expected a whole number of seconds, got bool"),
    (-5, "-5 is out of range for u64"),
])
def test_seconds_are_whole_non_negative_integers(value, problem):
    doc = {**TABLES[StaticMode][1], "heartbeat_interval": value}
    bad(ClusterMode, doc, f"heartbeat_interval: {problem}")


def test_bool_field_rejects_int():
    bad(NodeServiceState, {"node_id": 1, "running": 0, "healthy": 1, "containers": []},
        "healthy: expected a bool, got int")
    bad(WorkerPollResponse, {"revision": 1, "full": "true"}, "full: expected a bool, got string")


def test_map_entries_have_their_own_path():
    doc = {**json.loads(GOLDEN_SERVER), "labels": {"zone": 5}}
    bad(ClusterMode, doc, 'labels["zone"]: expected a string, got int')
    doc = json.loads(GOLDEN_STATIC)
    doc["peers"][1]["labels"] = {"gpu": "a100", "count": True}
    bad(ClusterMode, doc, 'peers[1].labels["count"]: expected a string, got bool')
    bad(WorkerProfile, {**PROFILE, "labels": ["zone"]},
        "labels: expected a map of strings, got list")


def test_unknown_kind_variant():
    doc = {"revision": 1, "events": [{"kind": "upsert", "service": "web", "revision": 1}]}
    bad(WorkerPollResponse, doc, "events[0].kind: unknown variant 'upsert'; expected set, "
                                 "delete, drain, undrain")
    bad(WorkerPollResponse, {"revision": 1, "events": [{"revision": 1}]},
        "events[0].kind: required field missing")
    bad(WorkerPollResponse, {"revision": 1, "events": [{"kind": 1, "revision": 1}]},
        "events[0].kind: expected a string, got int")
    bad(WorkerPollResponse, {"revision": 1, "events": [{"kind": "Set", "revision": 1}]},
        "events[0].kind: unknown variant 'Set'; expected set, delete, drain, undrain")
    bad(WorkerAssignmentEvent, {"kind": None, "revision": 1}, "kind: required field missing")


def test_unknown_mode_variant():
    bad(ClusterMode, {"mode": "cluster"},
        "mode: unknown variant 'cluster'; expected single-node, raft, static, worker-tier")
    bad(ClusterMode, {"mode": "worker_tier", "role": "server"},
        "mode: unknown variant 'worker_tier'; expected single-node, raft, static, worker-tier")
    bad(ClusterMode, {"node_id": 1}, "mode: required field missing")
    bad(ClusterMode, {"mode": "worker-tier", "role": "leader"},
        "role: unknown variant 'leader'; expected server, worker")
    bad(ClusterMode, {"mode": "worker-tier", "role": "Server"},
        "role: unknown variant 'Server'; expected server, worker")
    assert from_dict(ClusterMode, {"mode": "single-node"}) == SingleNodeMode()
    assert to_dict(SingleNodeMode()) == {"mode": "single-node"}


def test_decoding_a_variant_class_checks_its_tag():
    bad(SetEvent, {"kind": "drain", "service": "s", "assignments": [], "revision": 1},
        "kind: expected 'set'")
    bad(DrainEvent, {"revision": 1}, "kind: expected 'drain'")


def test_nan_and_infinity_rejected_in_json():
    for text in ('{"cpu_used": NaN}', '{"cpu_used": Infinity}', '{"cpu_used": -Infinity}'):
        with pytest.raises(BadRequest) as info:
            loads_json(text)
        assert str(info.value) == f"cpu_used: {text[13:-1]} is not allowed in JSON"
        assert info.value.field == "cpu_used"
    for text, path in (('{"cpu_used": 1e999}', "cpu_used"),
                       ('{"spec": {"x": [-1e400]}}', "spec.x[0]")):
        with pytest.raises(BadRequest, match=r"is not a finite number") as info:
            loads_json(text.encode())
        assert info.value.field == path
    with pytest.raises(BadRequest, match="cpu_used: NaN is not allowed in JSON"):
        from_json(WorkerResourceUsage,
                  b'{"cpu_used": NaN, "memory_used_bytes": 0, "gpu_used": 0}')
    with pytest.raises(BadRequest, match="spec.x: NaN is not allowed in JSON"):
        from_json(InternalScaleRequest, b'{"service": "s", "spec": {"x": NaN}}')
    # the path of a value in a list of lists, in a map whose key is not a name
    with pytest.raises(BadRequest) as info:
        loads_json(b'{"spec": {"a b": [1, [2, Infinity]]}}')
    assert info.value.field == 'spec["a b"][1][1]'
    # a bare NaN is a problem with the document as a whole
    with pytest.raises(BadRequest) as info:
        loads_json(b"NaN")
    assert info.value.field is None


def test_an_integer_too_long_to_read_is_named_by_its_path():
    with pytest.raises(BadRequest) as info:
        loads_json(b'{"profile": {"cpu_total": 1' + b"0" * 5000 + b"}}")
    assert info.value.field == "profile.cpu_total"
    assert "integer of 5001 digits is too large" in str(info.value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_f64_rejected_from_msgpack(value):
    b = msgpack.packb({"cpu_used": value, "memory_used_bytes": 0, "gpu_used": 0})
    with pytest.raises(BadRequest) as info:
        from_msgpack(WorkerResourceUsage, b)
    assert str(info.value) == f"cpu_used: {value!r} is not a finite number"
    assert info.value.field == "cpu_used"


def test_f64_rejects_non_numbers_and_ints_beyond_float_range():
    base = {"memory_used_bytes": 0, "gpu_used": 0}
    bad(WorkerResourceUsage, {**base, "cpu_used": "1.5"}, "cpu_used: expected a number, got string")
    bad(WorkerResourceUsage, {**base, "cpu_used": True}, "cpu_used: expected a number, got bool")
    huge = 10**400
    bad(WorkerResourceUsage, {**base, "cpu_used": huge}, f"cpu_used: {huge} is not a finite number")
    with pytest.raises(BadRequest) as info:
        from_json(WorkerResourceUsage, ('{"cpu_used": %d, "memory_used_bytes": 0, '
                                        '"gpu_used": 0}' % huge).encode())
    assert info.value.field == "cpu_used"


def test_nan_cannot_be_encoded_as_json():
    u = WorkerResourceUsage(cpu_used=math.nan, memory_used_bytes=0, gpu_used=0)
    with pytest.raises(BadRequest, match="cannot encode as JSON"):
        to_json(u)


def test_duplicate_key_in_json():
    with pytest.raises(BadRequest) as info:
        loads_json(b'{"node_id": 1, "node_id": 2}')
    assert str(info.value) == "node_id: duplicate key in one map"
    assert info.value.field == "node_id"
    with pytest.raises(BadRequest, match="labels.zone: duplicate key in one map"):
        from_json(ClusterMode, GOLDEN_SERVER.replace('"zone": "eu-1a"',
                                                     '"zone": "eu-1a", "zone": "eu-1b"'))


def test_duplicate_key_in_msgpack():
    data = b"\x82" + b"\xa7node_id\x01" + b"\xa7node_id\x02"    # fixmap of 2, same key twice
    with pytest.raises(BadRequest) as info:
        loads_msgpack(data)
    assert str(info.value) == "node_id: duplicate key in one map"
    with pytest.raises(BadRequest, match="node_id: duplicate key in one map"):
        from_msgpack(WorkerPollRequest, data)
    nested = b"\x81\xa6labels\x82\xa1a\xa1x\xa1a\xa1y"              # {"labels": {a, a}}
    with pytest.raises(BadRequest, match="labels.a: duplicate key in one map") as info:
        loads_msgpack(nested)
    assert info.value.field == "labels.a"
    assert loads_msgpack(b"\x82\xa1a\x01\xa1b\x02") == {"a": 1, "b": 2}


def test_msgpack_ext_types_rejected():
    ext = msgpack.packb({"service": "s", "spec": {"x": msgpack.ExtType(5, b"ab")}})
    with pytest.raises(BadRequest) as info:
        from_msgpack(InternalScaleRequest, ext)
    assert str(info.value) == "spec.x: msgpack ext type 5 is not allowed"
    assert info.value.field == "spec.x"
    # ext type -1 (timestamp) is decoded by msgpack itself, not via ext_hook
    for value, path in (({"service": "s", "spec": {"t": msgpack.Timestamp(1, 0)}}, "spec.t"),
                        ({"service": "s", "spec": {"t": [1, [msgpack.Timestamp(1, 0)]]}},
                         "spec.t[1][0]"),
                        (msgpack.Timestamp(1, 0), None)):
        with pytest.raises(BadRequest) as info:
            loads_msgpack(msgpack.packb(value))
        assert str(info.value).endswith("msgpack ext type -1 is not allowed")
        assert info.value.field == path


def test_msgpack_bin_where_a_string_belongs():
    data = msgpack.packb({"token": b"secret", "profile": PROFILE}, use_bin_type=True)
    with pytest.raises(BadRequest) as info:
        from_msgpack(WorkerRegisterRequest, data)
    assert str(info.value) == "token: expected a string, got bytes"
    data = msgpack.packb({"node_id": 1, "ts_ns": 1, "containers": [],
                          "resources": {b"cpu_used": 1.0}}, use_bin_type=True)
    with pytest.raises(BadRequest) as info:
        from_msgpack(WorkerStatusReport, data)
    assert str(info.value) == "resources: map key b'cpu_used' is not a string"


def test_malformed_bytes():
    with pytest.raises(BadRequest, match=r"^malformed msgpack: "):
        loads_msgpack(b"\xc1")
    with pytest.raises(BadRequest, match=r"^malformed msgpack: "):
        loads_msgpack(msgpack.packb({"a": 1}) + b"\x01")              # trailing data
    with pytest.raises(BadRequest, match=r"^malformed msgpack: "):
        loads_msgpack(msgpack.packb({1: 2}))                          # int map key
    with pytest.raises(BadRequest, match=r"^malformed msgpack: "):
        loads_msgpack(b"\xa2\xff\xfe")                                 # str, not UTF-8
    with pytest.raises(BadRequest, match=r"^malformed JSON: "):
        loads_json(b'{"a": 1')
    with pytest.raises(BadRequest, match=r"^malformed JSON: "):
        loads_json(b'{"a": "\xff"}')                                   # not UTF-8
    with pytest.raises(BadRequest, match=r"^malformed JSON: "):
        loads_json(b'{"a": "\\ud800"}')                                # lone surrogate
    assert loads_json(b'{"a": "\\ud83d\\ude00", "b": "\\\\ud800"}') == {
        "a": "\U0001f600", "b": "\\ud800"}


# ---------------------------------------------------------------------------- addresses

@pytest.mark.parametrize("addr,problem", [
    ("fd00::3:3669", "'fd00::3:3669': an IPv6 address must be in brackets, as [addr]:port"),
    ("::1:3669", "'::1:3669': an IPv6 address must be in brackets, as [addr]:port"),
    ("10.0.0.1:0", "'10.0.0.1:0': port '0' is not a number from 1 to 65535"),
    ("10.0.0.1:65536", "'10.0.0.1:65536': port '65536' is not a number from 1 to 65535"),
    ("10.0.0.1:x", "'10.0.0.1:x': port 'x' is not a number from 1 to 65535"),
    ("10.0.0.1:", "'10.0.0.1:': port '' is not a number from 1 to 65535"),
    ("10.0.0.1:-1", "'10.0.0.1:-1': port '-1' is not a number from 1 to 65535"),
    ("10.0.0.1", "'10.0.0.1': expected host:port"),
    ("10.0.0.256:80", "'10.0.0.256:80': '10.0.0.256' is not an IPv4 address"),
    ("[fd00::zz]:80", "'[fd00::zz]:80': 'fd00::zz' in brackets is not an IPv6 address"),
    ("[10.0.0.1]:80", "'[10.0.0.1]:80': '10.0.0.1' in brackets is not an IPv6 address"),
    ("[fd00::1]80", "'[fd00::1]80': expected ':port' after ']'"),
    ("[fd00::1:80", "'[fd00::1:80': unterminated '[' in address"),
    ("bad_host:80", "'bad_host:80': 'bad_host' is neither an IP address nor a DNS name"),
    ("-bad.example:80", "'-bad.example:80': '-bad.example' is neither an IP address nor a "
                        "DNS name"),
    (":80", "':80': '' is neither an IP address nor a DNS name"),
    ("10.0.0.1\n:80", "'10.0.0.1\\n:80': '10.0.0.1\\n' is neither an IP address nor a "
                      "DNS name"),
    # a URL is not an addr (only endpoints take a scheme)
    ("http://10.0.0.1:80", "'http://10.0.0.1:80': expected host:port, not a URL"),
])
def test_bad_addr(addr, problem):
    doc = json.loads(GOLDEN_STATIC)
    doc["peers"][1]["api_addr"] = addr
    bad(ClusterMode, doc, f"peers[1].api_addr: {problem}")


@pytest.mark.parametrize("written,canonical", [
    ("[FD00:0:0::3]:3669", "[fd00::3]:3669"),
    ("[fd00:0000:0000:0000:0000:0000:0000:0003]:3669", "[fd00::3]:3669"),
    ("[0:0::0]:80", "[::]:80"),
    ("10.0.0.1:03669", "10.0.0.1:3669"),
    ("node-1.Example.COM:3669", "node-1.example.com:3669"),
    ("localhost:1", "localhost:1"),
    ("10.0.0.1:65535", "10.0.0.1:65535"),
])
def test_addr_canonical_form(written, canonical):
    peer = from_dict(RaftPeer, {"id": 1, "raft_addr": written, "api_addr": "10.9.9.9:1"})
    assert peer.raft_addr == canonical
    assert to_dict(peer)["raft_addr"] == canonical


@pytest.mark.parametrize("written,reachable", [
    ("0.0.0.0:0", None),              # what ZLayer stores for a worker registered over gRPC
    ("[::]:0", None), ("10.0.0.5:0", None), ("0.0.0.0:3669", None), ("[::]:3669", None),
    ("10.0.0.5:3669", "10.0.0.5:3669"), ("w1.example:3669", "w1.example:3669"),
])
def test_profile_api_addr_takes_port_zero_as_no_reachable_api(written, reachable):
    doc = {**PROFILE, "api_addr": written}
    profile = from_dict(WorkerProfile, doc)
    assert to_dict(profile)["api_addr"] == written
    assert profile.reachable_api_addr == reachable
    lease = {**TABLES[WorkerLease][1], "profile": doc}
    assert to_dict(from_json(WorkerLease, json.dumps(lease))) == lease
    # peers are dialled: port 0 stays refused there
    bad(RaftPeer, {"id": 1, "raft_addr": "10.0.0.1:0", "api_addr": "10.0.0.1:1"},
        "raft_addr: '10.0.0.1:0': port '0' is not a number from 1 to 65535")
    bad(WorkerProfile, {**PROFILE, "api_addr": "10.0.0.5:65536"},
        "api_addr: '10.0.0.5:65536': port '65536' is not a number from 0 to 65535")


@pytest.mark.parametrize("written,canonical", [
    ("10.0.0.1:3669", "10.0.0.1:3669"),
    ("http://10.0.0.1:3669", "http://10.0.0.1:3669"),
    ("https://[FD00::1]:3669", "https://[fd00::1]:3669"),
    ("https://CP.example.com:443/", "https://cp.example.com:443"),
])
def test_endpoint_canonical_form(written, canonical):
    ack = from_dict(WorkerStatusAck, {"next_ttl_secs": 1, "servers": [written], "leader": written})
    assert ack.servers == (canonical,) and ack.leader == canonical


@pytest.mark.parametrize("written,problem", [
    ("ftp://10.0.0.1:21", "'ftp://10.0.0.1:21': scheme must be http or https"),
    ("http://10.0.0.1", "'http://10.0.0.1': expected host:port"),
    ("https://fd00::1:443", "'https://fd00::1:443': an IPv6 address must be in brackets, as "
                            "[addr]:port"),
    ("http://10.0.0.1:80/api", "'http://10.0.0.1:80/api': port '80/api' is not a number from "
                               "1 to 65535"),
])
def test_bad_endpoint(written, problem):
    bad(WorkerStatusAck, {"next_ttl_secs": 1, "servers": ["10.0.0.1:1", written]},
        f"servers[1]: {problem}")
    bad(WorkerRegisterResponse, {**TABLES[WorkerRegisterResponse][1], "servers": [written]},
        f"servers[0]: {problem}")


@pytest.mark.parametrize("written,canonical", [("10.200.0.17", "10.200.0.17"),
                                               ("fd00::17", "fd00::17"),
                                               ("FD00:0::17", "fd00::17")])
def test_ip_canonical_form(written, canonical):
    st_ = from_dict(WorkerContainerStatus, {"service": "s", "role": "r", "replica": 0,
                                            "state": "running", "overlay_ip": written})
    assert st_.overlay_ip == canonical


@pytest.mark.parametrize("written", ["10.200.0.17:80", "[fd00::17]", "10.200.0.256", "host",
                                     ""])
def test_bad_ip(written):
    bad(WorkerContainerStatus, {"service": "s", "role": "r", "replica": 0, "state": "running",
                                "overlay_ip": written},
        f"overlay_ip: {written!r} is not an IP address (no port, no brackets)")


# ---------------------------------------------------------------------------- open strings

@pytest.mark.parametrize("state", model.CONTAINER_STATES + ("zombie", "Running", "paused", ""))
def test_container_state_is_kept_as_received(state):
    doc = json.loads(GOLDEN_STATUS_REPORT)
    doc["containers"][1]["state"] = state
    report = from_dict(WorkerStatusReport, doc)
    assert report.containers[1].state == state
    assert to_dict(report) == doc                                   # round trip unchanged
    summary = {**TABLES[ClusterContainerSummary][1], "state": state}
    view = {"node_id": 1, "running": 0, "healthy": True, "containers": [summary]}
    assert to_dict(from_dict(NodeServiceState, view)) == view
    assert json.loads(to_json(from_json(NodeServiceState, json.dumps(view)))) == view
    bad(WorkerContainerStatus, {"service": "s", "role": "r", "replica": 0, "state": 1},
        "state: expected a string, got int")


def test_zlayer_container_states_are_known():
    # ContainerState::as_str of ZLayer's agent and the gRPC phase names
    for state in ("pending", "initializing", "running", "stopping", "exited", "failed",
                  "unknown", "starting", "degraded", "stopped"):
        assert state in model.CONTAINER_STATES


@pytest.mark.parametrize("os_name,arch", [
    ("linux", "x86_64"), ("windows", "aarch64"), ("darwin", "aarch64"), ("macos", "aarch64"),
    ("freebsd", "x86_64"), ("linux", "riscv64"), ("linux", "s390x"), ("illumos", "x86"),
    ("", ""), ("plan9", "vax")])
def test_profile_os_and_arch_are_kept_as_received(os_name, arch):
    doc = {**PROFILE, "os": os_name, "arch": arch}
    p = from_dict(WorkerProfile, doc)
    assert (p.os, p.arch) == (os_name, arch)
    assert to_dict(p) == doc
    req = {"token": "t", "profile": doc}
    assert json.loads(to_json(from_json(WorkerRegisterRequest, json.dumps(req)))) == req
    assert p.placement_os == ("darwin" if os_name == "macos" else os_name)
    bad(WorkerProfile, {**PROFILE, "arch": None}, "arch: must not be null")
    bad(WorkerProfile, {**PROFILE, "os": 7}, "os: expected a string, got int")


def test_rust_os_and_arch_values_are_known():
    assert {"linux", "windows", "macos", "darwin", "freebsd"} <= set(model.KNOWN_OS)
    assert {"x86_64", "aarch64", "arm", "x86", "riscv64", "s390x"} <= set(model.KNOWN_ARCH)


# ---------------------------------------------------------------------------- §18, §19, §13

def test_empty_service_and_role_rejected():
    bad(InternalScaleRequest, {"service": "", "replicas": 1}, "service: must not be empty")
    bad(WorkerPollResponse, {"revision": 1, "events": [
        {"kind": "set", "service": "", "assignments": [], "revision": 1}]},
        "events[0].service: must not be empty")
    bad(InternalScaleRequest, {"service": "db", "replicas": 1,
                               "assignments": [{"role": "", "indices": [0]}]},
        "assignments[0].role: must not be empty")


def test_scale_replicas_must_match_the_indices():
    doc = json.loads(GOLDEN_SCALE_PHASE2)
    for replicas in (2, 4, 0):
        bad(InternalScaleRequest, {**doc, "replicas": replicas},
            f"replicas: {replicas} does not match the 3 indices in assignments")
    bad(InternalScaleRequest, {"service": "db", "assignments": doc["assignments"]},
        "replicas: 0 does not match the 3 indices in assignments")


def test_scale_roles_must_be_distinct():
    doc = {"service": "db", "replicas": 3, "assignments": [
        {"role": "primary", "indices": [0]}, {"role": "primary", "indices": [1, 2]}]}
    bad(InternalScaleRequest, doc, "assignments[1].role: duplicate role 'primary'")
    ev = {"kind": "set", "service": "db", "revision": 1, "assignments": [
        {"role": "a", "indices": []}, {"role": "b", "indices": []},
        {"role": "a", "indices": [3]}]}
    bad(WorkerPollResponse, {"revision": 1, "events": [{"kind": "drain", "revision": 1}, ev]},
        "events[1].assignments[2].role: duplicate role 'a'")


def test_scale_indices_must_be_distinct_within_a_group():
    doc = {"service": "db", "replicas": 3, "assignments": [
        {"role": "primary", "indices": [0, 0]}, {"role": "replica", "indices": [1]}]}
    bad(InternalScaleRequest, doc, "assignments[0].indices[1]: duplicate index 0")
    doc = {"service": "db", "replicas": 4, "assignments": [
        {"role": "primary", "indices": [0]}, {"role": "replica", "indices": [1, 2, 1]}]}
    bad(InternalScaleRequest, doc, "assignments[1].indices[2]: duplicate index 1")
    bad(InternalScaleRequest, {"service": "db", "replicas": 1, "assignments": [
        {"role": "r", "indices": [-1]}]}, "assignments[0].indices[0]: -1 is out of range for u32")
    # the same index in two different roles is fine
    ok = from_dict(InternalScaleRequest, {"service": "db", "replicas": 2, "assignments": [
        {"role": "a", "indices": [0]}, {"role": "b", "indices": [0]}]})
    assert ok.container_names() == ["db-a-0", "db-b-0"]


def test_indices_are_written_ascending():
    doc = {"service": "db", "replicas": 3, "assignments": [{"role": "r", "indices": [2, 0, 1]}]}
    req = from_dict(InternalScaleRequest, doc)
    assert to_dict(req)["assignments"] == [{"role": "r", "indices": [0, 1, 2]}]
    assert req.container_names() == ["db-r-0", "db-r-1", "db-r-2"]


def test_adaptive_ttl_config_min_above_max_rejected():
    doc = {**TABLES[AdaptiveTtlConfig][1], "min_ttl_secs": 601}
    bad(AdaptiveTtlConfig, doc, "min_ttl_secs: 601 is above max_ttl_secs 600")
    assert from_dict(AdaptiveTtlConfig, {**doc, "min_ttl_secs": 600}).min_ttl_secs == 600
    bad(AdaptiveTtlConfig, {}, "min_ttl_secs: required field missing")   # required on the wire
    assert AdaptiveTtlConfig() == AdaptiveTtlConfig(min_ttl_secs=10, max_ttl_secs=600,
                                                    grace_secs=10, max_heartbeats_per_second=50,
                                                    failover_ttl_secs=300)   # defaults in code


def test_decode_error_code_is_bad_request():
    err = bad(WorkerPollRequest, {"node_id": 1, "max_wait_secs": 4294967296},
              "max_wait_secs: 4294967296 is out of range for u32")
    assert err.to_body() == {"code": "bad_request",
                             "message": "max_wait_secs: 4294967296 is out of range for u32",
                             "field": "max_wait_secs"}
    with pytest.raises(BadRequest) as info:
        from_json(WorkerPollRequest, b'{"node_id": 1, "max_wait_secs": 4294967296}')
    assert info.value.field == "max_wait_secs"
    with pytest.raises(BadRequest) as info:
        from_msgpack(WorkerPollRequest, msgpack.packb({"node_id": 1, "max_wait_secs": 2**32}))
    assert str(info.value) == "max_wait_secs: 4294967296 is out of range for u32"


def test_deeply_nested_input_is_a_bad_request_not_a_crash():
    from raftdir.codec import loads_json, loads_msgpack
    with pytest.raises(BadRequest, match="malformed JSON"):
        loads_json("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BadRequest, match="malformed msgpack"):
        loads_msgpack(b"\x91" * 100_000 + b"\xc0")
