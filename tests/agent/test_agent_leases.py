"""The worker agent on a manual clock shared with the server: reports keep the lease alive,
the connection state follows the lease, full resyncs after down/up and compaction,
re-registration after eviction, failover when a server stops."""

from __future__ import annotations

import pytest

from agent_harness import control_plane, make_agent, step, transitions, until
from raftdir.agent import AgentState, load_identity, report_interval
from raftdir.api.client import RaftdirClient
from raftdir.clock import ManualClock
from raftdir.core.commands import Compact


def test_report_interval_keeps_a_safety_margin():
    assert report_interval(10) == 5.0           # ttl / 2
    assert report_interval(600) == 300.0
    assert report_interval(3) == 1.0            # never later than ttl - 2 s
    assert report_interval(2) == 0.5            # tiny TTLs: a quarter
    for ttl in (1, 2, 3, 4, 5, 10, 11, 60, 601):
        assert 0 < report_interval(ttl) <= max(ttl - 2, ttl / 4)


async def test_reports_keep_the_lease_alive_for_several_ttls_while_a_stopped_agents_expires(
        tmp_path):
    clock = ManualClock()
    cp = await control_plane(clock=clock)             # ttl 10 s, grace 10 s
    token_file = await cp.token_file(tmp_path)
    live = make_agent(tmp_path / "a", [cp.url()], token_file, clock=clock, manual=True)
    gone = make_agent(tmp_path / "b", [cp.url()], token_file, clock=clock, manual=True)
    try:
        for agent in (live, gone):
            await agent.start()
            await agent.wait_connected(5)
        await gone.stop()
        acked = live.stats["reports_acked"]
        for second in range(60):                      # six TTLs, one second at a time
            await step(clock, 1.0, [live])
            assert cp.state(live.node_id) == "ready", f"live worker down at t={second + 1}"
            assert live.state is AgentState.CONNECTED, live.reason
        assert live.stats["reports_acked"] - acked == 12   # every ttl / 2 = 5 s
        assert live.stats["reports_failed"] == 0
        assert cp.state(gone.node_id) == "down"
        assert live.status()["last_ack_secs_ago"] <= 5.0
    finally:
        await live.stop()
        await cp.stop()


async def test_state_goes_connected_suspended_lost_when_the_server_disappears_and_back(
        tmp_path):
    clock = ManualClock()
    cp = await control_plane(clock=clock)
    agent = make_agent(tmp_path, [cp.url()], await cp.token_file(tmp_path), clock=clock,
                       manual=True)
    seen = transitions(agent)
    try:
        await agent.start()
        await agent.wait_connected(5)
        await cp.close_api()
        acked_at = clock.monotonic()
        await step(clock, 5.0, [agent])               # the report due at 5 s fails
        assert agent.state is AgentState.SUSPENDED and "status report failed" in agent.reason
        await step(clock, 14.5, [agent])              # t = 19.5 s: still within ttl + grace
        assert agent.state is AgentState.SUSPENDED
        await step(clock, 1.0, [agent])               # t = 20.5 s: past ttl + grace
        assert agent.state is AgentState.LOST and "past ttl 10 s + grace 10 s" in agent.reason
        assert clock.monotonic() - acked_at > 20
        failed = agent.stats["reports_failed"]
        await step(clock, 30.0, [agent])
        # backing off, not hammering: the retries are at most the cap (ttl / 4) apart
        assert 30 / 2.5 <= agent.stats["reports_failed"] - failed <= 30 / 0.05
        await cp.open_api(0)                          # the same port again
        await step(clock, 3.0, [agent])
        await until(lambda: agent.state is AgentState.CONNECTED, what="reconnection")
        assert seen == [AgentState.CONNECTED, AgentState.SUSPENDED, AgentState.LOST,
                        AgentState.CONNECTED]
    finally:
        await agent.stop()
        await cp.stop()


async def test_full_resync_after_the_server_marks_the_worker_down_and_up(tmp_path):
    clock = ManualClock()
    cp = await control_plane(clock=clock)
    other = await cp.direct_worker()                  # a second worker, kept alive below
    agent = make_agent(tmp_path, [cp.url()], await cp.token_file(tmp_path), clock=clock,
                       manual=True)
    changes = []
    agent.on_change(lambda change, current: changes.append(change))
    try:
        await agent.start()
        await agent.wait_connected(5)
        await cp.scale("web", 4)
        await until(lambda: len(agent.assignments.containers()) == 2, what="its half")
        await cp.close_api()                          # the agent is cut off

        async def keep_other_alive() -> None:
            await cp.report_direct(other)
        await step(clock, 25.0, [agent], between=keep_other_alive)
        await until(lambda: cp.state(agent.node_id) == "down", what="the node to go down")
        await until(lambda: cp.containers_of(other.node_id) == [
            f"web-default-{i}" for i in range(4)], what="its share to move")
        assert agent.state is AgentState.LOST
        assert len(agent.assignments.containers()) == 2   # stale: it has not heard yet

        await cp.open_api(0)
        await step(clock, 3.0, [agent], between=keep_other_alive)
        await until(lambda: cp.state(agent.node_id) == "ready", what="the node back up")
        await until(lambda: agent.assignments.containers() == [], what="the resync")
        assert agent.assignments.revision == cp.server.read(lambda d: d.revision)
        assert any(c.deleted == ("web",) for c in changes)
        await until(lambda: agent.state is AgentState.CONNECTED, what="CONNECTED")
        await cp.scale("web", 6)                      # it takes work again
        await until(lambda: len(agent.assignments.containers()) == 3, what="new work")
    finally:
        await agent.stop()
        await cp.stop()


async def test_full_resync_when_the_log_was_compacted_past_the_workers_revision(tmp_path):
    cp = await control_plane()
    agent = make_agent(tmp_path, [cp.url()], await cp.token_file(tmp_path))
    changes = []
    agent.on_change(lambda change, current: changes.append(change))
    try:
        await agent.start()
        await agent.wait_connected(5)
        await cp.scale("web", 1)
        await until(lambda: agent.assignments.containers() == ["web-default-0"],
                    what="the first event")
        await cp.close_api()
        old_revision = agent.assignments.revision
        for n in (2, 3, 0):
            await cp.scale("web", n)
        await cp.scale("db", 2)
        current = cp.server.read(lambda d: d.revision)
        await cp.server.propose(Compact(upto_revision=current))
        assert cp.server.read(lambda d: d.compacted_revision) > old_revision
        before = len(changes)
        await cp.open_api(0)
        await until(lambda: agent.assignments.containers() == ["db-default-0",
                                                               "db-default-1"],
                    what="the resync")
        resync = changes[before]
        assert resync.full and resync.deleted == ("web",)
        assert [ev.service for ev in resync.set] == ["db"]
        assert agent.assignments.revision == current
    finally:
        await agent.stop()
        await cp.stop()


async def test_registers_again_after_eviction_when_the_token_allows(tmp_path):
    clock = ManualClock()
    cp = await control_plane(clock=clock)
    other = await cp.direct_worker()                  # takes the evicted worker's share
    sent: list[tuple[str, dict]] = []

    def recording_client(*args, **kwargs):
        client = RaftdirClient(*args, **kwargs)
        send = client._send

        async def recorded(method, url, payload, headers, timeout, query):
            sent.append((url, dict(headers)))
            return await send(method, url, payload, headers, timeout, query)
        client._send = recorded
        return client
    agent = make_agent(tmp_path, [cp.url()], await cp.token_file(tmp_path, max_uses=2),
                       clock=clock, manual=True, client_factory=recording_client)
    changes = []
    agent.on_change(lambda change, current: changes.append(change))
    try:
        await agent.start()
        await agent.wait_connected(5)
        await cp.scale("web", 4)
        await until(lambda: len(agent.assignments.containers()) == 2, what="its half")
        node_id, first_secret = agent.node_id, agent.identity.internal_token
        await cp.close_api()                          # it misses the eviction's events
        await cp.server.deregister(node_id, None)
        assert cp.node(node_id) is None and len(cp.containers_of(other.node_id)) == 4
        await cp.open_api(0)
        await step(clock, 5.0, [agent])               # the next report hears 401
        await until(lambda: agent.stats["registrations"] == 2, what="the new registration")
        await until(lambda: agent.state is AgentState.CONNECTED, what="CONNECTED")
        assert cp.state(agent.node_id) == "ready"
        assert agent.node_id == node_id               # it asked for its old id and got it
        stored = load_identity(tmp_path / "worker" / "identity")
        assert stored.internal_token == agent.identity.internal_token
        registers = [h for url, h in sent if url.endswith("/workers/register")]
        assert "Authorization" not in registers[0]
        assert registers[-1]["Authorization"] == f"Bearer {first_secret}"  # its old secret
        # the old record's assignments are gone: a full resync of the new one says so
        await until(lambda: agent.assignments.containers() == [], what="the full resync")
        assert changes[-1].full and changes[-1].deleted == ("web",)
        await cp.scale("db", 2)                       # the poll follows the new identity
        await until(lambda: len(agent.assignments.containers()) == 1, what="events")
    finally:
        await agent.stop()
        await cp.stop()


@pytest.mark.parametrize("why", ["token_exhausted", "no_token_file"])
async def test_goes_lost_after_eviction_when_it_cannot_register_again(tmp_path, why):
    clock = ManualClock()
    cp = await control_plane(clock=clock)
    token_file = await cp.token_file(tmp_path, max_uses=1)
    agent = make_agent(tmp_path, [cp.url()], token_file, clock=clock, manual=True)
    try:
        await agent.start()
        await agent.wait_connected(5)
        if why == "no_token_file":
            token_file.unlink()
        await cp.server.deregister(agent.node_id, None)
        await step(clock, 5.0, [agent])
        await until(lambda: agent.state is AgentState.LOST, what="LOST")
        assert "unauthorized" in agent.reason
        assert ("token_exhausted" if why == "token_exhausted" else "join.token") \
            in agent.reason
        registered = agent.stats["registrations"]
        await step(clock, 30.0, [agent])              # it keeps trying, slowly
        assert agent.state is AgentState.LOST and agent.stats["registrations"] == registered
        assert cp.server.read(lambda d: len(d.nodes(kind="worker"))) == 0
    finally:
        await agent.stop()
        await cp.stop()


async def test_fails_over_when_the_server_it_uses_is_stopped(tmp_path):
    clock = ManualClock()
    cp = await control_plane(clock=clock, apis=2)     # two endpoints of one directory
    agent = make_agent(tmp_path, [cp.url(0), cp.url(1)], await cp.token_file(tmp_path),
                       clock=clock, manual=True)
    try:
        await agent.start()
        await agent.wait_connected(5)
        assert agent.leader == cp.url(0)
        await cp.close_api(0)
        await cp.scale("web", 2)                      # the poll moved over to server 1
        await until(lambda: len(agent.assignments.containers()) == 2, what="events")
        acked = agent.stats["reports_acked"]
        await step(clock, 30.0, [agent])
        assert agent.stats["reports_acked"] - acked == 6
        assert agent.state is AgentState.CONNECTED and agent.leader == cp.url(1)
        assert cp.state(agent.node_id) == "ready"
    finally:
        await agent.stop()
        await cp.stop()


async def test_falls_back_to_its_configured_servers_when_every_advertised_one_is_down(
        tmp_path):
    clock = ManualClock()
    cp = await control_plane(clock=clock, apis=2)
    cp.advertised = [0]                               # acks name server 0 only
    agent = make_agent(tmp_path, [cp.url(0), cp.url(1)], await cp.token_file(tmp_path),
                       clock=clock, manual=True)
    try:
        await agent.start()
        await agent.wait_connected(5)
        assert agent.client.servers == [cp.url(0)]    # it adopted the advertised list
        await cp.close_api(0)
        await step(clock, 10.0, [agent])
        await until(lambda: agent.state is AgentState.CONNECTED and
                    agent.leader == cp.url(1), what="the configured server 1 to take over")
        assert cp.url(1) in agent.client.servers
    finally:
        await agent.stop()
        await cp.stop()
