"""Every record ZLayer writes from its cluster module, exactly as its daemons write it,
decoded by raftdir and written back byte for byte.

The JSON documents are serde_json's compact output of ZLayer's structs
(BlackLeafDigital/ZLayer ``crates/zlayer-types/src/cluster.rs``): fields in declaration
order, ``skip_serializing_if`` fields left out, ``Option`` fields without it written as
``null``, floats with a fraction part. The values are what its code puts there: a worker
registered over gRPC has ``api_addr`` ``0.0.0.0:0`` and empty ``os``/``arch`` when its proto
profile is missing (``crates/zlayer-cluster-rpc/src/convert.rs``,
``crates/zlayer-scheduler/src/worker_dispatcher.rs``); container states are
``ContainerState::as_str`` (``crates/zlayer-agent/src/runtime.rs``) or the gRPC phase
names; container ids are ``ContainerId``'s ``{service}-rep-{replica}``; Rust's
``std::env::consts`` names for ``os``/``arch``; registration over gRPC has an empty
``cluster_id`` and ``internal_token``. The YAML documents are serde_yaml 0.9's layout
(``bin/zlayer/src/commands/node.rs`` writes ``cluster_mode.yaml`` with it).

Label maps hold at most one entry (a Rust ``HashMap`` has no fixed order)."""

from __future__ import annotations

import json

import pytest
import yaml

from raftdir.codec import dumps_msgpack, from_dict, from_json, loads_msgpack, to_dict, to_json
from raftdir.config import dump_yaml, parse_cluster_mode
from raftdir.model import (
    AdaptiveTtlConfig, ClusterContainerSummary, ClusterMode, InternalScaleRequest,
    NodeServiceState, RaftMode, RaftPeer, ScaleAssignment, StaticMode, StaticPeer,
    WorkerAssignmentEvent, WorkerContainerStatus, WorkerLease, WorkerPollRequest,
    WorkerPollResponse, WorkerProfile, WorkerRegisterRequest, WorkerRegisterResponse,
    WorkerResourceUsage, WorkerStatusAck, WorkerStatusReport, WorkerTierMode,
)

HTTP_PROFILE = ('{"api_addr":"10.0.0.21:3669","os":"linux","arch":"x86_64",'
                '"labels":{"zone":"eu-1a"},"cpu_total":16,"memory_total_bytes":67108864000}')
GRPC_PROFILE = ('{"api_addr":"0.0.0.0:0","os":"macos","arch":"aarch64","cpu_total":10,'
                '"memory_total_bytes":34359738368}')
EMPTY_PROFILE = '{"api_addr":"0.0.0.0:0","os":"","arch":"","cpu_total":0,"memory_total_bytes":0}'

JSON_GOLDENS: list[tuple[str, type, str]] = [
    ("profile-http", WorkerProfile, HTTP_PROFILE),
    ("profile-grpc", WorkerProfile, GRPC_PROFILE),
    ("profile-grpc-without-profile", WorkerProfile, EMPTY_PROFILE),
    ("profile-rust-names", WorkerProfile,
     '{"api_addr":"[fd00::21]:3669","os":"freebsd","arch":"riscv64","cpu_total":4,'
     '"memory_total_bytes":8589934592}'),
    ("lease-grpc-worker", WorkerLease,
     '{"node_id":1000004,"profile":' + GRPC_PROFILE + ',"acquired_unix_secs":1767225600,'
     '"renewed_unix_secs":1767225630,"ttl_secs":10,"grace_secs":10}'),
    ("register-request", WorkerRegisterRequest,
     '{"token":"eyJ2IjoxfQ","profile":' + HTTP_PROFILE + '}'),
    ("register-request-desired-id", WorkerRegisterRequest,
     '{"token":"eyJ2IjoxfQ","desired_node_id":1000004,"profile":' + EMPTY_PROFILE + '}'),
    ("register-response", WorkerRegisterResponse,
     '{"node_id":1000004,"cluster_id":"c-7f3a","heartbeat_ttl_secs":10,'
     '"heartbeat_grace_secs":10,"internal_token":"4b1d"}'),
    ("register-response-from-grpc", WorkerRegisterResponse,
     '{"node_id":1000004,"cluster_id":"","heartbeat_ttl_secs":10,"heartbeat_grace_secs":10,'
     '"internal_token":""}'),
    ("poll-request", WorkerPollRequest,
     '{"node_id":1000004,"last_revision":0,"max_wait_secs":30}'),
    ("poll-response", WorkerPollResponse,
     '{"revision":43,"events":[{"kind":"set","service":"db","assignments":['
     '{"role":"primary","indices":[0]},{"role":"read","indices":[1,2]}],"revision":41},'
     '{"kind":"delete","service":"cache","revision":42},{"kind":"drain","revision":43}]}'),
    ("poll-response-timeout", WorkerPollResponse, '{"revision":43}'),
    ("assignment-set-empty", WorkerAssignmentEvent,
     '{"kind":"set","service":"web","assignments":[],"revision":7}'),
    ("status-report", WorkerStatusReport,
     '{"node_id":1000004,"ts_ns":1767225630123456789,"containers":['
     '{"service":"web","role":"default","replica":0,"state":"running",'
     '"overlay_ip":"10.200.0.17"},'
     '{"service":"web","role":"default","replica":1,"state":"initializing"},'
     '{"service":"db","role":"read","replica":2,"state":"exited"},'
     '{"service":"db","role":"primary","replica":0,"state":"unknown",'
     '"overlay_ip":"fd00:200::9"}],'
     '"resources":{"cpu_used":2.75,"memory_used_bytes":1073741824,"gpu_used":1}}'),
    ("status-report-idle-worker", WorkerStatusReport,
     '{"node_id":1000004,"ts_ns":1767225630000000000,"containers":[],'
     '"resources":{"cpu_used":0.0,"memory_used_bytes":0,"gpu_used":0}}'),
    ("status-ack", WorkerStatusAck, '{"next_ttl_secs":20}'),
    ("adaptive-ttl", AdaptiveTtlConfig,
     '{"min_ttl_secs":10,"max_ttl_secs":600,"grace_secs":10,"max_heartbeats_per_second":50,'
     '"failover_ttl_secs":300}'),
    ("scale-legacy", InternalScaleRequest, '{"service":"web","replicas":3}'),
    ("scale-zero", InternalScaleRequest, '{"service":"web","replicas":0}'),
    ("scale-phase2", InternalScaleRequest,
     '{"service":"db","replicas":3,"assignments":[{"role":"primary","indices":[0]},'
     '{"role":"read","indices":[1,2]}]}'),
    # `spec` is ZLayer's whole ServiceSpec; raftdir keeps it opaque, byte for byte
    ("scale-with-spec", InternalScaleRequest,
     '{"service":"web","replicas":2,"spec":{"rtype":"service","image":{"name":"nginx:1.27",'
     '"pull_policy":"if_not_present"},"scale":{"mode":"fixed","replicas":2},'
     '"env":{},"ports":[{"port":80,"protocol":"http"}],"health":null}}'),
    ("scale-assignment", ScaleAssignment, '{"role":"default","indices":[0,1,2]}'),
    ("node-service-state", NodeServiceState,
     '{"node_id":2,"running":1,"healthy":true,"containers":['
     '{"node_id":2,"id":"web-rep-0","service":"web","replica":0,'
     '"image":"docker.io/library/nginx:1.27","state":"running","pid":4242,'
     '"overlay_ip":"10.200.0.5"},'
     '{"node_id":2,"id":"web-rep-1","service":"web","replica":1,'
     '"image":"docker.io/library/nginx:1.27","state":"initializing","pid":null,'
     '"overlay_ip":null}]}'),
    ("node-service-state-idle", NodeServiceState,
     '{"node_id":0,"running":0,"healthy":true,"containers":[]}'),
    ("container-summary", ClusterContainerSummary,
     '{"node_id":3,"id":"db-read-2-on-3","service":"db","replica":2,"image":"postgres:17",'
     '"state":"stopping","pid":77,"overlay_ip":"10.200.0.9"}'),
    ("container-status", WorkerContainerStatus,
     '{"service":"web","role":"default","replica":4,"state":"pending"}'),
    ("resource-usage", WorkerResourceUsage,
     '{"cpu_used":0.5,"memory_used_bytes":536870912,"gpu_used":0}'),
]


@pytest.mark.parametrize("name,cls,text", JSON_GOLDENS, ids=[g[0] for g in JSON_GOLDENS])
def test_zlayer_json_decodes_and_reencodes_byte_for_byte(name, cls, text):
    obj = from_json(cls, text)
    assert to_json(obj) == text.encode("utf-8")            # serde_json's bytes, unchanged
    assert from_dict(cls, loads_msgpack(dumps_msgpack(json.loads(text)))) == obj
    assert loads_msgpack(dumps_msgpack(to_dict(obj))) == json.loads(text)


def test_every_record_zlayer_writes_has_a_json_golden():
    written = {cls for _name, cls, _text in JSON_GOLDENS}
    # the two peer types and ClusterMode are written as YAML (below)
    assert written >= {
        WorkerProfile, WorkerLease, WorkerRegisterRequest, WorkerRegisterResponse,
        WorkerPollRequest, WorkerPollResponse, WorkerAssignmentEvent, WorkerStatusReport,
        WorkerContainerStatus, WorkerResourceUsage, WorkerStatusAck, AdaptiveTtlConfig,
        InternalScaleRequest, ScaleAssignment, NodeServiceState, ClusterContainerSummary}


def test_what_the_goldens_mean():
    golden = {name: text for name, _cls, text in JSON_GOLDENS}
    lease = from_json(WorkerLease, golden["lease-grpc-worker"])
    assert lease.profile.reachable_api_addr is None and lease.profile.os == "macos"
    assert lease.profile.placement_os == "darwin"
    report = from_json(WorkerStatusReport, golden["status-report"])
    assert [c.state for c in report.containers] == ["running", "initializing", "exited",
                                                    "unknown"]
    assert report.ts_ns == 1767225630123456789
    state = from_json(NodeServiceState, golden["node-service-state"])
    assert state.containers[1].pid is None and state.containers[1].state == "initializing"


# serde_yaml 0.9 layout: block sequences at the key's indentation, `[]` when empty
YAML_GOLDENS: list[tuple[str, type, str]] = [
    # `zlayer node init` / `zlayer node join` with an IP advertise address
    ("raft-node-init", RaftMode, """\
mode: raft
node_id: 1
peers:
- id: 1
  raft_addr: 10.0.0.1:9000
  api_addr: 10.0.0.1:3669
"""),
    ("static", StaticMode, """\
mode: static
node_id: 2
peers:
- id: 1
  api_addr: 10.0.0.10:3669
  os: linux
- id: 2
  api_addr: 10.0.0.11:3669
  os: windows
  labels:
    gpu: a100
heartbeat_interval: 5
failure_threshold: 15
"""),
    ("worker-tier-server", WorkerTierMode, """\
mode: worker-tier
role: server
node_id: 1
peers:
- id: 1
  raft_addr: 10.0.0.1:9001
  api_addr: 10.0.0.1:3669
worker_ca_dir: /var/lib/zlayer/cluster
heartbeat_min_ttl: 15
heartbeat_max_ttl: 600
heartbeat_grace: 10
max_heartbeats_per_second: 100
failover_heartbeat_ttl: 300
"""),
    ("worker-tier-worker", WorkerTierMode, """\
mode: worker-tier
role: worker
servers:
- http://10.0.0.1:3670
- http://10.0.0.2:3670
token_file: /etc/zlayer/worker.token
identity_dir: /var/lib/zlayer/worker
heartbeat_min_ttl: 10
heartbeat_max_ttl: 600
heartbeat_grace: 10
max_heartbeats_per_second: 50
failover_heartbeat_ttl: 300
labels:
  zone: eu-1a
"""),
    ("single-node", ClusterMode, "mode: single-node\n"),
]


@pytest.mark.parametrize("name,cls,text", YAML_GOLDENS, ids=[g[0] for g in YAML_GOLDENS])
def test_zlayer_yaml_decodes_and_reencodes_to_the_same_document(name, cls, text):
    mode, warnings = parse_cluster_mode(text)
    assert warnings == []
    assert isinstance(mode, cls)
    assert dump_yaml(mode) == text                          # serde_yaml's bytes, unchanged
    assert to_dict(mode) == yaml.safe_load(text)
    assert json.loads(to_json(mode)) == yaml.safe_load(text)


def test_the_peer_types_inside_the_yaml():
    golden = {name: text for name, _cls, text in YAML_GOLDENS}
    raft = parse_cluster_mode(golden["raft-node-init"])[0]      # a one-member cluster
    assert raft.peers == (RaftPeer(id=1, raft_addr="10.0.0.1:9000",
                                   api_addr="10.0.0.1:3669"),)
    static = parse_cluster_mode(golden["static"])[0]
    assert static.peers[1] == StaticPeer(id=2, api_addr="10.0.0.11:3669", os="windows",
                                         labels={"gpu": "a100"})
