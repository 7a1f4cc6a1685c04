"""Node ids (issue 15, finding 4): one spelling in every route (and in the CLI, see
tests/cli/test_cli_admin.py), and drain refuses a server node as docs/api.md says; both
through the leader and through a follower, on real servers."""

from __future__ import annotations

import aiohttp
import pytest

from fakes import call
from real_pair import ADMIN_H, real_pair

VIAS = ["leader", "follower"]


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("spelling", ["01", "001", "+1", "1_0", "%201", "%EF%BC%91", "1.0",
                                      "18446744073709551616"])
async def test_a_node_id_other_than_plain_decimal_is_400_in_every_route(via, spelling):
    async with real_pair() as pair, aiohttp.ClientSession() as s:
        nid, _ = await pair.register()
        u = pair.url(via)
        for method, path in (("POST", f"/api/v1/workers/{spelling}/drain"),
                             ("DELETE", f"/api/v1/workers/{spelling}")):
            st, out, _ = await call(s, method, u + path, headers=ADMIN_H)
            assert (st, out["code"], out["field"]) == (400, "bad_request", "id"), (path, out)
        assert pair.node(1)["state"] == "ready" and pair.node(nid)["state"] == "ready"


@pytest.mark.parametrize("via", VIAS)
async def test_plain_decimal_ids_reach_the_control_plane(via):
    async with real_pair() as pair, aiohttp.ClientSession() as s:
        u = pair.url(via)
        for method, path in (("POST", "/api/v1/workers/0/drain"),
                             ("DELETE", "/api/v1/workers/18446744073709551615")):
            st, out, _ = await call(s, method, u + path, headers=ADMIN_H)
            assert (st, out["code"]) == (404, "unknown_node"), (path, out)


@pytest.mark.parametrize("via", VIAS)
async def test_drain_refuses_a_server_node_and_drains_a_worker(via):
    async with real_pair() as pair, aiohttp.ClientSession() as s:
        nid, _ = await pair.register()
        u = pair.url(via)
        for server_id in (1, 2):
            st, out, _ = await call(s, "POST", f"{u}/api/v1/workers/{server_id}/drain",
                                    headers=ADMIN_H)
            assert (st, out["code"], out["field"]) == (400, "bad_request", "id"), out
            assert "server" in out["message"] and "peers remove" in out["message"]
            st, out, _ = await call(s, "DELETE", f"{u}/api/v1/workers/{server_id}",
                                    headers=ADMIN_H)
            assert (st, out["code"], out["field"]) == (400, "bad_request", "id"), out
            node = pair.node(server_id)
            assert (node["kind"], node["state"], node.get("draining", False)) == (
                "server", "ready", False), node
        st, out, _ = await call(s, "POST", f"{u}/api/v1/workers/{nid}/drain", headers=ADMIN_H)
        assert st == 200 and out["state"] == "draining", out
