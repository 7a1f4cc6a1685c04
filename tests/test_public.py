"""The public surface: ``raftdir.__all__`` and the error tree."""

from __future__ import annotations

import pytest

import raftdir
from raftdir import errors, model

EXPECTED_PUBLIC = {
    "Daemon", "DaemonOptions", "RaftdirClient",
    "load_cluster_mode", "ClusterMode", "SingleNodeMode", "RaftMode", "StaticMode",
    "WorkerTierMode", "WorkerTierRole", "RaftPeer", "StaticPeer", "AdaptiveTtlConfig",
    "WorkerProfile", "WorkerLease", "WorkerRegisterRequest", "WorkerRegisterResponse",
    "WorkerPollRequest", "WorkerPollResponse", "WorkerAssignmentEvent", "SetEvent",
    "DeleteEvent", "DrainEvent", "WorkerStatusReport", "WorkerContainerStatus",
    "WorkerResourceUsage", "WorkerStatusAck", "InternalScaleRequest", "ScaleAssignment",
    "NodeServiceState", "ClusterContainerSummary", "container_name",
    "encode", "decode", "to_dict", "from_dict", "to_msgpack", "from_msgpack", "to_json",
    "from_json", "loads_msgpack", "loads_json",
    "RaftdirError", "BadRequest", "ConfigError", "PayloadTooLarge", "Unauthorized",
    "TokenInvalid", "Forbidden", "TokenExhausted", "UnknownNode", "UnknownService",
    "Conflict", "NodeNotReady", "Stale", "Reregister", "NotLeader", "NoLeader",
    "TimeoutOutcomeUnknown", "RequestTimeout", "Overloaded", "error_from_body",
    "__version__",
}


def test_all_lists_exactly_the_public_names():
    assert set(raftdir.__all__) >= EXPECTED_PUBLIC
    assert len(raftdir.__all__) == len(set(raftdir.__all__))
    for name in raftdir.__all__:
        assert hasattr(raftdir, name), name


def test_every_wire_type_is_public():
    for cls in model.WIRE_TYPES:
        assert getattr(raftdir, cls.__name__) is cls


def test_error_codes_are_unique_and_registered():
    classes = list(errors.ERRORS_BY_CODE.values())
    assert len({c.code for c in classes}) == len(classes)
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, errors.RaftdirError):
            assert errors.ERRORS_BY_CODE[obj.code] is obj
            assert obj.code in errors.__doc__, f"{obj.code} missing from the drawn tree"


@pytest.mark.parametrize("code,status", [
    ("not_leader", 421), ("no_leader", 503), ("unknown_node", 404), ("node_not_ready", 409),
    ("token_invalid", 401), ("token_exhausted", 403), ("unauthorized", 401),
    ("reregister", 410), ("bad_request", 400), ("timeout_outcome_unknown", 504),
    ("payload_too_large", 413), ("forbidden", 403), ("internal", 500),
    ("request_timeout", 408), ("overloaded", 503),
])
def test_directory_codes_have_their_http_status(code, status):
    assert errors.ERRORS_BY_CODE[code].status == status


def test_error_body_round_trip_keeps_class_field_and_leader():
    for cls in errors.ERRORS_BY_CODE.values():
        extra = {} if cls is errors.ConfigError else {"leader": "127.0.0.1:7201"}
        err = cls("it broke", field="peers[0].id", **extra)
        back = errors.error_from_body(err.to_body(), cls.status)
        assert type(back) is cls
        assert (back.message, back.field) == ("it broke", "peers[0].id")
        if cls is not errors.ConfigError:
            assert back.leader == "127.0.0.1:7201"


def test_unknown_code_and_garbage_body_become_the_base_error():
    assert type(errors.error_from_body({"code": "from_the_future", "message": "x"})) \
        is errors.RaftdirError
    assert type(errors.error_from_body("<html>bad gateway</html>", 502)) is errors.RaftdirError


def test_not_leader_body_carries_the_leader():
    body = errors.NotLeader("peer 2 does not lead", leader="127.0.0.1:7201").to_body()
    assert body == {"code": "not_leader", "message": "peer 2 does not lead",
                    "leader": "127.0.0.1:7201"}


def test_importing_raftdir_does_not_load_the_server_side():
    import subprocess
    import sys
    code = ("import sys, raftdir; print(sorted(m for m in ('aiohttp', 'pysyncobj', "
            "'raftdir.daemon', 'raftdir.server') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
    from raftdir.daemon import Daemon
    assert raftdir.Daemon is Daemon
