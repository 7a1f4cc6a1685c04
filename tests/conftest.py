"""Run ``async def`` tests with ``asyncio.run`` (no plugin needed). A test marked
``async_deadline(SECONDS)`` is cancelled after that many real seconds (tests/agent marks
all of its tests)."""

from __future__ import annotations

import asyncio
import inspect

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "async_deadline(seconds): cancel an async test "
                                       "after this many real seconds")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    args = {name: pyfuncitem.funcargs[name]
            for name in pyfuncitem._fixtureinfo.argnames}
    coro = pyfuncitem.obj(**args)
    deadline = pyfuncitem.get_closest_marker("async_deadline")
    asyncio.run(asyncio.wait_for(coro, deadline.args[0]) if deadline else coro)
    return True
