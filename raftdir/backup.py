"""Backups of the directory, and bringing a server back from one or from a lost majority.

Owns: the backup file (``raftdir snapshot save`` writes it from a consistent read, ``inspect``
prints it, ``restore`` seeds a new server's data directory from it) and the offline part of
recovering one surviving peer as a new single-peer cluster (``raftdir recover``).

The backup file is one msgpack map, ``format`` 1::

    {"kind": "raftdir-backup", "format": 1, "cluster_id": str | None, "revision": int,
     "created_unix_ms": int, "taken_on": {"node_id", "term", "applied_index"},
     "sha256": hex digest of "state", "state": bytes (msgpack of Directory.to_snapshot())}

The state travels as bytes so the checksum covers exactly what is restored. Nothing is
ever unpickled: the state is the directory's own plain-data snapshot (versioned by the
directory), and restore writes the Raft data directory in raftdir's msgpack dump format.

Restore rule (docs/operations.md): every node, lease, service, event and token use count of
the backup is kept; the Raft log starts afresh, so the directory's highest Raft term is
reset to 0 (the new cluster's terms start at 1 again). Leases restart from the failover
rule: the first leader gives every ready worker its longest TTL plus grace from the moment
it is ready, so nobody is marked down because time passed while the cluster was gone.

Threads: plain functions for the CLI (and ``encode_backup`` for the server's event loop).
Must not import the API, agent or CLI.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from .errors import ConfigError
from .files import fsync_dir, write_atomic

__all__ = ["BACKUP_KIND", "BACKUP_FORMAT", "Backup", "encode_backup", "decode_backup",
           "read_backup", "restore_backup", "recover_single_peer", "raft_dir"]

BACKUP_KIND = "raftdir-backup"
BACKUP_FORMAT = 1
_KEYS = ("kind", "format", "cluster_id", "revision", "created_unix_ms", "taken_on", "sha256",
         "state")
#: PySyncObj's no-op log entry (``_COMMAND_TYPE.NO_OP``): the two entries a restored or
#: recovered Raft log starts with, identical on every peer restored from one file.
_NO_OP = b"\x01"
_MEMBERSHIP = 2   # PySyncObj's ``_COMMAND_TYPE.MEMBERSHIP``
_RAFT_FILES = ("raft.journal", "raft.journal.meta", "raft.dump", "local.journal",
               "local.snapshot")


def raft_dir(data_dir: str | os.PathLike[str]) -> Path:
    """Where a server keeps its replicated state inside its data directory."""
    return Path(data_dir) / "raft"


@dataclass(frozen=True)
class Backup:
    cluster_id: str | None
    revision: int
    created_unix_ms: int
    taken_on: dict[str, Any]
    sha256: str
    state: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """What ``raftdir snapshot inspect`` prints (counts from the state itself)."""
        from .core.directory import Directory
        d = Directory.from_snapshot(self.state)
        workers = {s: d.node_count("worker", s) for s in ("ready", "draining", "down")}
        return {"format": BACKUP_FORMAT, "cluster_id": self.cluster_id,
                "revision": self.revision, "created_unix_ms": self.created_unix_ms,
                "taken_on": self.taken_on, "sha256": self.sha256, "checksum": "ok",
                "state_format": self.state.get("format"),
                "servers": d.node_count("server"), "workers": workers,
                "services": len(d.services()), "token_uses": len(self.state["token_uses"]),
                "access_tokens": len(d.access_tokens()),
                "events": len(self.state["log"]),
                "compacted_revision": d.compacted_revision}


def encode_backup(snapshot: dict[str, Any], *, node_id: int, term: int, applied_index: int,
                  now_ms: int) -> bytes:
    """The backup file for ``snapshot`` (``Directory.to_snapshot()``, taken after a
    barrier) as bytes."""
    state = msgpack.packb(snapshot, use_bin_type=True)
    return msgpack.packb({
        "kind": BACKUP_KIND, "format": BACKUP_FORMAT, "cluster_id": snapshot["cluster_id"],
        "revision": snapshot["revision"], "created_unix_ms": int(now_ms),
        "taken_on": {"node_id": node_id, "term": term, "applied_index": applied_index},
        "sha256": hashlib.sha256(state).hexdigest(), "state": state}, use_bin_type=True)


def decode_backup(data: bytes, source: str = "backup") -> Backup:
    """Check and decode a backup file; ``ConfigError`` naming ``source`` and the problem
    for anything else (a foreign file, another format, a corrupt or truncated one)."""
    def bad(problem: str, field: str = "backup") -> ConfigError:
        return ConfigError(f"{source}: {problem}", file=source, field=field)

    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # noqa: BLE001 - any decoding failure is "not a backup"
        raise bad("not a raftdir backup (not msgpack, or truncated)") from None
    if not isinstance(doc, dict) or doc.get("kind") != BACKUP_KIND:
        raise bad("not a raftdir backup (no \"kind\": \"raftdir-backup\")", "kind")
    if doc.get("format") != BACKUP_FORMAT or isinstance(doc.get("format"), bool):
        raise bad(f"backup format {doc.get('format')!r} is not one this raftdir reads "
                  f"({BACKUP_FORMAT}); use the raftdir version that wrote it", "format")
    missing = [k for k in _KEYS if k not in doc]
    if missing:
        raise bad(f"{missing[0]}: required field missing", missing[0])
    state = doc["state"]
    if not isinstance(state, bytes) or hashlib.sha256(state).hexdigest() != doc["sha256"]:
        raise bad("checksum mismatch: the file is corrupt", "sha256")
    try:
        snapshot = msgpack.unpackb(state, raw=False, strict_map_key=False)
        from .core.directory import Directory
        Directory.from_snapshot(snapshot)   # every check restore will make
    except Exception as exc:  # noqa: BLE001 - BadRequest from the directory, or msgpack
        raise bad(f"state: cannot be restored by this raftdir ({exc})", "state") from None
    if snapshot.get("cluster_id") != doc["cluster_id"] \
            or snapshot.get("revision") != doc["revision"]:
        raise bad("the header does not match the state it carries", "state")
    return Backup(doc["cluster_id"], doc["revision"], doc["created_unix_ms"],
                  dict(doc["taken_on"]), doc["sha256"], snapshot)


def read_backup(path: str | os.PathLike[str]) -> Backup:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}", file=str(path),
                          field="backup") from None
    return decode_backup(data, str(path))


# -------------------------------------------------------------------------- restore

def server_config(data_dir: Path) -> tuple[Any, list[Any]]:
    """The server config in ``data_dir`` and its Raft peers (empty for single-node)."""
    from .config import load_cluster_mode
    from .model import RaftMode, SingleNodeMode, WorkerTierMode
    path = data_dir / "cluster_mode.yaml"
    mode = load_cluster_mode(path)
    if isinstance(mode, SingleNodeMode):
        return mode, []
    if isinstance(mode, RaftMode) or (isinstance(mode, WorkerTierMode)
                                      and not mode.is_worker_tier_worker()):
        return mode, list(mode.peers)
    raise ConfigError(f"{path}: mode: a backup restores into a server (single-node, raft or "
                      "worker-tier server), not this config", file=str(path), field="mode")


def _existing_raft_files(rdir: Path) -> list[Path]:
    if not rdir.is_dir():
        return []
    return sorted(p for p in rdir.iterdir() if p.name in _RAFT_FILES
                  or p.name.startswith("raft.dump."))


def _set_aside(files: list[Path], rdir: Path) -> Path:
    aside = rdir / time.strftime("before-%Y%m%dT%H%M%S")
    aside.mkdir(mode=0o700)
    for f in files:
        os.replace(f, aside / f.name)
    fsync_dir(rdir)
    return aside


def raft_dump(state: dict[str, Any], cluster: list[str]) -> bytes:
    """A ``raft.dump`` (raftdir's msgpack format, replication/pysyncobj_node.py) whose Raft
    log starts afresh with two no-op entries, for a peer of ``cluster``."""
    from .replication.pysyncobj_node import SNAPSHOT_FORMAT
    return msgpack.packb({"format": SNAPSHOT_FORMAT, "revision": state["revision"],
                          "state": state,
                          "raft": {"last": [_NO_OP, 2, 0], "prev": [_NO_OP, 1, 0],
                                   "cluster": sorted(cluster)}}, use_bin_type=True)


def restore_backup(backup: Backup, data_dir: str | os.PathLike[str], *,
                   force: bool = False) -> dict[str, Any]:
    """Seed ``data_dir`` (which holds the server's ``cluster_mode.yaml``, and should hold
    its ``cluster.secret``) with ``backup``. Refuses a data dir that already holds Raft
    data unless ``force`` (which moves that data aside, never deletes it). Every server of
    the new cluster is restored from the same file. Returns what it did."""
    data_dir = Path(data_dir)
    mode, peers = server_config(data_dir)
    rdir = raft_dir(data_dir)
    existing = _existing_raft_files(rdir)
    aside = None
    if existing:
        if not force:
            raise ConfigError(
                f"{rdir}: holds Raft data already ({', '.join(f.name for f in existing)}); "
                "restore into an empty data dir, or pass --force to move it aside",
                file=str(rdir), field="data_dir")
        aside = _set_aside(existing, rdir)
    rdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state = dict(backup.state, max_term=0)   # the new cluster's Raft terms start again
    if peers:
        write_atomic(rdir / "raft.dump", raft_dump(state, [p.raft_addr for p in peers
                                                           if not p.replica]))
        written = "raft.dump"
    else:
        from .replication.local_journal import SNAPSHOT_FORMAT as LOCAL_FORMAT
        write_atomic(rdir / "local.snapshot", msgpack.packb(
            {"format": LOCAL_FORMAT, "seq": 0, "state": state}, use_bin_type=True))
        written = "local.snapshot"
    node_id = getattr(mode, "node_id", None) or 1
    servers = {n[0]: n for n in _server_rows(state)}
    configured = {p.id for p in peers} or {node_id}
    return {"data_dir": str(data_dir), "wrote": str(rdir / written),
            "moved_aside": str(aside) if aside else None, "revision": backup.revision,
            "cluster_id": backup.cluster_id,
            "secret_present": (data_dir / "cluster.secret").exists(),
            "servers_not_configured": sorted(set(servers) - configured)}


def _server_rows(state: dict[str, Any]) -> list[list[Any]]:
    fields = state["node_fields"]
    kind, nid = fields.index("kind"), fields.index("node_id")
    return [[row[nid]] for row in state["nodes"] if row[kind] == "server"]


# -------------------------------------------------------------------------- recovery

def recover_single_peer(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Turn a stopped peer's data dir into a new single-peer cluster holding everything
    this peer has (its dump and its journal; ``raft.journal`` entries the old cluster may
    not have committed are committed by the new one, as etcd's --force-new-cluster does).

    Offline: the caller has checked that the server is not running and that no leader of
    the old cluster is reachable (``raftdir recover`` does). Rewrites, each atomically and
    keeping the original next to it (``*.before-recover``): ``cluster_mode.yaml`` (its
    ``peers`` reduced to this peer), ``raft/raft.dump`` (its Raft membership reduced to
    this peer) and ``raft/raft.journal`` (membership changes become no-ops, so none can
    bring a lost peer back into the quorum)."""
    from .config import dump_yaml
    data_dir = Path(data_dir)
    mode, peers = server_config(data_dir)
    if not peers:
        raise ConfigError(f"{data_dir / 'cluster_mode.yaml'}: peers: single-node has no "
                          "majority to lose", field="peers")
    me = next(p for p in peers if p.id == mode.node_id)
    if me.replica:
        raise ConfigError(f"{data_dir / 'cluster_mode.yaml'}: peers: this server is a "
                          "read-only replica (no vote, no Raft address): recover a voter, "
                          "or restore a backup into a new one", field="peers")
    lost = sorted(p.id for p in peers if p.id != me.id)
    rdir = raft_dir(data_dir)
    config_path = data_dir / "cluster_mode.yaml"
    _keep_original(config_path)
    from dataclasses import replace
    write_atomic(config_path, dump_yaml(replace(mode, peers=(me,))).encode(), mode=0o644)
    done = {"config": str(config_path), "kept_peer": me.id, "lost_peers": lost,
            "dump": None, "journal_membership_entries": 0}
    dump = rdir / "raft.dump"
    if dump.exists():
        from .replication.pysyncobj_node import read_snapshot_file
        try:
            read_snapshot_file(str(dump))
        except ValueError as exc:
            raise ConfigError(f"{dump}: unreadable raft snapshot ({exc})", file=str(dump),
                              field="data_dir") from None
        doc = msgpack.unpackb(dump.read_bytes(), raw=False, strict_map_key=False)
        doc["raft"]["cluster"] = [me.raft_addr]
        _keep_original(dump)
        write_atomic(dump, msgpack.packb(doc, use_bin_type=True))
        done["dump"] = str(dump)
    journal = rdir / "raft.journal"
    if journal.exists():
        done["journal_membership_entries"] = _neutralise_membership(journal)
    return done


def _keep_original(path: Path) -> None:
    copy = path.with_name(path.name + ".before-recover")
    if not copy.exists():
        shutil.copy2(path, copy)


def _neutralise_membership(journal_path: Path) -> int:
    from .replication.durable_journal import SyncedFileJournal
    journal = SyncedFileJournal(str(journal_path))
    try:
        count, entries = 0, []
        for cmd, idx, term in (journal[i] for i in range(len(journal))):
            if bytes(cmd[:1]) == bytes([_MEMBERSHIP]):
                cmd, count = _NO_OP, count + 1
            entries.append((cmd, idx, term))
        if count:
            _keep_original(journal_path)
            journal.replace_entries(entries)
        return count
    finally:
        journal._destroy()
