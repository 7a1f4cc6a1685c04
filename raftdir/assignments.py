"""A node's current assignment set, kept up to date from poll responses.

Owns: applying a ``WorkerPollResponse`` (events in order, or a ``full`` replacement) to the
set of services a node runs, and refusing to go backwards. Used by the worker agent and by
the daemon for its own node. Pure; the caller serialises calls. Imports ``raftdir.model``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import DeleteEvent, DrainEvent, SetEvent, UndrainEvent, WorkerPollResponse

__all__ = ["AssignmentSet", "Change"]


@dataclass(frozen=True)
class Change:
    """What one poll response changed: services set (with their new share), services
    deleted, whether a drain started or was undone, whether it was a full resync (which
    also ends a drain that the full set no longer carries)."""

    revision: int
    full: bool = False
    set: tuple[SetEvent, ...] = ()
    deleted: tuple[str, ...] = ()
    drained: bool = False
    undrained: bool = False

    @property
    def empty(self) -> bool:
        return not (self.full or self.set or self.deleted or self.drained or self.undrained)


@dataclass
class AssignmentSet:
    """``services``: service -> its latest ``set`` event (the share this node runs)."""

    revision: int = 0
    services: dict[str, SetEvent] = field(default_factory=dict)
    draining: bool = False

    def apply(self, resp: WorkerPollResponse) -> Change:
        """Apply one poll response. A response whose revision is below what was already
        applied changes nothing (a lagging server's answer), unless it is ``full`` (a
        ``behind`` answer is: this set's revision was not of the cluster's history, and
        the complete set replaces it); events at or below the applied revision are
        skipped, so a retried response is harmless."""
        if resp.revision < self.revision and not resp.full:
            return Change(self.revision)
        if resp.full:
            before = set(self.services)
            self.services = {}
            self.draining = False
        set_events: list[SetEvent] = []
        deleted: list[str] = []
        drained = undrained = False
        for ev in resp.events:
            if not resp.full and ev.revision <= self.revision:
                continue
            if isinstance(ev, SetEvent):
                self.services[ev.service] = ev
                set_events.append(ev)
            elif isinstance(ev, DeleteEvent):
                if self.services.pop(ev.service, None) is not None or resp.full:
                    deleted.append(ev.service)
            elif isinstance(ev, DrainEvent):
                drained = not self.draining
                self.draining = True
            elif isinstance(ev, UndrainEvent):
                undrained = self.draining
                self.draining = False
        if resp.full:
            deleted = sorted(before - set(self.services))
        self.revision = max(self.revision, resp.revision) if not resp.full else resp.revision
        return Change(self.revision, resp.full, tuple(set_events), tuple(deleted), drained,
                      undrained)

    def containers(self) -> list[str]:
        """Every container this node should run: ``{service}-{role}-{index}``."""
        return sorted(n for ev in self.services.values() for g in ev.assignments
                      for n in g.container_names(ev.service))
