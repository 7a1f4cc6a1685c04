"""A real multi-host run (issue 9 §3): three servers, an outsider and two workers, each a
host of its own (a network namespace made here, with its own address, joined to the
others by a bridge in a namespace of its own), running the real ``raftdir serve`` and
``raftdir worker`` processes; the operator's ``raftdir`` commands run from a host too.
Nothing is bound in the root namespace and the test process itself talks to no server.

It shows what a loopback cluster hides:
- every server binds its own address (not 0.0.0.0, not 127.0.0.1), on the standard ports
  every host may use, and advertises the real addresses (Raft, API, the leader's URL);
- the API is TLS with certificates made here (the server's address as subjectAltName);
  the CLI and the workers check them with the CA, a certificate for another address is
  refused, and followers forward writes to the leader over TLS;
- the cluster secret is required: a server added with another ``cluster.secret`` cannot
  join (and both ends say why), and joins once it has the right file;
- kill -9 of the leader: a new leader is elected and the workers keep reporting and
  polling.

Run with ``-s -v`` to see every check as it passes. Skipped only where network namespaces
cannot be made (not root, no iproute2).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from netns import Host, Network, Proc, probe, stop_process
from raftdir.config import dump_yaml
from raftdir.model import RaftPeer, WorkerTierMode, WorkerTierRole
from raftdir.testing import wait_until
from raftdir.testing_tls import TestCA

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

RAFT_PORT, API_PORT = 9000, 3669      # the same on every host: each has its own address
TTL, GRACE = 4, 6
SECRET_SAID = "failed the cluster secret check"


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture
def network():
    reason = probe()
    if reason is not None:
        pytest.skip(f"network namespaces cannot be made here: {reason}")
    net = Network()
    try:
        with net:
            yield net
    finally:
        left = net.namespaces()
        assert not left, f"namespaces left behind: {left}"
        running = [p.pid for h in net.hosts.values() for p in h.procs if p.alive()]
        assert not running, f"processes left running: {running}"


class Run:
    """The scenario's servers and processes, the CLI run inside a host, and ``say``: one
    line per check that passed (seen with ``-s``)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.servers: dict[int, Host] = {}
        self.procs: dict[str, Proc] = {}
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("RAFTDIR_")}

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def raftdir(self, host: Host, *args: str, timeout: float = 60.0
                ) -> subprocess.CompletedProcess:
        """``python -m raftdir ARGS`` run inside ``host``."""
        return host.run([sys.executable, "-m", "raftdir", *args], timeout=timeout,
                        env=self.env)

    def ok(self, host: Host, *args: str) -> str:
        out = self.raftdir(host, *args)
        assert out.returncode == 0, f"raftdir {' '.join(args)}: {out.stderr}"
        return out.stdout

    def url(self, node_id: int) -> str:
        return f"https://{self.servers[node_id].addr}:{API_PORT}"

    def log(self, name: str) -> str:
        return self.procs[name].output()


def _server_config(node_id: int, peers: tuple[RaftPeer, ...]) -> str:
    return dump_yaml(WorkerTierMode(role=WorkerTierRole.SERVER, node_id=node_id, peers=peers,
                                    heartbeat_min_ttl=TTL, heartbeat_grace=GRACE))


def _peer(node_id: int, host: Host) -> RaftPeer:
    return RaftPeer(id=node_id, raft_addr=f"{host.addr}:{RAFT_PORT}",
                    api_addr=f"{host.addr}:{API_PORT}")


# ---------------------------------------------------------------------------- the run

def test_three_servers_and_two_workers_on_hosts_of_their_own(network: Network, tmp_path):
    run, net = Run(), network
    for i in (1, 2, 3):
        run.servers[i] = net.add_host(f"s{i}", 10 + i)
    outsider = net.add_host("s4", 14)
    workers = {name: net.add_host(name, n) for name, n in (("w1", 21), ("w2", 22))}
    ops = net.add_host("ops", 5)
    run.say(f"network {net.subnet}: servers {[h.addr for h in run.servers.values()]}, "
            f"outsider {outsider.addr}, workers {[h.addr for h in workers.values()]}, "
            f"operator {ops.addr}; namespaces rdt-{net.tag}-*")

    ca = TestCA(tmp_path / "pki")
    peers = tuple(_peer(i, h) for i, h in run.servers.items())

    # -- the secret: created once, the same file copied to every server -----------------
    dirs = {i: tmp_path / f"s{i}" for i in (1, 2, 3, 4)}
    run.ok(run.servers[1], "secret", "create", "--data-dir", str(dirs[1]))
    for i in (2, 3):
        dirs[i].mkdir()
        shutil.copy2(dirs[1] / "cluster.secret", dirs[i] / "cluster.secret")
    admin_file = tmp_path / "admin.token"
    admin_file.write_text(run.ok(run.servers[1], "token", "admin", "--data-dir",
                                 str(dirs[1])))
    admin_file.chmod(0o600)

    def start_server(i: int, host: Host, cert: tuple[str, str], cfg: str) -> Proc:
        (dirs[i] / "cluster_mode.yaml").write_text(cfg)
        proc = host.start([sys.executable, "-m", "raftdir", "serve", "--data-dir",
                           str(dirs[i]), "--tls-cert", cert[0], "--tls-key", cert[1],
                           "--tls-peer-ca", ca.cert], dirs[i] / "server.log", env=run.env)
        run.procs[f"s{i}"] = proc
        return proc

    for i, host in run.servers.items():
        start_server(i, host, ca.issue(f"s{i}", ips=[host.addr]), _server_config(i, peers))

    base = ["--tls-ca", ca.cert, "--timeout", "3"]
    admin = [*base, "--token-file", str(admin_file)]
    cli = admin     # reads: the admin token until a read token is issued (below)
    every = [f"--server={','.join(run.url(i) for i in (1, 2, 3))}"]

    def peer_rows(*servers: str) -> list[dict[str, Any]] | None:
        out = run.raftdir(ops, "peers", "--json", *cli, *(servers or every), timeout=30)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def settled(expect: set[int], *servers: str) -> list[dict[str, Any]] | None:
        """The rows when every peer in ``expect`` answers and all follow one leader."""
        rows = peer_rows(*servers)
        if not rows:
            return None
        asked = {r["id"]: r for r in rows if r["asked"] and r["error"] is None}
        leaders = [r for r in asked.values() if r["role"] == "leader"]
        if set(asked) != expect or len(leaders) != 1:
            return None
        if any(r["leader"] != leaders[0]["raft_addr"] for r in asked.values()):
            return None
        return rows

    rows = wait_until(lambda: settled({1, 2, 3}), 60, "three peers following one leader",
                      interval=0.3)
    # -- the APIs are on real addresses: reads need a token (scope read is enough) -------
    refused = run.raftdir(ops, "workers", *base, *every, timeout=30)
    assert refused.returncode == 1 and "needs a token" in refused.stderr, refused.stderr
    read_file = tmp_path / "read.token"
    read_file.write_text(run.ok(ops, "token", "create", "--viewer", "--name", "ops-read",
                                *admin, *every).strip() + "\n")
    cli = [*base, "--token-file", str(read_file)]
    run.say("reads without a token are refused (the APIs are not on loopback); the "
            "operator reads with a read token from `raftdir token create --viewer`")
    run.say("raftdir peers, run on the operator's host:")
    print(run.ok(ops, "peers", *cli, *every), flush=True)

    # -- binding and advertised addresses -----------------------------------------------
    for i, host in run.servers.items():
        pid = run.procs[f"s{i}"].pid
        mine = sorted((a, p) for a, p, owner in host.listening() if owner == pid)
        assert mine == [(host.addr, API_PORT), (host.addr, RAFT_PORT)], (i, mine)
    run.say("each server listens on its own address only: "
            + ", ".join(f"s{i} {h.addr}:{RAFT_PORT},{API_PORT}"
                        for i, h in run.servers.items()) + " (no 0.0.0.0, no 127.0.0.1)")
    for row in rows:
        i = row["id"]
        assert row["raft_addr"] == peers[i - 1].raft_addr
        assert row["api_addr"] == run.url(i)
        leader = next(r for r in rows if r["role"] == "leader")
        assert row["status"]["leader"] == leader["raft_addr"]
        assert row["status"]["leader_api"] == run.url(leader["id"])
        assert set(row["status"]["partners"]) == {p.raft_addr for p in peers} - {
            row["raft_addr"]}
    nodes = json.loads(run.ok(ops, "workers", "--kind", "server", "--json", *cli, *every))
    assert {n["node_id"]: n["profile"]["api_addr"] for n in nodes} == {
        p.id: p.api_addr for p in peers}
    run.say("advertised: Raft addresses, API URLs, the leader's URL and the server nodes' "
            "api_addr are the hosts' real addresses")

    # -- writes through a follower are forwarded to the leader over TLS -------------------
    leader_id = next(r["id"] for r in rows if r["role"] == "leader")
    follower_id = next(i for i in (1, 2, 3) if i != leader_id)
    token = run.ok(ops, "token", "create", "--max-uses", "2", "--valid-for", "10m", *admin,
                   "--server", run.url(follower_id)).strip()
    metrics = _fetch(run, ops, f"{run.url(follower_id)}/metrics", ca.cert,
                     read_file.read_text().strip())
    assert any(line.startswith("raftdir_api_forwarded_total") and 'outcome="ok"' in line
               and float(line.rsplit(None, 1)[1]) >= 1 for line in metrics.splitlines()), \
        metrics
    run.say(f"a join token created through follower s{follower_id} was forwarded to the "
            f"leader s{leader_id} over TLS")

    # -- workers register with the join token over TLS, from hosts of their own ----------
    for name, host in workers.items():
        wdir = tmp_path / name
        wdir.mkdir()
        (wdir / "join.token").write_text(token + "\n")
        (wdir / "cluster_mode.yaml").write_text(dump_yaml(WorkerTierMode(
            role=WorkerTierRole.WORKER, servers=tuple(run.url(i) for i in (1, 2, 3)),
            token_file=str(wdir / "join.token"), heartbeat_min_ttl=TTL,
            heartbeat_grace=GRACE, labels={"host": name})))
        run.procs[name] = host.start(
            [sys.executable, "-m", "raftdir", "worker", "--data-dir", str(wdir), "--tls-ca",
             ca.cert, "--api-addr", f"{host.addr}:{API_PORT}"], wdir / "worker.log",
            env=run.env)

    def worker_rows() -> dict[str, dict[str, Any]]:
        out = run.raftdir(ops, "workers", "--json", *cli, *every, timeout=30)
        if out.returncode != 0:
            return {}
        return {w["profile"]["labels"].get("host"): w for w in json.loads(out.stdout)}

    def reporting(since: float = 0.0) -> dict[str, dict[str, Any]] | None:
        """The workers' rows when both are ready and last reported less than 2 s ago and
        after the moment ``since`` (``time.monotonic()``), as the leader saw it."""
        asked = time.monotonic()
        seen = worker_rows()
        fresh = {n: w for n, w in seen.items() if w["state"] == "ready"
                 and w["last_report_secs_ago"] is not None
                 and w["last_report_secs_ago"] < min(2.0, asked - since)}
        return fresh if set(fresh) == set(workers) else None

    seen = wait_until(reporting, 60, "both workers to register and report", interval=0.5)
    for name, host in workers.items():
        assert seen[name]["profile"]["api_addr"] == f"{host.addr}:{API_PORT}"
        assert seen[name]["node_id"] >= 1_000_000
    run.say("raftdir workers, run on the operator's host:")
    print(run.ok(ops, "workers", *cli, *every), flush=True)
    run.say("both workers registered with one join token over TLS, checked the servers "
            "with the CA, and advertise their own addresses")

    # -- the outsider: added as peer 4, but with another secret and a wrong certificate --
    outsider_peer = _peer(4, outsider)
    out = run.ok(ops, "peers", "add", "--id", "4", "--raft-addr", outsider_peer.raft_addr,
                 "--api-addr", outsider_peer.api_addr, *admin, *every)
    assert "added" in out
    run.ok(outsider, "secret", "create", "--data-dir", str(dirs[4]))
    assert (dirs[4] / "cluster.secret").read_text() != (dirs[1] / "cluster.secret"
                                                       ).read_text()
    four = peers + (outsider_peer,)
    wrong_cert = ca.issue("s4-wrong", ips=[run.servers[1].addr])
    proc4 = start_server(4, outsider, wrong_cert, _server_config(4, four))
    run.servers[4] = outsider

    refused = wait_until(lambda: (lambda o: o if "TLS" in o.stderr else None)(
        run.raftdir(ops, "peers", *cli, "--server", run.url(4))), 30,
        "the outsider's API to answer (and be refused)", interval=0.3)
    assert refused.returncode == 1
    assert "TLS certificate rejected" in refused.stderr
    assert "mismatch" in refused.stderr and outsider.addr in refused.stderr
    run.say(f"TLS name check: s4 serves a certificate for {run.servers[1].addr}; the CLI "
            f"refuses it: {re.search('IP address mismatch[^(]*', refused.stderr).group(0)}")

    def said_on_both_ends() -> bool:
        return SECRET_SAID in run.log("s4") and any(
            SECRET_SAID in run.log(f"s{i}") and outsider.addr in run.log(f"s{i}")
            for i in (1, 2, 3))

    wait_until(said_on_both_ends, 30, "both ends to log the failed secret check",
               interval=0.3)
    rows = wait_until(lambda: settled({1, 2, 3}), 30, "the three peers", interval=0.3)
    for row in rows:
        if row["asked"]:
            assert row["status"]["partners"][outsider_peer.raft_addr] is False
    stranger = next(r for r in rows if r["raft_addr"] == outsider_peer.raft_addr)
    assert stranger["role"] == "unreachable" and not stranger["asked"]
    # the three still commit (3 of 4 is a majority)
    run.ok(ops, "token", "create", "--max-uses", "1", *admin, *every)
    run.say("secret check: s4 (added with `raftdir peers add`, own cluster.secret) is "
            "refused by every peer, 'unreachable' in raftdir peers, and both ends log "
            f"'{SECRET_SAID}'; the other three still commit")

    # ... and with the right secret and certificate it joins
    _stop(proc4)
    shutil.copy2(dirs[1] / "cluster.secret", dirs[4] / "cluster.secret")
    start_server(4, outsider, ca.issue("s4", ips=[outsider.addr]), _server_config(4, four))
    with_four = [f"--server={','.join(run.url(i) for i in (1, 2, 3, 4))}"]

    def joined() -> list[dict[str, Any]] | None:
        rows = settled({1, 2, 3, 4}, *with_four)
        if rows is None:
            return None
        commit = next(r["commit"] for r in rows if r["role"] == "leader")
        row4 = next(r for r in rows if r["id"] == 4)
        return rows if row4["role"] == "follower" and row4["applied"] == commit else None

    wait_until(joined, 60, "s4 to join and catch up", interval=0.3)
    run.say("with the cluster's secret (and a certificate for its own address) s4 joins "
            "and catches up:")
    print(run.ok(ops, "peers", *cli, *with_four), flush=True)

    # removing a server: stop it first, then `raftdir peers remove`
    _stop(run.procs["s4"])
    out = run.ok(ops, "peers", "remove", "--id", "4", "--raft-addr", outsider_peer.raft_addr,
                 *admin, *every)
    assert "removed" in out
    del run.servers[4]
    def three() -> list[dict[str, Any]] | None:
        rows = settled({1, 2, 3})
        gone = rows is not None and all(outsider_peer.raft_addr not in r["status"]["partners"]
                                        for r in rows if r["asked"])
        return rows if gone else None

    rows = wait_until(three, 30, "peer 4 to leave every peer's view", interval=0.3)
    run.say("s4 stopped, then removed with `raftdir peers remove`: three peers again")

    # -- kill -9 of the leader -------------------------------------------------------------
    old = next(r["id"] for r in rows if r["role"] == "leader")
    victim = run.procs[f"s{old}"]
    victim.popen.send_signal(signal.SIGKILL)
    victim.popen.wait(10)
    killed_at = time.monotonic()
    run.say(f"kill -9 of the leader s{old} (pid {victim.pid})")
    rest = {1, 2, 3} - {old}
    rest_servers = [f"--server={','.join(run.url(i) for i in sorted(rest))}"]
    rows = wait_until(lambda: settled(rest, *rest_servers), 30, "a new leader", interval=0.2)
    new = next(r["id"] for r in rows if r["role"] == "leader")
    run.say(f"new leader: s{new}, {time.monotonic() - killed_at:.1f} s after the kill "
            "(as seen from the operator's host)")
    seen = wait_until(lambda: reporting(since=killed_at), 40,
                      "both workers to report to the new leader", interval=0.5)
    assert all(w["state"] == "ready" for w in seen.values())
    run.say("the workers report to the new leader and are still ready: "
            + ", ".join(f"{n} (node {w['node_id']}) {w['last_report_secs_ago']:.1f}s ago"
                        for n, w in sorted(seen.items())))
    out = run.ok(ops, "scale", "web", "4", *admin, *every)
    assert "scaled web to 4" in out

    def running() -> dict[str, Any] | None:
        res = run.raftdir(ops, "service-state", "web", "--json", *cli, *every, timeout=30)
        state = json.loads(res.stdout) if res.returncode == 0 else {}
        return state if state.get("running") == 4 else None

    state = wait_until(running, 40, "the workers to run web after the failover",
                       interval=0.5)
    assert {n["node_id"] for n in state["nodes"]} == {w["node_id"] for w in seen.values()}
    run.say("scale web 4 after the failover: both workers poll, run and report their share")

    # -- what the logs say ------------------------------------------------------------------
    for i in (1, 2, 3):
        text = run.log(f"s{i}")
        for line in _lines_with(text, "forwarding").splitlines():
            # refused connections to the killed leader are expected; a TLS failure is not
            assert "certificate" not in line.lower() and "SSLError" not in line, line
        for line in _lines_with(text, SECRET_SAID).splitlines():
            assert outsider.addr in line, line
        assert "Traceback" not in text
    for name in workers:
        assert "Traceback" not in run.log(name)
    run.say("server logs: no TLS failure when forwarding, secret-check warnings only "
            "about the outsider, no tracebacks")


def _lines_with(text: str, needle: str) -> str:
    return "\n".join(line for line in text.splitlines() if needle in line)


def _stop(proc: Proc) -> None:
    stop_process(proc.popen)


def _fetch(run: Run, host: Host, url: str, ca: str, token: str) -> str:
    """GET ``url`` from inside ``host`` with ``token``, checking the server with ``ca``."""
    code = ("import os, ssl, sys, urllib.request\n"
            "ctx = ssl.create_default_context(cafile=sys.argv[2])\n"
            "req = urllib.request.Request(sys.argv[1], headers={'Authorization': "
            "'Bearer ' + os.environ['FETCH_TOKEN']})\n"
            "print(urllib.request.urlopen(req, context=ctx, timeout=5).read().decode())")
    out = host.run([sys.executable, "-c", code, url, ca], timeout=30,
                   env=dict(run.env, FETCH_TOKEN=token))
    assert out.returncode == 0, out.stderr
    return out.stdout
