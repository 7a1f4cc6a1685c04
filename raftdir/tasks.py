"""Stopping background tasks: the one way every raftdir component ends its coroutines.

Owns: ``cancel_and_wait``. Runs on the caller's event loop; imports nothing from raftdir.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Iterable

__all__ = ["cancel_and_wait"]

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
