"""``RevisionNotifier``: asyncio code parks until the directory's revision passes a value.

Owns: the waiters of long-polls. ``wait_above(rev, timeout)`` runs on ONE event loop (the
first one that waits binds the notifier); ``notify(rev)`` may be called from any thread,
typically PySyncObj's tick thread through an apply listener. ``notify`` does O(1) work and at
most one ``loop.call_soon_threadsafe`` per burst of revisions (wake-ups are coalesced);
the loop then resolves only the waiters whose target the new revision has passed.

Waiters are bucketed by the revision they wait above (a dict of sets plus a heap of bucket
keys), so a wake-up costs O(woken + log buckets) and a cancelled or timed-out waiter is
removed in O(1): nothing leaks.

Must not import: ``raftdir.api``, ``raftdir.agent``, ``raftdir.cli``, PySyncObj.
"""

from __future__ import annotations

import asyncio
import heapq
import threading

__all__ = ["RevisionNotifier"]


class RevisionNotifier:
    def __init__(self, revision: int = 0, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._lock = threading.Lock()
        self._rev = revision          # latest revision told by notify() (any thread)
        self._loop = loop
        self._wake_pending = False
        # loop-thread only:
        self._buckets: dict[int, set[asyncio.Future[None]]] = {}
        self._heap: list[int] = []

    @property
    def revision(self) -> int:
        return self._rev

    @property
    def waiting(self) -> int:
        """How many waiters are parked (loop thread)."""
        return sum(len(b) for b in self._buckets.values())

    # any thread ---------------------------------------------------------------------
    def notify(self, revision: int) -> None:
        """Record that the state reached ``revision`` and wake the waiters below it.
        Safe from any thread; lower or equal revisions are ignored."""
        with self._lock:
            if revision <= self._rev:
                return
            self._rev = revision
            loop = self._loop
            if loop is None or self._wake_pending:
                return
            self._wake_pending = True
        try:
            loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # loop closed: nobody is waiting any more
            with self._lock:
                self._wake_pending = False

    # loop thread ---------------------------------------------------------------------
    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
            rev = self._rev
        heap, buckets = self._heap, self._buckets
        while heap and heap[0] < rev:
            key = heapq.heappop(heap)
            for fut in buckets.pop(key, ()):
                if not fut.done():
                    fut.set_result(None)

    async def wait_above(self, revision: int, timeout: float) -> int:
        """Return once the revision is above ``revision`` or ``timeout`` seconds passed;
        the value returned is the current revision (``<= revision`` on timeout)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is None:
                self._loop = loop
            elif self._loop is not loop:
                raise RuntimeError("RevisionNotifier is bound to another event loop")
            if self._rev > revision:
                return self._rev
        if timeout <= 0:
            return self._rev
        fut: asyncio.Future[None] = loop.create_future()
        bucket = self._buckets.get(revision)
        if bucket is None:
            bucket = self._buckets[revision] = set()
            heapq.heappush(self._heap, revision)
        bucket.add(fut)
        # A notify() that raced in between the check above and the registration has
        # already scheduled (or will schedule) _wake, which will see this waiter.
        if self._rev > revision:
            fut.set_result(None)
        handle = loop.call_later(timeout, _expire, fut)
        try:
            await fut
        finally:
            handle.cancel()
            if not fut.done():
                fut.cancel()
            b = self._buckets.get(revision)
            if b is not None:
                b.discard(fut)
                if not b:
                    del self._buckets[revision]
                    self._compact_heap()
        return self._rev

    def _compact_heap(self) -> None:
        # Keys of emptied buckets stay in the heap (lazy deletion); rebuild it when they
        # dominate so a stream of timed-out waiters at distinct revisions cannot grow it.
        if len(self._heap) > 2 * len(self._buckets) + 64:
            self._heap = list(self._buckets)
            heapq.heapify(self._heap)


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
