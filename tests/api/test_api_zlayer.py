"""ZLayer's node-local forms of ``/api/v1/internal/scale`` and
``/api/v1/internal/services/{service}/state``, with requests shaped as ZLayer's daemons send
them (crates/zlayer-scheduler/src/cluster.rs: reqwest ``.json(req)`` with
``X-ZLayer-Internal-Token``, no ``Authorization``), beside raftdir's own forms."""

from __future__ import annotations

import json

import aiohttp

from fakes import ADMIN, JSON, FakeControlPlane, call, serving
from raftdir.cluster import StaticCluster, StaticControlPlane
from raftdir.codec import from_dict
from raftdir.model import (
    ClusterContainerSummary, InternalScaleRequest, NodeServiceState, StaticMode, StaticPeer,
)

SCALE = "/api/v1/internal/scale"
STATE = "/api/v1/internal/services/web/state"
ZLAYER = {"X-ZLayer-Internal-Token": ADMIN}
# serde_json's compact form of InternalScaleRequest::new("web", 3), and of a Phase-2 order
LEGACY = b'{"service":"web","replicas":3}'
PHASE2 = (b'{"service":"db","replicas":3,"assignments":[{"role":"primary","indices":[0]},'
          b'{"role":"read","indices":[1,2]}]}')


def static_peer() -> tuple[StaticControlPlane, list[InternalScaleRequest]]:
    orders: list[InternalScaleRequest] = []
    view = NodeServiceState(node_id=1, running=1, healthy=True, containers=(
        ClusterContainerSummary(node_id=1, id="web-0", service="web", replica=0,
                                image="nginx:1", state="running", pid=42, overlay_ip=None),
        ClusterContainerSummary(node_id=1, id="web-1", service="web", replica=1,
                                image="nginx:1", state="initializing", pid=None,
                                overlay_ip=None)))
    mode = StaticMode(node_id=1, peers=(StaticPeer(id=1, api_addr="127.0.0.1:1"),))
    cluster = StaticCluster(mode, admin_token=ADMIN, deliver=orders.append,
                            local_view=lambda service: view)
    return StaticControlPlane(cluster, ADMIN), orders


async def test_a_static_peer_takes_zlayers_node_local_scale_order():
    cp, orders = static_peer()
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        for raw, expected in ((LEGACY, ["web-default-0", "web-default-1", "web-default-2"]),
                              (PHASE2, ["db-primary-0", "db-read-1", "db-read-2"])):
            st, out, ctype = await call(s, "POST", api.url + SCALE, raw=raw,
                                        headers={**ZLAYER, "Content-Type": JSON})
            assert st == 200 and ctype == JSON, out
            # ZLayer's InternalScaleResponse (crates/zlayer-types/src/api/internal.rs)
            body = json.loads(raw)
            assert out == {"success": True, "service": body["service"], "replicas": 3}
            assert orders[-1].container_names() == expected
        # ZLayer's receiver refuses more than 100 replicas, naming nothing; we name the field
        st, out, _ = await call(s, "POST", api.url + SCALE, raw=b'{"service":"w","replicas":101}',
                                headers={**ZLAYER, "Content-Type": JSON})
        assert st == 400 and out["field"] == "replicas", out
        # a wrong token is refused before anything is delivered
        st, out, _ = await call(s, "POST", api.url + SCALE, raw=LEGACY,
                                headers={"X-ZLayer-Internal-Token": "nope",
                                         "Content-Type": JSON})
        assert st == 401 and out["code"] == "unauthorized"
        assert len(orders) == 2
        # raftdir's own form of the same path: the split, with the admin token as Bearer
        st, out, _ = await call(s, "POST", api.url + SCALE, raw=LEGACY,
                                headers={"Authorization": f"Bearer {ADMIN}",
                                         "Content-Type": JSON})
        assert st == 200 and out == {"service": "web", "nodes": [
            {"node_id": 1, "request": {"service": "web", "replicas": 3}}]}


async def test_a_static_peer_answers_zlayers_per_node_state_read():
    cp, _ = static_peer()
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        st, out, _ = await call(s, "GET", api.url + STATE, headers=ZLAYER)
        assert st == 200, out
        # what ZLayer's leader parses: one NodeServiceState, this node's own view
        state = from_dict(NodeServiceState, out)
        assert (state.node_id, state.running, state.healthy) == (1, 1, True)
        assert [c.state for c in state.containers] == ["running", "initializing"]
        assert out["containers"][1]["pid"] is None                  # written as null
        st, out, _ = await call(s, "GET", api.url + STATE,
                                headers={"X-ZLayer-Internal-Token": "nope"})
        assert st == 401
        # raftdir's form (no header): the total, with this node among `nodes`
        st, out, _ = await call(s, "GET", api.url + STATE)
        assert st == 200 and set(out) == {"service", "running", "healthy", "nodes", "unknown"}


async def test_a_directory_server_refuses_zlayers_node_local_forms_naming_the_header():
    cp = FakeControlPlane()
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        for method, path, raw in (("POST", SCALE, LEGACY), ("GET", STATE, None)):
            st, out, _ = await call(s, method, api.url + path, raw=raw,
                                    headers={**ZLAYER, "Content-Type": JSON})
            assert st == 409 and out["code"] == "conflict", out
            assert out["field"] == "X-ZLayer-Internal-Token"
            assert "Authorization: Bearer" in out["message"]
        assert not [c for c in cp.calls if c[0] == "scale"]
        # the token is still checked first
        st, out, _ = await call(s, "POST", api.url + SCALE, raw=LEGACY,
                                headers={"X-ZLayer-Internal-Token": "nope",
                                         "Content-Type": JSON})
        assert st == 401


async def test_the_zlayer_header_carries_the_admin_token_on_raftdirs_routes():
    cp = FakeControlPlane()
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        st, out, _ = await call(s, "POST", api.url + "/api/v1/cluster/scale",
                                raw=LEGACY, headers={**ZLAYER, "Content-Type": JSON})
        assert st == 200 and out["service"] == "web", out
        st, out, _ = await call(s, "POST", api.url + "/api/v1/cluster/tokens",
                                {"valid_for_secs": 60, "max_uses": 1}, headers=ZLAYER)
        assert st == 200, out
        st, out, _ = await call(s, "POST", api.url + "/api/v1/cluster/tokens",
                                {"valid_for_secs": 60, "max_uses": 1},
                                headers={"X-ZLayer-Internal-Token": "nope"})
        assert st == 401
