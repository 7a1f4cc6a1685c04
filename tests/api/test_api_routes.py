"""Every route's success path (msgpack and JSON) and every error code it can answer."""

from __future__ import annotations

import aiohttp
import pytest

from fakes import (
    ADMIN, GOOD_TOKEN, JSON, MSGPACK, PROFILE, USED_UP_TOKEN, FakeControlPlane, call,
    serving,
)
from raftdir.api.server import MEMBERSHIP_ROUTES, ROUTES
from raftdir.errors import BadRequest, NotLeader, RaftdirError

STATUS_BODY = {
    "node_id": 0, "ts_ns": 2**62 + 5,
    "containers": [{"service": "web", "role": "default", "replica": 0, "state": "running",
                    "overlay_ip": "10.200.0.7"}],
    "resources": {"cpu_used": 0.5, "memory_used_bytes": 1 << 20, "gpu_used": 0},
}

#: route name -> the fake's method the route calls
CP_METHOD = {
    "register": "register", "poll": "poll", "status": "report", "scale": "scale",
    "distribute_scale": "scale",   # the fake distributes through its scale()
    "service_state": "service_state", "service_containers": "service_containers",
    "peers": "peer_status", "workers": "workers", "leases": "leases", "drain": "drain",
    "undrain": "undrain",
    "deregister": "deregister", "create_token": "create_token", "health": None,
    "add_peer": "add_peer", "remove_peer": "remove_peer",
}
ALL_ROUTES = ROUTES + MEMBERSHIP_ROUTES


def admin() -> dict:
    return {"Authorization": f"Bearer {ADMIN}"}


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def valid_request(route_name: str, cp: FakeControlPlane, base: str):
    """(method, url, body, headers) of a request that succeeds on a fresh leader fake."""
    nid, secret = cp.add_node()
    cp.services.setdefault("web", {})
    return {
        "register": ("POST", "/api/v1/workers/register",
                     {"token": GOOD_TOKEN, "profile": PROFILE.to_dict()}, {}),
        "poll": ("POST", "/api/v1/workers/poll",
                 {"node_id": nid, "last_revision": 0, "max_wait_secs": 0}, bearer(secret)),
        "status": ("POST", "/api/v1/workers/status", {**STATUS_BODY, "node_id": nid},
                   bearer(secret)),
        "scale": ("POST", "/api/v1/internal/scale", {"service": "web", "replicas": 2},
                  admin()),
        "distribute_scale": ("POST", "/api/v1/cluster/scale",
                             {"service": "web", "replicas": 2}, admin()),
        "service_state": ("GET", "/api/v1/internal/services/web/state", None, {}),
        "service_containers": ("GET", "/api/v1/internal/services/web/containers", None, {}),
        "peers": ("GET", "/api/v1/cluster/peers", None, {}),
        "workers": ("GET", "/api/v1/cluster/workers", None, {}),
        "leases": ("GET", "/api/v1/cluster/leases", None, {}),
        "drain": ("POST", f"/api/v1/workers/{nid}/drain", None, admin()),
        "undrain": ("DELETE", f"/api/v1/workers/{nid}/drain", None, admin()),
        "deregister": ("DELETE", f"/api/v1/workers/{nid}", None, admin()),
        "create_token": ("POST", "/api/v1/cluster/tokens",
                         {"valid_for_secs": 3600, "max_uses": 2}, admin()),
        "health": ("GET", "/health", None, {}),
        "add_peer": ("POST", "/api/v1/cluster/peers",
                     {"id": 4, "raft_addr": "127.0.0.1:9004", "api_addr": "127.0.0.1:3674"},
                     admin()),
        "remove_peer": ("DELETE", "/api/v1/cluster/peers",
                        {"id": 4, "raft_addr": "127.0.0.1:9004"}, admin()),
    }[route_name]


def test_the_route_table_covers_every_route_once():
    assert sorted(r.name for r in ALL_ROUTES) == sorted(CP_METHOD)


@pytest.mark.parametrize("fmt", [MSGPACK, JSON])
async def test_every_endpoint_succeeds(fmt):
    cp = FakeControlPlane(servers=["http://127.0.0.1:1", "http://127.0.0.1:2"])
    async with serving(cp, forward=False) as api, aiohttp.ClientSession() as s:
        u = api.url

        async def ok(method, path, body=None, headers=None):
            status, out, ctype = await call(s, method, u + path, body, fmt=fmt,
                                            headers=headers, accept=fmt)
            assert (status, ctype) == (200, fmt), (path, status, out)
            return out

        reg = await ok("POST", "/api/v1/workers/register",
                       {"token": GOOD_TOKEN, "desired_node_id": 1_000_042,
                        "profile": PROFILE.to_dict()}, {"X-Request-Id": "r-1"})
        assert reg["node_id"] == 1_000_042 and reg["cluster_id"] == "c-test"
        assert reg["servers"] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
        assert ("register", "r-1") in cp.calls
        nid, secret = reg["node_id"], reg["internal_token"]

        ack = await ok("POST", "/api/v1/workers/status", {**STATUS_BODY, "node_id": nid},
                       bearer(secret))
        assert ack == {"next_ttl_secs": 10, "servers": reg["servers"],
                       "leader": "http://127.0.0.1:1"}
        assert cp.nodes[nid]["report"].ts_ns == 2**62 + 5  # > 2^53 stays an integer

        poll = await ok("POST", "/api/v1/workers/poll",
                        {"node_id": nid, "last_revision": 0, "max_wait_secs": 0},
                        bearer(secret))
        assert poll == {"revision": 0, "full": True}

        scale = await ok("POST", "/api/v1/internal/scale",
                         {"service": "web", "replicas": 3, "spec": {"image": "nginx"}}, admin())
        assert scale["service"] == "web"
        assert scale["nodes"] == [{"node_id": nid, "request": {
            "service": "web", "replicas": 3,
            "assignments": [{"role": "default", "indices": [0, 1, 2]}],
            "spec": {"image": "nginx"}}}]

        state = await ok("GET", "/api/v1/internal/services/web/state")
        assert state["running"] == 3 and state["nodes"][0]["node_id"] == nid
        assert state["nodes"][0]["containers"] == []
        containers = await ok("GET", "/api/v1/internal/services/web/containers")
        assert [c["id"] for c in containers] == ["web-default-0", "web-default-1",
                                                 "web-default-2"]
        assert containers[0]["pid"] is None  # optional, null: always written
        peers = await ok("GET", "/api/v1/cluster/peers")
        assert peers["self"] == 1 and peers["is_leader"] is True
        workers = await ok("GET", "/api/v1/cluster/workers?consistent=1")
        assert [w["node_id"] for w in workers] == [nid] and cp.barriers == 1
        leases = await ok("GET", "/api/v1/cluster/leases")
        assert leases[0]["node_id"] == nid and leases[0]["ttl_left_secs"] == 12.5
        assert leases[0]["profile"]["api_addr"] == "10.0.0.5:3669"

        drained = await ok("POST", f"/api/v1/workers/{nid}/drain", None, admin())
        assert drained["state"] == "draining"
        token = await ok("POST", "/api/v1/cluster/tokens",
                         {"valid_for_secs": 60, "max_uses": 0}, admin())
        assert token["max_uses"] == 0 and token["token"] == GOOD_TOKEN
        gone = await ok("DELETE", f"/api/v1/workers/{nid}", None, admin())
        assert gone == {"node_id": nid, "removed": True}

        health = await ok("GET", "/health")
        assert health == {"ok": True, "node_id": 1, "is_leader": True, "leader": None}
        async with s.head(u + "/health") as resp:
            assert resp.status == 200 and await resp.read() == b""


async def test_answer_format_follows_accept_then_the_request():
    cp = FakeControlPlane()
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        body = {"valid_for_secs": 60, "max_uses": 1}
        url = api.url + "/api/v1/cluster/tokens"
        assert (await call(s, "POST", url, body, fmt=JSON, headers=admin(),
                           accept=MSGPACK))[2] == MSGPACK
        assert (await call(s, "POST", url, body, fmt=MSGPACK, headers=admin()))[2] == MSGPACK
        assert (await call(s, "POST", url, body, fmt=MSGPACK, headers=admin(),
                           accept="*/*"))[2] == MSGPACK
        assert (await call(s, "POST", url, body, fmt=MSGPACK, headers=admin(),
                           accept="application/json;q=0.5, application/msgpack"))[2] == MSGPACK
        assert (await call(s, "GET", api.url + "/health"))[2] == JSON
        # an error is answered in the negotiated format too
        status, out, ctype = await call(s, "POST", url, body, fmt=MSGPACK)
        assert (status, out["code"], ctype) == (401, "unauthorized", MSGPACK)


ERROR_CASES = [(r.name, e) for r in ALL_ROUTES for e in r.errors]


@pytest.mark.parametrize("route_name,error", ERROR_CASES,
                         ids=[f"{r}-{e.code}" for r, e in ERROR_CASES])
@pytest.mark.parametrize("fmt", [MSGPACK, JSON])
async def test_every_error_a_route_can_answer_has_its_status_and_body(route_name, error, fmt):
    cp = FakeControlPlane()
    async with serving(cp, forward=False) as api, aiohttp.ClientSession() as s:
        method, path, body, headers = valid_request(route_name, cp, api.url)
        extra = {"leader": "http://127.0.0.1:9"} if error is NotLeader else {}
        cp.inject(CP_METHOD[route_name], error(f"injected {error.code}", field="x", **extra))
        status, out, ctype = await call(s, method, api.url + path, body, fmt=fmt,
                                        headers=headers, accept=fmt)
        assert status == error.status
        assert ctype == fmt
        expected = {"code": error.code, "message": f"injected {error.code}", "field": "x"}
        assert out == {**expected, **extra}
        # and the same request succeeds once the error is gone
        status, _, _ = await call(s, method, api.url + path, body, fmt=fmt, headers=headers)
        assert status == 200


async def test_fake_driven_errors_come_from_real_checks():
    cp = FakeControlPlane()
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        u = api.url
        reg = "/api/v1/workers/register"
        st, out, _ = await call(s, "POST", u + reg, {"token": "nope",
                                                     "profile": PROFILE.to_dict()})
        assert (st, out["code"], out["field"]) == (401, "token_invalid", "token")
        st, out, _ = await call(s, "POST", u + reg, {"token": USED_UP_TOKEN,
                                                     "profile": PROFILE.to_dict()})
        assert (st, out["code"]) == (403, "token_exhausted")
        st, out, _ = await call(s, "POST", u + "/api/v1/workers/4242/drain", headers=admin())
        assert (st, out["code"]) == (404, "unknown_node")
        st, out, _ = await call(s, "GET", u + "/api/v1/internal/services/nope/state")
        assert (st, out["code"]) == (404, "unknown_service")


@pytest.mark.parametrize("route_name", ["poll", "status"])
async def test_node_routes_need_the_node_secret(route_name):
    cp = FakeControlPlane()
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        method, path, body, headers = valid_request(route_name, cp, api.url)
        other_id, other_secret = cp.add_node()
        url = api.url + path
        st, out, _ = await call(s, method, url, body)
        assert (st, out["code"]) == (401, "unauthorized")
        assert "missing node secret" in out["message"]
        st, out, _ = await call(s, method, url, body, headers={"Authorization": "Basic xyz"})
        assert (st, out["code"]) == (401, "unauthorized")
        st, out, _ = await call(s, method, url, body, headers=bearer("wrong"))
        assert (st, out["code"]) == (401, "unauthorized")
        # another node's secret, or a node that does not exist: the same 401
        st, out, _ = await call(s, method, url, body, headers=bearer(other_secret))
        assert (st, out["code"]) == (401, "unauthorized")
        st, out, _ = await call(s, method, url, {**body, "node_id": 77},
                                headers=headers)
        assert (st, out["code"]) == (401, "unauthorized")
        st, out, _ = await call(s, method, url, {**body, "node_id": 77},
                                headers=bearer("unknown-secret"))
        assert (st, out["code"]) == (401, "unauthorized")
        # ZLayer's header works as well as the bearer
        zl = {"X-ZLayer-Internal-Token": headers["Authorization"].split()[1]}
        st, out, _ = await call(s, method, url, body, headers=zl)
        assert st == 200, out
        st, _, _ = await call(s, method, url, body, headers=headers)
        assert st == 200


@pytest.mark.parametrize("route_name", ["scale", "drain", "deregister", "create_token"])
async def test_admin_routes_need_the_admin_token(route_name):
    cp = FakeControlPlane()
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        method, path, body, _ = valid_request(route_name, cp, api.url)
        for headers in ({}, bearer("not-admin"), {"Authorization": ADMIN}):
            st, out, _ = await call(s, method, api.url + path, body, headers=headers)
            assert (st, out["code"]) == (401, "unauthorized"), headers
        assert not any(m in ("scale", "drain", "deregister", "create_token")
                       for m, _ in cp.calls)


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", str(2**64), "0x10", "%20"])
@pytest.mark.parametrize("method,suffix", [("POST", "/drain"), ("DELETE", "")])
async def test_a_node_id_in_the_path_must_be_a_u64(bad, method, suffix):
    cp = FakeControlPlane()
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        st, out, _ = await call(s, method, f"{api.url}/api/v1/workers/{bad}{suffix}",
                                headers=admin())
        assert (st, out["code"], out["field"]) == (400, "bad_request", "id")
        st, out, _ = await call(s, method, f"{api.url}/api/v1/workers/{2**64 - 1}{suffix}",
                                headers=admin())
        assert (st, out["code"]) == (404, "unknown_node")


@pytest.mark.parametrize("body,field", [
    ({"valid_for_secs": 0, "max_uses": 1}, "valid_for_secs"),
    ({"valid_for_secs": -5, "max_uses": 1}, "valid_for_secs"),
    ({"valid_for_secs": "60", "max_uses": 1}, "valid_for_secs"),
    ({"valid_for_secs": 60.0, "max_uses": 1}, "valid_for_secs"),
    ({"valid_for_secs": 60}, "max_uses"),
    ({"valid_for_secs": 60, "max_uses": 2**32}, "max_uses"),
    ({"valid_for_secs": 60, "max_uses": True}, "max_uses"),
    ({"valid_for_secs": 60, "max_uses": 1, "maxuses": 1}, "maxuses"),
    ([60, 1], "body"),
])
async def test_token_request_is_checked_strictly(body, field):
    cp = FakeControlPlane()
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        st, out, _ = await call(s, "POST", api.url + "/api/v1/cluster/tokens", body,
                                headers=admin())
        assert (st, out["code"], out.get("field")) == (400, "bad_request", field)


async def test_drain_and_delete_take_no_body_but_accept_an_empty_map():
    cp = FakeControlPlane()
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        nid, _ = cp.add_node()
        url = f"{api.url}/api/v1/workers/{nid}/drain"
        st, out, _ = await call(s, "POST", url, {"force": True}, headers=admin())
        assert (st, out["field"]) == (400, "body")
        st, _, _ = await call(s, "POST", url, {}, headers=admin())
        assert st == 200


async def test_request_ids_and_consistent_reads():
    cp = FakeControlPlane()
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        body = {"token": GOOD_TOKEN, "profile": PROFILE.to_dict()}
        url = api.url + "/api/v1/workers/register"
        first = await call(s, "POST", url, body, headers={"X-Request-Id": "same"})
        again = await call(s, "POST", url, body, headers={"X-Request-Id": "same"})
        assert first[1] == again[1] and len(cp.nodes) == 1
        st, out, _ = await call(s, "POST", url, body, headers={"X-Request-Id": "bad id!"})
        assert (st, out["field"]) == (400, "X-Request-Id")
        for path in ("/api/v1/cluster/peers", "/api/v1/cluster/workers",
                     "/api/v1/cluster/leases", "/api/v1/internal/services/web/state"):
            cp.services["web"] = {}
            before = cp.barriers
            st, _, _ = await call(s, "GET", api.url + path + "?consistent=1")
            assert st == 200 and cp.barriers == before + 1
            st, _, _ = await call(s, "GET", api.url + path)
            assert st == 200 and cp.barriers == before + 1
        st, out, _ = await call(s, "GET", api.url + "/api/v1/cluster/peers?consistent=maybe")
        assert (st, out["field"]) == (400, "consistent")


async def test_unknown_paths_methods_and_bugs_are_answered_and_the_server_keeps_serving(
        caplog):
    cp = FakeControlPlane()
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        st, out, ctype = await call(s, "GET", api.url + "/api/v2/nothing")
        assert (st, ctype, out["code"]) == (404, JSON, "not_found")
        st, out, _ = await call(s, "GET", api.url + "/api/v1/workers/register")
        assert (st, out["code"]) == (405, "method_not_allowed")
        cp.inject("workers", ZeroDivisionError("a bug"))
        st, out, _ = await call(s, "GET", api.url + "/api/v1/cluster/workers")
        assert (st, out["code"]) == (500, "internal")
        assert "a bug" not in out["message"]  # no internals leak
        assert any(r.name == "raftdir.api" and r.exc_info and "a bug" in str(r.exc_info[1])
                   for r in caplog.records)  # but the log has them
        cp.inject("workers", RaftdirError("base error"))
        st, out, _ = await call(s, "GET", api.url + "/api/v1/cluster/workers")
        assert (st, out["code"]) == (500, "internal")
        st, _, _ = await call(s, "GET", api.url + "/api/v1/cluster/workers")
        assert st == 200


async def test_scale_rejections_from_the_control_plane_name_their_field():
    cp = FakeControlPlane()
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        cp.inject("scale", BadRequest("replicas: no ready node runs linux", field="replicas"))
        st, out, _ = await call(s, "POST", api.url + "/api/v1/internal/scale",
                                {"service": "web", "replicas": 1}, headers=admin())
        assert (st, out["field"]) == (400, "replicas")


@pytest.mark.parametrize("fmt", [MSGPACK, JSON])
async def test_an_answer_that_cannot_be_encoded_is_a_500_not_a_400(fmt):
    cp = FakeControlPlane()
    cp.workers = lambda: [{"node_id": 1, "odd": {1, 2}}]  # a set: a bug in the server
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        st, out, _ = await call(s, "GET", api.url + "/api/v1/cluster/workers", accept=fmt)
        assert (st, out["code"]) == (500, "internal")


@pytest.mark.parametrize("fmt", [MSGPACK, JSON])
async def test_peer_membership_changes(fmt):
    cp = FakeControlPlane()
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        url = api.url + "/api/v1/cluster/peers"
        add = {"id": 4, "raft_addr": "127.0.0.1:9004", "api_addr": "127.0.0.1:3674"}
        st, out, ctype = await call(s, "POST", url, add, fmt=fmt, headers=admin())
        assert (st, ctype, out["added"]) == (200, fmt, True)
        assert ("add_peer", (4, "127.0.0.1:9004", "127.0.0.1:3674")) in cp.calls
        st, out, _ = await call(s, "DELETE", url, {"id": 4, "raft_addr": "127.0.0.1:9004"},
                                fmt=fmt, headers=admin())
        assert (st, out["removed"]) == (200, True)
        st, out, _ = await call(s, "POST", url, {"id": 4, "raft_addr": "127.0.0.1:9004"},
                                fmt=fmt, headers=admin())
        assert (st, out["field"]) == (400, "api_addr")
        st, out, _ = await call(s, "POST", url, {**add, "raft_addr": "nowhere"}, fmt=fmt,
                                headers=admin())
        assert (st, out["field"]) == (400, "raft_addr")
        st, out, _ = await call(s, "POST", url, add, fmt=fmt)
        assert (st, out["code"]) == (401, "unauthorized")
        cp.add_peer = None  # a control plane without dynamic membership
        st, out, _ = await call(s, "POST", url, add, fmt=fmt, headers=admin())
        assert (st, out["code"]) == (409, "conflict")
