"""The worker agent of a worker tier: register, report, poll, back off, fail over.

``WorkerAgent`` is what a ``worker-tier`` worker runs (the daemon builds it with
``WorkerAgent.from_config``); ``AgentState`` is its connection state; ``WorkerCluster`` is
the ``Cluster`` a worker's host sees; ``Identity`` and ``load_identity`` /
``store_identity`` are the identity file. Must not import the server side.
"""

from .agent import DEFAULT_API_ADDR, AgentState, WorkerAgent, report_interval
from .cluster import WorkerCluster
from .identity import IDENTITY_FILE, Identity, default_identity_dir, load_identity, store_identity
from .profile import detect_profile

__all__ = ["WorkerAgent", "AgentState", "WorkerCluster", "Identity", "IDENTITY_FILE",
           "load_identity", "store_identity", "default_identity_dir", "detect_profile",
           "report_interval", "DEFAULT_API_ADDR"]
