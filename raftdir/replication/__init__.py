"""Replication: the ``RaftNode`` protocol and its two implementations.

- ``LocalNode``: one process, applies at once (single-node mode, most tests);
- ``PySyncObjNode``: one peer of a PySyncObj 0.3.17 cluster (pinned configuration in
  ``RaftTuning``, msgpack snapshots, outcomes mapped onto ``raftdir.errors``);
- ``RevisionNotifier``: asyncio waiters woken by applies on any thread (long-polls);
- ``secret``: the cluster secret file and the keys derived from it.

Imports only ``raftdir.core.result`` and ``raftdir.errors`` from the rest of raftdir.
``PySyncObjNode`` is imported lazily so that importing this package does not import
PySyncObj.
"""

from __future__ import annotations

from typing import Any

from raftdir.replication.base import (
    BARRIER_PREFIX,
    ApplyListener,
    LeadershipListener,
    RaftNode,
    StateMachine,
    apply_safely,
)
from raftdir.replication.local import LocalNode
from raftdir.replication.notifier import RevisionNotifier
from raftdir.replication.secret import (
    check_raft_security,
    create_secret,
    derive_key,
    load_secret,
)
from raftdir.replication.tuning import RaftTuning

__all__ = [
    "RaftNode",
    "StateMachine",
    "LeadershipListener",
    "ApplyListener",
    "BARRIER_PREFIX",
    "apply_safely",
    "LocalNode",
    "PySyncObjNode",
    "RaftTuning",
    "RevisionNotifier",
    "create_secret",
    "load_secret",
    "derive_key",
    "check_raft_security",
]


def __getattr__(name: str) -> Any:
    if name == "PySyncObjNode":
        from raftdir.replication.pysyncobj_node import PySyncObjNode
        return PySyncObjNode
    raise AttributeError(name)
