"""The pure directory: hard state, commands, ``apply``, the revision log, snapshots.

Owns nothing itself; re-exports the public names of ``raftdir.core.directory``
(``Directory``), ``raftdir.core.commands`` (the commands and their codec),
``raftdir.core.result`` (``Result``) and ``raftdir.core.state`` (constants).

Pure code, called from the Raft apply thread (or the local node's caller). Must not import
anything from raftdir but ``raftdir.errors``, ``raftdir.model`` and ``raftdir.core``: no
replication, API, agent, CLI, leader or daemon code (``tests/core/test_imports.py``).
"""

from raftdir.core.commands import (
    COMMANDS, LEADER_COMMANDS, Barrier, Bootstrap, Command, Compact, CreateAccessToken,
    Deregister, Drain, MarkDown, MarkReady, RegisterNode, RenewCheckpoint, RevokeAccessToken,
    SetPlacement, Undrain, UpdateProfile, canonical_command, decode_command, encode_command,
)
from raftdir.core.directory import Directory
from raftdir.core.result import Result
from raftdir.core.state import (
    ACCESS_SCOPES, DEFAULT_MAX_REQUEST_IDS, DOWN, DRAINING, MAX_ACCESS_TOKENS, READY, SERVER,
    SNAPSHOT_FORMAT, TOKEN_RETENTION_MS, WORKER, WORKER_ID_BASE,
)

__all__ = [
    "Directory", "Result",
    "Command", "Bootstrap", "RegisterNode", "RenewCheckpoint", "MarkDown", "MarkReady",
    "Drain", "Undrain", "Deregister", "SetPlacement", "Barrier", "Compact", "UpdateProfile",
    "CreateAccessToken", "RevokeAccessToken", "COMMANDS", "LEADER_COMMANDS", "encode_command", "decode_command", "canonical_command",
    "WORKER_ID_BASE", "DEFAULT_MAX_REQUEST_IDS", "SNAPSHOT_FORMAT", "ACCESS_SCOPES",
    "MAX_ACCESS_TOKENS", "TOKEN_RETENTION_MS",
    "SERVER", "WORKER", "READY", "DRAINING", "DOWN",
]
