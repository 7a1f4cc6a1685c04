"""Run ``async def`` tests of this directory with ``asyncio.run`` and a hard deadline."""

from __future__ import annotations

import asyncio
import inspect

import pytest

#: No agent test may take longer than this (real seconds).
TEST_DEADLINE = 20.0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    args = {name: pyfuncitem.funcargs[name]
            for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**args), TEST_DEADLINE))
    return True
