"""The CLI and worker agents as real processes against a real three-peer cluster."""

from __future__ import annotations

import json
import signal

import pytest

from cluster_harness import raftdir, start_worker, stop_process
from raftdir.testing import free_ports, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_peers_asks_every_peer(cluster, env):
    out = raftdir("peers", "--json", env=env)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    text = json.dumps(rows)
    for peer in cluster.peers.values():
        assert peer.api_addr in text
    table = raftdir("peers", env=env)
    assert table.returncode == 0 and "leader" in table.stdout
    assert table.stdout.count("follower") == 2
    for column in ("ID", "RAFT ADDR", "API ADDR", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG",
                   "LAST CONTACT"):
        assert column in table.stdout


def test_listings_are_valid_json_and_scale_works(cluster, env):
    for args in (["workers", "--json"], ["leases", "--json"]):
        out = raftdir(*args, env=env)
        assert out.returncode == 0, out.stderr
        json.loads(out.stdout)
    out = raftdir("scale", "web", "0", env=env)
    assert out.returncode == 0, out.stderr


def test_a_dead_server_is_exit_1_naming_it(cluster):
    (port,) = free_ports(1)
    out = raftdir("workers", "--server", f"http://127.0.0.1:{port}")
    assert out.returncode == 1
    assert f"127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr


def test_a_bad_config_is_exit_2(tmp_path):
    (tmp_path / "cluster_mode.yaml").write_text("mode: raft\nnode_id: 1\n")
    out = raftdir("serve", "--data-dir", str(tmp_path))
    assert out.returncode == 2
    assert "cluster_mode.yaml: peers: required field missing" in out.stderr
    assert "Traceback" not in out.stderr


def workers(env) -> dict[int, dict]:
    out = raftdir("workers", "--json", env=env)
    assert out.returncode == 0, out.stderr
    return {w["node_id"]: w for w in json.loads(out.stdout) if w["node_id"] >= 1_000_000}


def test_agent_keeps_its_identity_and_fails_over(cluster, env, tmp_path):
    token = raftdir("token", "create", "--valid-for", "600", "--max-uses", "1", env=env)
    assert token.returncode == 0, token.stderr
    proc = start_worker(cluster, tmp_path / "w1", token.stdout.strip().splitlines()[-1])
    try:
        node_id = wait_until(lambda: next(iter(workers(env)), None), 30, "registration")
        # a restarted worker is the same node (and needs no second token use)
        stop_process(proc, signal.SIGKILL)
        proc = start_worker(cluster, tmp_path / "w1", "rdj1.used.up")
        wait_until(lambda: workers(env)[node_id]["last_report_secs_ago"] is not None
                   and workers(env)[node_id]["last_report_secs_ago"] < 2, 30,
                   "the restarted worker to report")
        assert list(workers(env)) == [node_id]
        # kill -9 of the leader: the agent fails over and stays ready
        old = cluster.leader_id()
        cluster.kill(old)
        cluster.wait_leader(20, exclude=old)
        wait_until(lambda: (workers(env)[node_id]["last_report_secs_ago"] or 99) < 2, 30,
                   "a report to the new leader")
        assert workers(env)[node_id]["state"] == "ready"
        scaled = raftdir("scale", "api", "2", env=env)
        assert scaled.returncode == 0, scaled.stderr
        wait_until(lambda: raftdir("service-state", "api", "--json", env=env).stdout.count(
            '"running": 2') >= 1, 30, "the worker to run api")
        cluster.start(old)
    finally:
        stop_process(proc)


def test_peers_asked_of_one_follower_names_the_leader_as_leader(cluster, env):
    leader = cluster.wait_settled(30)
    follower = next(n for n in cluster.peers if n != leader)
    out = raftdir("peers", "--json", "--server", cluster.peers[follower].url,
                  env={"RAFTDIR_SERVER": ""})
    assert out.returncode == 0, out.stderr
    roles = {r["raft_addr"]: r["role"] for r in json.loads(out.stdout)}
    assert roles[cluster.peers[leader].raft_addr] == "leader", roles
    assert roles[cluster.peers[follower].raft_addr] == "follower", roles
