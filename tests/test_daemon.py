"""The embedding API: single-node without a network, the sync context manager, static
mode's lowest-reachable-id leader, and the embedding example."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from raftdir import ConfigError, InternalScaleRequest, StaticMode, StaticPeer
from raftdir.daemon import Daemon
from raftdir.replication.local import LocalNode
from raftdir.testing import async_wait_until, free_ports, wait_until

ROOT = Path(__file__).resolve().parent.parent


def test_single_node_runs_in_process_without_a_network(tmp_path):
    async def body() -> None:
        daemon = Daemon.from_data_dir(tmp_path)
        changes = []
        daemon.on_assignments(lambda change, current: changes.append(current.containers()))
        async with daemon:
            assert isinstance(daemon.server.raft, LocalNode)
            assert daemon.api is None          # no socket at all
            await async_wait_until(daemon.cluster.is_leader, 5, "leadership")
            await daemon.cluster.forward_scale(InternalScaleRequest.legacy("web", 2))
            await async_wait_until(lambda: changes, 5, "the assignment callback")
            assert changes[-1] == ["web-default-0", "web-default-1"]
            assert daemon.status()["assignments"] == changes[-1]
        assert not daemon.status()["started"]

    asyncio.run(body())


def test_sync_context_manager_runs_on_its_own_thread(tmp_path):
    with Daemon.from_data_dir(tmp_path) as daemon:
        wait_until(lambda: daemon.status().get("is_leader"), 5, "leadership")
        assert daemon.status()["mode"] == "single-node"


def test_a_broken_config_names_the_file_and_field(tmp_path):
    # what `zlayer node init` writes when its advertise address is a host name
    (tmp_path / "cluster_mode.yaml").write_text("mode: raft\nnode_id: 1\npeers: []\n")
    with pytest.raises(ConfigError, match="cluster_mode.yaml: peers: empty; list this node"):
        Daemon.from_data_dir(tmp_path)
    (tmp_path / "cluster_mode.yaml").write_text(
        "mode: raft\nnode_id: 2\npeers:\n- {id: 1, raft_addr: '127.0.0.1:1', "
        "api_addr: '127.0.0.1:2'}\n")
    with pytest.raises(ConfigError, match="cluster_mode.yaml: node_id: 2 is not the id"):
        Daemon.from_data_dir(tmp_path)


@pytest.mark.timeout(60)
def test_a_zlayer_node_init_file_starts_a_node_that_leads(tmp_path):
    """`zlayer node init` writes this node alone (serde_yaml's layout, loopback here so that
    no cluster secret is needed): a one-member Raft cluster that leads at once and that
    other peers join with `raftdir peers add` (tests/cli/test_cli_membership.py)."""
    raft_port, api_port = free_ports(2)
    (tmp_path / "cluster_mode.yaml").write_text(
        f"mode: raft\nnode_id: 1\npeers:\n- id: 1\n  raft_addr: 127.0.0.1:{raft_port}\n"
        f"  api_addr: 127.0.0.1:{api_port}\n")

    async def body() -> None:
        daemon = Daemon.from_data_dir(tmp_path)
        got: list = []
        daemon.on_assignments(lambda change, current: got.append(current.containers()))
        async with daemon:
            await async_wait_until(daemon.cluster.is_leader, 10, "the node to lead")
            assert daemon.cluster.leader_addr() == f"127.0.0.1:{api_port}"
            await daemon.cluster.forward_scale(InternalScaleRequest.legacy("web", 1))
            await async_wait_until(lambda: got, 10, "its own assignment")
            assert got[-1] == ["web-default-0"]

    asyncio.run(body())


def test_constructor_does_no_io(tmp_path):
    missing = tmp_path / "nowhere"
    daemon = Daemon(StaticMode(node_id=1, peers=(StaticPeer(id=1, api_addr="127.0.0.1:1"),)),
                    missing)
    assert not missing.exists() and daemon.api is None


@pytest.mark.timeout(60)
def test_static_mode_elects_the_lowest_reachable_id_and_moves_on(tmp_path):
    async def body() -> None:
        ports = free_ports(3)
        peers = tuple(StaticPeer(id=i + 1, api_addr=f"127.0.0.1:{p}")
                      for i, p in enumerate(ports))
        daemons = {i: Daemon(StaticMode(node_id=i, peers=peers, heartbeat_interval=1,
                                        failure_threshold=2), tmp_path / f"s{i}")
                   for i in (1, 2, 3)}
        got: dict[int, list] = {i: [] for i in daemons}
        for i, d in daemons.items():
            d.on_assignments(lambda change, current, i=i: got[i].append(current.containers()))
        try:
            for d in daemons.values():
                await d.start()
            await async_wait_until(lambda: all(
                n.state == "ready" for d in daemons.values() for n in d.cluster.list_nodes()),
                10, "every peer to see every other")
            assert all(d.cluster.leader_addr() == peers[0].api_addr for d in daemons.values())
            assert [d.cluster.is_leader() for d in daemons.values()] == [True, False, False]
            # a scale forwarded from a follower is distributed by the leader
            split = await daemons[3].cluster.forward_scale(InternalScaleRequest.legacy("web", 3))
            assert sorted(split) == [1, 2, 3]
            await async_wait_until(lambda: all(got[i] for i in daemons), 10,
                                   "every peer to receive its share")
            await daemons[1].stop()
            await async_wait_until(lambda: daemons[2].cluster.is_leader()
                                   and daemons[3].cluster.leader_addr() == peers[1].api_addr,
                                   10, "peer 2 to take over")
            states = {n.node_id: n.state for n in daemons[3].cluster.list_nodes()}
            assert states == {1: "unreachable", 2: "ready", 3: "ready"}
        finally:
            for d in daemons.values():
                await d.stop()

    asyncio.run(body())


def test_a_static_peer_others_could_reach_needs_a_cluster_secret(tmp_path):
    # without a secret a static peer takes every call: only on loopback
    daemon = Daemon(StaticMode(node_id=1, peers=(StaticPeer(id=1, api_addr="10.9.8.7:7000"),)),
                    tmp_path)
    with pytest.raises(ConfigError) as info:
        asyncio.run(daemon.start())
    assert info.value.field == "peers" and "10.9.8.7" in info.value.message
    assert "cluster.secret" in info.value.message


@pytest.mark.timeout(60)
def test_static_peers_with_a_secret_read_each_other_and_refuse_what_they_lack(tmp_path):
    # reads closed: a peer's service_states asks the others with its admin token (without
    # it, every other peer was silently left out); undrain is a 400, not a 500
    import aiohttp
    from raftdir.auth import admin_token
    from raftdir.daemon import DaemonOptions
    secret = "ab" * 32
    ports = free_ports(2)
    peers = tuple(StaticPeer(id=i + 1, api_addr=f"127.0.0.1:{p}") for i, p in enumerate(ports))
    for i in (1, 2):
        (tmp_path / f"s{i}").mkdir()
        f = tmp_path / f"s{i}" / "cluster.secret"
        f.write_text(secret + "\n")
        f.chmod(0o600)

    async def body() -> None:
        daemons = [Daemon(StaticMode(node_id=i, peers=peers, heartbeat_interval=1,
                                     failure_threshold=2), tmp_path / f"s{i}",
                          options=DaemonOptions(require_read_token=True)) for i in (1, 2)]
        try:
            for d in daemons:
                await d.start()
            await async_wait_until(lambda: all(
                n.state == "ready" for d in daemons for n in d.cluster.list_nodes()),
                10, "each peer to see the other")
            states = await daemons[0].cluster.service_states("web")
            assert [s.node_id for s in states] == [1, 2]
            async with aiohttp.ClientSession() as s:
                url = f"http://{peers[1].api_addr}/api/v1/internal/services/web/state"
                async with s.get(url) as resp:
                    assert resp.status == 401     # nobody else reads without a token
                async with s.delete(f"http://{peers[0].api_addr}/api/v1/workers/5/drain",
                                    headers={"Authorization":
                                             f"Bearer {admin_token(secret)}"}) as resp:
                    assert resp.status == 400
                    assert "static mode" in (await resp.json())["message"]
        finally:
            for d in daemons:
                await d.stop()

    asyncio.run(body())


def test_the_embedding_example_runs(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "embed_daemon.py"),
                          str(tmp_path), "--seconds", "0.5"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "running ['web-default-0', 'web-default-1', 'web-default-2']" in out.stdout
    assert out.stdout.strip().endswith("stopped")


def test_single_node_keeps_its_directory_across_a_restart(tmp_path):
    async def body() -> None:
        async with Daemon.from_data_dir(tmp_path) as daemon:
            await async_wait_until(daemon.cluster.is_leader, 5, "leadership")
            await daemon.cluster.forward_scale(InternalScaleRequest.legacy("web", 2))
        again = Daemon.from_data_dir(tmp_path)
        seen = []
        again.on_assignments(lambda change, current: seen.append(current.containers()))
        async with again:
            await async_wait_until(lambda: seen, 5, "the assignments after the restart")
            assert seen[-1] == ["web-default-0", "web-default-1"]

    asyncio.run(body())


def test_a_running_server_follows_the_secret_files_of_a_roll(tmp_path, caplog):
    """The daemon re-reads cluster.secret, .next and .prev when they change: during a roll
    the admin tokens of both secrets are accepted, and after it only the new one; a broken
    file or a set that shares no secret with the one in use is not taken (one WARNING)."""
    import logging
    import os
    from raftdir.auth import admin_token
    from raftdir.daemon import DaemonOptions
    from raftdir.errors import Unauthorized
    from raftdir.replication.secret import (
        NEXT_SECRET_FILE, create_secret, promote_secret, retire_secret,
    )

    def accepts(daemon: Daemon, secret: str) -> bool:
        try:
            daemon.server.check_admin(admin_token(secret))
        except Unauthorized:
            return False
        return True

    async def body() -> None:
        old = create_secret(tmp_path)
        daemon = Daemon.from_data_dir(tmp_path, options=DaemonOptions(
            secret_check_interval=0.02))
        async with daemon:
            assert accepts(daemon, old)
            new = create_secret(tmp_path / NEXT_SECRET_FILE)
            await async_wait_until(lambda: accepts(daemon, new), 5, "the next secret taken")
            assert accepts(daemon, old) and daemon.server.own_token() == admin_token(old)
            promote_secret(tmp_path)
            await async_wait_until(lambda: daemon.server.own_token() == admin_token(new), 5,
                                   "the promotion taken")
            assert accepts(daemon, old) and accepts(daemon, new)
            retire_secret(tmp_path)
            await async_wait_until(lambda: not accepts(daemon, old), 5, "the retirement")
            assert accepts(daemon, new)

            with caplog.at_level(logging.WARNING, logger="raftdir.daemon"):
                # a next secret copied with the wrong mode: not taken, said once
                bad = tmp_path / NEXT_SECRET_FILE
                bad.write_text("cd" * 32 + "\n")
                os.chmod(bad, 0o644)
                await async_wait_until(lambda: "has mode 0644" in caplog.text, 5,
                                       "the warning about the mode")
                assert not accepts(daemon, "cd" * 32)
                bad.unlink()
                # cluster.secret replaced outright: shares nothing with the one in use
                create_secret(tmp_path, force=True)
                await async_wait_until(lambda: "share no secret" in caplog.text, 5,
                                       "the warning about an unrelated secret")
                assert accepts(daemon, new)
            warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(warnings) == 2, [r.getMessage() for r in warnings]
            assert all(old not in r.getMessage() and new not in r.getMessage()
                       for r in caplog.records)

    asyncio.run(body())
