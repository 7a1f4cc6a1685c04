"""Parked long-polls: woken by a new revision, cancelled by a disconnect, a thousand at once;
and /metrics as Prometheus text."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp

from fakes import JSON, MSGPACK, FakeControlPlane, call, metric, serving, wait_until
from raftdir.codec import dumps_msgpack, loads_msgpack

POLL = "/api/v1/workers/poll"


async def test_a_parked_poll_is_released_when_the_revision_advances():
    cp = FakeControlPlane()
    nid, secret = cp.add_node()
    other, _ = cp.add_node()
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        poll = asyncio.create_task(call(
            s, "POST", api.url + POLL, {"node_id": nid, "last_revision": 0,
                                        "max_wait_secs": 30},
            headers={"Authorization": f"Bearer {secret}"}))
        await wait_until(lambda: api.parked_polls == 1, what="the poll to park")
        await cp.advance([other])  # not for this node: it stays parked
        await asyncio.sleep(0.05)
        assert not poll.done() and api.parked_polls == 1
        started = time.monotonic()
        await cp.advance([nid])
        st, out, _ = await asyncio.wait_for(poll, 5)
        assert time.monotonic() - started < 1.0
        assert st == 200 and out["revision"] == 2
        assert [e["revision"] for e in out["events"]] == [2]
        assert api.parked_polls == 0


async def test_a_client_disconnect_cancels_the_parked_poll_and_the_gauge_goes_back_down():
    cp = FakeControlPlane()
    nid, secret = cp.add_node()
    async with serving(cp) as api:
        session = aiohttp.ClientSession()
        polls = [asyncio.create_task(session.post(
            api.url + POLL, data=dumps_msgpack({"node_id": nid, "max_wait_secs": 60}),
            headers={"Content-Type": MSGPACK, "Authorization": f"Bearer {secret}"}))
            for _ in range(3)]
        await wait_until(lambda: api.parked_polls == 3 and cp.waiting == 3,
                         what="three parked polls")
        for p in polls:
            p.cancel()
        await session.close()
        await wait_until(lambda: api.parked_polls == 0 and cp.waiting == 0, timeout=5,
                         what="the disconnected polls to be cancelled")
        async with aiohttp.ClientSession() as s:
            metrics = (await call(s, "GET", api.url + "/metrics"))[1]
            assert metric(metrics, "raftdir_api_parked_polls") == 0
            assert metric(metrics, "raftdir_api_requests_total",
                          route="/api/v1/workers/poll", method="POST", code="499") == 3
            # still serving
            st, _, _ = await call(s, "POST", api.url + POLL, {"node_id": nid,
                                                              "max_wait_secs": 0},
                                  headers={"Authorization": f"Bearer {secret}"})
            assert st == 200


async def test_a_thousand_concurrent_parked_polls_complete():
    n = 1000
    cp = FakeControlPlane()
    nodes = [cp.add_node() for _ in range(n)]
    async with serving(cp) as api, aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0)) as s:
        started = time.monotonic()

        async def one(nid: int, secret: str) -> dict:
            async with s.post(api.url + POLL,
                              data=dumps_msgpack({"node_id": nid, "last_revision": 0,
                                                  "max_wait_secs": 30}),
                              headers={"Content-Type": MSGPACK,
                                       "Authorization": f"Bearer {secret}"}) as resp:
                assert resp.status == 200
                return loads_msgpack(await resp.read())

        tasks = [asyncio.create_task(one(nid, secret)) for nid, secret in nodes]
        await wait_until(lambda: api.parked_polls == n, timeout=8, what=f"{n} parked polls")
        await cp.advance([nid for nid, _ in nodes])
        results = await asyncio.wait_for(asyncio.gather(*tasks), 8)
        assert all(r["revision"] == 1 and len(r["events"]) == 1 for r in results)
        assert api.parked_polls == 0
        assert time.monotonic() - started < 10


async def test_a_poll_with_nothing_new_returns_a_bookmark_at_its_deadline():
    cp = FakeControlPlane()
    nid, secret = cp.add_node()
    await cp.advance([nid])
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        st, out, _ = await call(s, "POST", api.url + POLL,
                                {"node_id": nid, "last_revision": 1, "max_wait_secs": 0},
                                headers={"Authorization": f"Bearer {secret}"})
        assert (st, out) == (200, {"revision": 1})


def families(text: str) -> dict[str, str]:
    """The metric families of a ``/metrics`` answer and their types, read by
    prometheus-client's own parser (it refuses text that is not valid exposition)."""
    from prometheus_client.parser import text_string_to_metric_families
    return {f.name: f.type for f in text_string_to_metric_families(text)}


async def test_metrics_are_valid_prometheus_text_with_the_request_counters():
    cp = FakeControlPlane()
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        for _ in range(3):
            await call(s, "GET", api.url + "/health")
        await call(s, "GET", api.url + "/api/v1/cluster/workers", accept=MSGPACK)
        await call(s, "POST", api.url + POLL, {"node_id": 1})  # 401: no secret
        await call(s, "GET", api.url + "/no/such/path")
        async with s.get(api.url + "/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
    types = families(text)
    assert types["raftdir_api_requests"] == "counter"
    assert types["raftdir_api_request_duration_seconds"] == "histogram"
    assert types["raftdir_api_parked_polls"] == "gauge"
    assert types["raftdir_term"] == "gauge"
    assert types["raftdir_heartbeats_received"] == "counter"
    # prometheus-client's own collectors: the process and the Python runtime
    for family in ("process_resident_memory_bytes", "process_cpu_seconds",
                   "python_info", "python_gc_collections"):
        assert family in types, family
    assert metric(text, "raftdir_api_requests_total", route="/health", method="GET",
                  code="200") == 3
    assert metric(text, "raftdir_api_requests_total", route="/api/v1/workers/poll",
                  method="POST", code="401") == 1
    assert metric(text, "raftdir_api_requests_total", route="unmatched", method="GET",
                  code="404") == 1
    assert metric(text, "raftdir_api_request_duration_seconds_count", route="/health") == 3
    assert metric(text, "raftdir_api_request_duration_seconds_bucket", route="/health",
                  le="+Inf") == 3
    assert metric(text, "raftdir_live_workers") == 0


async def test_metrics_survive_a_failing_control_plane():
    cp = FakeControlPlane()

    def broken() -> dict:
        raise RuntimeError("boom")

    cp.metrics = broken
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        st, text, ctype = await call(s, "GET", api.url + "/metrics", accept=JSON)
        assert st == 200 and metric(text, "raftdir_metrics_errors_total") == 1
        assert "raftdir_api_requests" in families(text)


async def test_latency_buckets_are_cumulative():
    cp = FakeControlPlane()
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        for _ in range(4):
            await call(s, "GET", api.url + "/health")
        text = (await call(s, "GET", api.url + "/metrics"))[1]
    from prometheus_client.parser import text_string_to_metric_families
    (family,) = [f for f in text_string_to_metric_families(text)
                 if f.name == "raftdir_api_request_duration_seconds"]
    counts = [s.value for s in family.samples if s.name.endswith("_bucket")
              and s.labels["route"] == "/health"]
    assert counts == sorted(counts) and counts[-1] == 4
