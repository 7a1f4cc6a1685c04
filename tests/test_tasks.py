"""raftdir.tasks: work that outlives a caller who stopped waiting leaves no "Task exception
was never retrieved" behind, and is logged once at debug level instead."""

from __future__ import annotations

import asyncio
import gc
import logging

from raftdir.errors import NotLeader, TimeoutOutcomeUnknown
from raftdir.tasks import finish_even_if_cancelled


async def _fails_later(gate: asyncio.Event, exc: Exception) -> None:
    await gate.wait()
    raise exc


def _run_with_unretrieved_check(body) -> list[dict]:
    """Run ``body()`` on a fresh loop; what asyncio's exception handler saw."""
    seen: list[dict] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: seen.append(ctx))
        await body()
        gc.collect()          # a task whose exception nobody retrieved reports it here
        await asyncio.sleep(0)
    asyncio.run(main())
    gc.collect()
    return seen


def test_a_write_whose_caller_left_runs_to_its_end_and_its_error_is_logged_at_debug(caplog):
    done: list[str] = []

    async def body() -> None:
        gate = asyncio.Event()

        async def write() -> None:
            await gate.wait()
            done.append("written")
            raise TimeoutOutcomeUnknown("propose: outcome unknown")

        caller = asyncio.ensure_future(finish_even_if_cancelled(write(), "status request"))
        await asyncio.sleep(0)
        caller.cancel()                      # the HTTP client went away
        await asyncio.sleep(0)
        gate.set()
        for _ in range(5):
            await asyncio.sleep(0)

    with caplog.at_level(logging.DEBUG, logger="raftdir.tasks"):
        seen = _run_with_unretrieved_check(body)
    assert done == ["written"]
    assert seen == []
    logged = [r for r in caplog.records if "after its caller left" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.DEBUG
    assert "status request" in logged[0].getMessage()


def test_the_plain_shield_leaves_the_exception_unretrieved():
    # why finish_even_if_cancelled exists: the same sequence through asyncio.shield
    async def body() -> None:
        gate = asyncio.Event()
        caller = asyncio.ensure_future(asyncio.shield(_fails_later(gate, NotLeader("x"))))
        await asyncio.sleep(0)
        caller.cancel()
        await asyncio.sleep(0)
        gate.set()
        for _ in range(5):
            await asyncio.sleep(0)

    seen = _run_with_unretrieved_check(body)
    assert any("never retrieved" in ctx.get("message", "") for ctx in seen)


def test_a_caller_that_waits_gets_the_outcome_and_a_shared_task_serves_several():
    async def body() -> None:
        gate = asyncio.Event()
        shared = asyncio.ensure_future(_fails_later(gate, NotLeader("lost")))
        waiting = asyncio.ensure_future(finish_even_if_cancelled(shared, "barrier"))
        leaving = asyncio.ensure_future(finish_even_if_cancelled(shared, "barrier"))
        await asyncio.sleep(0)
        leaving.cancel()
        gate.set()
        try:
            await waiting
        except NotLeader as exc:
            assert str(exc) == "lost"
        else:
            raise AssertionError("the waiting caller must get the error")

    assert _run_with_unretrieved_check(body) == []
