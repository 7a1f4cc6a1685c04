"""Worker agents as an operator meets them (issue 14), as real processes against a real
three-peer cluster: `raftdir worker status` through a leader kill -9, `raftdir peers`
naming the dead peer, a second agent on one data dir refused, and a label change that
reaches placement."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cluster_harness import raftdir, start_worker, stop_process
from raftdir.testing import free_ports, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def token(env, uses: int = 1) -> str:
    out = raftdir("token", "create", "--valid-for", "600", "--max-uses", str(uses), env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def status(data_dir: Path) -> dict | None:
    """``raftdir worker status --json``, or None before the agent wrote one."""
    out = raftdir("worker", "status", "--data-dir", str(data_dir), "--json")
    if out.returncode != 0:
        assert "no status" in out.stderr or "not running" in out.stderr, out.stderr
        return None
    return json.loads(out.stdout)


def workers(env) -> dict[int, dict]:
    out = raftdir("workers", "--json", env=env)
    assert out.returncode == 0, out.stderr
    return {w["node_id"]: w for w in json.loads(out.stdout)}


def test_worker_status_through_a_failover_and_the_dead_leader_in_peers(cluster, env,
                                                                         tmp_path):
    data = tmp_path / "w1"
    (api_port,) = free_ports(1)
    proc = start_worker(cluster, data, token(env), api_addr=f"127.0.0.1:{api_port}")
    old = None
    try:
        first = wait_until(lambda: (lambda s: s if s and s["state"] == "connected" else None)(
            status(data)), 30, "the worker to say connected")
        node_id = first["node_id"]
        assert first["running"] and first["agent_pid"] == proc.pid
        assert first["api_addr"] == f"127.0.0.1:{api_port}"

        # one agent per identity: a second one on this data dir exits 2 naming the first
        second = raftdir("worker", "--data-dir", str(data))
        assert second.returncode == 2, second.stderr
        assert f"another worker agent (pid {proc.pid}) is running" in second.stderr
        assert "Traceback" not in second.stderr

        assert raftdir("scale", "web", "2", env=env).returncode == 0
        before = wait_until(lambda: (lambda s: s if s and s["assignments"] ==
                                     ["web-default-0", "web-default-1"] else None)(
            status(data)), 30, "the status to show web")

        old = cluster.leader_id()
        old_url = cluster.peers[old].url
        killed_ms = time.time() * 1000
        cluster.kill(old)
        leader = cluster.wait_leader(20, exclude=old)

        # raftdir peers: the dead leader is one row, named by its id, at no 5 s cost
        started = time.monotonic()
        out = raftdir("peers", "--json", env=env)
        elapsed = time.monotonic() - started
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
        assert sorted(r["id"] for r in rows) == [1, 2, 3], rows
        dead = next(r for r in rows if r["id"] == old)
        assert dead["role"] == "unreachable" and dead["error"] == "connection refused"
        assert dead["raft_addr"] == cluster.peers[old].raft_addr
        assert dead["api_addr"] == cluster.peers[old].api_addr
        assert elapsed < 4.5, f"raftdir peers took {elapsed:.1f} s"

        # the worker's own view follows it to the new leader
        after = wait_until(lambda: (lambda s: s if s and s["state"] == "connected"
                                    and s["leader"] == cluster.peers[leader].url
                                    and s["last_ack_unix_ms"] > killed_ms else None)(
            status(data)), 30, "the worker to report to the new leader")
        assert after["node_id"] == node_id and old_url not in (after["report_server"],
                                                               after["leader"])
        assert after["revision"] >= before["revision"]

        assert raftdir("scale", "api", "1", env=env).returncode == 0
        moved = wait_until(lambda: (lambda s: s if s and "api-default-0" in s["assignments"]
                                    else None)(status(data)), 30, "the status to show api")
        assert moved["revision"] > before["revision"]
        assert moved["services"] == {"api": {"default": [0]}, "web": {"default": [0, 1]}}
        text = raftdir("worker", "status", "--data-dir", str(data))
        assert text.returncode == 0, text.stderr
        assert f"running, pid {proc.pid}" in text.stdout
        assert f"revision    {moved['revision']}" in text.stdout
        assert "connected (reports acknowledged)" in text.stdout
        log = (data / "worker.log").read_text()
        assert f"assignments at revision {moved['revision']}: set api default=0" in log
    finally:
        stop_process(proc)
        if old is not None:
            cluster.start(old)
            cluster.wait_settled(30)
    stopped = raftdir("worker", "status", "--data-dir", str(data))
    assert stopped.returncode == 1 and "not running" in stopped.stdout


def test_a_label_change_reaches_placement_end_to_end(cluster, env, tmp_path):
    join = token(env, uses=2)
    ports = free_ports(3)
    a = start_worker(cluster, tmp_path / "a", join, labels={"zone": "z1"},
                     api_addr=f"127.0.0.1:{ports[0]}")
    b = start_worker(cluster, tmp_path / "b", join, labels={"zone": "z1"},
                     api_addr=f"127.0.0.1:{ports[1]}")
    try:
        for w in ("a", "b"):
            wait_until(lambda w=w: (status(tmp_path / w) or {}).get("state") == "connected",
                       30, f"worker {w} to connect")
        spec = json.dumps({"placement": {"labels": {"zone": "z1"}}})
        out = raftdir("scale", "zoned", "2", "--spec", spec, env=env)
        assert out.returncode == 0, out.stderr
        def zoned(w: str) -> dict | None:   # (other tests' services may land here too)
            return ((status(tmp_path / w) or {}).get("services") or {}).get("zoned")
        for w in ("a", "b"):
            wait_until(lambda w=w: zoned(w) and len(zoned(w)["default"]) == 1, 30,
                       f"worker {w} to run one replica")
        node_b = status(tmp_path / "b")["node_id"]

        # b comes back from another zone and address: zoned leaves it for a
        stop_process(b)
        b = start_worker(cluster, tmp_path / "b", "rdj1.not.needed", labels={"zone": "z2"},
                         api_addr=f"127.0.0.1:{ports[2]}")
        wait_until(lambda: workers(env)[node_b]["profile"]["labels"] == {"zone": "z2"}, 30,
                   "the new labels in raftdir workers")
        listed = workers(env)[node_b]
        assert listed["profile"]["api_addr"] == f"127.0.0.1:{ports[2]}"
        assert listed["state"] == "ready"
        wait_until(lambda: zoned("a") == {"default": [0, 1]}, 30, "a to run both replicas")
        wait_until(lambda: (status(tmp_path / "b") or {}).get("state") == "connected"
                   and zoned("b") is None, 30, "b to run none")
        table = raftdir("workers", env=env)
        assert any(line.split()[:3] == [str(node_b), "ready", f"127.0.0.1:{ports[2]}"]
                   and line.rstrip().endswith("zone=z2") for line in table.stdout.splitlines())
        assert "the directory has its new profile" in (tmp_path / "b" / "worker.log").read_text()
    finally:
        stop_process(a)
        stop_process(b)
