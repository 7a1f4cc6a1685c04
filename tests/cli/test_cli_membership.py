"""``raftdir peers add|remove`` against real PySyncObj peers in this process: a one-peer
raft cluster grows to two (the new peer joins), both list each other, then shrinks back,
and the removal is undone by adding the peer back as it was. The first peer starts from the
file `zlayer node init` writes (this node alone)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from cli_harness import ADMIN, SECRET, free_port, run_cli
from raftdir.api.server import start_api
from raftdir.config import parse_cluster_mode
from raftdir.model import RaftPeer
from raftdir.replication.tuning import RaftTuning
from raftdir.server import DirectoryServer, ServerSettings

ADMIN_ENV = {"RAFTDIR_ADMIN_TOKEN": ADMIN}
FAST = RaftTuning(raft_min_timeout=0.2, raft_max_timeout=0.5, append_entries_period=0.05,
                  auto_tick_period=0.01, connection_retry_time=0.2,
                  leader_fallback_timeout=1.0, bind_retry_time=0.2, max_bind_retries=3)


def wait_until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Peer:
    """One raft-mode DirectoryServer + API on its own loop thread (``LiveServer``'s
    pattern, with a PySyncObj node)."""

    def __init__(self, me: RaftPeer, peers: tuple[RaftPeer, ...], data_dir: Path) -> None:
        from cli_harness import LiveServer
        self.box = LiveServer()
        self.me, self.peers, self.data_dir = me, peers, data_dir

    def start(self) -> "Peer":
        box = self.box
        box.thread.start()

        async def go() -> None:
            settings = ServerSettings(node_id=self.me.id, peers=self.peers,
                                      data_dir=str(self.data_dir), raft_tuning=FAST)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            box.server = DirectoryServer(settings, secret=SECRET)
            await box.server.start()
            host, port = self.me.api_addr.rsplit(":", 1)
            box.api = await start_api(box.server, host, int(port))

        box.call(go, 30)
        return self

    @property
    def url(self) -> str:
        return self.box.url

    def stop(self) -> None:
        self.box.stop()


def test_peers_add_then_remove_with_pysyncobj(tmp_path):
    # bin/zlayer/src/commands/node.rs persist_cluster_mode_raft, as serde_yaml writes it
    zlayer_node_init = (f"mode: raft\nnode_id: 1\npeers:\n- id: 1\n"
                        f"  raft_addr: 127.0.0.1:{free_port()}\n"
                        f"  api_addr: 127.0.0.1:{free_port()}\n")
    mode, _warnings = parse_cluster_mode(zlayer_node_init)
    one = mode.peers[0]
    two = RaftPeer(id=2, raft_addr=f"127.0.0.1:{free_port()}",
                   api_addr=f"127.0.0.1:{free_port()}")
    first = Peer(one, mode.peers, tmp_path / "1").start()
    second = Peer(two, (one, two), tmp_path / "2")
    third: Peer | None = None
    try:
        wait_until(first.box.server.is_leader, 10, "peer 1 to lead")
        # With two peers the quorum is two: the add commits once the new peer answers, so
        # the new peer starts (with the full list) while the CLI waits for the commit.
        threading.Timer(0.2, second.start).start()
        added = run_cli("peers", "add", "--id", "2", "--raft-addr", two.raft_addr,
                        "--api-addr", two.api_addr, "-s", first.url, env=ADMIN_ENV)
        assert added.exit_code == 0, added.output
        assert f"peer 2 ({two.raft_addr}) added" in added.stdout
        # the new peer is a node of the directory, and a server the acks name
        server = first.box.server
        node = server.read(lambda d: d.node(2))
        assert (node["kind"], node["state"], node["profile"]["api_addr"]) == (
            "server", "ready", two.api_addr)
        assert f"http://{two.api_addr}" in server.servers()

        def both() -> list | None:
            out = run_cli("peers", "-s", first.url, "-s", f"http://{two.api_addr}", "--json")
            rows = json.loads(out.stdout) if out.exit_code == 0 else []
            roles = sorted((r["id"], r["role"]) for r in rows)
            return rows if roles == [(1, "leader"), (2, "follower")] else None

        rows = wait_until(both, 10, "peer 2 to follow peer 1")
        assert all(r["asked"] and r["lag"] is not None for r in rows)

        # Asked only peer 1, the table still names peer 2 (from its Raft partners).
        only_first = json.loads(run_cli("peers", "-s", first.url, "--json").stdout)
        assert [(r["raft_addr"], r["asked"]) for r in only_first] == [
            (one.raft_addr, True), (two.raft_addr, False)]

        # a peer's id or address cannot be taken (issue 15, finding 1)
        hijack = run_cli("peers", "add", "--id", "1", "--raft-addr", "127.0.0.1:1",
                         "--api-addr", "127.0.0.1:2", "-s", first.url, env=ADMIN_ENV)
        assert hijack.exit_code == 1 and "live peer" in hijack.stderr, hijack.output
        mismatch = run_cli("peers", "remove", "--id", "1", "--raft-addr", two.raft_addr,
                           "-s", first.url, env=ADMIN_ENV)
        assert mismatch.exit_code == 1 and "peer 2, not of 1" in mismatch.stderr

        removed = run_cli("peers", "remove", "--id", "2", "--raft-addr", two.raft_addr,
                          "-s", first.url, env=ADMIN_ENV)
        assert removed.exit_code == 0, removed.output
        assert server.read(lambda d: d.node(2))["state"] == "down"
        assert server.servers() == [f"http://{one.api_addr}"]
        second.stop()
        after = json.loads(run_cli("peers", "-s", first.url, "--json").stdout)
        assert [(r["id"], r["role"]) for r in after] == [(1, "leader")]

        # the removal is undone by adding it back as it was (a fresh peer at its addresses)
        third = Peer(two, (one, two), tmp_path / "2-again")
        threading.Timer(0.2, third.start).start()
        again = run_cli("peers", "add", "--id", "2", "--raft-addr", two.raft_addr,
                        "--api-addr", two.api_addr, "-s", first.url, env=ADMIN_ENV)
        assert again.exit_code == 0, again.output
        assert server.read(lambda d: d.node(2))["state"] == "ready"
        assert f"http://{two.api_addr}" in server.servers()
        wait_until(both, 10, "peer 2 to follow peer 1 again")
        third.stop()
    finally:
        for peer in (second, third):
            if peer is not None and peer.box.thread.is_alive():
                peer.stop()
        first.stop()
