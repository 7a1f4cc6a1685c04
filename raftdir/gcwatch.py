"""Garbage-collection pauses: how long each of Python's collections stopped this process.

Owns: ``GcWatch``, which times every collection through ``gc.callbacks``, feeds the
``raftdir_gc_pause_seconds`` histogram (by generation) and warns, at most once a minute,
when one pause was long enough to matter to Raft: a collection holds the GIL, so the tick
thread sends no heartbeat while it runs, and a leader silent for longer than the minimum
election timeout can lose its lease and its followers.

Called from whatever thread triggers a collection (the callback only does arithmetic and,
rarely, logs). Imports prometheus-client and nothing of raftdir.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

__all__ = ["GcWatch", "PAUSE_BUCKETS"]

log = logging.getLogger(__name__)

PAUSE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
_WARN_EVERY_SECS = 60.0


class GcWatch:
    """``warn_over``: seconds of one pause worth a warning (the minimum election timeout).
    ``install()`` / ``uninstall()``; the constructor touches nothing."""

    def __init__(self, registry: CollectorRegistry, *, warn_over: float) -> None:
        self.warn_over = warn_over
        self.longest = 0.0
        self._started: float | None = None
        self._warned_at = -_WARN_EVERY_SECS
        self._fork_hook = False
        self._pauses = Histogram(
            "raftdir_gc_pause_seconds", "How long one garbage collection stopped this "
            "process, by generation (no heartbeat leaves meanwhile).", ["generation"],
            buckets=PAUSE_BUCKETS, registry=registry)

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
            if not self._fork_hook:
                # a forked child (a snapshot writer) is another process: its pauses are
                # not this server's
                os.register_at_fork(after_in_child=self.uninstall)
                self._fork_hook = True

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        now = time.monotonic()
        if phase == "start":
            self._started = now
            return
        started, self._started = self._started, None
        if started is None:
            return
        pause = now - started
        self._pauses.labels(str(info.get("generation", "?"))).observe(pause)
        self.longest = max(self.longest, pause)
        if pause > self.warn_over and now - self._warned_at >= _WARN_EVERY_SECS:
            self._warned_at = now
            log.warning("a garbage collection (generation %s, %s objects collected) stopped "
                        "this process for %.0f ms, longer than the election timeout's %.0f "
                        "ms: followers may have elected meanwhile; said at most once a "
                        "minute", info.get("generation"), info.get("collected"),
                        pause * 1000, self.warn_over * 1000)
