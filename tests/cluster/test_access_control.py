"""Access control on a real three-peer cluster (issue 12): `raftdir serve` processes whose
reads need a token (--require-read-token, as off loopback), two `raftdir worker` agents,
and access tokens of each scope issued with the CLI. Each scope is allowed and refused
where it should be on the leader and on both followers, before and after a leader change
(kill -9, then the old leader restarted); a token revoked through a follower is refused by
every server at once; and no secret or token issued in the run appears in any log of it
(every server at --log-level debug)."""

from __future__ import annotations

import json
import time

import pytest

from cluster_harness import (
    http, raftdir, running_cluster, secrets_in_logs, start_worker, stop_process, token_parts,
)
from raftdir.auth import admin_token
from raftdir.testing import LocalCluster, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

#: (scope needed, method, path, body): one request per scope, harmless when allowed.
CHECKS = [
    ("read", "GET", "/api/v1/cluster/workers", None),
    ("read", "GET", "/metrics", None),
    ("operate", "POST", "/api/v1/cluster/tokens", {"valid_for_secs": 60, "max_uses": 1}),
    ("admin", "GET", "/api/v1/cluster/access-tokens", None),
]
SCOPES = ("read", "operate", "admin")


@pytest.fixture
def cluster(tmp_path):
    with running_cluster(tmp_path / "servers", ["--require-read-token", "--log-level",
                                                "debug"],
                         heartbeat_min_ttl=4, heartbeat_grace=6) as c:
        yield c


def check_matrix(cluster: LocalCluster, tokens: dict[str, str], where: str) -> int:
    """Every check with every token on every running peer; returns how many were asked."""
    asked = 0
    for node_id, peer in sorted(cluster.peers.items()):
        if not cluster.alive(node_id):
            continue
        for need, method, path, body in CHECKS:
            status, out = http(peer.url, method, path, None, body)
            assert status == 401, (where, node_id, path, out)
            for have, token in tokens.items():
                status, out = http(peer.url, method, path, token, body)
                scope = "admin" if have == "admin-token" else have
                if SCOPES.index(scope) >= SCOPES.index(need):
                    assert status == 200, (where, node_id, path, have, out)
                else:
                    assert status == 403, (where, node_id, path, have, out)
                    assert out["code"] == "forbidden" and token not in json.dumps(out)
                asked += 1
        status, out = http(peer.url, "GET", "/health")
        assert status == 200 and out["ok"]
    return asked


def test_scopes_on_leader_and_followers_across_a_leader_change_and_revocation(
        cluster, tmp_path, capsys):
    admin = admin_token(cluster.secret)
    env = {"RAFTDIR_SERVER": ",".join(cluster.endpoints), "RAFTDIR_TOKEN": admin}
    issued: list[str] = [cluster.secret, admin]

    def cli(*args: str, token: str | None = None, servers: str | None = None):
        e = dict(env, RAFTDIR_TOKEN=token or admin)
        if servers:
            e["RAFTDIR_SERVER"] = servers
        return raftdir(*args, env=e)

    tokens: dict[str, str] = {"admin-token": admin}
    ids: dict[str, str] = {}
    for scope in SCOPES:
        out = cli("token", "create", "--scope", scope, "--valid-for", "1h", "--name",
                  f"{scope}-bot", "--json")
        assert out.returncode == 0, out.stderr
        made = json.loads(out.stdout)
        tokens[scope], ids[scope] = made["token"], made["token_id"]
        issued.append(made["token"])

    # two workers, registered with a join token an operate token made
    join = cli("token", "create", "--valid-for", "10m", "--max-uses", "2",
               token=tokens["operate"])
    assert join.returncode == 0, join.stderr
    issued.append(join.stdout.strip())
    workers = [start_worker(cluster, tmp_path / f"w{i}", join.stdout.strip())
               for i in range(2)]
    try:
        def listed() -> list[dict]:
            status, out = http(cluster.endpoints[0], "GET", "/api/v1/cluster/workers",
                               tokens["read"])
            return [n for n in out if n["kind"] == "worker" and n["state"] == "ready"] \
                if status == 200 else []
        wait_until(lambda: len(listed()) == 2, 30, "both workers ready")

        leader = cluster.leader_id()
        asked = check_matrix(cluster, tokens, "before the leader change")

        # a leader change: kill -9, a new leader, the old one back as a follower
        cluster.kill(leader)
        new = cluster.wait_leader(20, exclude=leader)
        asked += check_matrix(cluster, tokens, f"peer {new} leads, peer {leader} dead")
        cluster.start(leader)
        cluster.wait_settled(30)
        asked += check_matrix(cluster, tokens, f"peer {leader} back as a follower")
        assert asked == 3 * 3 * len(CHECKS) * len(tokens) - len(CHECKS) * len(tokens)

        # refusals as an operator meets them (printed for the record: pytest -s)
        refusals = {
            "a read token scales": cli("scale", "web", "1", token=tokens["read"]),
            "an operate token lists the access tokens": cli("token", "list",
                                                            token=tokens["operate"]),
            "an operate token adds a peer": cli(
                "peers", "add", "--id", "9", "--raft-addr", "127.0.0.1:1",
                "--api-addr", "127.0.0.1:2", token=tokens["operate"]),
            "no token reads": raftdir("workers", env={"RAFTDIR_SERVER": env["RAFTDIR_SERVER"]}),
        }

        # revoke the operate token through a follower, with the scoped admin token
        follower = next(n for n in sorted(cluster.peers) if n != cluster.leader_id())
        out = cli("token", "revoke", ids["operate"], token=tokens["admin"],
                  servers=cluster.peers[follower].url)
        assert out.returncode == 0, out.stderr
        revoked_at = time.monotonic()
        for node_id, peer in sorted(cluster.peers.items()):
            status, out = http(peer.url, "POST", "/api/v1/cluster/tokens",
                               tokens["operate"], {"valid_for_secs": 60, "max_uses": 1})
            assert (status, out["message"]) == (
                401, f"access token {ids['operate']} was revoked"), (node_id, out)
            status, _ = http(peer.url, "GET", "/api/v1/cluster/workers", tokens["operate"])
            assert status == 401, node_id
        assert time.monotonic() - revoked_at < 5

        # what an operator sees (printed for the record: pytest -s)
        listing = cli("token", "list", token=tokens["admin"])
        assert listing.returncode == 0, listing.stderr
        rows = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
        assert "revoked" in rows[ids["operate"]]
        assert "active" in rows[ids["read"]] and "active" in rows[ids["admin"]]
        assert f"token {ids['admin']}" not in listing.stdout   # all made by the admin token
        refusals["the revoked operate token reads"] = cli("workers", token=tokens["operate"])
        refusals["the revoked operate token makes a join token"] = cli(
            "token", "create", token=tokens["operate"])
        for what, res in refusals.items():
            assert res.returncode == 1, (what, res.stdout, res.stderr)
            assert "Traceback" not in res.stderr and not any(
                t in res.stderr for t in tokens.values())
        with capsys.disabled():
            print("\n$ raftdir token list\n" + listing.stdout)
            for what, res in refusals.items():
                print(f"# {what}\n{res.stderr}")
    finally:
        for proc in workers:
            stop_process(proc)

    # nothing issued in this run is in any log of it: the cluster secret, the admin token,
    # every access and join token, the workers' node secrets
    for i in range(2):
        ident = json.loads((tmp_path / f"w{i}" / "worker" / "identity" / "identity.json")
                           .read_text())
        issued.append(ident["internal_token"])
    logs = [p.data_dir / "server.log" for p in cluster.peers.values()]
    logs += [tmp_path / f"w{i}" / "worker.log" for i in range(2)]
    assert all(p.stat().st_size > 0 for p in logs)
    assert "DEBUG" in logs[0].read_text()
    secrets = [part for s in issued for part in token_parts(s)]
    assert secrets_in_logs(logs, secrets) == []
