"""Followers forward writes to the leader; loops are refused; forwarding off answers 421."""

from __future__ import annotations

import aiohttp
import pytest

from fakes import (
    ADMIN, GOOD_TOKEN, JSON, MSGPACK, PROFILE, FakeControlPlane, call, closed_port, metric,
    parse_raw_response, raw_exchange, serving,
)

REGISTER = {"token": GOOD_TOKEN, "profile": PROFILE.to_dict()}
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}


@pytest.mark.parametrize("fmt", [MSGPACK, JSON])
async def test_a_follower_forwards_writes_to_the_leader(fmt):
    leader_cp = FakeControlPlane(1)
    async with serving(leader_cp) as leader, aiohttp.ClientSession() as s:
        follower_cp = FakeControlPlane(2, leader=False, leader_url=leader.url)
        async with serving(follower_cp) as follower:
            u = follower.url
            st, out, ctype = await call(s, "POST", u + "/api/v1/workers/register", REGISTER,
                                        fmt=fmt, headers={"X-Request-Id": "fw-1"})
            assert (st, ctype) == (200, fmt), out
            assert out["node_id"] in leader_cp.nodes and not follower_cp.nodes
            assert ("register", "fw-1") in leader_cp.calls  # the request id travels
            nid, secret = out["node_id"], out["internal_token"]
            follower_cp.add_node(nid, secret)  # the follower has applied it
            auth = {"Authorization": f"Bearer {secret}"}

            st, out, _ = await call(s, "POST", u + "/api/v1/workers/status",
                                    {"node_id": nid, "ts_ns": 1, "resources": {
                                        "cpu_used": 0, "memory_used_bytes": 0, "gpu_used": 0}},
                                    fmt=fmt, headers=auth)
            assert st == 200 and "report" in leader_cp.nodes[nid]
            # ZLayer's header is forwarded as well
            zl = {"X-ZLayer-Internal-Token": secret}
            st, out, _ = await call(s, "POST", u + "/api/v1/workers/status",
                                    {"node_id": nid, "ts_ns": 2, "resources": {
                                        "cpu_used": 0, "memory_used_bytes": 0, "gpu_used": 0}},
                                    fmt=fmt, headers=zl)
            assert st == 200 and leader_cp.nodes[nid]["report"].ts_ns == 2

            st, out, _ = await call(s, "POST", u + "/api/v1/internal/scale",
                                    {"service": "web", "replicas": 2}, fmt=fmt, headers=ADMIN_H)
            assert st == 200 and out["nodes"][0]["node_id"] == nid
            st, out, _ = await call(s, "GET", u + "/api/v1/internal/services/web/state")
            assert st == 200 and out["running"] == 2
            st, out, _ = await call(s, "POST", u + "/api/v1/cluster/tokens",
                                    {"valid_for_secs": 9, "max_uses": 1}, fmt=fmt,
                                    headers=ADMIN_H)
            assert st == 200 and ("create_token", (9, 1)) in leader_cp.calls
            st, _, _ = await call(s, "POST", f"{u}/api/v1/workers/{nid}/drain", headers=ADMIN_H)
            assert st == 200 and leader_cp.nodes[nid]["state"] == "draining"
            st, _, _ = await call(s, "DELETE", f"{u}/api/v1/workers/{nid}", headers=ADMIN_H)
            assert st == 200 and nid not in leader_cp.nodes

            # errors come back from the leader as they are
            st, out, _ = await call(s, "POST", u + "/api/v1/workers/register",
                                    {**REGISTER, "token": "forged"}, fmt=fmt)
            assert (st, out["code"]) == (401, "token_invalid")
            # the admin token is checked on the follower before forwarding
            st, out, _ = await call(s, "POST", u + "/api/v1/cluster/tokens",
                                    {"valid_for_secs": 9, "max_uses": 1}, fmt=fmt)
            assert (st, out["code"]) == (401, "unauthorized")

            metrics = (await call(s, "GET", u + "/metrics"))[1]
            assert metric(metrics, "raftdir_api_forwarded_total",
                          route="/api/v1/workers/register", outcome="ok") == 2


async def test_polls_are_answered_locally_not_forwarded():
    async with aiohttp.ClientSession() as s:
        leader_cp = FakeControlPlane(1)
        async with serving(leader_cp) as leader:
            follower_cp = FakeControlPlane(2, leader=False, leader_url=leader.url)
            nid, secret = follower_cp.add_node()
            await follower_cp.advance([nid])
            async with serving(follower_cp) as follower:
                st, out, _ = await call(s, "POST", follower.url + "/api/v1/workers/poll",
                                        {"node_id": nid, "last_revision": 0,
                                         "max_wait_secs": 0},
                                        headers={"Authorization": f"Bearer {secret}"})
                assert st == 200 and out["revision"] == 1 and len(out["events"]) == 1
                assert not [c for c in leader_cp.calls if c[0] == "poll"]


async def test_a_forwarding_loop_is_refused_with_421():
    async with aiohttp.ClientSession() as s:
        a_cp = FakeControlPlane(1, leader=False)
        b_cp = FakeControlPlane(2, leader=False)
        async with serving(a_cp) as a, serving(b_cp) as b:
            a_cp.leader_url, b_cp.leader_url = b.url, a.url  # each thinks the other leads
            st, out, _ = await call(s, "POST", a.url + "/api/v1/workers/register", REGISTER)
            assert (st, out["code"], out["leader"]) == (421, "not_leader", a.url)
            assert [c[0] for c in a_cp.calls].count("register") == 1
            assert [c[0] for c in b_cp.calls].count("register") == 1
            # a request already marked as forwarded is never forwarded again
            st, out, _ = await call(s, "POST", a.url + "/api/v1/workers/register", REGISTER,
                                    headers={"X-Raftdir-Forwarded": "1"})
            assert (st, out["leader"]) == (421, b.url)
            assert [c[0] for c in b_cp.calls].count("register") == 1


async def test_forwarding_off_answers_421_with_the_leader():
    cp = FakeControlPlane(2, leader=False, leader_url="http://127.0.0.1:7201")
    async with serving(cp, forward=False) as api, aiohttp.ClientSession() as s:
        for method, path, body in [
                ("POST", "/api/v1/workers/register", REGISTER),
                ("POST", "/api/v1/internal/scale", {"service": "a", "replicas": 1}),
                ("POST", "/api/v1/cluster/tokens", {"valid_for_secs": 1, "max_uses": 1}),
                ("POST", "/api/v1/workers/5/drain", None),
                ("DELETE", "/api/v1/workers/5", None)]:
            st, out, _ = await call(s, method, api.url + path, body, headers=ADMIN_H)
            assert (st, out["code"], out["leader"]) == (421, "not_leader",
                                                        "http://127.0.0.1:7201"), path


async def test_no_leader_is_503_and_a_dead_leader_gives_421_with_its_address():
    cp = FakeControlPlane(2, leader=False, leader_url=None)
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        st, out, _ = await call(s, "POST", api.url + "/api/v1/workers/register", REGISTER)
        assert (st, out["code"]) == (503, "no_leader")
        dead = f"http://127.0.0.1:{closed_port()}"
        cp.leader_url = dead
        st, out, _ = await call(s, "POST", api.url + "/api/v1/workers/register", REGISTER)
        assert (st, out["code"], out["leader"]) == (421, "not_leader", dead)
        assert "forwarding to the leader" in out["message"]
        metrics = (await call(s, "GET", api.url + "/metrics"))[1]
        assert metric(metrics, "raftdir_api_forwarded_total", outcome="failed") == 1


async def test_a_leader_that_does_not_answer_in_time_gives_504():
    import asyncio

    leader_cp = FakeControlPlane(1)
    stuck = asyncio.Event()

    async def slow_register(req, request_id, secret=None):
        await stuck.wait()

    leader_cp.register = slow_register
    async with serving(leader_cp) as leader, aiohttp.ClientSession() as s:
        cp = FakeControlPlane(2, leader=False, leader_url=leader.url)
        async with serving(cp, forward_timeout=0.2) as api:
            st, out, _ = await call(s, "POST", api.url + "/api/v1/workers/register", REGISTER,
                                    headers={"X-Request-Id": "slow-1"})
            assert (st, out["code"]) == (504, "timeout_outcome_unknown")
            stuck.set()


async def test_a_consistent_read_a_follower_cannot_barrier_goes_to_the_leader():
    async with aiohttp.ClientSession() as s:
        leader_cp = FakeControlPlane(1)
        leader_cp.add_node(1_000_000)
        async with serving(leader_cp) as leader:
            follower_cp = FakeControlPlane(2, leader=False, leader_url=leader.url)
            follower_cp.leaderless_barrier_fails = True
            async with serving(follower_cp) as follower:
                url = follower.url + "/api/v1/cluster/workers"
                st, out, _ = await call(s, "GET", url + "?consistent=1")
                assert st == 200 and [w["node_id"] for w in out] == [1_000_000]
                assert leader_cp.barriers == 1
                st, out, _ = await call(s, "GET", url)  # a plain read stays local
                assert st == 200 and out == []
            async with serving(follower_cp, forward=False) as follower:
                st, out, _ = await call(s, "GET", follower.url + "/api/v1/cluster/peers"
                                        "?consistent=1")
                assert (st, out["code"], out["leader"]) == (421, "not_leader", leader.url)


# ---------------------------------------------------------------- direct vs forwarded
# Issue 15, finding 7: a forwarded request is answered exactly as the leader answers it
# directly. Two leaders in the same state: one is asked directly, the other through a
# follower; the status, the content type and the body must be the same.

async def _twin_leader() -> FakeControlPlane:
    from raftdir.model import InternalScaleRequest
    cp = FakeControlPlane(1)
    cp.add_node(1_000_000, "s-1")
    for service in ("web", "..", "a/b", "%2e%2e"):
        await cp.scale(InternalScaleRequest.legacy(service, 1), None)
    return cp


_REG_JSON = (b'{"token": "join-ok", "profile": {"api_addr": "10.0.0.5:3669", "os": "linux", '
             b'"arch": "x86_64"}}')
_ADMIN = f"Bearer {ADMIN}"
_DUP = object()   # marker: send the header twice (first value, then the second)
SAME_ANSWER_CASES = [
    # no Content-Type: read as JSON by the leader, so also through a follower
    ("POST", "/api/v1/workers/register", {"X-Request-Id": "r-1"}, _REG_JSON, False),
    ("POST", "/api/v1/workers/register", {}, b'{"token": "forged", "profile": {}}', False),
    # raw paths that a client library would rewrite: '..', '%2F', '%2e%2e' in a segment
    ("GET", "/api/v1/internal/services/../state", {}, b"", False),
    ("GET", "/api/v1/internal/services/../containers?consistent=0", {}, b"", False),
    ("GET", "/api/v1/internal/services/a%2Fb/state", {}, b"", False),
    ("GET", "/api/v1/internal/services/%2e%2e/state", {}, b"", False),
    ("GET", "/api/v1/internal/services/%252e%252e/state", {}, b"", False),
    ("GET", "/api/v1/internal/services/nosuch/state", {}, b"", False),
    # negotiation: Accept with q values, a +json type, no Accept with a msgpack body
    ("GET", "/api/v1/internal/services/web/state",
     {"Accept": "application/json;q=0.5, application/msgpack"}, b"", False),
    ("POST", "/api/v1/internal/scale",
     {"Authorization": _ADMIN, "Content-Type": "application/vnd.raftdir+json",
      "X-Request-Id": "s-1"}, b'{"service": "web", "replicas": 1}', False),
    ("POST", "/api/v1/internal/scale",
     {"Authorization": _ADMIN, "Content-Type": "application/msgpack", "X-Request-Id": "s-2"},
     b"\x82\xa7service\xa3api\xa8replicas\x01", False),
    # a chunked body, and the query string kept byte for byte
    ("POST", "/api/v1/internal/scale?x=%2F&x=2",
     {"Authorization": _ADMIN, "X-Request-Id": "s-3"}, b'{"service": "web", "replicas": 1}',
     True),
    # the same header twice: both copies travel
    ("POST", "/api/v1/internal/scale",
     {"Authorization": _ADMIN, "X-Request-Id": "s-4", "Accept": (_DUP, "application/json",
                                                                 "application/msgpack")},
     b'{"service": "web", "replicas": 1}', False),
]


def _raw(method, target, headers, body, chunked) -> bytes:
    flat = []
    for name, value in headers.items():
        if isinstance(value, tuple) and value and value[0] is _DUP:
            flat += [(name, v) for v in value[1:]]
        else:
            flat.append((name, value))
    lines = [f"{method} {target} HTTP/1.1", "Host: raftdir", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in flat]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7])
                           for i in range(0, len(body), 7)) + b"0\r\n\r\n"
    else:
        if body or method in ("POST", "DELETE"):
            lines.append(f"Content-Length: {len(body)}")
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


@pytest.mark.parametrize("method,target,headers,body,chunked", SAME_ANSWER_CASES,
                         ids=[f"{i}-{c[0]}-{c[1][:40]}" for i, c in
                              enumerate(SAME_ANSWER_CASES)])
async def test_a_forwarded_request_is_answered_as_the_leader_answers_it(method, target,
                                                                       headers, body,
                                                                       chunked):
    direct_cp, behind_cp = await _twin_leader(), await _twin_leader()
    async with serving(direct_cp) as direct, serving(behind_cp) as leader:
        follower_cp = FakeControlPlane(2, leader=False, leader_url=leader.url)
        async with serving(follower_cp) as follower:
            request = _raw(method, target, headers, body, chunked)
            answers = []
            for api in (direct, follower):
                status, hdrs, payload = parse_raw_response(
                    await raw_exchange(api.port, request))
                answers.append((status, hdrs.get("content-type"), payload))
            assert answers[0] == answers[1]
            # and it was forwarded, not answered by the follower itself
            assert leader_cp_saw(behind_cp, direct_cp)


def leader_cp_saw(behind: FakeControlPlane, direct: FakeControlPlane) -> bool:
    """The leader behind the follower got the same control-plane calls as the one asked
    directly (what it was asked, with the same arguments and request ids)."""
    return behind.calls == direct.calls
