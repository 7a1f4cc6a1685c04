"""Fixtures of the CLI tests: a live single-node server per module."""

from __future__ import annotations

from typing import Iterator

import pytest

from cli_harness import LiveServer


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    server = LiveServer().start()
    try:
        yield server
    finally:
        server.stop()
