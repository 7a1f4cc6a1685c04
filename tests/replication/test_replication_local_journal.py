"""LocalNode with a data dir: nothing applied is lost across a crash or a restart."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from raftdir.core.commands import Bootstrap, RegisterNode, encode_command
from raftdir.core.directory import Directory
from raftdir.errors import ConfigError
from raftdir.replication.local import LocalNode

PROFILE = {"api_addr": "127.0.0.1:9000", "os": "linux", "arch": "x86_64"}


def register(i: int) -> bytes:
    return encode_command(RegisterNode(request_id=f"r{i}", ts_ms=1000 + i, kind="worker",
                                       profile=PROFILE, ttl_secs=10, grace_secs=10,
                                       secret_hash=f"{i:04x}"))


def run(data_dir, commands, compact_every=10_000) -> Directory:
    d = Directory()
    node = LocalNode(d, data_dir=str(data_dir), compact_every=compact_every)
    node.start()
    for c in commands:
        node.propose(c)
    node.stop()
    return d


@pytest.mark.parametrize("compact_every", [3, 10_000])
def test_restart_rebuilds_the_same_state(tmp_path, compact_every):
    cmds = [encode_command(Bootstrap(cluster_id="c1", ts_ms=1))] + [register(i)
                                                                   for i in range(7)]
    before = run(tmp_path, cmds, compact_every)
    after = run(tmp_path, [], compact_every)
    assert after == before and after.node_count("worker") == 7
    if compact_every == 3:
        assert (tmp_path / "local.snapshot").exists()
    more = run(tmp_path, [register(100)], compact_every)
    assert more.node_count("worker") == 8


def test_a_torn_last_record_is_cut_and_the_rest_kept(tmp_path):
    run(tmp_path, [register(i) for i in range(3)])
    with open(tmp_path / "local.journal", "ab") as f:
        f.write(b"\x00\x00\x01\x00partial")
    d = run(tmp_path, [])
    assert d.node_count("worker") == 3
    assert run(tmp_path, [register(9)]).node_count("worker") == 4


def test_an_unreadable_snapshot_refuses_to_start(tmp_path):
    (tmp_path / "local.snapshot").write_bytes(b"\xc1garbage")
    with pytest.raises(ConfigError, match="unreadable snapshot"):
        LocalNode(Directory(), data_dir=str(tmp_path)).start()


def test_kill_9_loses_no_acknowledged_write(tmp_path):
    code = f"""
import sys
sys.path.insert(0, {os.getcwd()!r})
from raftdir.core.directory import Directory
from raftdir.replication.local import LocalNode
from tests_helper import register
node = LocalNode(Directory(), data_dir={str(tmp_path)!r})
node.start()
for i in range(20):
    node.propose(register(i))
    print(i, flush=True)
import os, signal
os.kill(os.getpid(), signal.SIGKILL)
"""
    helper = tmp_path / "tests_helper.py"
    helper.write_text(
        "from raftdir.core.commands import RegisterNode, encode_command\n"
        f"PROFILE = {PROFILE!r}\n"
        "def register(i):\n"
        "    return encode_command(RegisterNode(request_id=f'r{i}', ts_ms=1000 + i,\n"
        "        kind='worker', profile=PROFILE, ttl_secs=10, grace_secs=10,\n"
        "        secret_hash=f'{i:04x}'))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    acknowledged = len(proc.stdout.split())
    assert acknowledged == 20
    d = Directory()
    LocalNode(d, data_dir=str(tmp_path)).start()
    assert d.node_count("worker") == acknowledged


def test_a_crash_between_snapshot_and_new_journal_replays_nothing_twice(tmp_path):
    from raftdir.replication.local_journal import LocalJournal
    before = run(tmp_path, [register(i) for i in range(5)])
    journal_bytes = (tmp_path / "local.journal").read_bytes()
    # compact as a crash would leave it: the snapshot renamed, the old journal still there
    j = LocalJournal(tmp_path)
    j.load()
    j.seq = 5
    real_new = j._new_journal
    j._new_journal = lambda base: None        # "crash" before the journal is replaced
    j.compact(before.to_snapshot())
    j._new_journal = real_new
    j.close()
    assert (tmp_path / "local.journal").read_bytes() == journal_bytes
    after = run(tmp_path, [])
    assert after == before and after.node_count("worker") == 5


def test_a_failed_append_is_cut_back_and_not_applied(tmp_path, monkeypatch):
    d = Directory()
    node = LocalNode(d, data_dir=str(tmp_path))
    node.start()
    node.propose(register(1))
    size = (tmp_path / "local.journal").stat().st_size
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "ENOSPC")))
    with pytest.raises(OSError):
        node.propose(register(2))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert (tmp_path / "local.journal").stat().st_size == size
    assert d.node_count("worker") == 1
    node.propose(register(3))
    node.stop()
    assert run(tmp_path, []).node_count("worker") == 2


def test_a_journal_that_starts_after_the_snapshot_is_refused(tmp_path):
    run(tmp_path, [register(i) for i in range(3)], compact_every=2)   # snapshot at 2
    (tmp_path / "local.snapshot").unlink()                           # ... lost
    with pytest.raises(ConfigError, match="starts after command 2"):
        LocalNode(Directory(), data_dir=str(tmp_path)).start()
