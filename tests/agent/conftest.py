"""Every async test of this directory has a hard deadline (tests/conftest.py runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

#: No agent test may take longer than this (real seconds).
TEST_DEADLINE = 20.0

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.async_deadline(TEST_DEADLINE))
