"""The cluster-wide view of one service, from the nodes' latest reports (directory.md §8).

Owns: turning status reports (soft state on the leader) into ``NodeServiceState`` per node
and the cluster totals. Pure; any thread. Imports ``raftdir.model`` only.

A node that holds a share of the service but has not reported since this leader took over
is listed under ``unknown``, not counted as zero running. ``healthy`` of a node is true when
it runs none of the service's containers, otherwise when none of that service's containers
there is ``degraded`` or ``failed`` (status reports carry no finer health signal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from ..model import ClusterContainerSummary, NodeServiceState, WorkerStatusReport

__all__ = ["ServiceView", "node_service_state", "service_view"]

_UNHEALTHY = frozenset({"degraded", "failed"})


@dataclass(frozen=True)
class ServiceView:
    service: str
    nodes: tuple[NodeServiceState, ...]
    unknown: tuple[int, ...]  # nodes with a share and no report since the leader changed

    @property
    def running(self) -> int:
        return sum(n.running for n in self.nodes)

    @property
    def healthy(self) -> bool:
        return all(n.healthy for n in self.nodes) and not self.unknown

    @property
    def containers(self) -> list[ClusterContainerSummary]:
        return [c for n in self.nodes for c in n.containers]

    def to_dict(self) -> dict:
        from ..codec import to_dict
        return {"service": self.service, "running": self.running, "healthy": self.healthy,
                "nodes": [to_dict(n) for n in self.nodes], "unknown": list(self.unknown)}


def node_service_state(service: str, report: WorkerStatusReport) -> NodeServiceState:
    mine = [c for c in report.containers if c.service == service]
    running = sum(1 for c in mine if c.state == "running")
    healthy = running == 0 or not any(c.state in _UNHEALTHY for c in mine)
    summaries = tuple(
        ClusterContainerSummary(node_id=report.node_id, id=c.name, service=c.service,
                                replica=c.replica, image="", state=c.state, pid=None,
                                overlay_ip=c.overlay_ip)
        for c in mine)
    return NodeServiceState(node_id=report.node_id, running=running, healthy=healthy,
                            containers=summaries)


def service_view(service: str, reports: Mapping[int, WorkerStatusReport],
                 holders: Iterable[int]) -> ServiceView:
    """``reports``: the latest report of each node since this leader took over;
    ``holders``: the nodes the directory places the service on."""
    holders = set(holders)
    reporting = sorted(n for n, r in reports.items()
                       if n in holders or any(c.service == service for c in r.containers))
    return ServiceView(service,
                       tuple(node_service_state(service, reports[n]) for n in reporting),
                       tuple(sorted(holders - set(reports))))
