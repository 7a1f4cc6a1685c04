"""Commands that change the cluster, against a live single-node server: scale then ps and
service-state, drain, evict, token create, peers add/remove; with and without the admin
token."""

from __future__ import annotations

import json

import pytest

from cli_harness import ADMIN, run_cli
from raftdir.auth import verify_join_token
from raftdir.model import WorkerContainerStatus

ADMIN_ENV = {"RAFTDIR_ADMIN_TOKEN": ADMIN}


def running(service: str, replica: int, role: str = "default") -> WorkerContainerStatus:
    return WorkerContainerStatus(service=service, role=role, replica=replica,
                                 state="running", overlay_ip=f"10.0.0.{replica + 2}")


def test_scale_then_service_state_and_ps(live):
    a, a_secret = live.register()
    b, b_secret = live.register()
    result = run_cli("scale", "web", "4", "--server", live.url, env=ADMIN_ENV)
    assert result.exit_code == 0, result.output
    assert "scaled web to 4" in result.stdout
    assert sum(len(ix) for share in live.placement("web").values()
               for ix in share.values()) == 4

    # nobody reported yet: the holders are unknown, not zero
    state = json.loads(run_cli("service-state", "web", "-s", live.url, "--json").stdout)
    assert state["running"] == 0 and not state["healthy"]
    assert set(state["unknown"]) >= {a, b}

    live.report(a, a_secret, (running("web", 0), running("web", 2)))
    live.report(b, b_secret, (running("web", 1), running("web", 3)))
    text = run_cli("service-state", "web", "-s", live.url)
    assert text.exit_code == 0, text.output
    assert text.stdout.splitlines()[0] == "service web: 4 running, healthy"
    assert "web-default-0 web-default-2" in text.stdout

    ps = run_cli("ps", "web", "-s", live.url)
    assert ps.exit_code == 0, ps.output
    lines = ps.stdout.splitlines()
    assert lines[0].split()[:4] == ["NODE", "CONTAINER", "REPLICA", "STATE"]
    assert sorted(line.split()[1] for line in lines[1:]) == [
        f"web-default-{i}" for i in range(4)]
    containers = json.loads(run_cli("ps", "web", "-s", live.url, "--json").stdout)
    assert {c["node_id"] for c in containers} == {a, b}
    assert {c["overlay_ip"] for c in containers} == {"10.0.0.2", "10.0.0.3", "10.0.0.4",
                                                     "10.0.0.5"}


def test_scale_json_and_role_groups(live):
    live.register()
    result = run_cli("scale", "db", "3", "--role-group", "primary=0",
                     "--role-group", "replica=0-1", "-s", live.url, "--json", env=ADMIN_ENV)
    assert result.exit_code == 0, result.output
    split = json.loads(result.stdout)
    assert split["service"] == "db"
    groups = sorted((g["role"], i) for n in split["nodes"]
                    for g in n["request"]["assignments"] for i in g["indices"])
    assert groups == [("primary", 0), ("replica", 0), ("replica", 1)]
    placed = sorted((role, i) for share in live.placement("db").values()
                    for role, ix in share.items() for i in ix)
    assert placed == groups


@pytest.mark.parametrize("args,phrase", [
    (["scale", "db", "4", "--role-group", "a=0,1", "--role-group", "b=0"],
     "N is 4 but the role groups hold 3 indices"),
    (["scale", "db", "2", "--role-group", "a=0", "--role-group", "a=1"], "a role appears twice"),
    (["scale", "db", "2", "--role-group", "a=0,0"], "an index appears twice"),
    (["scale", "db", "2", "--role-group", "a"], "expected role=i,j"),
    (["scale", "db", "-1"], "N"),
    (["scale", "web", "1", "--spec", "[1]"], "must be a JSON object"),
    (["scale", "web", "1", "--spec", "{"], "not JSON"),
    (["drain", "x"], "ID"),
    # one spelling for a node id, as in the API's routes (issue 15, finding 4)
    (["drain", "01"], "'01' is not a node id"),
    (["evict", "+1"], "'+1' is not a node id"),
    (["drain", "1_0"], "'1_0' is not a node id"),
    (["evict", "18446744073709551616"], "is not a node id"),
    (["peers", "add", "--id", "04", "--raft-addr", "127.0.0.1:7004", "--api-addr",
      "127.0.0.1:7104"], "'04' is not a node id"),
    (["peers", "remove", "--id", "4.0", "--raft-addr", "127.0.0.1:7004"],
     "'4.0' is not a node id"),
    (["token", "create", "--valid-for", "soon"], "not a duration"),
    (["token", "create", "--valid-for", "0"], "more than 0 seconds"),
    (["token", "create", "--max-uses", "-1"], "--max-uses"),
    (["token", "create", "--valid-for", "366d"], "more than the maximum of 31536000 seconds"),
    (["token", "create", "--max-uses", "1000001"], "--max-uses"),
    (["peers", "add", "--id", "4", "--raft-addr", "127.0.0.1:7004"], "--api-addr"),
    (["peers", "remove", "--id", "4"], "--raft-addr"),
    (["ps"], "SERVICE"),
    # service names: the API's one rule (a DNS label), checked before any request
    (["scale", "../../etc", "1"], "'../../etc' is not a valid name"),
    (["scale", "a/b", "1"], "'a/b' is not a valid name"),
    (["ps", "my web"], "'my web' is not a valid name"),
    (["service-state", "we\nb"], "is not a valid name"),
    (["service-state", "Web"], "'Web' is not a valid name"),
    (["scale", "db", "1", "--role-group", "a/b=0"], "role: 'a/b' is not a valid name"),
    (["nosuchcommand"], "No such command"),
])
def test_bad_usage_is_exit_2_naming_the_problem(live, args, phrase):
    result = run_cli(*args, "--server", live.url, env=ADMIN_ENV)
    assert result.exit_code == 2, result.output
    assert phrase in result.stderr
    if args[0] == "scale" and "--role-group" in args:
        assert "--role-group" in result.stderr


def test_admin_commands_without_the_token_are_exit_1_with_the_reason(live, tmp_path):
    nid, _ = live.register()
    for args in (["scale", "web", "1"], ["drain", str(nid)], ["evict", str(nid)],
                 ["token", "create"],
                 ["peers", "add", "--id", "4", "--raft-addr", "127.0.0.1:7004",
                  "--api-addr", "127.0.0.1:7104"]):
        result = run_cli(*args, "--server", live.url)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith(f"error: 127.0.0.1:{live.api.port}: ")
        assert "admin token" in result.stderr and "unauthorized" in result.stderr
        assert "--token-file" in result.stderr  # how to fix it
    assert live.node(nid)["state"] == "ready"

    wrong = tmp_path / "wrong.token"
    wrong.write_text("f" * 64 + "\n")
    result = run_cli("drain", str(nid), "--server", live.url, "--token-file", wrong)
    assert result.exit_code == 1 and "unauthorized" in result.stderr
    assert live.node(nid)["state"] == "ready"


def test_a_missing_or_empty_token_file_is_a_usage_error(live, tmp_path):
    result = run_cli("drain", "1", "-s", live.url, "--token-file", tmp_path / "nope")
    assert result.exit_code == 2 and "--token-file" in result.stderr
    empty = tmp_path / "empty"
    empty.write_text("\n")
    result = run_cli("drain", "1", "-s", live.url, "--token-file", empty)
    assert result.exit_code == 2 and "empty" in result.stderr


def test_drain_and_evict_with_the_token_file(live, tmp_path):
    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN + "\n")
    a, _ = live.register()
    b, _ = live.register()

    result = run_cli("drain", str(a), "-s", live.url, "--token-file", token_file)
    assert result.exit_code == 0, result.output
    assert f"node_id={a}" in result.stdout and "state=draining" in result.stdout
    assert live.node(a)["draining"]
    result = run_cli("drain", "--undo", str(a), "-s", live.url, "--token-file", token_file)
    assert result.exit_code == 0, result.output
    assert f"node_id={a}" in result.stdout and "state=ready" in result.stdout
    assert not live.node(a)["draining"] and live.node(a)["state"] == "ready"

    result = run_cli("evict", str(b), "-s", live.url, "--token-file", token_file, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["node_id"] == b
    assert live.node(b) is None


def test_drain_and_evict_of_a_server_node_are_refused(live):
    for verb in ("drain", "evict"):
        result = run_cli(verb, "1", "-s", live.url, env=ADMIN_ENV)
        assert result.exit_code == 1, result.output
        assert "bad_request" in result.stderr and "peers remove" in result.stderr
    node = live.node(1)
    assert (node["kind"], node["state"]) == ("server", "ready")
    assert not node.get("draining")


def test_an_unknown_node_is_exit_1_naming_the_peer_and_the_node(live):
    result = run_cli("drain", "424242", "-s", live.url, env=ADMIN_ENV)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: 127.0.0.1:{live.api.port}: ")
    assert "424242" in result.stderr and "unknown_node" in result.stderr


def test_token_create_prints_a_token_that_verifies(live):
    from cli_harness import SECRET
    result = run_cli("token", "create", "--valid-for", "90m", "--max-uses", "3",
                     "-s", live.url, env=ADMIN_ENV)
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("rdj1.") and "\n" not in token
    cluster_id = live.server.read(lambda d: d.cluster_id)
    now = live.clock.wall_ms() // 1000
    claims = verify_join_token(token, SECRET, cluster_id, now)
    assert claims.max_uses == 3 and claims.expires_unix_secs == now + 5400

    data = json.loads(run_cli("token", "create", "--valid-for", "3600", "-s", live.url,
                              "--json", env=ADMIN_ENV).stdout)
    assert data["max_uses"] == 1 and data["token"].startswith("rdj1.")


def test_peers_add_and_remove_reach_the_server(live):
    """Single-node has no dynamic membership: the route answers 409 and the CLI says so."""
    add = run_cli("peers", "add", "--id", "4", "--raft-addr", "127.0.0.1:7004",
                  "--api-addr", "127.0.0.1:7104", "-s", live.url, env=ADMIN_ENV)
    assert add.exit_code == 1
    assert f"127.0.0.1:{live.api.port}: add_peer: this server runs single-node" in add.stderr
    remove = run_cli("peers", "remove", "--id", "4", "--raft-addr", "127.0.0.1:7004",
                     "-s", live.url, env=ADMIN_ENV)
    assert remove.exit_code == 1 and "remove_peer" in remove.stderr
    bad = run_cli("peers", "add", "--id", "4", "--raft-addr", "nowhere",
                  "--api-addr", "127.0.0.1:7104", "-s", live.url, env=ADMIN_ENV)
    assert bad.exit_code == 1 and "raft_addr" in bad.stderr
