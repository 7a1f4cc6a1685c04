"""The synced Raft journal: changes reach the disk (msync + fdatasync) before any message
leaves and before an entry is applied; the term and vote file is fsync'd; the file format is
PySyncObj's own."""

from __future__ import annotations

import os

import pytest
from pysyncobj.journal import FileJournal

from raftdir.errors import ConfigError
from raftdir.replication import durable_journal
from raftdir.replication.durable_journal import SyncedFileJournal
from raftdir.replication.pysyncobj_node import JOURNAL_FILE, PySyncObjNode
from raftdir.replication.tuning import RaftTuning
from raftdir.testing import wait_until
from replication_harness import TEST_TUNING, free_ports
from replication_toy import ToyKV, cmd


@pytest.fixture
def fdatasyncs(monkeypatch):
    calls: list[int] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    return calls


def test_every_change_marks_the_journal_and_one_sync_writes_them_all(tmp_path, fdatasyncs):
    path = str(tmp_path / "j")
    journal = SyncedFileJournal(path)
    assert not journal.dirty
    journal.sync()
    assert fdatasyncs == []  # nothing to write
    for i in range(1, 6):
        journal.add(b"cmd%d" % i, i, 1)
    assert journal.dirty
    journal.sync()
    assert not journal.dirty and len(fdatasyncs) == 1 and journal.syncs == 1
    journal.deleteEntriesTo(1)   # the compaction trim writes its file through itself
    assert not journal.dirty
    for change in (lambda: journal.deleteEntriesFrom(2), journal.clear):
        change()
        assert journal.dirty
        journal.sync()
    assert len(fdatasyncs) == 3
    journal.add(b"x", 9, 2)
    journal.sync()
    journal._destroy()
    stock = FileJournal(path)  # PySyncObj reads it as its own
    try:
        assert [stock[i] for i in range(len(stock))] == [(b"x", 9, 2)]
    finally:
        stock._destroy()


def test_the_vote_is_written_through_before_it_is_sent(tmp_path, monkeypatch):
    fsyncs: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real(fd))[1])
    path = str(tmp_path / "j")
    journal = SyncedFileJournal(path)
    journal.setCurrentTerm(7, "127.0.0.1:1")
    assert len(fsyncs) >= 2  # the file, then its directory
    journal._destroy()
    again = FileJournal(path)
    try:
        assert (again.getCurrentTerm(), again.getVotedForNodeId()) == (7, "127.0.0.1:1")
    finally:
        again._destroy()
    assert sorted(os.listdir(tmp_path)) == ["j", "j.meta"]


def _fake_transport(journal, leader: bool):
    class FakeSyncObj:
        _SyncObj__raftLog = journal

        def _isLeader(self) -> bool:
            return leader

    class FakeTransport:
        _syncObj = FakeSyncObj()

    return FakeTransport()


@pytest.fixture
def sent(monkeypatch):
    """Every message that really leaves: (message, was the journal dirty then)."""
    out: list[tuple[str, bool]] = []
    monkeypatch.setattr(durable_journal, "_stock_send", lambda transport, node, message:
                        out.append((message, transport._syncObj._SyncObj__raftLog.dirty))
                        or True)
    return out


def test_a_follower_acks_only_after_the_sync_at_the_end_of_the_tick(tmp_path, sent):
    journal = SyncedFileJournal(str(tmp_path / "j"))
    follower = _fake_transport(journal, leader=False)
    send = durable_journal._send_after_sync
    assert send(follower, "leader", "clean: goes at once")
    journal.add(b"entry", 1, 1)
    assert send(follower, "leader", "ack 1") and send(follower, "leader", "ack 2")
    journal.add(b"entry", 2, 1)
    assert send(follower, "leader", "ack 3")
    assert sent == [("clean: goes at once", False)]   # the acks wait for the disk
    journal.end_of_tick()
    assert sent[1:] == [("ack 1", False), ("ack 2", False), ("ack 3", False)]
    assert journal.syncs == 1   # one sync for the whole tick
    journal._destroy()


def test_a_leader_sends_at_once_and_syncs_at_the_end_of_the_tick(tmp_path, sent):
    journal = SyncedFileJournal(str(tmp_path / "j"))
    leader = _fake_transport(journal, leader=True)
    journal.add(b"entry", 1, 1)
    assert durable_journal._send_after_sync(leader, "follower", "append_entries")
    assert sent == [("append_entries", True)] and journal.dirty
    journal.end_of_tick()
    assert not journal.dirty and journal.syncs == 1
    journal._destroy()


def test_a_failed_sync_keeps_the_acks_held(tmp_path, sent, monkeypatch):
    journal = SyncedFileJournal(str(tmp_path / "j"))
    follower = _fake_transport(journal, leader=False)
    journal.add(b"entry", 1, 1)
    durable_journal._send_after_sync(follower, "leader", "ack")

    def broken(fd):
        raise OSError(5, "Input/output error")

    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(OSError):
        journal.end_of_tick()
    assert sent == [] and journal.dirty and journal.held   # fail closed
    monkeypatch.setattr(os, "fdatasync", real)  # the disk is back
    journal.end_of_tick()
    assert [m for m, _ in sent] == ["ack"]
    journal._destroy()


def start(tmp_path, **tuning):
    for _ in range(5):
        node = PySyncObjNode(f"127.0.0.1:{free_ports(1)[0]}", [], str(tmp_path / "data"),
                             ToyKV(), tuning=RaftTuning(**{**TEST_TUNING, **tuning}))
        try:
            node.start()
        except ConfigError:
            continue
        wait_until(node.is_leader, 5, "the single peer to elect itself")
        return node
    raise AssertionError("could not bind a port in 5 tries")


def test_a_peer_syncs_its_journal_before_applying(tmp_path):
    node = start(tmp_path)
    try:
        journal = node._journal
        assert isinstance(journal, SyncedFileJournal)
        before = journal.syncs
        for i in range(20):
            assert node.propose(cmd("set", k=f"k{i}", v=i), 5).ok
            assert not journal.dirty  # applied, so written through
        assert journal.syncs > before
    finally:
        node.stop()


def test_journal_sync_off_is_the_stock_journal(tmp_path):
    node = start(tmp_path, journal_sync=False)
    try:
        assert node._journal is None
        assert type(node._so._SyncObj__raftLog) is FileJournal
        assert node.propose(cmd("set", k="a", v=1), 5).ok
    finally:
        node.stop()
    assert os.path.exists(tmp_path / "data" / JOURNAL_FILE)


def test_journal_sync_must_be_a_bool():
    with pytest.raises(ConfigError, match="journal_sync"):
        RaftTuning(**{**TEST_TUNING, "journal_sync": 1})


def _on_disk(path: str) -> list:
    journal = FileJournal(path)   # PySyncObj's own reader
    try:
        return [journal[i] for i in range(len(journal))]
    finally:
        journal._destroy()


def test_the_compaction_trim_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "j")
    journal = SyncedFileJournal(path)
    entries = [(b"c%d" % i, i, 1) for i in range(1, 11)]
    for e in entries:
        journal.add(*e)
    journal.sync()
    real_replace = os.replace

    def crash_before_the_rename(src, dst):
        if dst == path:
            raise OSError("killed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_before_the_rename)
    with pytest.raises(OSError):
        journal.deleteEntriesTo(4)
    assert _on_disk(path) == entries            # the old journal, whole
    assert [journal[i] for i in range(len(journal))] == entries   # and still usable
    monkeypatch.setattr(os, "replace", real_replace)

    journal.add(b"c11", 11, 2)                  # unsynced before the trim...
    journal.deleteEntriesTo(4)
    assert not journal.dirty                    # ...and written through by it
    assert _on_disk(path) == entries[4:] + [(b"c11", 11, 2)]
    journal.add(b"c12", 12, 2)                  # appends go on after the trim
    journal.sync()
    assert [journal[i] for i in range(len(journal))] == _on_disk(path) == \
        entries[4:] + [(b"c11", 11, 2), (b"c12", 12, 2)]
    journal._destroy()
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
