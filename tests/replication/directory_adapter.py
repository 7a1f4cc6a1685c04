"""The real ``raftdir.core.Directory`` for the multi-process replication tests: a factory
for ``peer_main.py`` and command builders for the test process."""

from __future__ import annotations

from raftdir.core import Bootstrap, Directory, RegisterNode, encode_command


def make_directory() -> Directory:
    return Directory()


def bootstrap(cluster_id: str = "test-cluster", ts_ms: int = 1_767_225_600_000) -> str:
    return encode_command(Bootstrap(cluster_id=cluster_id, ts_ms=ts_ms,
                                    request_id="bootstrap")).hex()


def register(i: int, ts_ms: int = 1_767_225_600_000) -> str:
    """Command bytes (hex) registering worker number ``i`` under request id ``reg-i``."""
    return encode_command(RegisterNode(
        request_id=f"reg-{i}", ts_ms=ts_ms + i,
        profile={"api_addr": f"127.0.0.1:{20000 + i}", "os": "linux", "arch": "x86_64"},
        ttl_secs=10, grace_secs=5, secret_hash=f"{i:032x}")).hex()
