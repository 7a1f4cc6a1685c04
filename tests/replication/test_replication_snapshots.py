"""Log compaction is crash safe: a snapshot reaches ``raft.dump`` only when PySyncObj is
about to trim its journal, so stopping, crashing or losing fork in the middle never loses an
acknowledged write (a one-peer cluster in this process; the journal is all it has)."""

from __future__ import annotations

import os
import time

import pytest
from pysyncobj.config import SERIALIZER_STATE

from raftdir.errors import ConfigError
from raftdir.replication.pysyncobj_node import (
    DUMP_FILE,
    PySyncObjNode,
    read_snapshot_file,
    remove_stale_snapshot_files,
)
from raftdir.testing import wait_until
from replication_harness import free_ports
from replication_toy import ToyKV, cmd


class SlowSnapshot(ToyKV):
    """A state machine whose snapshot waits (at most 10 s) until the file ``gate``
    exists: a large directory, held open across the fork by the test."""

    def __init__(self, gate) -> None:
        super().__init__()
        self.gate = gate

    def to_snapshot(self):
        deadline = time.monotonic() + 10
        while not self.gate.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return super().to_snapshot()


def start(data_dir, sm, tuning, addr=None):
    for _ in range(5):
        node = PySyncObjNode(addr or f"127.0.0.1:{free_ports(1)[0]}", [], str(data_dir), sm,
                             tuning=tuning)
        try:
            node.start()
        except ConfigError:
            if addr is not None:
                raise
            continue
        wait_until(node.is_leader, 5, "the single peer to elect itself")
        return node
    raise AssertionError("could not bind a port in 5 tries")


def write(node, prefix, n):
    for i in range(n):
        assert node.propose(cmd("set", k=f"{prefix}{i}", v=i), 5).ok


def stopped_peer_with_a_dump(data_dir, sm, tuning, after: int = 0) -> str:
    """Write 10 entries, compact them into ``raft.dump``, write ``after`` more, stop.
    Returns the peer's address (to restart it as the same peer)."""
    node = start(data_dir, sm, tuning)
    write(node, "a", 10)
    node._so._forceLogCompaction()
    wait_until((data_dir / DUMP_FILE).exists, 5, "the dump")
    write(node, "b", after)
    node.stop()
    return node.address


def restarted_keys(data_dir, addr, tuning, expect):
    sm = ToyKV()
    node = start(data_dir, sm, tuning, addr)
    try:
        node.barrier(5)
        wait_until(lambda: sm.revision >= expect, 5, f"revision {expect} after restart")
        return dict(sm.kv), os.listdir(data_dir)
    finally:
        node.stop()


def snapshot_in_progress(tmp_path, tuning):
    """A peer with 10 writes in its snapshot being written and 10 more after it."""
    data = tmp_path / "data"
    sm = SlowSnapshot(tmp_path / "gate")
    node = start(data, sm, tuning)
    write(node, "a", 10)
    node._so._forceLogCompaction()
    wait_until(lambda: node._snapshot_job is not None, 5, "a snapshot writer")
    write(node, "b", 10)  # acknowledged while the snapshot is being written
    return node, sm, data


def test_stop_during_a_snapshot_keeps_every_acknowledged_write(tmp_path, tuning):
    node, sm, data = snapshot_in_progress(tmp_path, tuning)
    addr = node.address
    node.stop()  # abandons the writer; the journal still holds everything
    assert not (data / DUMP_FILE).exists()
    kv, files = restarted_keys(data, addr, tuning, 20)
    assert kv == sm.kv and len(kv) == 20
    assert not [f for f in files if f.endswith(".tmp") and f.startswith(DUMP_FILE + ".")]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the writer is a forked child")
def test_a_writer_outliving_its_crashed_peer_never_replaces_the_dump(tmp_path, tuning):
    node, sm, data = snapshot_in_progress(tmp_path, tuning)
    addr, job = node.address, node._snapshot_job
    # the peer "dies" (its tick thread ends, nobody reaps or renames) while the child
    # finishes writing
    so = node._so
    so.destroy()
    node._join(so, 5)
    sm.gate.touch()
    os.waitpid(job.pid, 0)  # the child finishes its file
    assert os.path.exists(job.tmp) and not (data / DUMP_FILE).exists()
    node._so = None
    kv, files = restarted_keys(data, addr, tuning, 20)
    assert len(kv) == 20 and kv == sm.kv
    assert os.path.basename(job.tmp) not in files  # the orphan's file was cleaned up


def test_a_crash_between_the_rename_and_the_journal_trim_is_repaired(tmp_path, tuning,
                                                                      caplog):
    data = tmp_path / "data"
    sm = ToyKV()
    node = start(data, sm, tuning)
    # the dump is renamed into place, then the peer dies before PySyncObj trims
    node._so._SyncObj__deleteEntriesTo = lambda upto: None
    write(node, "a", 10)
    node._so._forceLogCompaction()
    wait_until((data / DUMP_FILE).exists, 5, "the dump")
    dump_last = read_snapshot_file(str(data / DUMP_FILE))["raft"]["last"][1]
    write(node, "b", 10)
    addr = node.address
    node.stop()
    caplog.set_level("WARNING")
    kv, _ = restarted_keys(data, addr, tuning, 20)
    assert len(kv) == 20 and kv == sm.kv, f"lost entries after the dump's index {dump_last}"
    assert "finished an interrupted log compaction" in caplog.text


def test_without_fork_compaction_keeps_working(tmp_path, tuning, monkeypatch):
    monkeypatch.delattr(os, "fork")
    data = tmp_path / "data"
    sm = ToyKV()
    node = start(data, sm, tuning)
    try:
        dumped = []
        for rnd in range(3):
            write(node, f"r{rnd}-", 10)
            node._so._forceLogCompaction()
            wait_until(lambda: node.status()["log_len"] <= 3, 5,
                       f"compaction round {rnd}")
            dumped.append(read_snapshot_file(str(data / DUMP_FILE))["revision"])
        assert dumped == [10, 20, 30]
        assert node.snapshot_error is None
        addr = node.address
    finally:
        node.stop()
    kv, _ = restarted_keys(data, addr, tuning, 30)
    assert kv == sm.kv


def _unstarted(tmp_path, tuning):
    data = tmp_path / "data"
    data.mkdir()
    sm = ToyKV()
    sm.apply_bytes(cmd("set", k="x", v=1))
    node = PySyncObjNode("127.0.0.1:1", [], str(data), sm, tuning=tuning)
    entries = ((b"c", 7, 1), (b"p", 6, 1), {"127.0.0.1:1"})
    return node, data, entries


def _finish(node):
    return wait_until(lambda: (lambda s: None if s == SERIALIZER_STATE.SERIALIZING else s)(
        node._snapshot_progress()), 10, "the snapshot writer")


def test_a_snapshot_is_renamed_by_the_progress_check_not_by_the_writer(tmp_path, tuning):
    node, data, entries = _unstarted(tmp_path, tuning)
    with pytest.raises(Exception):  # PySyncObj's serializer swallows this
        node._write_snapshot(str(data / "ignored.tmp"), entries)
    assert _finish(node) == SERIALIZER_STATE.SUCCESS
    doc = read_snapshot_file(str(data / DUMP_FILE))
    assert doc["raft"]["last"] == (b"c", 7, 1) and doc["state"]["kv"] == {"x": 1}
    assert sorted(os.listdir(data)) == [DUMP_FILE]
    assert node._snapshot_progress() == SERIALIZER_STATE.NOT_SERIALIZING


def test_a_snapshot_overtaken_by_a_loaded_one_is_discarded(tmp_path, tuning):
    node, data, entries = _unstarted(tmp_path, tuning)
    with pytest.raises(Exception):
        node._write_snapshot(str(data / "ignored.tmp"), entries)
    with node._snapshot_lock:  # what _read_snapshot does when the leader's arrives
        node._snapshot_generation += 1
    assert _finish(node) == SERIALIZER_STATE.FAILED
    assert os.listdir(data) == [] and "installed meanwhile" in node.snapshot_error


def test_stale_writer_files_are_removed_and_nothing_else(tmp_path):
    ours = f"{DUMP_FILE}.w123.tmp"
    others = [f"{DUMP_FILE}.tmp", f"{DUMP_FILE}.1.tmp", DUMP_FILE, "raft.journal",
              f"{DUMP_FILE}.wx.tmp"]
    for name in [ours, *others]:
        (tmp_path / name).write_bytes(b"")
    assert remove_stale_snapshot_files(str(tmp_path)) == [ours]
    assert sorted(os.listdir(tmp_path)) == sorted(others)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the writer is a forked child")
def test_a_failed_fork_is_a_failed_snapshot_and_compaction_resumes(tmp_path, tuning,
                                                                    monkeypatch):
    data = tmp_path / "data"
    node = start(data, ToyKV(), tuning)
    try:
        write(node, "a", 10)
        real_fork = os.fork

        def no_memory():
            raise OSError(12, "Cannot allocate memory")

        monkeypatch.setattr(os, "fork", no_memory)
        node._so._forceLogCompaction()
        wait_until(lambda: node.snapshot_error and "fork failed" in node.snapshot_error, 5,
                   "the failure to be reported")
        serializer = node._so._SyncObj__serializer
        wait_until(lambda: serializer._Serializer__pid == 0, 5,
                   "PySyncObj's serializer to be free again")
        monkeypatch.setattr(os, "fork", real_fork)
        node._snapshot_retry_at = 0.0  # the back-off is 10 s; skip it here
        write(node, "b", 10)
        node._so._forceLogCompaction()
        wait_until((data / DUMP_FILE).exists, 5, "a dump after the failure")
        wait_until(lambda: node.status()["log_len"] <= 3, 5, "the log compacted")
        assert node.snapshot_error is None
    finally:
        node.stop()


def test_a_snapshot_from_the_leader_is_made_durable_before_it_is_used(tmp_path, tuning,
                                                                      monkeypatch):
    data = tmp_path / "data"
    addr = stopped_peer_with_a_dump(data, ToyKV(), tuning)
    node = PySyncObjNode(addr, [], str(data), ToyKV(), tuning=tuning)
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(
        f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else "?"),
        real_fsync(fd))[1])
    dump = str(data / DUMP_FILE)
    # not the file start() preloaded: what PySyncObj hands over after a transfer
    last, prev, cluster = node._read_snapshot(dump)
    assert last[1] == prev[1] + 1 and node.state_machine.revision == 10
    if os.path.exists("/proc/self/fd"):
        assert synced[:2] == [dump, str(data)]   # the file, then its directory
    else:
        assert len(synced) >= 2


class NewerFormat(ToyKV):
    def to_snapshot(self):
        return dict(super().to_snapshot(), format=99)


def test_a_snapshot_this_version_cannot_restore_refuses_to_start(tmp_path, tuning):
    data = tmp_path / "data"
    addr = stopped_peer_with_a_dump(data, NewerFormat(), tuning)
    again = PySyncObjNode(addr, [], str(data), ToyKV(), tuning=tuning)
    with pytest.raises(ConfigError, match="cannot restore the raft snapshot") as info:
        again.start()
    assert info.value.field == "data_dir" and "unknown toy snapshot format" in str(info.value)
    assert again.status()["state"] == "stopped"


def test_start_restores_the_dump_once(tmp_path, tuning):
    data = tmp_path / "data"
    addr = stopped_peer_with_a_dump(data, ToyKV(), tuning, after=5)

    class Counting(ToyKV):
        restores = 0

        def restore(self, snapshot):
            Counting.restores += 1
            super().restore(snapshot)

    sm = Counting()
    again = start(data, sm, tuning, addr)
    try:
        again.barrier(5)
        assert sm.revision == 15 and len(sm.kv) == 15
        assert Counting.restores == 1
    finally:
        again.stop()
