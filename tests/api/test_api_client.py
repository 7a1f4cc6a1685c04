"""RaftdirClient against real API servers over fake control planes: every method, 421
hints, retries with one request id, failover, error classes, per-server questions."""

from __future__ import annotations

import asyncio
import random

import pytest

from fakes import (
    ADMIN, GOOD_TOKEN, PROFILE, USED_UP_TOKEN, FakeControlPlane, RecordingClock, closed_port,
    serving, wait_until,
)
from raftdir.api.client import RaftdirClient, Unreachable, normalize_endpoint
from raftdir.errors import (
    BadRequest, Forbidden, NoLeader, NotLeader, Reregister, TimeoutOutcomeUnknown,
    TokenExhausted, TokenInvalid, Unauthorized, UnknownNode, UnknownService,
)
from raftdir.model import (
    InternalScaleRequest, WorkerPollRequest, WorkerRegisterRequest, WorkerResourceUsage,
    WorkerStatusReport,
)

REG = WorkerRegisterRequest(token=GOOD_TOKEN, profile=PROFILE)


def report(nid: int, ts: int = 1) -> WorkerStatusReport:
    return WorkerStatusReport(node_id=nid, ts_ns=ts, resources=WorkerResourceUsage(
        cpu_used=0.25, memory_used_bytes=1, gpu_used=0))


def dead() -> str:
    return f"http://127.0.0.1:{closed_port()}"


async def test_every_client_method_round_trips():
    cp = FakeControlPlane()
    async with serving(cp) as api:
        cp.server_list = [api.url]
        async with RaftdirClient([api.url], admin_token=ADMIN) as c:
            reg = await c.register(REG)
            assert c.node_secret == reg.internal_token
            ack = await c.report(report(reg.node_id))
            assert ack.next_ttl_secs == 10 and c.leader == api.url
            first = await c.poll(WorkerPollRequest(node_id=reg.node_id, max_wait_secs=0))
            assert first.full and first.revision == 0
            split = await c.scale(InternalScaleRequest.legacy("web", 2, {"image": "x"}))
            assert split[reg.node_id].replicas == 2 and split[reg.node_id].spec == {"image": "x"}
            polled = await c.poll(WorkerPollRequest(node_id=reg.node_id, last_revision=0,
                                                    max_wait_secs=5))
            assert polled.revision == 1 and polled.events[0].service == "web"
            state = await c.service_state("web", consistent=True)
            assert state["running"] == 2 and state["nodes"][0].node_id == reg.node_id
            assert cp.barriers == 1
            assert [x.id for x in await c.containers("web")] == ["web-default-0",
                                                                 "web-default-1"]
            assert (await c.peers())["self"] == 1
            assert (await c.workers())[0]["node_id"] == reg.node_id
            leases = await c.leases()
            assert leases[0][0].node_id == reg.node_id and leases[0][1] == 12.5
            assert (await c.drain(reg.node_id))["state"] == "draining"
            token = await c.create_token(3600, 5)
            assert token["max_uses"] == 5
            assert (await c.evict(reg.node_id))["removed"] is True
            assert (await c.add_peer(4, "127.0.0.1:9004", "127.0.0.1:3674"))["added"] is True
            assert (await c.remove_peer(4, "127.0.0.1:9004"))["removed"] is True
            assert (await c.health())["is_leader"] is True
            assert "raftdir_api_requests_total" in await c.metrics(api.url)


async def test_the_client_follows_a_421_hint_and_prefers_the_leader_afterwards():
    leader_cp = FakeControlPlane(1)
    async with serving(leader_cp) as leader:
        follower_cp = FakeControlPlane(2, leader=False, leader_url=leader.url)
        async with serving(follower_cp, forward=False) as follower:
            async with RaftdirClient([follower.url], admin_token=ADMIN) as c:
                reg = await c.register(REG)
                assert reg.node_id in leader_cp.nodes
                assert c.preferred == leader.url and c.leader == leader.url
                assert c.answered == leader.url      # the follower only pointed the way
                assert leader.url in c.servers
                rids = [rid for m, rid in follower_cp.calls + leader_cp.calls if m == "register"]
                assert len(rids) == 2 and rids[0] == rids[1]  # one logical call, one id
                await c.create_token(10, 1)
                assert not [m for m, _ in follower_cp.calls if m == "create_token"]


@pytest.mark.parametrize("error", [NoLeader, TimeoutOutcomeUnknown])
async def test_503_and_504_are_retried_with_backoff_and_the_same_request_id(error):
    cp = FakeControlPlane()
    cp.inject("register", error("try again"), times=2)
    clock = RecordingClock()
    async with serving(cp) as api:
        async with RaftdirClient([api.url], clock=clock, rng=random.Random(7),
                                 backoff=(0.05, 2.0)) as c:
            reg = await c.register(REG)
            rids = [rid for m, rid in cp.calls if m == "register"]
            assert len(rids) == 3 and len(set(rids)) == 1 and rids[0]
            assert len(cp.nodes) == 1 and reg.node_id in cp.nodes
            assert len(clock.sleeps) == 2
            assert 0.025 <= clock.sleeps[0] <= 0.05 and 0.05 <= clock.sleeps[1] <= 0.1


async def test_a_write_whose_answer_was_lost_is_applied_once():
    cp = FakeControlPlane()
    real = cp.register
    calls = 0

    async def commits_then_times_out(req, rid, secret=None):
        nonlocal calls
        calls += 1
        out = await real(req, rid)
        if calls == 1:
            raise TimeoutOutcomeUnknown("committed, but the answer was lost")
        return out

    cp.register = commits_then_times_out
    async with serving(cp) as api:
        async with RaftdirClient([api.url], clock=RecordingClock()) as c:
            reg = await c.register(REG)
            assert calls == 2 and list(cp.nodes) == [reg.node_id]


async def test_retries_run_out_and_raise_the_servers_error():
    cp = FakeControlPlane()
    cp.inject("register", NoLeader("election in progress"), times=10)
    clock = RecordingClock()
    async with serving(cp) as api:
        async with RaftdirClient([api.url], clock=clock, retries=3) as c:
            with pytest.raises(NoLeader, match="election in progress"):
                await c.register(REG)
            assert len(clock.sleeps) == 3
            assert [m for m, _ in cp.calls].count("register") == 4


async def test_the_client_fails_over_when_the_first_server_is_down():
    cp = FakeControlPlane()
    clock = RecordingClock()
    async with serving(cp) as api:
        async with RaftdirClient([dead(), api.url], clock=clock, admin_token=ADMIN) as c:
            assert (await c.health())["ok"] is True
            assert c.preferred == api.url and clock.sleeps == []
            assert c.answered == api.url
            await c.create_token(5, 1)


async def test_when_every_server_is_down_the_client_backs_off_then_raises_unreachable():
    clock = RecordingClock()
    servers = [dead(), dead()]
    async with RaftdirClient(servers, clock=clock, retries=2, timeout=2.0) as c:
        with pytest.raises(Unreachable) as info:
            await c.peers()
        assert isinstance(info.value, NoLeader)
        assert set(info.value.errors) == set(servers)
        assert len(clock.sleeps) == 2


async def test_a_server_that_comes_back_is_used_after_a_backoff_round():
    cp = FakeControlPlane()
    async with serving(cp) as api:
        port = api.port
    # the port is free again: nothing listens there yet
    clock = RecordingClock()
    restarted = {}

    class ReviveOnSleep(RecordingClock):
        async def sleep(self, seconds):
            await clock.sleep(seconds)
            if "api" not in restarted:
                from raftdir.api.server import start_api
                restarted["api"] = await start_api(cp, "127.0.0.1", port)

    async with RaftdirClient([f"http://127.0.0.1:{port}"], clock=ReviveOnSleep()) as c:
        try:
            assert (await c.health())["ok"] is True
            assert len(clock.sleeps) == 1
        finally:
            if "api" in restarted:
                await restarted["api"].close()


async def test_error_bodies_become_their_classes():
    cp = FakeControlPlane()
    async with serving(cp) as api:
        async with RaftdirClient([api.url], admin_token=ADMIN) as c:
            with pytest.raises(TokenInvalid) as info:
                await c.register(WorkerRegisterRequest(token="forged", profile=PROFILE))
            assert info.value.field == "token" and info.value.status == 401
            with pytest.raises(TokenExhausted):
                await c.register(WorkerRegisterRequest(token=USED_UP_TOKEN, profile=PROFILE))
            with pytest.raises(UnknownNode):
                await c.drain(123)
            with pytest.raises(UnknownService):
                await c.service_state("nope")
            cp.inject("scale", BadRequest("replicas: too many", field="replicas"))
            with pytest.raises(BadRequest) as bad:
                await c.scale(InternalScaleRequest.legacy("web", 3))
            assert bad.value.field == "replicas"
            reg = await c.register(REG)
            other, other_secret = cp.add_node()
            with pytest.raises(Unauthorized):
                await c.report(report(other))
            c.node_secret = "wrong"
            with pytest.raises(Unauthorized):
                await c.poll(WorkerPollRequest(node_id=reg.node_id, max_wait_secs=0))
            cp.inject("report", Forbidden("not yours"))
            with pytest.raises(Forbidden):
                await c.report(report(reg.node_id))
            cp.inject("report", Reregister("gone"))
            with pytest.raises(Reregister):
                await c.report(report(reg.node_id))
        async with RaftdirClient([api.url], admin_token="not-it") as c:
            with pytest.raises(Unauthorized):
                await c.create_token(5, 1)


async def test_421_without_a_usable_hint_is_retried_then_raised():
    cp = FakeControlPlane(2, leader=False)
    async with serving(cp, forward=False) as api:
        cp.leader_url = api.url  # a stale hint pointing at itself
        clock = RecordingClock()
        async with RaftdirClient([api.url], clock=clock, retries=2) as c:
            with pytest.raises(NotLeader):
                await c.register(REG)
            assert len(clock.sleeps) == 2


async def test_the_client_adopts_servers_and_leader_from_acks():
    cp = FakeControlPlane()
    async with serving(cp) as api:
        spare = "http://127.0.0.1:1"
        cp.server_list = [spare, api.url]
        async with RaftdirClient([api.url]) as c:
            reg = await c.register(REG)
            assert c.servers == [spare, api.url] and c.preferred == api.url
            cp.server_list = [api.url, spare]
            await c.report(report(reg.node_id))
            assert c.servers == [api.url, spare] and c.leader == api.url


async def test_per_server_asks_every_server_once():
    a_cp, b_cp = FakeControlPlane(1), FakeControlPlane(2, leader=False)
    async with serving(a_cp) as a, serving(b_cp) as b:
        gone = dead()
        async with RaftdirClient([a.url, b.url, gone], clock=RecordingClock()) as c:
            peers = await c.per_server("peers")
            assert peers[a.url]["self"] == 1 and peers[b.url]["self"] == 2
            assert isinstance(peers[gone], Unreachable)
            health = await c.per_server(c.health)
            assert health[b.url]["is_leader"] is False and isinstance(health[gone], NoLeader)


async def test_a_poll_waits_longer_than_the_plain_timeout():
    cp = FakeControlPlane()
    nid, secret = cp.add_node()
    async with serving(cp) as api:
        async with RaftdirClient([api.url], node_secret=secret, timeout=3.0) as c:
            timeouts = []
            send = c._send

            async def recording(method, url, payload, headers, timeout, query):
                timeouts.append(timeout)
                return await send(method, url, payload, headers, timeout, query)

            c._send = recording
            task = asyncio.create_task(c.poll(WorkerPollRequest(node_id=nid,
                                                                max_wait_secs=45)))
            await wait_until(lambda: api.parked_polls == 1, what="a parked poll")
            await cp.advance([nid])
            resp = await asyncio.wait_for(task, 5)
            assert resp.revision == 1 and len(resp.events) == 1
            await c.poll(WorkerPollRequest(node_id=nid, last_revision=0, max_wait_secs=600))
            # 45 s of wait + 3 s; a max_wait above the server's 60 s cap counts as 60
            assert timeouts == [48.0, 63.0]


def test_endpoints_are_normalized_and_the_constructor_does_no_io():
    assert normalize_endpoint("127.0.0.1:80") == "http://127.0.0.1:80"
    assert normalize_endpoint("https://[::1]:443/") == "https://[::1]:443"
    with pytest.raises(BadRequest):
        normalize_endpoint("ftp://x:1")
    c = RaftdirClient(["10.0.0.1:3669", "http://10.0.0.1:3669"], ssl=False)
    assert c.servers == ["http://10.0.0.1:3669"] and c._session is None
    with pytest.raises(ValueError):
        RaftdirClient([])


def test_backoff_grows_with_jitter_up_to_the_cap():
    c = RaftdirClient(["127.0.0.1:1"], backoff=(0.1, 1.0), rng=random.Random(1))
    for n, ceiling in enumerate([0.1, 0.2, 0.4, 0.8, 1.0, 1.0]):
        for _ in range(20):
            assert ceiling / 2 <= c.backoff_delay(n) <= ceiling


async def test_a_write_whose_connection_drops_ends_as_outcome_unknown_not_unreachable():
    async def hang_up(reader, writer):
        await reader.read(1)  # the request has started to arrive
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clock = RecordingClock()
    try:
        async with RaftdirClient([f"127.0.0.1:{port}"], clock=clock, retries=1,
                                 admin_token=ADMIN) as c:
            with pytest.raises(TimeoutOutcomeUnknown, match="may still commit"):
                await c.create_token(5, 1)
            with pytest.raises(Unreachable):  # a read is simply unreachable
                await c.workers()
    finally:
        server.close()
        await server.wait_closed()


# -- polls spread over the servers (issue 10) ------------------------------------------------

def test_poll_home_spreads_evenly_and_moves_only_the_workers_of_a_changed_server():
    from raftdir.api.client import poll_home
    servers = [f"http://10.0.0.{i}:3669" for i in range(1, 6)]
    ids = range(1_000_000, 1_010_000)
    home = {n: poll_home(n, servers) for n in ids}
    counts = [list(home.values()).count(s) for s in servers]
    assert min(counts) > 1_800 and max(counts) < 2_200          # 2,000 each, give or take
    gone = servers[3]
    after = {n: poll_home(n, [s for s in servers if s != gone]) for n in ids}
    moved = [n for n in ids if after[n] != home[n]]
    assert moved and all(home[n] == gone for n in moved)        # only the dead one's workers
    assert poll_home(5, list(reversed(servers))) == poll_home(5, servers)   # order-free


async def test_polls_go_home_and_leave_the_preferred_server_alone():
    from raftdir.api.client import poll_home
    cps = [FakeControlPlane(i) for i in (1, 2, 3)]
    async with serving(cps[0]) as a, serving(cps[1]) as b, serving(cps[2]) as c3:
        urls = [a.url, b.url, c3.url]
        for cp in cps:
            for n in range(1_000_000, 1_000_030):
                cp.add_node(n, f"secret-{n}")
        async with RaftdirClient(urls) as c:
            for n in range(1_000_000, 1_000_030):
                c.node_secret = f"secret-{n}"
                await c.poll(WorkerPollRequest(node_id=n, max_wait_secs=0))
            assert c.preferred == a.url                        # reports still go there
            for i, cp in enumerate(cps):
                polled = {arg for m, arg in cp.calls if m == "poll"}
                assert polled == {n for n in range(1_000_000, 1_000_030)
                                  if poll_home(n, urls) == urls[i]}
                assert polled                                  # every server got some


async def test_a_lagging_replica_sends_the_poll_to_the_server_it_names():
    from raftdir.errors import ReplicaBehind
    leader_cp = FakeControlPlane(1)
    async with serving(leader_cp) as leader:
        replica_cp = FakeControlPlane(4, leader=False, leader_url=leader.url)
        async with serving(replica_cp) as replica:
            nid, secret = leader_cp.add_node()
            replica_cp.add_node(nid, secret)
            replica_cp.inject("poll", ReplicaBehind("behind", leader=leader.url), times=50)
            async with RaftdirClient([replica.url], node_secret=secret) as c:
                resp = await c.poll(WorkerPollRequest(node_id=nid, max_wait_secs=0))
                assert resp.full
                assert len([m for m, _ in replica_cp.calls if m == "poll"]) == 1
                assert [m for m, _ in leader_cp.calls if m == "poll"]   # answered there
                assert c.preferred == replica.url     # a hint for a poll moves no writes
                assert c.poll_server(nid) == leader.url   # polls stay there for a while


async def test_an_overloaded_server_sends_the_call_to_the_next_server():
    """503 overloaded (a server at its cap, or keeping its last connections for reports):
    one backoff round, then the next server, not the same one again."""
    from raftdir.errors import Overloaded

    busy_cp, other_cp = FakeControlPlane(1), FakeControlPlane(2)
    busy_cp.inject("poll", Overloaded("poll another server"), times=5)
    async with serving(busy_cp) as busy, serving(other_cp) as other:
        async with RaftdirClient([busy.url, other.url], clock=RecordingClock()) as c:
            reg = await c.register(REG)                    # on the first server
            other_cp.nodes[reg.node_id] = busy_cp.nodes[reg.node_id]
            c._poll_detour = (busy.url, float("inf"))      # its polls start on `busy`
            await c.poll(WorkerPollRequest(node_id=reg.node_id, max_wait_secs=0))
            assert c.answered == other.url
            assert [m for m, _ in busy_cp.calls].count("poll") == 1
