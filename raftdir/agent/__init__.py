"""The worker agent of a worker tier: register, report, poll, back off, fail over.

``WorkerAgent`` is what a ``worker-tier`` worker runs (the daemon builds it with
``WorkerAgent.from_config``); ``AgentState`` is its connection state; ``WorkerCluster`` is
the ``Cluster`` a worker's host sees; ``Identity`` and ``load_identity`` /
``store_identity`` are the identity file; ``AgentLock`` / ``lock_holder`` the one-agent
lock (``agent.lock``); ``read_status`` the status file the agent keeps
(``status.json``). Must not import the server side.
"""

from .agent import DEFAULT_API_ADDR, AgentState, WorkerAgent, loopback_warning, report_interval
from .cluster import WorkerCluster
from .identity import IDENTITY_FILE, Identity, default_identity_dir, load_identity, store_identity
from .lock import LOCK_FILE, AgentLock, lock_holder
from .profile import detect_profile
from .status import STATUS_FILE, read_status

__all__ = ["WorkerAgent", "AgentState", "WorkerCluster", "Identity", "IDENTITY_FILE",
           "load_identity", "store_identity", "default_identity_dir", "detect_profile",
           "report_interval", "DEFAULT_API_ADDR", "loopback_warning", "AgentLock",
           "LOCK_FILE", "lock_holder", "STATUS_FILE", "read_status"]
