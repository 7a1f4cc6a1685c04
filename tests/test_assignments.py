"""AssignmentSet: events in order, full resyncs, never backwards."""

from raftdir import (
    DeleteEvent, DrainEvent, ScaleAssignment, SetEvent, UndrainEvent, WorkerPollResponse,
)
from raftdir.assignments import AssignmentSet


def set_ev(service, indices, rev, role="default"):
    return SetEvent(service=service, assignments=(ScaleAssignment(role=role,
                                                                  indices=tuple(indices)),),
                    revision=rev)


def test_events_apply_in_order_and_deletes_remove():
    s = AssignmentSet()
    ch = s.apply(WorkerPollResponse(revision=2, events=(set_ev("web", [0, 1], 1),
                                                        set_ev("db", [0], 2))))
    assert [e.service for e in ch.set] == ["web", "db"] and s.revision == 2
    ch = s.apply(WorkerPollResponse(revision=4, events=(DeleteEvent(service="db",
                                                                    revision=4),)))
    assert ch.deleted == ("db",) and list(s.services) == ["web"]
    assert s.containers() == ["web-default-0", "web-default-1"]


def test_full_resync_replaces_everything_and_reports_what_stopped():
    s = AssignmentSet()
    s.apply(WorkerPollResponse(revision=2, events=(set_ev("web", [0], 1),
                                                   set_ev("db", [0], 2))))
    ch = s.apply(WorkerPollResponse(revision=9, full=True,
                                    events=(set_ev("web", [3], 7), DrainEvent(revision=8))))
    assert ch.full and ch.deleted == ("db",) and s.draining
    assert s.containers() == ["web-default-3"] and s.revision == 9
    ch = s.apply(WorkerPollResponse(revision=10, full=True))
    assert s.services == {} and ch.deleted == ("web",) and not s.draining


def test_a_lagging_answer_and_replayed_events_change_nothing():
    s = AssignmentSet()
    s.apply(WorkerPollResponse(revision=5, events=(set_ev("web", [0], 5),)))
    assert s.apply(WorkerPollResponse(revision=3)).empty and s.revision == 5
    ch = s.apply(WorkerPollResponse(revision=6, events=(set_ev("web", [9], 5),
                                                        set_ev("web", [1], 6))))
    assert [e.revision for e in ch.set] == [6]
    assert s.containers() == ["web-default-1"]


def test_an_undone_drain_is_reported_once_and_ends_draining():
    s = AssignmentSet()
    ch = s.apply(WorkerPollResponse(revision=3, events=(DrainEvent(revision=3),)))
    assert ch.drained and s.draining
    ch = s.apply(WorkerPollResponse(revision=4, events=(UndrainEvent(revision=4),)))
    assert ch.undrained and not ch.drained and not ch.empty and not s.draining
    ch = s.apply(WorkerPollResponse(revision=5, events=(UndrainEvent(revision=5),)))
    assert not ch.undrained and ch.empty     # it was not draining: nothing changed
