"""docs/api.md lists every endpoint with every error code its route can answer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from raftdir.api.server import BACKUP_ROUTE, DIGEST_ROUTE, MEMBERSHIP_ROUTES, ROUTES

ALL = ROUTES + MEMBERSHIP_ROUTES + (BACKUP_ROUTE, DIGEST_ROUTE)

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def sections() -> dict[str, str]:
    text = DOC.read_text()
    parts = re.split(r"^### ", text, flags=re.M)[1:]
    return {p.splitlines()[0]: p for p in parts}


@pytest.mark.parametrize("route", ALL, ids=[r.name for r in ALL])
def test_every_route_is_documented_with_its_errors(route):
    found = [body for head, body in sections().items() if head.endswith(" " + route.path)
             and route.method in head.split(" ")[0:3]]
    assert found, f"no section '### {route.method} {route.path}' in docs/api.md"
    body = found[0]
    for error in route.errors:
        assert f"{error.status} {error.code}" in body, (route.name, error.code)
    assert "500 internal" in body
    if route.body is not None or "{" in route.path:
        assert "400 bad_request" in body
    if route.auth == "node":
        assert "401 unauthorized" in body


def test_the_endpoint_table_lists_every_route_and_metrics():
    text = DOC.read_text()
    for route in ALL:
        assert f"`{route.path}`" in text, route.path
    assert "`/metrics`" in text
