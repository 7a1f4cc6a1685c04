"""Cutting one peer's Raft traffic from inside its own process: a partition as the Raft
layer sees it (every message this peer sends or receives is dropped for a while, the TCP
connections stay open), for tests and benchmarks that drive PySyncObj peers in-process.

Owns: ``cut_raft_traffic``. Called from any thread of the peer's process; the tick thread
sees the cut at its next message. Works on any PySyncObj ``SyncObj`` (raftdir's adapter or
a bare one). Imports nothing from raftdir; never used by raftdir itself (the nemesis cuts
real connections, ``raftdir.testing.proxy``).
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["cut_raft_traffic"]


def cut_raft_traffic(syncobj: Any, seconds: float) -> None:
    """Drop every Raft message ``syncobj`` sends or receives for ``seconds``."""
    transport = syncobj._SyncObj__transport
    until = time.monotonic() + seconds
    send, receive = transport.send, transport._onMessageReceivedCallback

    def cut_send(to: Any, message: Any) -> Any:
        return True if time.monotonic() < until else send(to, message)

    def cut_receive(sender: Any, message: Any) -> None:
        if time.monotonic() >= until:
            receive(sender, message)

    transport.send = cut_send
    transport._onMessageReceivedCallback = cut_receive
