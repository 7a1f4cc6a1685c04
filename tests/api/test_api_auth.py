"""Node auth answers (issue 15, finding 8): whatever a secret fails to prove (a wrong secret,
another node's secret, a node id that does not exist or no longer does), the answer is the
same 401, so no secret holder learns which node ids exist; through the leader and a
follower, on real servers."""

from __future__ import annotations

import aiohttp
import pytest

from fakes import call
from real_pair import real_pair


def _request(route: str, node_id: int) -> tuple[str, dict]:
    if route == "poll":
        return "/api/v1/workers/poll", {"node_id": node_id, "max_wait_secs": 0}
    return "/api/v1/workers/status", {"node_id": node_id, "ts_ns": 1, "resources": {
        "cpu_used": 0.0, "memory_used_bytes": 0, "gpu_used": 0}}


@pytest.mark.parametrize("via", ["leader", "follower"])
@pytest.mark.parametrize("route", ["poll", "status"])
async def test_a_refused_secret_gets_one_answer_whatever_the_node_id(via, route):
    async with real_pair() as pair, aiohttp.ClientSession() as s:
        a, secret_a = await pair.register()
        b, _ = await pair.register()
        gone, secret_gone = await pair.register()
        await pair.leader.deregister(gone, None)
        url = pair.url(via)

        async def ask(node_id: int, secret: str | None) -> tuple[int, dict]:
            path, body = _request(route, node_id)
            headers = {"Authorization": f"Bearer {secret}"} if secret else {}
            st, out, _ = await call(s, "POST", url + path, body, headers=headers)
            return st, out

        st, out = await ask(a, secret_a)
        assert st == 200, out
        refusals = {
            "another node's id with my secret": await ask(b, secret_a),
            "an unknown id with my secret": await ask(4242, secret_a),
            "a removed id with my secret": await ask(gone, secret_a),
            "an existing id with a wrong secret": await ask(b, "wrong"),
            "an unknown id with a wrong secret": await ask(4242, "wrong"),
            "a removed node with its own old secret": await ask(gone, secret_gone),
        }
        shapes = set()
        for what, (st, out) in refusals.items():
            assert (st, out["code"]) == (401, "unauthorized"), (what, out)
            shapes.add((out.get("field"), out["message"].replace(str(out_id(out)), "N")))
        assert len(shapes) == 1, shapes
        st, out = await ask(a, None)
        assert (st, out["code"]) == (401, "unauthorized")


def out_id(out: dict) -> int:
    import re
    return int(re.search(r"node (\d+)", out["message"]).group(1))
