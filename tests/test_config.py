"""Cluster-mode files: loading, the error format, and ``raftdir config check``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from raftdir import ConfigError, SingleNodeMode, WorkerTierMode, load_cluster_mode
from raftdir.cli import cli
from raftdir.config import dump_yaml, load_with_warnings
from raftdir.model import WorkerTierRole

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml")) + sorted(EXAMPLES.glob("three-peers/*/*.yaml"))

# ZLayer's own worker-tier documents, unchanged (wire-types.md §2.4, §22).
ZLAYER_SERVER = """\
mode: worker-tier
role: server
node_id: 1
peers:
  - id: 1
    raft_addr: 10.0.0.1:9000
    api_addr: 10.0.0.1:3669
  - id: 2
    raft_addr: 10.0.0.2:9000
    api_addr: 10.0.0.2:3669
  - id: 3
    raft_addr: 10.0.0.3:9000
    api_addr: 10.0.0.3:3669
worker_grpc_addr: 0.0.0.0:3670
heartbeat_min_ttl: 10
heartbeat_max_ttl: 600
heartbeat_grace: 10
max_heartbeats_per_second: 50
failover_heartbeat_ttl: 300
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_cluster_mode(path)
    return info.value.message


def test_examples_exist_for_every_mode_and_role():
    modes = set()
    for path in EXAMPLE_FILES:
        mode = load_cluster_mode(path)
        modes.add((mode.TAG, getattr(mode, "role", None) and mode.role.value))
    assert modes == {("single-node", None), ("raft", None), ("static", None),
                     ("worker-tier", "server"), ("worker-tier", "worker")}
    assert len(list(EXAMPLES.glob("three-peers/*/cluster_mode.yaml"))) == 3


def test_three_peer_configs_agree_on_peers_and_use_loopback():
    modes = [load_cluster_mode(p) for p in sorted(EXAMPLES.glob("three-peers/*/*.yaml"))]
    assert sorted(m.node_id for m in modes) == [1, 2, 3]
    assert len({m.peers for m in modes}) == 1
    for peer in modes[0].peers:
        assert peer.raft_addr.startswith("127.0.0.1:")
        assert peer.api_addr.startswith("127.0.0.1:")


def test_missing_file_is_single_node(tmp_path):
    assert load_cluster_mode(tmp_path / "cluster_mode.yaml") == SingleNodeMode()


def test_zlayer_document_is_accepted_unchanged(tmp_path):
    mode = load_cluster_mode(write(tmp_path, "cluster_mode.yaml", ZLAYER_SERVER))
    assert isinstance(mode, WorkerTierMode) and mode.is_worker_tier_server()
    assert mode.adaptive_ttl_config().compute_ttl(1000) == 20


# What `zlayer node init` writes (bin/zlayer/src/commands/node.rs persist_cluster_mode_raft,
# serialized with serde_yaml 0.9) when its advertise address is a host name: ZLayer rebuilds
# the peers from Raft. (With an IP it lists this node alone: tests/test_zlayer_goldens.py.)
ZLAYER_NODE_INIT_HOSTNAME = """\
mode: raft
node_id: 1
peers: []
"""


def test_zlayer_node_init_file_with_a_host_name_is_refused_naming_peers(tmp_path):
    message = load_error(write(tmp_path, "cluster_mode.yaml", ZLAYER_NODE_INIT_HOSTNAME))
    assert message == (f"{tmp_path / 'cluster_mode.yaml'}: peers: empty; list this node "
                       "(id 1) with the raft_addr and api_addr it listens on, and the peers "
                       "it joins (host names are accepted)")
    # the fix the message asks for: this node's entry, by host name
    fixed = ZLAYER_NODE_INIT_HOSTNAME.replace(
        "peers: []", "peers:\n- id: 1\n  raft_addr: node1.example:9000\n"
                     "  api_addr: node1.example:3669")
    assert load_cluster_mode(write(tmp_path, "fixed.yaml", fixed)).peers[0].raft_addr == \
        "node1.example:9000"
    static = "mode: static\nnode_id: 2\npeers: []\n"
    assert load_error(write(tmp_path, "s.yaml", static)).endswith(
        "peers: empty; list this node (id 2) with the api_addr it listens on, and the peers "
        "it joins (host names are accepted)")


@pytest.mark.parametrize("value", ["yes", "no", "on", "off", "y", "n", "010", "0o17x",
                                   "1_000", "1:30", "2024-01-01", "0X1F", "1e400", "inf",
                                   "=", "'8080'", '"true"', "'~'", "x86_64"])
def test_yaml_values_zlayer_reads_as_strings_are_strings(tmp_path, value):
    """serde_yaml 0.9 (YAML 1.2 core) reads these plain scalars as strings; PyYAML's YAML 1.1
    would have made yes/on bools, 010 octal 8, 1_000 and 1:30 integers, dates dates."""
    text = f"mode: worker-tier\nrole: worker\nservers: ['10.0.0.1:3669']\nlabels: {{k: {value}}}\n"
    mode = load_cluster_mode(write(tmp_path, "w.yaml", text))
    assert mode.labels == {"k": yaml.safe_load(f"[{value}]")[0] if value[0] in "'\"" else value}


@pytest.mark.parametrize("value,problem", [
    ("8080", "expected a string, got int"), ("-5", "expected a string, got int"),
    ("0x1F", "expected a string, got int"), ("0o17", "expected a string, got int"),
    ("1.5", "expected a string, got float"), ("1e3", "expected a string, got float"),
    (".inf", "expected a string, got float"), ("true", "expected a string, got bool"),
    ("FALSE", "expected a string, got bool"), ("~", "expected a string, got null"),
    ("null", "expected a string, got null"),
])
def test_yaml_values_zlayer_reads_as_numbers_or_bools_are_refused(tmp_path, value, problem):
    text = f"mode: worker-tier\nrole: worker\nservers: ['10.0.0.1:3669']\nlabels: {{k: {value}}}\n"
    assert f'labels["k"]: {problem} (quote it' in load_error(write(tmp_path, "w.yaml", text))


@pytest.mark.parametrize("value,expected", [
    ("7", 7), ("+7", 7), ("0x10", 16), ("0o10", 8), ("0b10", 2),
    ("010", "node_id: expected an integer (u64), got string"),        # not octal 8
    ("1_000", "node_id: expected an integer (u64), got string"),
    ("1:30", "node_id: expected an integer (u64), got string"),       # not base-60 90
    ("7.0", "node_id: expected an integer (u64), got float"),
    ("yes", "node_id: expected an integer (u64), got string"),
])
def test_yaml_integers_are_read_as_zlayer_reads_them(tmp_path, value, expected):
    text = (f"mode: raft\nnode_id: {value}\npeers:\n- id: {value}\n"
            "  raft_addr: 10.0.0.1:9000\n  api_addr: 10.0.0.1:3669\n")
    path = write(tmp_path, "r.yaml", text)
    if isinstance(expected, int):
        assert load_cluster_mode(path).node_id == expected
    else:
        assert load_error(path) == f"{path}: {expected}"


def test_check_output_quotes_strings_any_yaml_reader_would_retype(tmp_path):
    labels = {"a": "1e3", "b": "yes", "c": "0o17", "d": "010", "e": "true", "f": "",
              "g": "~", "h": "8080", "i": "x"}
    mode = WorkerTierMode(role=WorkerTierRole.WORKER, servers=("10.0.0.1:3669",),
                          labels=labels)
    text = dump_yaml(mode)
    assert load_cluster_mode(write(tmp_path, "again.yaml", text)) == mode
    assert yaml.safe_load(text)["labels"] == labels           # a YAML 1.1 reader agrees


def test_json_config_is_read_by_extension(tmp_path):
    path = write(tmp_path, "mode.json", json.dumps(yaml.safe_load(ZLAYER_SERVER)))
    assert load_cluster_mode(path) == load_cluster_mode(
        write(tmp_path, "cluster_mode.yaml", ZLAYER_SERVER))


@pytest.mark.parametrize("name,text,expected", [
    ("cluster_mode.yaml", ZLAYER_SERVER.replace("    raft_addr: 10.0.0.2:9000\n", ""),
     "peers[1].raft_addr: required field missing"),
    ("cluster_mode.yaml", ZLAYER_SERVER.replace("raft_addr: 10.0.0.2", "raftaddr: 10.0.0.2"),
     "peers[1].raftaddr: unknown key; did you mean 'raft_addr'?"),
    ("cluster_mode.yaml", "mode: single-node\nmode: raft\n", "line 2: duplicate key 'mode'"),
    ("cluster_mode.yaml", "", "the file is empty"),
    ("cluster_mode.yaml", "mode: [unclosed\n", "invalid YAML"),
    ("cluster_mode.yaml", "mode: clustered\n",
     "mode: unknown variant 'clustered'; expected single-node, raft, static, worker-tier"),
    ("cluster_mode.yaml", "mode: single-node\nnode_id: 1\n", "node_id: unknown key"),
    ("cluster_mode.yaml", ZLAYER_SERVER.replace("node_id: 1", "node_id: 7"),
     "node_id: 7 is not the id of any entry in peers"),
    ("cluster_mode.yaml",
     "mode: worker-tier\nrole: worker\nservers: ['10.0.0.1:3669']\nlabels: {ssd: true}\n",
     'labels["ssd"]: expected a string, got bool (quote it: YAML reads an unquoted number, '
     'true, false or null as such, and so does ZLayer)'),
    ("cluster_mode.yaml",
     "mode: static\nnode_id: 1\npeers:\n  - {id: 1, api_addr: '10.0.0.1:1', "
     "labels: {port: 8080}}\n",
     'peers[0].labels["port"]: expected a string, got int (quote it'),
    ("cluster_mode.yaml",
     "mode: static\nnode_id: 1\npeers:\n  - {id: 1, api_addr: 'fd00::1:3669'}\n",
     "peers[0].api_addr: 'fd00::1:3669': an IPv6 address must be in brackets"),
    ("cluster_mode.toml", "mode = 'raft'\n", "unsupported extension '.toml'"),
    ("cluster_mode.json", '{"mode": "single-node", "mode": "raft"}', "mode: duplicate key"),
])
def test_invalid_files_name_the_file_and_the_field(tmp_path, name, text, expected):
    path = write(tmp_path, name, text)
    message = load_error(path)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_unreadable_and_non_utf8_files(tmp_path):
    directory = tmp_path / "cluster_mode.yaml"
    directory.mkdir()
    assert "cannot read" in load_error(directory)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"mode: \xff\xfe\n")
    assert "not UTF-8" in load_error(binary)


def test_other_role_fields_are_accepted_with_a_warning(tmp_path):
    text = "mode: worker-tier\nrole: worker\nservers: ['10.0.0.1:3669']\nnode_id: 4\n"
    mode, warnings = load_with_warnings(write(tmp_path, "w.yaml", text))
    assert mode.is_worker_tier_worker()
    assert warnings == ["node_id: only used by a server; ignored for role worker"]


# ---------------------------------------------------------------- raftdir config check

def test_check_accepts_every_example():
    result = CliRunner().invoke(cli, ["config", "check", *map(str, EXAMPLE_FILES)])
    assert result.exit_code == 0, result.output
    documents = [d for d in yaml.safe_load_all(result.output) if d is not None]
    assert len(documents) == len(EXAMPLE_FILES)


def test_check_json_prints_one_document_per_file():
    files = [str(EXAMPLES / "static.yaml"), str(EXAMPLES / "worker-tier-server.yaml")]
    result = CliRunner().invoke(cli, ["config", "check", "--json", *files])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [json.loads(line)["mode"] for line in lines] == ["static", "worker-tier"]
    static = json.loads(lines[0])
    assert static["peers"][2] == {"id": 3, "api_addr": "[fd00::3]:3669", "os": "windows"}


def test_check_output_round_trips_to_the_same_config(tmp_path):
    result = CliRunner().invoke(cli, ["config", "check", str(EXAMPLES / "static.yaml")])
    assert result.exit_code == 0
    again = write(tmp_path, "again.yaml", result.output)
    assert load_cluster_mode(again) == load_cluster_mode(EXAMPLES / "static.yaml")


def test_check_stops_at_the_first_invalid_file_with_exit_2(tmp_path):
    bad = write(tmp_path, "bad.yaml",
                "mode: raft\nnode_id: 1\npeers:\n  - {id: 1, api_addr: 10.0.0.1:1}\n")
    result = CliRunner().invoke(cli, ["config", "check", str(EXAMPLES / "raft.yaml"),
                                      str(bad), str(EXAMPLES / "static.yaml")])
    assert result.exit_code == 2
    assert f"{bad}: peers[0].raft_addr: required field missing" in result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert "mode: static" not in result.stdout  # the third file was not reached


def test_check_has_one_rule_for_names_it_does_not_know(tmp_path):
    # an unknown extension is refused whether the file exists or not; a missing file is
    # an error for the check (a daemon would quietly run single-node)
    write(tmp_path, "y.txt", "mode: single-node\n")
    for name, problem in (("x.txt", "unsupported extension '.txt'"),
                          ("y.txt", "unsupported extension '.txt'"),
                          ("nosuch.yaml", "no such file")):
        result = CliRunner().invoke(cli, ["config", "check", str(tmp_path / name)])
        assert result.exit_code == 2, name
        assert f"{tmp_path / name}: {problem}" in result.stderr
    assert load_cluster_mode(tmp_path / "cluster_mode.yaml") == SingleNodeMode()


def test_check_without_files_is_a_usage_error():
    result = CliRunner().invoke(cli, ["config", "check"])
    assert result.exit_code == 2


def test_every_command_has_help():
    runner = CliRunner()
    for args in (["--help"], ["config", "--help"], ["config", "check", "--help"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0 and "Usage:" in result.output


# ---------------------------------------------------------------------------- replicas

REPLICA = ZLAYER_SERVER.replace("node_id: 1\n", "node_id: 4\n").replace(
    "worker_grpc_addr", "  - {id: 4, api_addr: 10.0.0.4:3669, replica: true}\n"
    "worker_grpc_addr")


def test_a_replica_is_one_key_on_its_own_peers_entry(tmp_path):
    mode = load_cluster_mode(write(tmp_path, "cluster_mode.yaml", REPLICA))
    me = next(p for p in mode.peers if p.id == mode.node_id)
    assert me.replica and me.raft_addr is None and me.api_addr == "10.0.0.4:3669"
    assert [p.replica for p in mode.peers] == [False, False, False, True]
    out = dump_yaml(mode)                    # written back with the key, without raft_addr
    assert "replica: true" in out and out.count("raft_addr") == 3
    assert load_cluster_mode(write(tmp_path, "again.yaml", out)) == mode
    result = CliRunner().invoke(cli, ["config", "check", str(tmp_path / "cluster_mode.yaml")])
    assert result.exit_code == 0 and "replica: true" in result.output


def test_zlayer_files_still_load_with_no_replica(tmp_path):
    mode = load_cluster_mode(write(tmp_path, "cluster_mode.yaml", ZLAYER_SERVER))
    assert not any(p.replica for p in mode.peers)
    assert "replica" not in dump_yaml(mode)


@pytest.mark.parametrize("entry,message", [
    ("{id: 4, raft_addr: 10.0.0.4:9000, api_addr: 10.0.0.4:3669, replica: true}",
     "peers[3].raft_addr: a replica has no Raft address"),
    ("{id: 4, api_addr: 10.0.0.4:3669}", "peers[3].raft_addr: required field missing"),
    ("{id: 4, api_addr: 10.0.0.4:3669, replica: yes}",
     "peers[3].replica: expected a bool, got str"),
    ("{id: 4, api_addr: 10.0.0.1:3669, replica: true}",
     "peers[3].api_addr: '10.0.0.1:3669' is already used by peers[0].api_addr"),
])
def test_a_bad_replica_entry_is_refused_naming_the_field(tmp_path, entry, message):
    text = REPLICA.replace("{id: 4, api_addr: 10.0.0.4:3669, replica: true}", entry)
    assert message in load_error(write(tmp_path, "cluster_mode.yaml", text))


def test_a_cluster_of_replicas_only_is_refused(tmp_path):
    text = ("mode: raft\nnode_id: 1\npeers:\n"
            "  - {id: 1, api_addr: 10.0.0.1:3669, replica: true}\n")
    assert "peers: every entry is a replica" in load_error(write(tmp_path, "c.yaml", text))
