"""Listings against a live single-node server: tables, --json, --watch, where the server
comes from, and dead peers."""

from __future__ import annotations

import asyncio
import json
import socket
import time

from cli_harness import free_port, run_cli
from raftdir.cli import peer_rows

from raftdir.agent.cluster import node_info
from raftdir.cluster import DirectoryCluster


def table(text: str) -> tuple[str, list[str]]:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0], lines[1:]


# ---------------------------------------------------------------------------- peers

def test_peers_table_names_the_leader(live):
    result = run_cli("peers", "--server", live.url)
    assert result.exit_code == 0, result.output
    header, rows = table(result.stdout)
    assert header.split() == ["ID", "RAFT", "ADDR", "API", "ADDR", "ROLE", "TERM", "COMMIT",
                              "APPLIED", "LAG", "LAST", "CONTACT"]
    assert len(rows) == 1
    cells = rows[0].split()
    assert cells[0] == "1" and cells[2] == f"127.0.0.1:{live.api.port}"
    assert cells[3] == "leader" and cells[7] == "0"  # LAG


def test_peers_json_is_valid_and_has_every_field(live):
    result = run_cli("peers", "--server", live.url, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["role"] for r in rows] == ["leader"]
    row = rows[0]
    assert row["id"] == 1 and row["api_addr"] == f"127.0.0.1:{live.api.port}"
    for key in ("raft_addr", "term", "commit", "applied", "lag", "last_contact_secs"):
        assert key in row
    assert row["error"] is None and row["status"]["is_leader"] is True


def test_peers_asks_every_peer_and_a_dead_one_is_a_row_not_a_failure(live):
    dead = free_port()
    result = run_cli("peers", "--server", f"{live.url},127.0.0.1:{dead}", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["api_addr"]: r for r in json.loads(result.stdout)}
    assert rows[f"127.0.0.1:{live.api.port}"]["role"] == "leader"
    assert rows[f"127.0.0.1:{dead}"]["role"] == "unreachable"
    assert rows[f"127.0.0.1:{dead}"]["error"] == "connection refused"

    text = run_cli("peers", "-s", live.url, "-s", f"127.0.0.1:{dead}")
    assert text.exit_code == 0
    _, lines = table(text.stdout)
    assert any("unreachable" in line and f"127.0.0.1:{dead}" in line for line in lines)
    assert f"127.0.0.1:{dead}: connection refused" in text.stdout


def test_peers_with_no_peer_answering_is_exit_1_naming_each_peer():
    a, b = free_port(), free_port()
    result = run_cli("peers", "--server", f"127.0.0.1:{a}", "--server", f"127.0.0.1:{b}")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert f"127.0.0.1:{a}: connection refused" in result.stderr
    assert f"127.0.0.1:{b}: connection refused" in result.stderr
    assert result.stdout == ""


class FakePeers:
    """Three Raft peers as ``peer_rows`` sees them: 1 leads, 2 follows, 3 is dead (its
    API refuses connections); only 1 and 3 are given as servers."""

    servers = ["http://127.0.0.1:7201", "http://127.0.0.1:7203"]
    members = [{"id": i, "raft_addr": f"127.0.0.1:710{i}", "api_addr": f"127.0.0.1:720{i}"}
               for i in (1, 2, 3)]

    async def peers(self, *, server: str) -> dict:
        if server.endswith(":7203"):
            raise ConnectionRefusedError(111, "Connect call failed")
        return {"node_id": 1, "self": "127.0.0.1:7101", "state": "leader", "term": 4,
                "commit_index": 9, "last_applied": 9, "is_leader": True,
                "partners": {"127.0.0.1:7102": True, "127.0.0.1:7103": False},
                "members": self.members}


def test_a_dead_peer_is_one_row_named_by_its_id():
    rows = asyncio.run(peer_rows(FakePeers(), {}))
    assert [(r["id"], r["raft_addr"], r["api_addr"], r["role"]) for r in rows] == [
        (1, "127.0.0.1:7101", "127.0.0.1:7201", "leader"),
        (2, "127.0.0.1:7102", "127.0.0.1:7202", "follower"),    # known, not asked
        (3, "127.0.0.1:7103", "127.0.0.1:7203", "unreachable")]  # asked: one row, by id
    assert rows[2]["error"] == "connection refused" and rows[2]["asked"]

    # without --server for the dead one, it is still one row, by id, from the members
    only_leader = FakePeers()
    only_leader.servers = ["http://127.0.0.1:7201"]
    rows = asyncio.run(peer_rows(only_leader, {}))
    assert [(r["id"], r["api_addr"], r["role"]) for r in rows] == [
        (1, "127.0.0.1:7201", "leader"), (2, "127.0.0.1:7202", "follower"),
        (3, "127.0.0.1:7203", "unreachable")]


def test_a_hung_peer_costs_the_per_peer_timeout_not_the_whole_5_s(live):
    hung = socket.socket()   # accepts connections (the kernel's backlog), never answers
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    port = hung.getsockname()[1]
    try:
        started = time.monotonic()
        result = run_cli("peers", "-s", live.url, "-s", f"127.0.0.1:{port}", "--json")
        elapsed = time.monotonic() - started
    finally:
        hung.close()
    assert result.exit_code == 0, result.output
    rows = {r["api_addr"]: r for r in json.loads(result.stdout)}
    assert rows[f"127.0.0.1:{live.api.port}"]["role"] == "leader"
    assert rows[f"127.0.0.1:{port}"]["role"] == "unreachable"
    assert rows[f"127.0.0.1:{port}"]["error"] == "timed out"
    assert elapsed < 4.0, f"peers took {elapsed:.1f} s"


def test_peers_watch_redraws_count_times(live):
    result = run_cli("peers", "-s", live.url, "--watch", "--interval", "0.05", "--count", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("Every 0.05s: raftdir peers") == 3
    assert result.stdout.count("leader") == 3

    as_json = run_cli("peers", "-s", live.url, "-w", "--interval", "0.05", "--count", "2",
                      "--json")
    assert as_json.exit_code == 0
    frames = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len(frames) == 2 and all(f[0]["role"] == "leader" for f in frames)


def test_a_watch_goes_on_when_every_peer_is_down():
    dead = free_port()
    result = run_cli("peers", "-s", f"127.0.0.1:{dead}", "-w", "--interval", "0.05",
                     "--count", "2")
    assert result.exit_code == 0
    assert result.stdout.count("unreachable") == 2


# ---------------------------------------------------------------------------- where the server comes from

def test_the_server_comes_from_the_environment_comma_separated(live):
    dead = free_port()
    result = run_cli("peers", "--json",
                     env={"RAFTDIR_SERVER": f"127.0.0.1:{dead}, {live.url}"})
    assert result.exit_code == 0, result.output
    assert {r["role"] for r in json.loads(result.stdout)} == {"leader", "unreachable"}


def test_a_missing_server_is_a_usage_error():
    for args in (["peers"], ["workers"], ["leases"], ["ps", "web"], ["drain", "1"],
                 ["token", "create"]):
        result = run_cli(*args)
        assert result.exit_code == 2, args
        assert "no server given" in result.stderr and "RAFTDIR_SERVER" in result.stderr


def test_a_malformed_server_is_a_usage_error_naming_the_option():
    result = run_cli("workers", "--server", "not a host")
    assert result.exit_code == 2
    assert "--server" in result.stderr


def test_a_dead_server_is_exit_1_naming_the_peer_and_the_reason():
    dead = free_port()
    for args in (["workers"], ["leases"], ["ps", "web"], ["service-state", "web"],
                 ["scale", "web", "1"], ["drain", "3"], ["token", "create"]):
        result = run_cli(*args, "--server", f"127.0.0.1:{dead}", "--timeout", "1")
        assert result.exit_code == 1, (args, result.output)
        assert f"error: 127.0.0.1:{dead}: connection refused" in result.stderr, args


# ---------------------------------------------------------------------------- workers, leases

def test_workers_table_and_json(live):
    a, a_secret = live.register(labels={"zone": "a", "gpu": "no"})
    b, _ = live.register(os="windows", arch="aarch64")
    live.report(a, a_secret)

    result = run_cli("workers", "--server", live.url)
    assert result.exit_code == 0, result.output
    header, rows = table(result.stdout)
    assert header.split() == ["ID", "STATE", "API", "ADDR", "TTL", "LEFT", "LAST", "REPORT",
                              "OS", "ARCH", "LABELS"]
    by_id = {row.split()[0]: row.split() for row in rows}
    assert by_id[str(a)][1] == "ready" and by_id[str(a)][2] == "127.0.0.1:9000"
    assert by_id[str(a)][3].endswith("s")  # TTL LEFT
    assert by_id[str(a)][-1] == "gpu=no,zone=a"
    assert by_id[str(b)][-3:] == ["windows", "aarch64", "-"]

    data = json.loads(run_cli("workers", "--server", live.url, "--json").stdout)
    nodes = {n["node_id"]: n for n in data}
    assert nodes[a]["profile"]["labels"] == {"zone": "a", "gpu": "no"}
    assert nodes[a]["ttl_left_secs"] is not None
    assert nodes[a]["last_report_secs_ago"] is not None

    assert {n["kind"] for n in data} == {"worker"}  # servers only with --kind
    everything = run_cli("workers", "-s", live.url, "--kind", "all")
    header, rows = table(everything.stdout)
    assert header.split()[:3] == ["ID", "KIND", "STATE"]
    assert any(row.split()[:3] == ["1", "server", "ready"] for row in rows)


def test_workers_watch(live):
    live.register()
    result = run_cli("workers", "-s", live.url, "--watch", "--interval", "0.05",
                     "--count", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("Every 0.05s: raftdir workers") == 2
    assert result.stdout.count("ID  ") == 2


def test_leases_table_and_json(live):
    nid, _ = live.register(labels={"zone": "b"})
    result = run_cli("leases", "--server", live.url)
    assert result.exit_code == 0, result.output
    header, rows = table(result.stdout)
    assert header.split()[:4] == ["ID", "API", "ADDR", "OS"]
    assert any(row.split()[0] == str(nid) and "127.0.0.1:9000" in row for row in rows)

    data = json.loads(run_cli("leases", "--server", live.url, "--json").stdout)
    lease = next(x for x in data if x["node_id"] == nid)
    assert lease["profile"]["labels"] == {"zone": "b"}
    assert lease["ttl_secs"] > 0 and "ttl_left_secs" in lease


def test_a_worker_without_a_reachable_api_is_listed_without_one(live):
    """ZLayer records 0.0.0.0:0 for a worker registered over gRPC: the table says it has no
    API address ("-"), the JSON keeps the record as stored, and the host's node list gives
    None, so nothing dials it."""
    grpc, _ = live.register(api_addr="0.0.0.0:0", os="freebsd", arch="riscv64")
    http, _ = live.register()
    _, rows = table(run_cli("leases", "--server", live.url).stdout)
    cells = {row.split()[0]: row.split() for row in rows}
    assert cells[str(grpc)][1:4] == ["-", "freebsd", "riscv64"]
    assert cells[str(http)][1] == "127.0.0.1:9000"
    data = json.loads(run_cli("leases", "--server", live.url, "--json").stdout)
    assert next(x for x in data if x["node_id"] == grpc)["profile"]["api_addr"] == "0.0.0.0:0"

    nodes = {n.node_id: n for n in DirectoryCluster(live.server, None).list_nodes()}
    assert nodes[grpc].api_addr is None and nodes[grpc].os == "freebsd"
    assert nodes[http].api_addr == "127.0.0.1:9000"
    assert node_info({"node_id": grpc, "state": "ready",
                      "profile": {"api_addr": "0.0.0.0:0", "os": "linux"}}).api_addr is None
    assert node_info({"node_id": 3, "state": "ready", "profile": {}}).api_addr is None


def test_a_watch_whose_reader_goes_away_ends_quietly_with_exit_0(live):
    # `raftdir workers --watch | head -3`: the closed pipe is the normal end of a watch
    import os
    import subprocess
    import sys
    from cli_harness import ROOT
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTDIR_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftdir", "workers", "--watch", "--interval", "0.05",
         "-s", live.url], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline()          # the first line of the first frame
        proc.stdout.close()                    # the reader goes away
        assert proc.wait(20) == 0
        assert proc.stderr.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
