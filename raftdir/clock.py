"""Clocks injected into everything that waits or stamps time.

Owns: the ``Clock`` protocol, the real clock and a manual clock for tests. Called from any
thread. Imports nothing from raftdir.

``wall_ms()`` is Unix time in milliseconds (stamped into commands by the proposer);
``monotonic()`` is seconds on a clock that never goes back (leases' deadlines on the leader).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock", "ManualClock"]


class Clock(Protocol):
    def wall_ms(self) -> int: ...
    def monotonic(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clocks of the machine."""

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told. ``sleep`` returns once ``advance`` has moved the
    clock past the sleeper's deadline; both clocks move together."""

    def __init__(self, wall_ms: int = 1_767_225_600_000, monotonic: float = 1000.0) -> None:
        self._wall_ms = wall_ms
        self._mono = monotonic
        self._lock = threading.Lock()
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def wall_ms(self) -> int:
        with self._lock:
            return self._wall_ms

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._sleepers.append((self._mono + max(0.0, seconds), fut))
        await fut

    def advance(self, seconds: float) -> None:
        """Move both clocks forward and wake every sleeper whose deadline has passed.
        Call it from the event loop's thread."""
        with self._lock:
            self._mono += seconds
            self._wall_ms += int(round(seconds * 1000))
            due = [f for d, f in self._sleepers if d <= self._mono]
            self._sleepers = [(d, f) for d, f in self._sleepers if d > self._mono]
        for fut in due:
            if not fut.done():
                fut.set_result(None)
