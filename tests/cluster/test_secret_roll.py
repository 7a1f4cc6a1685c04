"""Rolling `cluster.secret` on a running three-peer cluster (issue 12, docs/operations.md
"Rolling the cluster secret"): `raftdir secret create --next`, copied to every server, then
`raftdir secret promote` and `raftdir secret retire` on one server at a time, while three
`raftdir worker` agents report and poll. Throughout: one leader, the same one, in the same
term; no worker ever anything but ready; every step's Raft write applied by all three
peers. The old admin token and the old join tokens work until the old secret is retired,
then stop; the new ones work. Nothing secret reaches a log."""

from __future__ import annotations

import json
import shutil
import threading

import pytest

from cluster_harness import (
    http, raftdir, secrets_in_logs, start_worker, stop_process, token_parts,
)
from raftdir.auth import admin_token
from raftdir.replication.secret import NEXT_SECRET_FILE, fingerprint, load_secrets
from raftdir.testing import LocalCluster, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TTL, GRACE = 4, 6
PROFILE = {"api_addr": "127.0.0.1:9999", "os": "linux", "arch": "x86_64"}


class Watch(threading.Thread):
    """Samples every peer's /health and the leader's worker list every 0.1 s: who led, in
    which term, and every worker state it saw."""

    def __init__(self, cluster: LocalCluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.leaders: set[tuple[int, int]] = set()    # (node id, term)
        self.states: dict[int, set[str]] = {}
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for node_id, peer in self.cluster.peers.items():
                status, out = http(peer.url, "GET", "/api/v1/cluster/peers", timeout=2)
                if status == 200 and out.get("is_leader"):
                    self.leaders.add((node_id, out["term"]))
                    status, nodes = http(peer.url, "GET", "/api/v1/cluster/workers",
                                         timeout=2)
                    if status == 200:
                        for n in nodes:
                            if n["kind"] == "worker":
                                self.states.setdefault(n["node_id"], set()).add(n["state"])
                        self.samples += 1
            self.done.wait(0.1)


def test_the_secret_rolls_one_server_at_a_time_with_workers_reporting(tmp_path, capsys):
    cluster = LocalCluster(tmp_path / "servers").prepare(
        heartbeat={"heartbeat_min_ttl": TTL, "heartbeat_grace": GRACE})
    cluster.start()
    workers = []
    watch = None
    try:
        cluster.wait_settled(30)
        dirs = {n: p.data_dir for n, p in sorted(cluster.peers.items())}
        old = cluster.secret
        old_admin = admin_token(old)
        env = {"RAFTDIR_SERVER": ",".join(cluster.endpoints), "RAFTDIR_TOKEN": old_admin}
        status, made = http(cluster.endpoints[0], "POST", "/api/v1/cluster/tokens",
                            old_admin, {"valid_for_secs": 3600, "max_uses": 10})
        assert status == 200, made
        old_join = made["token"]
        workers = [start_worker(cluster, tmp_path / f"w{i}", old_join) for i in range(3)]

        def ready_workers(token: str) -> list[int]:
            leader = cluster.leader_id()
            if leader is None:
                return []
            status, nodes = http(cluster.peers[leader].url, "GET", "/api/v1/cluster/workers",
                                 token)
            return [n["node_id"] for n in nodes if n["kind"] == "worker"
                    and n["state"] == "ready"] if status == 200 else []
        wait_until(lambda: len(ready_workers(old_admin)) == 3, 40, "three workers ready")
        watch = Watch(cluster)
        watch.start()
        leader = cluster.leader_id()
        status, health = http(cluster.peers[leader].url, "GET", "/api/v1/cluster/peers")
        term = health["term"]

        def status_of(node_id: int) -> dict:
            status, out = http(cluster.peers[node_id].url, "GET", "/api/v1/cluster/peers")
            assert status == 200, out
            return out

        writes = iter(range(1, 100))

        def committed_everywhere(token: str) -> None:
            """A Raft write through the leader, applied by every peer: every link works."""
            n = next(writes)
            status, out = http(cluster.peers[leader].url, "POST", "/api/v1/internal/scale",
                               token, {"service": "web", "replicas": n})
            assert status == 200, out
            target = status_of(leader)["commit_index"]
            wait_until(lambda: all(status_of(i)["last_applied"] >= target
                                   for i in cluster.peers), 10,
                       f"write {n} applied by every peer")

        def step(node_id: int, phase: str, own: str, accepts: list[str]) -> None:
            want = {"phase": phase, "primary": fingerprint(own),
                    "accepts": [fingerprint(s) for s in accepts]}
            wait_until(lambda: status_of(node_id)["secrets"] == want, 10,
                       f"peer {node_id} to take {phase}")
            # the Raft keys follow at the tick thread's next tick
            wait_until(lambda: status_of(node_id)["raft_keys"] == want["accepts"], 5,
                       f"peer {node_id}'s Raft traffic to use the keys of {phase}")

        committed_everywhere(old_admin)

        # 1. the next secret: made on peer 1, copied to every server
        out = raftdir("secret", "create", "--next", "--data-dir", str(dirs[1]))
        assert out.returncode == 0, out.stderr
        new = load_secrets(dirs[1]).next
        new_admin = admin_token(new)
        for node_id, d in dirs.items():
            if node_id != 1:
                shutil.copy2(dirs[1] / NEXT_SECRET_FILE, d / NEXT_SECRET_FILE)
            step(node_id, "next installed", old, [old, new])
            committed_everywhere(old_admin)
        roll = raftdir("secret", "status", env=env)
        assert roll.returncode == 0 and "promote it, one server at a time" in roll.stdout

        # 2. promote, one server at a time (the leader last, like any other)
        for node_id in sorted(dirs, key=lambda n: n == leader):
            out = raftdir("secret", "promote", "--data-dir", str(dirs[node_id]))
            assert out.returncode == 0, out.stderr
            step(node_id, "promoted", new, [new, old])
            # both admin tokens work everywhere meanwhile
            for token in (old_admin, new_admin):
                committed_everywhere(token)
        with capsys.disabled():
            print("\n$ raftdir secret status   # every server promoted\n"
                  + raftdir("secret", "status", env=env).stdout)
        # a join token signed with the old secret still registers a worker
        status, out = http(cluster.endpoints[0], "POST", "/api/v1/workers/register", None,
                           {"token": old_join, "profile": PROFILE})
        assert status == 200, out
        status, made = http(cluster.endpoints[1], "POST", "/api/v1/cluster/tokens",
                            new_admin, {"valid_for_secs": 3600, "max_uses": 10})
        assert status == 200
        new_join = made["token"]

        # 3. retire the old secret, one server at a time
        for node_id in sorted(dirs):
            out = raftdir("secret", "retire", "--data-dir", str(dirs[node_id]))
            assert out.returncode == 0, out.stderr
            step(node_id, "steady", new, [new])
            committed_everywhere(new_admin)
        roll = raftdir("secret", "status", env=dict(env, RAFTDIR_TOKEN=new_admin))
        assert "no roll in progress" in roll.stdout

        # the old credentials stop, everywhere; the new ones work
        for url in cluster.endpoints:
            status, out = http(url, "POST", "/api/v1/internal/scale", old_admin,
                               {"service": "web", "replicas": 1})
            assert status == 401, (url, out)
            status, out = http(url, "POST", "/api/v1/workers/register", None,
                               {"token": old_join, "profile": PROFILE})
            assert (status, out["code"]) == (401, "token_invalid"), (url, out)
            assert "signature does not match" in out["message"]
        status, out = http(cluster.endpoints[2], "POST", "/api/v1/workers/register", None,
                           {"token": new_join, "profile": PROFILE})
        assert status == 200, out

        # the workers kept reporting with their node secrets, which no roll touches
        assert set(ready_workers(new_admin)) >= set(sorted(watch.states)[:3])
    finally:
        if watch is not None:
            watch.done.set()
            watch.join(10)
        for proc in workers:
            stop_process(proc)
        cluster.stop()

    # one leader throughout, the same, in the same term; no worker of the three ever down
    assert watch.samples > 20, watch.samples
    assert watch.leaders == {(leader, term)}, watch.leaders
    originals = sorted(watch.states)[:3]
    assert all(watch.states[n] == {"ready"} for n in originals), watch.states
    logs = [p.data_dir / "server.log" for p in cluster.peers.values()]
    logs += [tmp_path / f"w{i}" / "worker.log" for i in range(3)]
    text = "".join(p.read_text(errors="replace") for p in logs)
    assert "failed the cluster secret check" not in text
    assert "marked down" not in text
    assert " ERROR " not in text and " CRITICAL " not in text
    issued = [old, new, old_admin, new_admin, old_join, new_join]
    issued += [json.loads((tmp_path / f"w{i}" / "worker" / "identity" / "identity.json")
                          .read_text())["internal_token"] for i in range(3)]
    assert secrets_in_logs(logs, [p for s in issued for p in token_parts(s)]) == []
