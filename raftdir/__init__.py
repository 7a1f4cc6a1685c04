"""raftdir: a Raft-replicated cluster membership directory.

Worker leases with adaptive TTLs, worker profiles and a log of assignment revisions, kept
identical on every control-plane peer by Raft (PySyncObj). The wire and config types match
ZLayer's ``zlayer-types`` cluster module.

The public names are listed in ``__all__``; everything else is internal.
"""

from .codec import (
    from_dict, from_json, from_msgpack, loads_json, loads_msgpack, to_dict, to_json,
    to_msgpack,
)
from .config import load_cluster_mode
from .errors import (
    BadRequest, ConfigError, Conflict, Forbidden, NodeNotReady, NoLeader, NotLeader,
    Overloaded, PayloadTooLarge, RaftdirError, Reregister, RequestTimeout, Stale,
    TimeoutOutcomeUnknown, TokenExhausted, TokenInvalid, Unauthorized, UnknownNode,
    UnknownService, UnknownToken, error_from_body,
)
from .model import (
    AdaptiveTtlConfig, ClusterContainerSummary, ClusterMode, DeleteEvent, DrainEvent,
    InternalScaleRequest, NodeServiceState, RaftMode, RaftPeer, ScaleAssignment, SetEvent,
    SingleNodeMode, StaticMode, StaticPeer, UndrainEvent, WorkerAssignmentEvent,
    WorkerContainerStatus,
    WorkerLease, WorkerPollRequest, WorkerPollResponse, WorkerProfile, WorkerRegisterRequest,
    WorkerRegisterResponse, WorkerResourceUsage, WorkerStatusAck, WorkerStatusReport,
    WorkerTierMode, WorkerTierRole, container_name,
)

__version__ = "0.1.0"

#: Names loaded on first use, so that ``import raftdir`` (and the pure core under it)
#: does not pull in aiohttp and the server side.
_LAZY = {
    "Daemon": ("raftdir.daemon", "Daemon"),
    "DaemonOptions": ("raftdir.daemon", "DaemonOptions"),
    "RaftdirClient": ("raftdir.api.client", "RaftdirClient"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'raftdir' has no attribute {name!r}")

encode = to_msgpack
decode = from_msgpack

__all__ = [
    # embedding
    "Daemon", "DaemonOptions", "RaftdirClient",
    # configuration
    "load_cluster_mode", "ClusterMode", "SingleNodeMode", "RaftMode", "StaticMode",
    "WorkerTierMode", "WorkerTierRole", "RaftPeer", "StaticPeer", "AdaptiveTtlConfig",
    # wire types
    "WorkerProfile", "WorkerLease", "WorkerRegisterRequest", "WorkerRegisterResponse",
    "WorkerPollRequest", "WorkerPollResponse", "WorkerAssignmentEvent", "SetEvent",
    "DeleteEvent", "DrainEvent", "UndrainEvent", "WorkerStatusReport", "WorkerContainerStatus",
    "WorkerResourceUsage", "WorkerStatusAck", "InternalScaleRequest", "ScaleAssignment",
    "NodeServiceState", "ClusterContainerSummary", "container_name",
    # codec
    "encode", "decode", "to_dict", "from_dict", "to_msgpack", "from_msgpack", "to_json",
    "from_json", "loads_msgpack", "loads_json",
    # errors
    "RaftdirError", "BadRequest", "ConfigError", "PayloadTooLarge", "Unauthorized",
    "TokenInvalid", "Forbidden", "TokenExhausted", "UnknownNode", "UnknownService",
    "UnknownToken",
    "Conflict", "NodeNotReady", "Stale", "Reregister", "NotLeader", "NoLeader",
    "TimeoutOutcomeUnknown", "RequestTimeout", "Overloaded", "error_from_body",
    "__version__",
]
