"""docs/api.md lists every endpoint with every error code its route can answer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from raftdir.api.server import ALL_ROUTES

ALL = ALL_ROUTES

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
    body = " ".join(found[0].split())   # a line break is a space in markdown
    for error in route.errors:
        assert f"{error.status} {error.code}" in body, (route.name, error.code)
    assert "500 internal" in body
    if route.body is not None or "{" in route.path:
        assert "400 bad_request" in body
    if route.auth == "node":
        assert "401 unauthorized" in body
    if route.auth in ("read", "operate", "admin"):
        assert "401 unauthorized" in body and "403 forbidden" in body


def test_the_endpoint_table_lists_every_route_with_its_scope():
    text = DOC.read_text()
    table = text.split("## Endpoints", 1)[1].split("\n### ", 1)[0]
    for route in ALL:
        row = next((line for line in table.splitlines()
                    if f"| `{route.path}` |" in line and route.method in line), None)
        assert row is not None, route.path
        assert row.split("|")[3].strip().startswith(route.auth), (route.path, row)
    assert "| GET | `/metrics` | read |" in table


# ---------------------------------------------------------------- standing alone (issue 15)

import dataclasses  # noqa: E402

from raftdir.model import (  # noqa: E402
    ClusterContainerSummary, DeleteEvent, DrainEvent, InternalScaleRequest, NodeServiceState,
    ScaleAssignment, SetEvent, UndrainEvent, WorkerContainerStatus, WorkerLease,
    WorkerPollRequest,
    WorkerPollResponse, WorkerProfile, WorkerRegisterRequest, WorkerRegisterResponse,
    WorkerResourceUsage, WorkerStatusAck, WorkerStatusReport,
)

#: Every record a route takes or answers, by the heading of its section.
RECORDS = {
    "WorkerProfile": (WorkerProfile,), "WorkerRegisterRequest": (WorkerRegisterRequest,),
    "WorkerRegisterResponse": (WorkerRegisterResponse,),
    "WorkerPollRequest": (WorkerPollRequest,), "WorkerPollResponse": (WorkerPollResponse,),
    "WorkerAssignmentEvent": (SetEvent, DeleteEvent, DrainEvent, UndrainEvent),
    "ScaleAssignment": (ScaleAssignment,), "WorkerStatusReport": (WorkerStatusReport,),
    "WorkerContainerStatus": (WorkerContainerStatus,),
    "WorkerResourceUsage": (WorkerResourceUsage,), "WorkerStatusAck": (WorkerStatusAck,),
    "InternalScaleRequest": (InternalScaleRequest,), "NodeServiceState": (NodeServiceState,),
    "ClusterContainerSummary": (ClusterContainerSummary,), "WorkerLease": (WorkerLease,),
}


def record_sections() -> dict[str, str]:
    parts = re.split(r"^#### ", DOC.read_text(), flags=re.M)[1:]
    return {p.split()[0]: p.split("\n### ")[0].split("\n## ")[0] for p in parts}


def test_the_page_points_at_nothing_outside_docs():
    text = DOC.read_text()
    for name in ("wire-types", "directory.md", "../", "shared/design", "style.md",
                 "pysyncobj.md", "anchors.md", "§"):
        assert name not in text, name


@pytest.mark.parametrize("heading", sorted(RECORDS))
def test_every_record_is_described_field_by_field(heading):
    section = record_sections().get(heading)
    assert section, f"no section '#### {heading}' in docs/api.md"
    for cls in RECORDS[heading]:
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in section, (heading, cls.__name__, f.name)


@pytest.mark.parametrize("route", ALL, ids=[r.name for r in ALL])
def test_every_route_says_its_auth(route):
    found = [body for head, body in sections().items() if head.endswith(" " + route.path)
             and route.method in head.split(" ")[0:3]]
    assert f"Auth: {route.auth}" in " ".join(found[0].split()), route.name


def test_the_poll_defaults_and_what_a_client_must_know_are_written_down():
    text = " ".join(DOC.read_text().split())
    for phrase in ("`last_revision` defaults to 0 and `max_wait_secs` to 30",
                   "`last_revision` 0 asks for the complete set",
                   "it is omitted when empty", "above 2^53", "BigInt",
                   "`behind: true`", "at most 60 s", "Undoing a change"):
        assert phrase in text, phrase
