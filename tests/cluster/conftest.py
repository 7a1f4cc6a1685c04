"""Fixtures of the multi-process cluster tests: one three-peer cluster per module (short
heartbeats, so failovers are quick) and the CLI environment that reaches it."""

from __future__ import annotations

from typing import Iterator

import pytest

from cluster_harness import running_cluster
from raftdir.auth import admin_token
from raftdir.testing import LocalCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster"), heartbeat_min_ttl=4,
                         heartbeat_grace=6) as c:
        yield c


@pytest.fixture(scope="module")
def env(cluster: LocalCluster) -> dict[str, str]:
    return {"RAFTDIR_SERVER": ",".join(cluster.endpoints),
            "RAFTDIR_ADMIN_TOKEN": admin_token(cluster.secret)}
