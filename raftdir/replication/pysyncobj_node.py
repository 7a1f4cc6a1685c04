"""``PySyncObjNode``: the ``RaftNode`` backed by PySyncObj 0.3.17 (one peer of a cluster).

Owns: the pinned PySyncObj configuration (pysyncobj.md §5.1, knobs in ``RaftTuning``), the
one replicated entry point ``_apply(data: bytes)``, the msgpack snapshot file, the mapping of
PySyncObj's ``FAIL_REASON`` onto raftdir errors, barriers, leadership and apply listeners,
dynamic membership (one change at a time) and ``status()`` for the CLI.

Threads: PySyncObj runs one tick thread per node. It calls ``_on_apply`` (and through it the
state machine and the apply listeners), the snapshot serializer/deserializer and
``onStateChanged`` (leadership listeners). ``propose``/``barrier``/``add_peer``/
``remove_peer`` block and may be called from any other thread; ``propose_async`` and
``barrier_async`` are completed through ``loop.call_soon_threadsafe``. Calling a blocking
method from the tick thread (i.e. from a listener) raises ``RuntimeError``: it would
deadlock.

Rules enforced here (pysyncobj.md): nothing raised inside ``_apply`` reaches PySyncObj
(finding 2: it would re-apply the entry forever), callbacks never raise (finding 3), the
journal always has a full dump file next to it (finding 4), writes are refused on followers
with ``NotLeader(leader=...)`` instead of being forwarded, the bind address is the peer's
own address (never 0.0.0.0, finding 8) and a non-loopback address needs the cluster secret.

Snapshots: PySyncObj's custom serializer hook writes ``raft.dump`` (from a forked child,
so the tick thread never stalls on a large state) as msgpack of
``{"format": 1, "state": sm.to_snapshot(), "revision": ..., "raft": {"last": entry,
"prev": entry, "cluster": [addr, ...]}}`` where an entry is ``[command bytes, index,
term]``. We never unpickle anything; the command bytes are PySyncObj's own log entries,
kept opaque (PySyncObj itself pickles log entries and frames, so the Raft port and the data
directory stay trust boundaries, directory.md §11).

Must not import: ``raftdir.api``, ``raftdir.agent``, ``raftdir.cli``, the concrete directory.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import os
import secrets as _secrets
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import msgpack
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.node import TCPNode
from pysyncobj.syncobj import SyncObjException

from raftdir.core.result import Result
from raftdir.files import fsync_dir, fsync_file
from raftdir.errors import (
    ConfigError,
    Conflict,
    NoLeader,
    NotLeader,
    PayloadTooLarge,
    RaftdirError,
    TimeoutOutcomeUnknown,
)
from raftdir.replication.base import (
    BARRIER_PREFIX,
    MAX_COMMAND_BYTES,
    ApplyListener,
    LeadershipListener,
    StateMachine,
    apply_safely,
    call_listeners,
    is_barrier,
)
from raftdir.replication import durable_journal
from raftdir.replication.raft_rules import RaftRules
from raftdir.replication.secret import (
    SECRET_FILE, check_raft_security, fingerprint, is_loopback_address, raft_password,
)
from raftdir.replication.tuning import RaftTuning

__all__ = ["PySyncObjNode", "RaftTuning", "SNAPSHOT_FORMAT", "JOURNAL_FILE", "DUMP_FILE",
           "build_conf", "read_snapshot_file"]

logger = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
JOURNAL_FILE = "raft.journal"
DUMP_FILE = "raft.dump"
SNAPSHOT_TMP_SUFFIX = ".tmp"
SNAPSHOT_TMP_WRITER = "w"      # ours: raft.dump.w<writer pid>.tmp (PySyncObj's: raft.dump.tmp,
                               # raft.dump.1.tmp for a snapshot being received)
SNAPSHOT_RETRY_SECS = 10.0     # after a failed snapshot
_LEADER_STATE = 2  # pysyncobj.syncobj._RAFT_STATE.LEADER
_STATE_NAMES = {0: "follower", 1: "candidate", 2: "leader"}
_PARTNER_KEY = "partner_node_status_server_"
#: PySyncObj 0.3.17 sends a log entry whose command is at least appendEntriesBatchSizeBytes
#: long (64 KiB by default) in chunks ("transmission"), and that path is broken: it marks
#: the last chunk by the command's length, but the chunks cut the *pickled* entry, which
#: protocol-2 pickling makes up to twice as long (each byte >= 0x80 of a bytes object
#: becomes two), so a follower unpickles a truncated entry ("pickle data was truncated")
#: once for every chunk left, its tick raising each time, and the leader sends it again (a
#: command of non-ASCII text; or one whose length sits just below a multiple of the
#: chunk). Batches this large carry any command up to MAX_COMMAND_BYTES (at most
#: 2 * MAX_COMMAND_BYTES + 40 bytes pickled) in one message, so that path is never taken;
#: _submit refuses anything larger.
APPEND_ENTRIES_BATCH_BYTES = 4 * 2**20
assert APPEND_ENTRIES_BATCH_BYTES > 2 * MAX_COMMAND_BYTES + 1024


class _Deferred(Exception):
    """Raised by the serializer hook so that PySyncObj leaves the dump file alone: the
    outcome comes through ``_snapshot_progress``."""


@dataclass
class _SnapshotJob:
    """A snapshot being written to ``tmp``: by child ``pid``, or already (``pid`` None,
    no fork) with outcome ``ok``. ``generation``: see ``_snapshot_generation``."""
    tmp: str
    generation: int
    pid: int | None
    ok: bool = False
    why: str = "writing failed"


def _file_identity(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def spare_idle_links_from_the_read_timeout() -> None:
    """pysyncobj.md §5.3, finding 5: ``TcpConnection`` closes a connection when nothing was
    read on it for ``connectionTimeout``, checked when it sends and when data arrives.
    Followers never talk to each other, so after that long idle the first RequestVote of
    an election is dropped (by the candidate's side or by the voter's, whichever looks
    first) and a failover takes two election rounds.

    With this patch a link that was idle both ways (nothing read and nothing sent for
    ``connectionTimeout``) is not dead: the check gives it a fresh read window instead, on
    either side, so the RequestVote goes out and is read. The stock check still applies to
    a link we have been sending on: a peer that stops answering (hung, SIGSTOPped,
    silently partitioned) while the leader keeps sending is disconnected after
    ``connectionTimeout``, as before, which also bounds the write buffer queued for it.
    Idempotent; applies to every PySyncObj connection in the process."""
    from pysyncobj.monotonic import monotonic as monotonic_time
    from pysyncobj.tcp_connection import TcpConnection
    if getattr(TcpConnection, "_raftdir_send_patch", False):
        return
    stock_send = TcpConnection._TcpConnection__trySendBuffer

    def check_timeout(self: Any) -> None:
        now = monotonic_time()
        timeout = self._TcpConnection__timeout
        if now - self._TcpConnection__lastReadTime <= timeout:
            return
        if now - getattr(self, "_raftdir_last_send", 0.0) > timeout:
            self._TcpConnection__lastReadTime = now   # idle both ways: a fresh window
            return
        self.disconnect()

    def try_send_buffer(self: Any) -> None:
        stock_send(self)   # checks the timeout against the previous send first
        self._raftdir_last_send = monotonic_time()

    TcpConnection._TcpConnection__processConnectionTimeout = check_timeout
    TcpConnection._TcpConnection__trySendBuffer = try_send_buffer
    TcpConnection._raftdir_send_patch = True


SECRET_WARNING_EVERY = 60.0    # seconds between two warnings about one host
_secret_warned: dict[str, float] = {}
_secret_warned_lock = threading.Lock()


def report_failed_secret_checks() -> None:
    """PySyncObj drops a connection whose message fails its password check (a peer with
    another ``cluster.secret``, or anything else that is not one of ours) without a word
    (its own comment: "Why no logging of security errors?"), so a server started with the
    wrong secret was merely "unreachable" on every side. With this patch each encrypted
    connection is watched until its first message (the key exchange) has been read: when
    PySyncObj drops it on that message, or the other end closes a connection we opened
    before answering it (which is what the other end does with our message when the secrets
    differ), a WARNING names the other end, at most once a minute per host. After the first
    message the stock code runs untouched.

    Not a secret problem, and not reported: PySyncObj lets a new leader send on a
    connection it opened before the other end's key arrived; that message lacks the key,
    so the other end drops the connection (and PySyncObj reconnects). A connection we sent
    more than our key on is therefore not reported. Idempotent; applies to every PySyncObj
    connection in the process."""
    from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
    if getattr(TcpConnection, "_raftdir_secret_patch", False):
        return
    stock_parse = TcpConnection._TcpConnection__processParseMessage
    stock_read = TcpConnection._TcpConnection__tryReadBuffer
    stock_connect = TcpConnection.connect
    stock_send = TcpConnection.send
    closed = CONNECTION_STATE.DISCONNECTED

    def watched(self: Any) -> str | None:
        """The other end's host while this connection's first message is awaited."""
        if self.encryptor is None or getattr(self, "_raftdir_secret_ok", False) \
                or self.state != CONNECTION_STATE.CONNECTED:
            return None
        try:
            return str(self._TcpConnection__socket.getpeername()[0])
        except (OSError, AttributeError, IndexError):
            return "an unknown address"

    def parse(self: Any) -> Any:
        peer = watched(self)
        message = stock_parse(self)
        if peer is not None:
            if message is not None:
                self._raftdir_secret_ok = True
            elif self.state == closed:
                _warn_failed_secret(peer, "it failed the cluster secret check")
        return message

    def read(self: Any) -> None:
        only_our_key = getattr(self, "_raftdir_outgoing", False) and \
            getattr(self, "_raftdir_sent", 0) <= 1
        peer = watched(self) if only_our_key else None
        stock_read(self)
        if peer is not None and self.state == closed:
            _warn_failed_secret(peer, "the other end closed it before the key exchange, so "
                                "this server's message probably failed the cluster secret "
                                "check there")

    def connect(self: Any, host: str, port: int) -> bool:
        self._raftdir_outgoing, self._raftdir_secret_ok, self._raftdir_sent = True, False, 0
        return stock_connect(self, host, port)

    def send(self: Any, message: Any) -> None:
        if not getattr(self, "_raftdir_secret_ok", False):
            self._raftdir_sent = getattr(self, "_raftdir_sent", 0) + 1
        stock_send(self, message)

    TcpConnection._TcpConnection__processParseMessage = parse
    TcpConnection._TcpConnection__tryReadBuffer = read
    TcpConnection.connect = connect
    TcpConnection.send = send
    TcpConnection._raftdir_secret_patch = True


def _warn_failed_secret(host: str, why: str) -> None:
    now = time.monotonic()
    with _secret_warned_lock:
        last = _secret_warned.get(host)
        if last is not None and now - last < SECRET_WARNING_EVERY:
            return
        _secret_warned[host] = now
    logger.warning("raft connection with %s dropped: %s (is cluster.secret the same file on "
                   "every server?); said at most once a minute per host", host, why)


# --------------------------------------------------------------------------------------
# configuration

def build_conf(self_addr: str, data_dir: str, tuning: RaftTuning, *, password: str | None,
               serializer: Callable[[str, Any], None] | None,
               deserializer: Callable[[str], Any] | None,
               on_state_changed: Callable[[int, int], None] | None,
               serialize_checker: Callable[[], int] | None = None,
               on_ready: Callable[[], None] | None = None) -> SyncObjConf:
    """The pinned ``SyncObjConf`` (pysyncobj.md §5.1)."""
    conf = SyncObjConf(
        bindAddress=self_addr,                      # never the 0.0.0.0 default (finding 8)
        password=password,
        journalFile=os.path.join(data_dir, JOURNAL_FILE),
        fullDumpFile=os.path.join(data_dir, DUMP_FILE),  # mandatory with a journal (finding 4)
        serializer=serializer,                      # msgpack, in a forked child
        serializeChecker=serialize_checker,         # ... whose progress this reports
        deserializer=deserializer,
        appendEntriesUseBatch=False,                # ~0.5 ms instead of ~100 ms (finding 1)
        appendEntriesBatchSizeBytes=APPEND_ENTRIES_BATCH_BYTES,   # never chunked
        raftMinTimeout=tuning.raft_min_timeout,
        raftMaxTimeout=tuning.raft_max_timeout,
        appendEntriesPeriod=tuning.append_entries_period,
        autoTickPeriod=tuning.auto_tick_period,
        connectionTimeout=tuning.connection_timeout,
        connectionRetryTime=tuning.connection_retry_time,
        leaderFallbackTimeout=tuning.leader_fallback_timeout,
        commandsWaitLeader=False,                   # fail fast: MISSING_LEADER -> NoLeader
        commandsQueueSize=tuning.commands_queue_size,
        dynamicMembershipChange=True,
        bindRetryTime=tuning.bind_retry_time,
        maxBindRetries=tuning.max_bind_retries,     # then waitBinded() raises
        logCompactionMinEntries=tuning.log_compaction_min_entries,
        logCompactionMinTime=tuning.log_compaction_min_time,
        onStateChanged=on_state_changed,
        onReady=on_ready,
    )
    try:
        conf.validate()
    except AssertionError as exc:  # RaftTuning.validate should have caught it
        raise ConfigError(f"raft: PySyncObj rejected the configuration: {exc!r}",
                          field="raft") from None
    return conf


def _check_addr(addr: str, field: str) -> None:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{field}: {addr!r} is not host:port", field=field)
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return
    if ip.is_unspecified:
        raise ConfigError(f"{field}: {addr!r}: bind to this peer's own address, never to "
                          "the wildcard address (peers identify each other by host:port)",
                          field=field)


# --------------------------------------------------------------------------------------
# snapshots

def _entry_out(entry: Any) -> list[Any]:
    command, idx, term = entry
    return [bytes(command), int(idx), int(term)]


def _entry_in(value: Any, where: str) -> tuple[bytes, int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not isinstance(value[0], bytes) or not isinstance(value[1], int)
            or not isinstance(value[2], int)):
        raise ValueError(f"snapshot: raft.{where}: not [bytes, int, int]")
    # PySyncObj compares these with its journal's tuples: they must be tuples too, or it
    # clears the journal on every restart.
    return (value[0], value[1], value[2])


def read_snapshot_file(path: str) -> dict[str, Any]:
    """Decode and check a ``raft.dump`` file; raises ``ValueError`` on anything unexpected.
    Also useful for inspecting a data dir by hand."""
    with open(path, "rb") as f:
        doc = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
    if not isinstance(doc, dict):
        raise ValueError("snapshot: top level is not a map")
    if doc.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"snapshot: format {doc.get('format')!r} is not {SNAPSHOT_FORMAT}")
    raft = doc.get("raft")
    if not isinstance(raft, dict) or not isinstance(doc.get("state"), dict):
        raise ValueError("snapshot: missing raft or state")
    cluster = raft.get("cluster")
    if not isinstance(cluster, list) or not all(isinstance(a, str) for a in cluster):
        raise ValueError("snapshot: raft.cluster is not a list of addresses")
    doc["raft"] = {"last": _entry_in(raft.get("last"), "last"),
                   "prev": _entry_in(raft.get("prev"), "prev"), "cluster": cluster}
    return doc


def remove_stale_snapshot_files(data_dir: str) -> list[str]:
    """Delete the temporary snapshot files a crashed peer's writers left behind."""
    removed = []
    for name in os.listdir(data_dir):
        prefix = f"{DUMP_FILE}.{SNAPSHOT_TMP_WRITER}"
        writer = name[len(prefix):-len(SNAPSHOT_TMP_SUFFIX)]
        if name.startswith(prefix) and name.endswith(SNAPSHOT_TMP_SUFFIX) and writer.isdigit():
            _unlink(os.path.join(data_dir, name))
            removed.append(name)
    if removed:
        logger.info("removed unfinished snapshot files %s", removed)
    return removed


def finish_interrupted_compaction(data_dir: str, raft: dict[str, Any]) -> bool:
    """Repair the one crash window of a log compaction: ``raft.dump`` was renamed into
    place but the peer died before PySyncObj trimmed its journal to the dump's (prev,
    last) entries. PySyncObj would then clear the whole journal at start-up and lose every
    entry after the dump. If the journal holds those two entries further in, drop the
    entries before them, as the trim would have. ``raft``: the dump's ``raft`` map (from
    ``read_snapshot_file``). Returns whether it trimmed."""
    journal_path = os.path.join(data_dir, JOURNAL_FILE)
    if not os.path.exists(journal_path):
        return False
    head = [raft["prev"], raft["last"]]
    journal = durable_journal.SyncedFileJournal(journal_path)   # its trim is atomic
    try:
        entries = [journal[i] for i in range(len(journal))]
        if entries[:2] == head:
            return False
        for i in range(1, len(entries) - 1):
            if entries[i:i + 2] == head:
                journal.deleteEntriesTo(i)
                journal.flush()
                logger.warning("raft journal %s: finished an interrupted log compaction "
                               "(dropped %d entries already in the snapshot)",
                               journal_path, i)
                return True
        return False
    finally:
        journal._destroy()


# --------------------------------------------------------------------------------------
# the SyncObj subclass: one replicated method, forever method id 0 (finding 10), and
# raftdir's vote, lease and truncation rules (raft_rules.py)

class RaftKeys:
    """The encryptors of Raft traffic for a set of cluster secrets. One secret: exactly
    PySyncObj's own (``getEncryptor``: a ``Fernet`` keyed by PBKDF2 of the Raft password
    derived from the secret), so a peer that is not rolling its secret runs stock PySyncObj
    encryption. Several (a roll, docs/operations.md): a ``MultiFernet`` that encrypts under
    the first and reads under any. Each secret's key is derived once (PBKDF2 is slow)."""

    def __init__(self) -> None:
        self._keys: dict[str, Any] = {}     # secret -> its Fernet

    def seed(self, secret: str, fernet: Any) -> None:
        """The key PySyncObj derived itself for ``secret`` (no second PBKDF2)."""
        self._keys[secret] = fernet

    def encryptor(self, secrets: tuple[str, ...]) -> Any:
        from cryptography.fernet import MultiFernet
        from pysyncobj.encryptor import getEncryptor
        if not secrets:
            raise ValueError("RaftKeys.encryptor needs at least one secret")
        for secret in secrets:
            if secret not in self._keys:
                self._keys[secret] = getEncryptor(raft_password(secret))
        self._keys = {s: self._keys[s] for s in secrets}   # forget retired ones
        if len(secrets) == 1:
            return self._keys[secrets[0]]
        return MultiFernet([self._keys[s] for s in secrets])


class _RaftdirSyncObj(RaftRules):
    def __init__(self, owner: "PySyncObjNode", self_addr: str | None, partners: list[str],
                 conf: SyncObjConf, replica: tuple[int, str] | None = None) -> None:
        self._raftdir_owner = owner
        super().__init__(self_addr, partners, conf, replica=replica)

    def _raftdir_use_encryptor(self, encryptor: Any) -> None:
        """On the tick thread: encrypt and read Raft traffic with ``encryptor`` from now on,
        on the connections open already too (PySyncObj hands each connection its
        encryptor when it is made; new ones take the SyncObj's)."""
        self._SyncObj__encryptor = encryptor
        transport = getattr(self, "_SyncObj__transport", None)
        if transport is None:
            return
        conns = list(getattr(transport, "_connections", {}).values())
        conns += list(getattr(transport, "_unknownConnections", ()))
        for conn in conns:
            if conn.encryptor is not None:
                conn.encryptor = encryptor

    @replicated
    def _apply(self, data: bytes) -> Result:
        return self._raftdir_owner._on_apply(data)

    def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802, N803 - PySyncObj's
        owner = self._raftdir_owner
        if owner._pending_keys is not None:      # a roll of the cluster secret
            with owner._keys_lock:
                pending, owner._pending_keys = owner._pending_keys, None
            if pending is not None:
                self._raftdir_use_encryptor(pending[0])
                owner._key_fingerprints = pending[1]
        super()._onTick(timeToWait)
        journal = getattr(self, "_SyncObj__raftLog", None)
        if isinstance(journal, durable_journal.SyncedFileJournal):
            journal.end_of_tick()   # group commit: one sync per tick (durable_journal)


def _fail_reason_name(err: Any) -> str:
    for name, value in vars(FAIL_REASON).items():
        if not name.startswith("_") and value == err:
            return name
    return repr(err)


# --------------------------------------------------------------------------------------

class PySyncObjNode:
    """One Raft peer. ``self_addr`` and ``partners`` are ``host:port`` Raft addresses
    (the peer's identity, so they must be stable); ``data_dir`` holds the journal, the
    dump and (by convention) ``cluster.secret``. ``secret`` is the cluster secret's value:
    it keys the Raft password; without it ``self_addr`` must be loopback. ``accept``: more
    secrets whose traffic it reads during a roll (``use_secrets`` changes them later).

    ``self_addr`` None makes a read-only replica (PySyncObj's ``SyncObj(None, partners)``):
    it dials every partner, receives the log and applies it, never votes and never counts
    toward a commit or the leader lease; it binds no port. ``replica``: its ``(node id,
    API address)``, which the leader learns from its answers (``replicas()``).

    The constructor does no I/O; ``start()`` binds the port and starts PySyncObj's tick
    thread, ``stop()`` ends it."""

    def __init__(self, self_addr: str | None, partners: list[str] | tuple[str, ...],
                 data_dir: str, state_machine: StateMachine, *, secret: str | None = None,
                 accept: tuple[str, ...] = (), tuning: RaftTuning | None = None,
                 replica: tuple[int, str] | None = None) -> None:
        for p in partners:
            _check_addr(p, "raft_peers")
        if self_addr is None:
            if not partners:
                raise ConfigError("peers: a replica needs voters to follow", field="peers")
            for p in partners:   # a replica dials them: what they send is unpickled here
                if not secret and not is_loopback_address(p):
                    raise ConfigError(
                        f"peers: a replica dials {p}, which is not a loopback address, and "
                        "no cluster secret is configured; PySyncObj would unpickle "
                        f"whatever it reads there. Copy {SECRET_FILE} into the data dir",
                        field="peers")
        else:
            _check_addr(self_addr, "raft_addr")
            check_raft_security(self_addr, secret)
        self._replica = replica if self_addr is None else None
        self._self_addr = self_addr
        self._name = self_addr or (f"replica {replica[0]}" if replica else "replica")
        self._partners = [p for p in partners if p != self_addr]
        self._data_dir = str(data_dir)
        self._sm = state_machine
        self._secret = secret
        self._accept = tuple(a for a in accept if a and a != secret)
        self._keys = RaftKeys()
        # (encryptor, fingerprints) for the tick thread to take up (use_secrets)
        self._pending_keys: tuple[Any, tuple[str, ...]] | None = None
        self._keys_lock = threading.Lock()
        self._key_fingerprints: tuple[str, ...] = (fingerprint(secret),) if secret else ()
        self._tuning = tuning if tuning is not None else RaftTuning()
        self._so: _RaftdirSyncObj | None = None
        self._lock = threading.Lock()
        self._leadership_listeners: list[LeadershipListener] = []
        self._apply_listeners: list[ApplyListener] = []
        self._reported_leader = False
        self._barriers: dict[bytes, Callable[[], None]] = {}
        self.snapshot_error: str | None = None
        self._snapshot_lock = threading.Lock()
        self._snapshot_job: _SnapshotJob | None = None
        self._snapshot_generation = 0   # bumped by every snapshot load
        self._snapshot_retry_at = 0.0   # monotonic time before which no new snapshot starts
        self._preloaded: tuple[tuple[int, int, int], dict[str, Any]] | None = None
        self._journal: durable_journal.SyncedFileJournal | None = None
        self.internal_errors = 0   # entries whose apply raised (bugs), since start

    @property
    def address(self) -> str | None:
        """This peer's Raft address; None for a read-only replica."""
        return self._self_addr

    @property
    def is_replica(self) -> bool:
        return self._self_addr is None

    @property
    def state_machine(self) -> StateMachine:
        return self._sm

    # lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Create the data dir, bind the Raft port and start the tick thread. Raises
        ``ConfigError`` (field ``raft_addr``) when the port cannot be bound."""
        if self._so is not None:
            return
        os.makedirs(self._data_dir, mode=0o700, exist_ok=True)
        spare_idle_links_from_the_read_timeout()
        report_failed_secret_checks()
        dump = os.path.join(self._data_dir, DUMP_FILE)
        if os.path.exists(dump):
            # PySyncObj would log a failed load and go on with EMPTY state, still voting
            # (the finding-4 failure mode): refuse to start instead. The state is restored
            # here, once; PySyncObj's own load of the same file then only takes the raft
            # entries (``_read_snapshot``).
            try:
                identity = _file_identity(dump)
                doc = read_snapshot_file(dump)
            except Exception as exc:
                raise ConfigError(f"{dump}: unreadable raft snapshot ({exc}); move it away "
                                  "and the peer will fetch the leader's snapshot",
                                  file=dump, field="data_dir") from None
            try:
                self._sm.restore(doc["state"])
            except Exception as exc:
                raise ConfigError(f"{dump}: this version cannot restore the raft snapshot "
                                  f"({exc}); run the raftdir version that wrote it, or move "
                                  "the file away and the peer will fetch the leader's "
                                  "snapshot", file=dump, field="data_dir") from None
            self._preloaded = (identity, doc["raft"])
            finish_interrupted_compaction(self._data_dir, doc["raft"])
            del doc
        remove_stale_snapshot_files(self._data_dir)
        conf = build_conf(
            self._self_addr, self._data_dir, self._tuning,
            password=raft_password(self._secret) if self._secret else None,
            serializer=self._write_snapshot, deserializer=self._read_snapshot,
            serialize_checker=self._snapshot_progress,
            on_state_changed=self._on_state_changed)
        journal_path = os.path.join(self._data_dir, JOURNAL_FILE)
        if self._tuning.journal_sync:
            durable_journal.install(journal_path)
        else:
            durable_journal.uninstall(journal_path)
        if self._secret and self._accept:   # started during a roll: the first tick
            self._use_keys((self._secret,) + self._accept)  # takes them up, before any I/O
        so = _RaftdirSyncObj(self, self._self_addr, self._partners, conf,
                             replica=self._replica)
        if self._secret and not self._accept and so.encryptor is not None:
            self._keys.seed(self._secret, so.encryptor)
        journal = getattr(so, "_SyncObj__raftLog", None)
        self._journal = journal if isinstance(journal, durable_journal.SyncedFileJournal) \
            else None
        # PySyncObj's tick thread stops when the thread that built the SyncObj ends; bind its
        # life to the interpreter's main thread instead, so start() may run anywhere.
        if hasattr(so, "_SyncObj__mainThread"):
            so._SyncObj__mainThread = threading.main_thread()
        try:
            if self._self_addr is not None:   # a replica binds nothing (and PySyncObj's
                so.waitBinded()               # wait would never end for it)
        except SyncObjException:
            so.destroy()
            self._join(so, 2.0)
            raise ConfigError(f"raft_addr: cannot bind {self._self_addr} after "
                              f"{self._tuning.max_bind_retries} attempts", field="raft_addr")
        self._so = so
        logger.info("raft %s started (partners %s, data %s, password %s)",
                    f"peer {self._self_addr}" if self._self_addr else
                    "read-only replica", self._partners, self._data_dir,
                    "set" if self._secret else "none (loopback)")

    def use_secrets(self, secrets: tuple[str, ...] | list[str]) -> None:
        """Encrypt Raft traffic under ``secrets[0]`` from now on and read it under any of
        ``secrets`` (a roll of the cluster secret), on the connections open already too;
        the tick thread takes them up at its next tick (``status()["raft_keys"]`` then
        shows them). A peer that started without a secret (loopback) stays without."""
        if not self._secret:
            return
        secrets = tuple(secrets)
        self._use_keys(secrets)
        self._secret, self._accept = secrets[0], secrets[1:]

    def _use_keys(self, secrets: tuple[str, ...]) -> None:
        pending = (self._keys.encryptor(secrets), tuple(fingerprint(s) for s in secrets))
        with self._keys_lock:
            self._pending_keys = pending

    def stop(self, timeout: float = 5.0) -> None:
        so, self._so = self._so, None
        if so is None:
            return
        so.destroy()
        self._join(so, timeout)
        self._abandon_snapshot()
        with self._lock:
            was_leader, self._reported_leader = self._reported_leader, False
        if was_leader:
            call_listeners(self._leadership_listeners, False, so.raftCurrentTerm)

    @staticmethod
    def _join(so: SyncObj, timeout: float) -> None:
        thread = getattr(so, "_SyncObj__thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> "PySyncObjNode":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _started(self) -> _RaftdirSyncObj:
        so = self._so
        if so is None:
            raise NoLeader(f"raft peer {self._name} is not running")
        if threading.current_thread() is getattr(so, "_SyncObj__thread", None):
            raise RuntimeError("blocking raft call from the tick thread (a listener?) "
                               "would deadlock")
        return so

    # the replicated entry point (tick thread) -----------------------------------------
    def _on_apply(self, data: bytes) -> Result:
        self._preloaded = None   # the state moved on from the file start() restored
        if self._journal is not None:
            self._journal.sync()  # a one-peer cluster never sends: sync before applying
        try:
            if is_barrier(data):
                token = bytes(data[len(BARRIER_PREFIX):])
                with self._lock:
                    waiter = self._barriers.pop(token, None)
                if waiter is not None:
                    call_listeners([waiter])
                return Result.applied(None, revision=self._sm.revision)
            result = apply_safely(self._sm, data)
            if result.code == "internal":
                self.internal_errors += 1
            call_listeners(self._apply_listeners, self._sm.revision, result)
            return result
        except Exception as exc:  # noqa: BLE001 - must never reach PySyncObj (finding 2)
            logger.exception("BUG: raft apply wrapper raised")
            return Result.refused("internal", f"apply wrapper raised {exc!r}"[:500])

    # snapshots (tick thread) -----------------------------------------------------------
    #
    # Crash safety. PySyncObj trims its journal to the dump's (prev, last) entries only
    # when ``_snapshot_progress`` answers SUCCESS, and at start-up it CLEARS a journal that
    # does not begin with those two entries. So a dump must never reach ``raft.dump``
    # before the tick thread is about to trim: the child only writes and fsyncs a private
    # temporary file; the tick thread renames it in ``_snapshot_progress`` and answers
    # SUCCESS in the same call, and PySyncObj trims in the same tick. ``stop()`` abandons
    # a snapshot in progress (the journal still holds everything). A crash between the
    # rename and the trim is repaired at the next start by ``finish_interrupted_compaction``.

    def _write_snapshot(self, filename: str, data: Any) -> None:
        """PySyncObj's serializer hook (tick thread). ``data`` is (entry at last_applied,
        the entry before it, set of cluster Nodes); the state is exactly at last_applied.

        Where ``fork`` exists, a child process writes the snapshot from its copy-on-write
        view of the state and the tick thread goes on at once (a synchronous write of
        100,000 workers stalls the peer for ~0.6-0.9 s: longer than an election timeout).
        Without ``fork`` the file is written here. Either way ``_Deferred`` is raised so
        that PySyncObj does not rename ``filename`` itself (its ``Serializer.serialize``
        swallows the exception) and it learns the outcome from ``_snapshot_progress``."""
        del filename  # ours is per writer, so an abandoned child can never race a new one
        last, prev, cluster = data
        # A read-only replica's cluster is its partners plus None (PySyncObj adds its
        # selfNode): None is no address, and would come back as a peer named "None".
        raft = {"last": _entry_out(last), "prev": _entry_out(prev),
                "cluster": sorted(str(getattr(n, "id", n)) for n in cluster
                                  if n is not None)}
        with self._snapshot_lock:
            generation = self._snapshot_generation
        if not hasattr(os, "fork"):
            tmp = self._snapshot_tmp(os.getpid())
            try:
                self._dump(tmp, raft)
                ok = True
            except Exception:  # noqa: BLE001 - reported by _snapshot_progress
                logger.exception("raft snapshot: writing %s failed", tmp)
                ok = False
            self._snapshot_job = _SnapshotJob(tmp, generation, pid=None, ok=ok)
            raise _Deferred()
        if time.monotonic() < self._snapshot_retry_at:
            self._snapshot_job = _SnapshotJob("", generation, pid=None, ok=False,
                                              why="backing off after a failed snapshot")
            raise _Deferred()
        try:
            pid = os.fork()
        except OSError as exc:  # ENOMEM, EAGAIN: a failed snapshot, not a wedged one
            self._snapshot_job = _SnapshotJob("", generation, pid=None, ok=False,
                                              why=f"fork failed: {exc}")
            raise _Deferred() from None
        if pid == 0:  # the child: write the temporary file, leave without any cleanup
            code = 1
            try:
                after_fork = getattr(self._sm, "after_fork_in_child", None)
                if after_fork is not None:
                    after_fork()
                self._dump(self._snapshot_tmp(os.getpid()), raft)
                code = 0
            finally:
                os._exit(code)
        self._snapshot_job = _SnapshotJob(self._snapshot_tmp(pid), generation, pid=pid)
        raise _Deferred()

    def _snapshot_tmp(self, writer: int) -> str:
        return os.path.join(self._data_dir,
                            f"{DUMP_FILE}.{SNAPSHOT_TMP_WRITER}{writer}{SNAPSHOT_TMP_SUFFIX}")

    def _dump(self, tmp: str, raft: dict[str, Any]) -> None:
        """Write and fsync the snapshot to ``tmp`` (never to ``raft.dump``)."""
        doc = {"format": SNAPSHOT_FORMAT, "revision": int(self._sm.revision),
               "state": self._sm.to_snapshot(), "raft": raft}
        packed = msgpack.packb(doc, use_bin_type=True)
        with open(tmp, "wb") as f:
            f.write(packed)
            f.flush()
            os.fsync(f.fileno())

    def _snapshot_progress(self) -> int:
        """PySyncObj's ``serializeChecker`` (tick thread): where the snapshot is. When the
        writer is done, the file is renamed into place here, just before PySyncObj trims
        the journal on our SUCCESS."""
        with self._snapshot_lock:
            job = self._snapshot_job
            if job is None:
                return SERIALIZER_STATE.NOT_SERIALIZING
            ok, why = job.ok, job.why
            if job.pid is not None:
                try:
                    done, status = os.waitpid(job.pid, os.WNOHANG)
                except ChildProcessError:
                    done, status = job.pid, -1
                if done == 0:
                    return SERIALIZER_STATE.SERIALIZING
                ok = status != -1 and os.waitstatus_to_exitcode(status) == 0
                why = f"snapshot child {job.pid} exited with status {status}"
            self._snapshot_job = None
            if ok and job.generation != self._snapshot_generation:
                ok, why = False, "the leader's snapshot was installed meanwhile"
            if ok:
                try:
                    os.replace(job.tmp, os.path.join(self._data_dir, DUMP_FILE))
                    fsync_dir(self._data_dir)
                except OSError as exc:
                    ok, why = False, f"renaming {job.tmp}: {exc}"
            if not ok:
                if job.tmp:
                    _unlink(job.tmp)
                if job.generation == self._snapshot_generation:   # a real failure
                    # PySyncObj retries at once (it only notes successes): not every tick
                    self._snapshot_retry_at = time.monotonic() + SNAPSHOT_RETRY_SECS
                self.snapshot_error = why
                logger.error("raft snapshot failed: %s; the log is kept", why)
                return SERIALIZER_STATE.FAILED
            self.snapshot_error = None
            logger.info("raft snapshot written (%s)", "child %d" % job.pid
                        if job.pid is not None else "in the tick thread")
            return SERIALIZER_STATE.SUCCESS

    def _abandon_snapshot(self) -> None:
        """On stop: end a snapshot writer still running and delete its file. Never
        renames: only the tick thread may, right before PySyncObj trims the journal."""
        with self._snapshot_lock:
            job, self._snapshot_job = self._snapshot_job, None
        if job is None:
            return
        if job.pid is not None:
            try:
                os.kill(job.pid, signal.SIGKILL)
                os.waitpid(job.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        _unlink(job.tmp)

    def _read_snapshot(self, filename: str) -> tuple[Any, Any, list[TCPNode]]:
        # Called at start-up (our own dump) and when the leader streamed us its dump.
        # PySyncObj logs and swallows an exception here, so record it loudly too.
        with self._snapshot_lock:
            self._snapshot_generation += 1   # a snapshot being written is now stale
        preloaded, self._preloaded = self._preloaded, None
        try:
            if preloaded is not None and preloaded[0] == _file_identity(filename):
                raft = preloaded[1]   # start() restored this very file
            else:
                # The leader's snapshot: PySyncObj renamed it into place unsynced and will
                # clear the journal next, so make it durable first (journal_sync's promise).
                if self._tuning.journal_sync:
                    fsync_file(filename)
                    fsync_dir(os.path.dirname(filename) or ".")
                doc = read_snapshot_file(filename)
                raft = doc["raft"]
                self._sm.restore(doc["state"])
        except Exception as exc:
            self.snapshot_error = f"{filename}: {exc!r}"
            logger.critical("raft snapshot %s could not be loaded; this peer's state is "
                            "NOT the cluster's: %r", filename, exc)
            raise
        self.snapshot_error = None
        logger.info("raft snapshot loaded: index %d, revision %d",
                    raft["last"][1], self._sm.revision)
        call_listeners(self._apply_listeners, self._sm.revision, None)
        return raft["last"], raft["prev"], [TCPNode(a) for a in raft["cluster"]]

    # leadership (tick thread) ----------------------------------------------------------
    def _on_state_changed(self, old: int, new: int) -> None:
        try:
            is_leader = new == _LEADER_STATE
            with self._lock:
                if is_leader == self._reported_leader:
                    return
                self._reported_leader = is_leader
            so = self._so
            term = int(getattr(so, "raftCurrentTerm", 0)) if so is not None else 0
            logger.info("raft peer %s %s leadership (term %d)", self._name,
                        "gained" if is_leader else "lost", term)
            call_listeners(self._leadership_listeners, is_leader, term)
        except Exception:  # noqa: BLE001 - finding 3
            logger.exception("leadership change handling failed")

    # writes ----------------------------------------------------------------------------
    def _check_leader(self, so: _RaftdirSyncObj) -> None:
        if so._isLeader():
            return
        leader = self.leader()
        if leader is None:
            raise NoLeader(f"raft peer {self._name} knows no leader (election?)")
        raise NotLeader(f"raft peer {self._name} does not lead; the leader is {leader}",
                        leader=leader)

    def _outcome(self, res: Any, err: Any, what: str) -> Result:
        if err == FAIL_REASON.SUCCESS:
            if isinstance(res, Result):
                return res
            return Result.refused("internal", f"{what}: apply returned {res!r}")
        name = _fail_reason_name(err)
        if err == FAIL_REASON.MISSING_LEADER:
            raise NoLeader(f"{what}: no leader (MISSING_LEADER)")
        if err == FAIL_REASON.QUEUE_FULL:
            raise NoLeader(f"{what}: the raft command queue is full (overloaded); "
                           "retry with backoff")
        if err in (FAIL_REASON.NOT_LEADER, FAIL_REASON.DISCARDED):
            # Not committed (DISCARDED: another entry won that log index): safe to resend.
            leader = self.leader()
            if leader is None or leader == self._self_addr:
                raise NoLeader(f"{what}: leadership lost before commit ({name})")
            raise NotLeader(f"{what}: leadership lost before commit ({name}); "
                            f"the leader is {leader}", leader=leader)
        if err == FAIL_REASON.REQUEST_DENIED:   # who is a member was checked before
            raise Conflict(f"{what}: refused by raft ({name}): another membership change "
                           "is in progress; retry when it is done")
        # LEADER_CHANGED, UNKNOWN_OUTCOME and anything new: the entry may still commit.
        raise TimeoutOutcomeUnknown(f"{what}: outcome unknown ({name}); retry with the "
                                    "same request id")

    def _submit(self, so: _RaftdirSyncObj, data: bytes,
                on_done: Callable[[Any, Any], None]) -> None:
        if len(data) > MAX_COMMAND_BYTES:
            raise PayloadTooLarge(f"a command of {len(data)} bytes is over the limit of "
                                  f"{MAX_COMMAND_BYTES} a Raft entry may carry")
        def callback(res: Any, err: Any) -> None:
            try:
                on_done(res, err)
            except Exception:  # noqa: BLE001 - finding 3
                logger.exception("raft completion callback raised")
        so._apply(data, callback=callback)

    def propose(self, data: bytes, timeout: float = 5.0) -> Result:
        """Replicate ``data`` and return the state machine's ``Result`` once the entry is
        committed and applied here. Raises ``NotLeader``/``NoLeader``/
        ``TimeoutOutcomeUnknown``.

        Leadership is checked before the command is queued; if this peer steps down in the
        few milliseconds before the tick thread picks the command up, PySyncObj forwards it
        to the new leader (harmless: it commits at most once, and the outcome still comes
        back here)."""
        so = self._started()
        self._check_leader(so)
        done = threading.Event()
        box: list[tuple[Any, Any]] = []

        def on_done(res: Any, err: Any) -> None:
            box.append((res, err))
            done.set()

        self._submit(so, bytes(data), on_done)
        if not done.wait(timeout):
            raise TimeoutOutcomeUnknown(f"propose: no outcome within {timeout:g} s; the write "
                                        "may still commit: retry with the same request id")
        return self._outcome(*box[0], "propose")

    async def propose_async(self, data: bytes, timeout: float = 5.0) -> Result:
        so = self._started()
        self._check_leader(so)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[Any, Any]] = loop.create_future()

        def on_done(res: Any, err: Any) -> None:
            try:
                loop.call_soon_threadsafe(_resolve, fut, (res, err))
            except RuntimeError:  # the loop is closed: nobody waits
                pass

        self._submit(so, bytes(data), on_done)
        try:
            res, err = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise TimeoutOutcomeUnknown(f"propose: no outcome within {timeout:g} s; the write "
                                        "may still commit: retry with the same request id"
                                        ) from None
        return self._outcome(res, err, "propose")

    # barriers --------------------------------------------------------------------------
    def _new_barrier(self, on_applied: Callable[[], None]) -> bytes:
        token = _secrets.token_bytes(16)
        with self._lock:
            self._barriers[token] = on_applied
        return token

    def _drop_barrier(self, token: bytes) -> None:
        with self._lock:
            self._barriers.pop(token, None)

    def barrier(self, timeout: float = 5.0) -> None:
        """Commit a no-op through the log and return once THIS peer applied it. Works on a
        follower too (PySyncObj forwards the no-op to the leader): a local read after it
        sees every write acknowledged before the call."""
        so = self._started()
        applied = threading.Event()
        failed: list[Any] = []

        def on_done(res: Any, err: Any) -> None:
            if err != FAIL_REASON.SUCCESS:
                failed.append(err)
                applied.set()

        token = self._new_barrier(applied.set)
        try:
            self._submit(so, BARRIER_PREFIX + token, on_done)
            if not applied.wait(timeout):
                raise TimeoutOutcomeUnknown(f"barrier: not applied within {timeout:g} s")
            if failed:
                self._outcome(None, failed[0], "barrier")
        finally:
            self._drop_barrier(token)

    async def barrier_async(self, timeout: float = 5.0) -> None:
        so = self._started()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def settle(err: Any) -> None:
            try:
                loop.call_soon_threadsafe(_resolve, fut, err)
            except RuntimeError:
                pass

        def on_done(res: Any, err: Any) -> None:
            if err != FAIL_REASON.SUCCESS:
                settle(err)

        token = self._new_barrier(lambda: settle(FAIL_REASON.SUCCESS))
        try:
            self._submit(so, BARRIER_PREFIX + token, on_done)
            try:
                err = await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                raise TimeoutOutcomeUnknown(f"barrier: not applied within {timeout:g} s"
                                            ) from None
            if err != FAIL_REASON.SUCCESS:
                self._outcome(None, err, "barrier")
        finally:
            self._drop_barrier(token)

    # membership ------------------------------------------------------------------------
    def _membership(self, op: str, addr: str, timeout: float) -> None:
        _check_addr(addr, "peer")
        so = self._started()
        self._check_leader(so)
        members = {str(n.id) for n in so.otherNodes} | {self._self_addr}
        if op == "add" and addr in members:
            raise Conflict(f"add_peer {addr}: already a member of the cluster",
                           field="raft_addr")
        if op == "rem" and addr not in members:
            raise Conflict(f"remove_peer {addr}: not a member of the cluster",
                           field="raft_addr")
        done = threading.Event()
        box: list[Any] = []

        def callback(res: Any, err: Any) -> None:
            try:
                box.append(err)
                done.set()
            except Exception:  # noqa: BLE001
                logger.exception("membership callback raised")

        if op == "add":
            so.addNodeToCluster(addr, callback=callback)
        else:
            so.removeNodeFromCluster(addr, callback=callback)
        if not done.wait(timeout):
            raise TimeoutOutcomeUnknown(f"{op}_peer {addr}: no outcome within {timeout:g} s")
        self._outcome(Result.applied(), box[0], f"{op}_peer {addr}")

    def add_peer(self, addr: str, timeout: float = 10.0) -> None:
        """Add one voting peer (on the leader; wait for it before the next change). Start
        the new peer with the full new peer list only after this returned."""
        self._membership("add", addr, timeout)

    def remove_peer(self, addr: str, timeout: float = 10.0) -> None:
        """Remove one peer (stop it first). When that is this peer, the leader, it hands
        leadership to the most caught-up follower first and raises ``NotLeader`` naming
        the new leader, which the caller asks to remove it."""
        if addr == self._self_addr:
            leader = self.transfer_leadership(timeout)
            raise NotLeader(f"remove_peer {addr}: this peer led; leadership moved to "
                            f"{leader}, which can remove it", leader=leader)
        self._membership("rem", addr, timeout)

    def transfer_leadership(self, timeout: float = 10.0) -> str:
        """Hand leadership to the most caught-up follower (Raft's TimeoutNow) and wait until
        another peer leads; returns its address. ``Conflict`` when no follower is caught up
        (PySyncObj refuses), ``TimeoutOutcomeUnknown`` when no new leader shows up."""
        so = self._started()
        self._check_leader(so)
        sent = threading.Event()
        box: list[Any] = []

        def callback(res: Any, err: Any) -> None:
            box.append(err)
            sent.set()

        so.request_transfer(callback)
        if not sent.wait(timeout) or box[0] != FAIL_REASON.SUCCESS:
            raise Conflict("transfer_leadership: no follower is caught up with this leader "
                           "to take over; retry in a moment", field="raft_addr")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None and leader != self._self_addr and not so._isLeader():
                return leader
            time.sleep(0.02)
        raise TimeoutOutcomeUnknown(f"transfer_leadership: no new leader within {timeout:g} s")

    # who leads -------------------------------------------------------------------------
    def is_leader(self) -> bool:
        so = self._so
        return bool(so is not None and so._isLeader())

    def leader(self) -> str | None:
        so = self._so
        node = so._getLeader() if so is not None else None
        if node is None:
            return None
        return str(getattr(node, "address", None) or node.id)

    def term(self) -> int:
        so = self._so
        return int(so.raftCurrentTerm) if so is not None else 0

    def has_lease(self) -> bool:
        """This peer leads and a majority confirmed it within the minimum election
        timeout, so no other peer can be elected before the lease ends (raft_rules)."""
        so = self._so
        return bool(so is not None and so.has_lease())

    def unleased_seconds(self) -> float:
        """Seconds, since start, during which this peer held no leader lease."""
        so = self._so
        return so.unleased_seconds() if so is not None else 0.0

    def status(self) -> dict[str, Any]:
        so = self._so
        base: dict[str, Any] = {
            "self": self._self_addr, "leader": None, "is_leader": False, "state": "stopped",
            "term": 0, "commit_index": 0, "last_applied": 0, "log_len": 0,
            "partners": {p: False for p in self._partners}, "is_ready": False,
            "has_quorum": False, "revision": self._sm.revision,
            "snapshot_error": self.snapshot_error, "internal_errors": self.internal_errors,
            # the fingerprints of the secrets Raft traffic is encrypted under (first) and
            # read under (all)
            "raft_keys": list(self._key_fingerprints),
        }
        if so is None:
            return base
        raw: dict[str, Any] | None = None
        for _ in range(5):  # getStatus iterates sets the tick thread may be changing
            try:
                raw = so.getStatus()
                break
            except RuntimeError:
                continue
        if raw is None:
            raise RaftdirError("raft status unavailable (concurrent change); retry")
        base.update({
            "leader": self.leader(),
            "is_leader": raw["state"] == _LEADER_STATE,
            "state": "replica" if self.is_replica else
                     _STATE_NAMES.get(raw["state"], str(raw["state"])),
            "term": raw["raft_term"],
            "commit_index": raw["commit_idx"],
            "last_applied": raw["last_applied"],
            "log_len": raw["log_len"],
            "partners": {k[len(_PARTNER_KEY):]: v == 2 for k, v in raw.items()
                         if k.startswith(_PARTNER_KEY)},
            "is_ready": bool(so.isReady()),
            "has_quorum": bool(raw["has_quorum"]),
        })
        return base

    # replicas --------------------------------------------------------------------------
    def replicas(self) -> list[dict[str, Any]]:
        """The read-only replicas that answered this peer lately (a leader hears from
        each at every append): ``{node_id, api_addr, applied}``, by node id."""
        so = self._so
        if so is None:
            return []
        max_age = max(2.0, 4 * self._tuning.raft_max_timeout)
        return [{"node_id": r.node_id, "api_addr": r.api_addr, "applied": r.applied}
                for r in so.replicas(max_age)]

    def replica_lag(self) -> tuple[float, int | None]:
        """A replica's lag: seconds since it last held everything a leader had committed
        (``inf`` until it first caught up), and the entries it is behind the leader's
        commit index it last heard of (None before it heard one)."""
        so = self._so
        if so is None:
            return math.inf, None
        return so.replica_lag()

    # listeners -------------------------------------------------------------------------
    def add_leadership_listener(self, cb: LeadershipListener) -> None:
        """Register ``cb(is_leader, term)`` (tick thread). If this peer already leads, it is
        called at once with the current term."""
        with self._lock:
            self._leadership_listeners.append(cb)
            leading = self._reported_leader
        if leading:
            call_listeners([cb], True, self.term())

    def add_apply_listener(self, cb: ApplyListener) -> None:
        """Register ``cb(revision, result)``, called on this peer after every applied entry
        and (with ``result=None``) after a snapshot replaced the state."""
        with self._lock:
            self._apply_listeners.append(cb)


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)
