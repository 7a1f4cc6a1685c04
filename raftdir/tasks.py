"""Background tasks: the one way every raftdir component ends its coroutines, and the one
way a piece of work outlives a caller that stopped waiting.

Owns: ``cancel_and_wait`` and ``finish_even_if_cancelled``. Runs on the caller's event
loop; imports nothing from raftdir.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Iterable, TypeVar

__all__ = ["cancel_and_wait", "finish_even_if_cancelled"]

T = TypeVar("T")

log = logging.getLogger(__name__)


async def cancel_and_wait(tasks: Iterable[asyncio.Future | None]) -> None:
    """Cancel every task, then wait for each to end. What a task raised while stopping is
    logged at debug level, never raised: the caller is stopping anyway."""
    pending = [t for t in tasks if t is not None]
    for task in pending:
        task.cancel()
    for task in pending:
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - stopping; the task's own failure is not ours
            log.debug("task %r ended with an error while stopping", task, exc_info=True)


async def finish_even_if_cancelled(work: Awaitable[T], what: str) -> T:
    """Await ``work`` (a coroutine or a task several callers share) and let it run to its
    end even when this caller is cancelled, e.g. a write whose HTTP client went away: a
    write is never abandoned half way. What it raises reaches the caller; once the caller
    is gone, its outcome is logged at debug level (once per caller that left), never
    left for asyncio's "Task exception was never retrieved".

    ``asyncio.shield`` alone is not enough for that: when the caller is cancelled first,
    it removes its own callback from the inner task, so the inner task's exception is
    never retrieved."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.cancelled():   # the caller left; the work goes on
            task.add_done_callback(lambda t: _log_outcome(t, what))
        raise


def _log_outcome(task: "asyncio.Future[Any]", what: str) -> None:
    if task.cancelled():
        log.debug("%s: cancelled after its caller left", what)
        return
    exc = task.exception()   # retrieved: asyncio will not report it
    if exc is None:
        log.debug("%s: done after its caller left", what)
    else:
        log.debug("%s: failed after its caller left: %s", what, exc)
