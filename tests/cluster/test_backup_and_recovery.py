"""Disaster recovery on real clusters: a backup saved from a running three-peer cluster
restores into new data dirs with every node, lease, service and token use; workers keep
their identities and report on, and none is marked down for the time the cluster was
gone. One surviving peer of a cluster that lost its majority comes back as a single-peer
cluster with everything it had, and refuses to while the old cluster still has a leader."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raftdir.api.client import RaftdirClient
from raftdir.auth import admin_token
from raftdir.backup import read_backup
from raftdir.core.directory import Directory
from raftdir.errors import TokenExhausted
from raftdir.model import (
    InternalScaleRequest, WorkerProfile, WorkerRegisterRequest,
)
from raftdir.testing import LocalCluster, SimFleet, async_wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
HEARTBEAT = {"heartbeat_min_ttl": 4, "heartbeat_grace": 6}
PROFILE = WorkerProfile(api_addr="127.0.0.1:9", os="linux", arch="x86_64")


def raftdir(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raftdir", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, **(env or {})))


def admin(cluster: LocalCluster) -> RaftdirClient:
    return RaftdirClient(cluster.endpoints, admin_token=admin_token(cluster.secret))


async def register_new(cluster: LocalCluster, token: str) -> int:
    """One new worker (a fresh client: a client that registered once re-registers)."""
    async with RaftdirClient(cluster.endpoints) as c:
        return (await c.register(WorkerRegisterRequest(token=token, profile=PROFILE))).node_id


def copy_configs(old: LocalCluster, root: Path) -> list[Path]:
    dirs = []
    for peer_id, peer in sorted(old.peers.items()):
        d = root / f"peer{peer_id}"
        d.mkdir(parents=True)
        for name in ("cluster_mode.yaml", "cluster.secret"):
            shutil.copy2(peer.data_dir / name, d / name)
        dirs.append(d)
    return dirs


def test_a_backup_restores_a_whole_cluster_and_its_workers_report_on(tmp_path):
    backup = tmp_path / "dir.backup"
    old = LocalCluster(tmp_path / "old").prepare(heartbeat=HEARTBEAT)
    new = LocalCluster(tmp_path / "new")
    try:
        old.start()
        old.wait_settled(30)

        async def populate_and_save() -> tuple[SimFleet, str, dict, dict[int, str]]:
            async with admin(old) as c:
                token = (await c.create_token(3600, 5))["token"]
                fleet = SimFleet(old.endpoints, token, 3)
                await fleet.start()
                await c.scale(InternalScaleRequest.legacy("web", 6))
                await async_wait_until(lambda: fleet.total_replicas() == 6, 15,
                                       "every replica placed and polled")
            secrets = {w.node_id: w.client.node_secret for w in fleet.workers}
            out = await asyncio.to_thread(
                raftdir, "snapshot", "save", str(backup),
                env={"RAFTDIR_SERVER": ",".join(old.endpoints),
                     "RAFTDIR_ADMIN_TOKEN": admin_token(old.secret)})
            assert out.returncode == 0, out.stderr
            assert "saved" in out.stdout and "revision" in out.stdout
            await fleet.stop()
            return fleet, token, secrets

        fleet, token, secrets = asyncio.run(populate_and_save())
        old.stop()
        gone_at = time.monotonic()

        inspect = raftdir("snapshot", "inspect", "--json", str(backup))
        assert inspect.returncode == 0, inspect.stderr
        summary = json.loads(inspect.stdout)
        assert summary["workers"] == {"ready": 3, "draining": 0, "down": 0}
        assert (summary["servers"], summary["services"], summary["token_uses"]) == (3, 1, 1)
        assert summary["checksum"] == "ok"

        dirs = copy_configs(old, tmp_path / "new")
        for d in dirs:
            out = raftdir("snapshot", "restore", str(backup), "--data-dir", str(d))
            assert out.returncode == 0, out.stderr
            again = raftdir("snapshot", "restore", str(backup), "--data-dir", str(d))
            assert again.returncode == 2 and "--force" in again.stderr   # never overwrites
        new.adopt(dirs)
        # the cluster stays gone for longer than any lease (ttl 4 + grace 6): nobody may
        # be marked down for that
        time.sleep(max(0.0, gone_at + 11.0 - time.monotonic()))
        new.start()
        new.wait_settled(30)

        async def check_restored() -> None:
            async with admin(new) as c:
                saved = Directory.from_snapshot(read_backup(backup).state)
                leases = {lease.node_id: lease for lease, _ in await c.leases(consistent=True)}
                assert {n: leases[n] for n in secrets} == {n: saved.lease(n) for n in secrets}
                # workers come back with their own identities (no new registration)
                for w in fleet.workers:
                    w.client = RaftdirClient(list(new.endpoints), node_secret=secrets[w.node_id],
                                             timeout=5.0, retries=40, backoff=(0.02, 0.5))
                    w.assignments = type(w.assignments)()
                    w.start()
                await async_wait_until(lambda: all(w.acks >= 2 for w in fleet.workers), 30,
                                       "reports acknowledged by the restored cluster")
                await async_wait_until(lambda: fleet.total_replicas() == 6, 20,
                                       "the restored placement, polled from scratch")
                await fleet.stop()
                # the token's use count came back: 3 of 5 used, so 2 more and no third
                for _ in range(2):
                    await register_new(new, token)
                with pytest.raises(TokenExhausted):
                    await register_new(new, token)
                states = {w["node_id"]: w["state"] for w in await c.workers(consistent=True)}
                assert all(states[n] == "ready" for n in secrets), states
        asyncio.run(check_restored())
    finally:
        old.stop()
        new.stop()


def test_one_survivor_of_a_lost_majority_comes_back_as_a_single_peer_cluster(tmp_path):
    cluster = LocalCluster(tmp_path / "c").prepare(heartbeat=HEARTBEAT)
    try:
        cluster.start()
        leader = cluster.wait_settled(30)

        async def populate() -> list[int]:
            async with admin(cluster) as c:
                token = (await c.create_token(3600, 0))["token"]
                ids = [await register_new(cluster, token) for _ in range(4)]
                await c.scale(InternalScaleRequest.legacy("web", 4))
                await c.workers(consistent=True)   # every peer applied it
            return ids
        ids = asyncio.run(populate())
        survivor = next(n for n in cluster.peers if n != leader)
        data_dir = cluster.peers[survivor].data_dir
        cluster.kill(survivor, sig=15)   # stopped cleanly: SIGTERM

        # the other two still have a leader: recovering would split the cluster
        refused = raftdir("recover", "--data-dir", str(data_dir))
        assert refused.returncode == 1 and "knows a leader" in refused.stderr, refused.stderr
        assert not (data_dir / "cluster_mode.yaml.before-recover").exists()

        for n in cluster.peers:          # the majority is lost for good
            if n != survivor:
                cluster.kill(n)
        out = raftdir("recover", "--data-dir", str(data_dir))
        assert out.returncode == 0, out.stderr
        assert f"peer {survivor} is now a single-peer cluster" in out.stdout
        cluster.start(survivor)
        alone = cluster.wait_leader(30)
        assert alone == survivor

        async def check() -> None:
            async with RaftdirClient([cluster.peers[survivor].url],
                                     admin_token=admin_token(cluster.secret)) as c:
                workers = {w["node_id"]: w for w in await c.workers(consistent=True)}
                assert set(ids) <= set(workers)
                assert all(workers[n]["state"] == "ready" for n in ids)
                peers = await c.peers()
                assert peers["partners"] == {} or not peers["partners"]
        asyncio.run(check())

        # the lost peers are removed: no Raft members any more, their records go down
        env = {"RAFTDIR_SERVER": cluster.peers[survivor].url,
               "RAFTDIR_ADMIN_TOKEN": admin_token(cluster.secret)}
        lost = [p for n, p in cluster.peers.items() if n != survivor]
        for peer in lost:
            out = raftdir("peers", "remove", "--id", str(peer.node_id), "--raft-addr",
                          peer.raft_addr, env=env)
            assert out.returncode == 0, out.stderr
        listing = raftdir("workers", "--kind", "server", "--json", env=env)
        states = {n["node_id"]: n["state"] for n in json.loads(listing.stdout)}
        assert states == {survivor: "ready", **{p.node_id: "down" for p in lost}}
    finally:
        cluster.stop()
