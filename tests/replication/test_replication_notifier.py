"""RevisionNotifier: many parked waiters, cross-thread notify, timeouts, no leaks."""

from __future__ import annotations

import asyncio
import threading
import time

from raftdir.replication import RevisionNotifier


def test_returns_at_once_when_already_above():
    async def main():
        n = RevisionNotifier(5)
        assert await n.wait_above(4, timeout=10) == 5

    asyncio.run(main())


def test_timeout_returns_current_revision_and_leaves_no_waiter():
    async def main():
        n = RevisionNotifier(3)
        t0 = time.monotonic()
        assert await n.wait_above(3, timeout=0.05) == 3
        assert 0.04 <= time.monotonic() - t0 < 2
        assert n.waiting == 0 and n._buckets == {}

    asyncio.run(main())


def test_ten_thousand_waiters_woken_by_one_notify_from_another_thread():
    count = 10_000

    async def main():
        n = RevisionNotifier(0)
        tasks = [asyncio.create_task(n.wait_above(0, timeout=30)) for _ in range(count)]
        await asyncio.sleep(0)  # let every task park
        for _ in range(100):
            if n.waiting == count:
                break
            await asyncio.sleep(0.01)
        assert n.waiting == count
        t0 = time.monotonic()
        threading.Thread(target=n.notify, args=(1,)).start()
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        elapsed = time.monotonic() - t0
        assert results == [1] * count
        assert n.waiting == 0
        return elapsed

    elapsed = asyncio.run(main())
    assert elapsed < 5, elapsed


def test_only_waiters_below_the_new_revision_are_woken():
    async def main():
        n = RevisionNotifier(0)
        low = asyncio.create_task(n.wait_above(0, timeout=10))
        high = asyncio.create_task(n.wait_above(5, timeout=10))
        await asyncio.sleep(0.01)
        n.notify(3)
        assert await asyncio.wait_for(low, 5) == 3
        await asyncio.sleep(0.01)
        assert not high.done()
        n.notify(2)  # lower revisions are ignored
        assert n.revision == 3
        await asyncio.to_thread(n.notify, 6)
        assert await asyncio.wait_for(high, 5) == 6

    asyncio.run(main())


def test_cancelled_and_timed_out_waiters_do_not_leak():
    async def main():
        n = RevisionNotifier(0)
        tasks = [asyncio.create_task(n.wait_above(i % 50, timeout=30)) for i in range(2000)]
        await asyncio.sleep(0.01)
        assert n.waiting == 2000
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert n.waiting == 0 and n._buckets == {}
        # timeouts at many distinct revisions: the heap of bucket keys stays bounded
        await asyncio.gather(*(n.wait_above(100 + i, timeout=0.01) for i in range(1000)))
        assert n._buckets == {} and len(n._heap) <= 64

    asyncio.run(main())


def test_notify_burst_from_a_thread_is_coalesced_and_ends_at_the_last_revision():
    async def main():
        n = RevisionNotifier(0)
        waiter = asyncio.create_task(n.wait_above(999, timeout=10))
        await asyncio.sleep(0.01)

        def burst():
            for r in range(1, 1001):
                n.notify(r)

        await asyncio.to_thread(burst)
        assert await asyncio.wait_for(waiter, 5) == 1000

    asyncio.run(main())


def test_notify_before_any_loop_is_remembered_and_closed_loop_is_harmless():
    n = RevisionNotifier(0)
    n.notify(7)

    async def main():
        assert await n.wait_above(6, timeout=1) == 7
        await n.wait_above(7, timeout=0.01)

    asyncio.run(main())  # the loop is closed afterwards
    n.notify(8)  # must not raise
    assert n.revision == 8
