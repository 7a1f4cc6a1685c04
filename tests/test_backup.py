"""raftdir.backup: the backup file (checked on the way in), restoring it into a server's
data dir, recovering a peer as a single-peer cluster, and the route that serves it."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp
import msgpack
import pytest

from raftdir.api.client import RaftdirClient
from raftdir.api.server import BACKUP_TYPE, start_api
from raftdir.auth import admin_token
from raftdir.backup import (
    decode_backup, encode_backup, read_backup, recover_single_peer, restore_backup,
)
from raftdir.config import dump_yaml, load_cluster_mode
from raftdir.core.commands import Barrier, RegisterNode
from raftdir.core.directory import Directory
from raftdir.errors import ConfigError
from raftdir.model import RaftMode, RaftPeer, SingleNodeMode
from raftdir.replication.durable_journal import SyncedFileJournal
from raftdir.replication.pysyncobj_node import read_snapshot_file
from raftdir.server import DirectoryServer, ServerSettings

SECRET = "5e" * 32
PROFILE = {"api_addr": "10.0.0.9:3669", "os": "linux", "arch": "x86_64"}
PEERS = tuple(RaftPeer(id=i, raft_addr=f"10.0.0.{i}:9000", api_addr=f"10.0.0.{i}:3669")
              for i in (1, 2, 3))


def directory() -> Directory:
    d = Directory()
    d.apply(Barrier(term=7, ts_ms=1))
    for _ in range(2):
        d.apply(RegisterNode(kind="worker", profile=PROFILE, ttl_secs=10, grace_secs=10,
                             secret_hash="ab" * 32, token_id="t1", token_max_uses=5,
                             ts_ms=1_000))
    return d


def backup_bytes(d: Directory | None = None) -> bytes:
    d = d or directory()
    return encode_backup(d.to_snapshot(), node_id=2, term=7, applied_index=42, now_ms=5_000)


def server_dir(tmp_path: Path, mode=None) -> Path:
    d = tmp_path / "srv"
    d.mkdir()
    (d / "cluster_mode.yaml").write_text(dump_yaml(mode or RaftMode(node_id=1, peers=PEERS)))
    return d


def test_a_backup_round_trips_and_says_what_it_holds():
    b = decode_backup(backup_bytes())
    assert (b.revision, b.taken_on) == (0, {"node_id": 2, "term": 7, "applied_index": 42})
    assert Directory.from_snapshot(b.state) == directory()
    s = b.summary()
    assert s["workers"] == {"ready": 2, "draining": 0, "down": 0}
    assert (s["token_uses"], s["checksum"], s["created_unix_ms"]) == (1, "ok", 5_000)


@pytest.mark.parametrize("mangle, problem", [
    (lambda data: b"PK\x03\x04 a zip", "not a raftdir backup"),
    (lambda data: data[: len(data) // 2], "not a raftdir backup"),
    (lambda data: msgpack.packb({"kind": "something-else"}), "kind"),
    (lambda data: _edit(data, format=2), "backup format 2"),
    (lambda data: _edit(data, sha256="00" * 32), "checksum mismatch"),
    (lambda data: _edit(data, revision=99), "header does not match"),
    (lambda data: _edit(data, state=_with_sum(msgpack.packb({"format": 99}))), "state:"),
])
def test_anything_but_an_intact_backup_is_refused_naming_the_problem(mangle, problem):
    with pytest.raises(ConfigError, match=problem):
        decode_backup(mangle(backup_bytes()), "x.backup")


def _edit(data: bytes, **changes) -> bytes:
    doc = msgpack.unpackb(data, raw=False)
    if "state" in changes:
        changes["state"], changes["sha256"] = changes["state"]
    doc.update(changes)
    return msgpack.packb(doc, use_bin_type=True)


def _with_sum(state: bytes) -> tuple[bytes, str]:
    return state, hashlib.sha256(state).hexdigest()


def test_restore_seeds_a_raft_peer_with_a_fresh_log_and_the_terms_reset(tmp_path):
    d = server_dir(tmp_path)
    done = restore_backup(decode_backup(backup_bytes()), d)
    dump = read_snapshot_file(str(d / "raft" / "raft.dump"))
    assert dump["raft"]["cluster"] == [p.raft_addr for p in PEERS]
    assert dump["raft"]["prev"] == (b"\x01", 1, 0) and dump["raft"]["last"] == (b"\x01", 2, 0)
    restored = Directory.from_snapshot(dump["state"])
    assert restored.max_term == 0          # the new cluster's first barrier is term 1
    expected = directory()
    expected.state.max_term = 0
    assert restored == expected
    assert done["servers_not_configured"] == [] and not done["secret_present"]


def test_restore_never_overwrites_raft_data_and_force_moves_it_aside(tmp_path):
    d = server_dir(tmp_path)
    (d / "raft").mkdir()
    (d / "raft" / "raft.journal").write_bytes(b"old journal")
    with pytest.raises(ConfigError, match="--force"):
        restore_backup(decode_backup(backup_bytes()), d)
    assert (d / "raft" / "raft.journal").read_bytes() == b"old journal"
    done = restore_backup(decode_backup(backup_bytes()), d, force=True)
    aside = Path(done["moved_aside"])
    assert (aside / "raft.journal").read_bytes() == b"old journal"
    assert not (d / "raft" / "raft.journal").exists() and (d / "raft" / "raft.dump").exists()


def test_restore_into_single_node_and_refusal_of_a_worker_config(tmp_path):
    d = server_dir(tmp_path, SingleNodeMode())
    restore_backup(decode_backup(backup_bytes()), d)
    snap = msgpack.unpackb((d / "raft" / "local.snapshot").read_bytes(), raw=False,
                           strict_map_key=False)
    assert (snap["format"], snap["seq"]) == (1, 0)
    assert Directory.from_snapshot(snap["state"]).node_count("worker") == 2
    w = tmp_path / "w"
    w.mkdir()
    (w / "cluster_mode.yaml").write_text("mode: worker-tier\nrole: worker\n"
                                         "servers: [127.0.0.1:3669]\ntoken_file: t\n")
    with pytest.raises(ConfigError, match="mode: a backup restores into a server"):
        restore_backup(decode_backup(backup_bytes()), w)


def test_recover_leaves_one_peer_and_makes_membership_changes_no_ops(tmp_path):
    d = server_dir(tmp_path)
    rdir = d / "raft"
    rdir.mkdir()
    (rdir / "raft.dump").write_bytes(msgpack.packb({
        "format": 1, "revision": 0, "state": directory().to_snapshot(),
        "raft": {"last": [b"\x01", 5, 3], "prev": [b"\x01", 4, 3],
                 "cluster": [p.raft_addr for p in PEERS]}}, use_bin_type=True))
    journal = SyncedFileJournal(str(rdir / "raft.journal"))
    for idx, cmd in ((4, b"\x01"), (5, b"\x01"), (6, b"\x02membership"), (7, b"\x00cmd")):
        journal.add(cmd, idx, 3)
    journal.sync()
    journal._destroy()

    done = recover_single_peer(d)
    assert (done["kept_peer"], done["lost_peers"], done["journal_membership_entries"]) == \
        (1, [2, 3], 1)
    assert load_cluster_mode(d / "cluster_mode.yaml").peers == (PEERS[0],)
    assert read_snapshot_file(str(rdir / "raft.dump"))["raft"]["cluster"] == \
        [PEERS[0].raft_addr]
    again = SyncedFileJournal(str(rdir / "raft.journal"))
    try:
        assert [again[i] for i in range(len(again))] == [
            (b"\x01", 4, 3), (b"\x01", 5, 3), (b"\x01", 6, 3), (b"\x00cmd", 7, 3)]
    finally:
        again._destroy()
    for name in ("cluster_mode.yaml", "raft/raft.dump", "raft/raft.journal"):
        assert (d / (name + ".before-recover")).exists(), name


def test_the_backup_route_needs_the_admin_token_and_holds_every_acknowledged_write():
    async def main() -> None:
        server = DirectoryServer(ServerSettings(node_id=1), secret=SECRET)
        await server.start()
        api = await start_api(server, "127.0.0.1", 0)
        try:
            token = (await server.create_token(60, 0))["token"]
            from raftdir.model import WorkerProfile, WorkerRegisterRequest
            reg = await server.register(WorkerRegisterRequest(
                token=token, profile=WorkerProfile.from_dict(PROFILE)), None)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{api.url}/api/v1/cluster/backup") as resp:
                    assert resp.status == 401
            async with RaftdirClient([api.url], admin_token=admin_token(SECRET)) as c:
                data = await c.backup()
            b = decode_backup(data)
            assert Directory.from_snapshot(b.state).node(reg.node_id)["state"] == "ready"
            assert b.cluster_id == server.read(lambda d: d.cluster_id)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{api.url}/api/v1/cluster/backup",
                                    headers={"Authorization": f"Bearer {admin_token(SECRET)}"}
                                    ) as resp:
                    assert resp.content_type == BACKUP_TYPE
        finally:
            await api.close()
            await server.stop()
    asyncio.run(main())


def test_read_backup_names_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        read_backup(tmp_path / "nope.backup")
