"""The worker agent against a real in-process control plane (HTTP on 127.0.0.1): register,
receive a scale's events, keep its identity across a restart, fail over, refuse bad
configs."""

from __future__ import annotations

import json
import os
import stat

from pathlib import Path

import pytest

from agent_harness import closed_port, control_plane, make_agent, until
from raftdir.agent import AgentState, WorkerAgent, load_identity, store_identity
from raftdir.agent.identity import Identity
from raftdir.assignments import AssignmentSet, Change
from raftdir.auth import admin_token, issue_join_token
from raftdir.errors import ConfigError, Forbidden
from raftdir.model import InternalScaleRequest, WorkerTierMode, WorkerTierRole


async def test_registers_then_receives_a_scales_events(tmp_path):
    cp = await control_plane()
    agent = make_agent(tmp_path, [cp.url()], await cp.token_file(tmp_path))
    changes: list[tuple[Change, list[str]]] = []

    async def on_change(change: Change, current: AssignmentSet) -> None:  # a coroutine cb
        changes.append((change, current.containers()))
    agent.on_change(on_change)
    try:
        await agent.start()
        await agent.wait_connected(5)
        node = cp.node(agent.node_id)
        assert node is not None and node["kind"] == "worker" and node["state"] == "ready"
        assert node["profile"]["api_addr"] == "127.0.0.1:9001"
        assert node["profile"]["labels"] == {"zone": "test"}
        assert node["profile"]["os"] in ("linux", "darwin", "windows")
        assert node["profile"]["arch"] in ("x86_64", "aarch64")

        await cp.scale("web", 3)
        want = ["web-default-0", "web-default-1", "web-default-2"]
        await until(lambda: agent.assignments.containers() == want, what="web's 3 replicas")
        last_change, seen = changes[-1]
        assert [ev.service for ev in last_change.set] == ["web"] and seen == want

        await cp.scale("web", 1)
        await until(lambda: agent.assignments.containers() == ["web-default-0"],
                    what="the scale down")
        await cp.scale("web", 0)
        await until(lambda: agent.assignments.containers() == [], what="the delete")
        assert changes[-1][0].deleted == ("web",)
        status = agent.status()
        assert status["node_id"] == agent.node_id and status["state"] == "connected"
        assert status["leader"] == cp.url() and status["servers"] == [cp.url()]
        assert status["revision"] == agent.assignments.revision > 0
        assert status["assignments"] == [] and status["last_ack_secs_ago"] is not None
        # the default status provider reported what was assigned, as running
        await until(lambda: cp.server.leader.leases.entries[agent.node_id].report is not None,
                    what="a report")
    finally:
        await agent.stop()
        await cp.stop()
    assert agent.state is AgentState.LOST and agent.reason == "stopped"


async def test_identity_is_0600_and_a_restarted_agent_is_the_same_node_without_a_token_use(
        tmp_path):
    cp = await control_plane()
    token_file = await cp.token_file(tmp_path, max_uses=1)
    first = make_agent(tmp_path, [cp.url()], token_file)
    try:
        await first.start()
        await first.wait_connected(5)
        await cp.scale("db", 2)
        await until(lambda: len(first.assignments.containers()) == 2, what="db's replicas")
        node_id = first.node_id
        await first.stop()

        ident_dir = tmp_path / "worker" / "identity"
        path = ident_dir / "identity.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(ident_dir.stat().st_mode) == 0o700
        stored = json.loads(path.read_text())
        assert stored["node_id"] == node_id and stored["servers"] == [cp.url()]
        assert stored["cluster_id"] == cp.server.read(lambda d: d.cluster_id)
        # no temporary file left; the lock and the status file (no secret in it) are 0600
        assert sorted(p.name for p in ident_dir.iterdir()) == ["agent.lock", "identity.json",
                                                              "status.json"]
        assert stat.S_IMODE((ident_dir / "status.json").stat().st_mode) == 0o600
        assert stored["internal_token"] not in (ident_dir / "status.json").read_text()

        second = make_agent(tmp_path, [cp.url()], token_file)   # new object, same data dir
        try:
            await second.start()
            await second.wait_connected(5)
            assert second.node_id == node_id
            assert second.stats["registrations"] == 0          # reused, not registered
            await until(lambda: second.assignments.containers() == ["db-default-0",
                                                                    "db-default-1"],
                        what="the full resync of the restarted worker")
            assert cp.server.read(lambda d: len(d.nodes(kind="worker"))) == 1
        finally:
            await second.stop()

        # The token had one use and it is still unused-up by the restart: a new worker
        # is refused because that one use went to the first registration only.
        third = make_agent(tmp_path / "other", [cp.url()], token_file)
        try:
            await third.start()
            await until(lambda: third.state is AgentState.LOST, what="the refusal")
            assert "token_exhausted" in third.reason and third.node_id is None
        finally:
            await third.stop()
    finally:
        await cp.stop()


async def test_fails_over_from_a_closed_port_to_the_next_server(tmp_path):
    cp = await control_plane()
    dead = f"http://127.0.0.1:{closed_port()}"
    agent = make_agent(tmp_path, [dead, cp.url()], await cp.token_file(tmp_path))
    try:
        await agent.start()
        await agent.wait_connected(5)
        await cp.scale("web", 2)
        await until(lambda: len(agent.assignments.containers()) == 2, what="the events")
        assert agent.status()["leader"] == cp.url()
    finally:
        await agent.stop()
        await cp.stop()


async def test_start_without_token_file_or_identity_is_a_config_error(tmp_path):
    mode = WorkerTierMode(role=WorkerTierRole.WORKER, servers=("127.0.0.1:1",))
    agent = WorkerAgent.from_config(mode, tmp_path)
    assert agent.identity_dir == tmp_path / "worker" / "identity"
    with pytest.raises(ConfigError) as info:
        await agent.start()
    assert info.value.field == "token_file" and "token_file" in info.value.message
    assert agent.client is None and not agent._tasks
    # a token file that cannot be read, with no identity, names it too
    mode = WorkerTierMode(role=WorkerTierRole.WORKER, servers=("127.0.0.1:1",),
                          token_file=str(tmp_path / "missing.token"))
    with pytest.raises(ConfigError) as info:
        await WorkerAgent.from_config(mode, tmp_path).start()
    assert info.value.field == "token_file" and "missing.token" in info.value.message


def test_relative_paths_in_the_config_are_relative_to_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    mode = WorkerTierMode(role=WorkerTierRole.WORKER, servers=("127.0.0.1:1",),
                          token_file="join.token", identity_dir="me")
    agent = WorkerAgent.from_config(mode, tmp_path)
    assert (agent.token_file, agent.identity_dir) == (tmp_path / "join.token", tmp_path / "me")
    mode = WorkerTierMode(role=WorkerTierRole.WORKER, servers=("127.0.0.1:1",),
                          token_file="/etc/raftdir/join.token")
    assert WorkerAgent.from_config(mode, tmp_path).token_file == \
        Path("/etc/raftdir/join.token")


async def test_a_stored_identity_of_another_cluster_is_refused_loudly(tmp_path):
    ident_dir = tmp_path / "worker" / "identity"
    store_identity(ident_dir, Identity(node_id=1_000_000, cluster_id="rd-old",
                                       internal_token="s3cret", servers=("127.0.0.1:1",)))
    token, _ = issue_join_token("b7" * 32, "rd-new", valid_for_secs=60, max_uses=1,
                                now_unix_secs=1)
    (tmp_path / "join.token").write_text(token + "\n")
    agent = make_agent(tmp_path, ["127.0.0.1:1"], tmp_path / "join.token")
    with pytest.raises(ConfigError) as info:
        await agent.start()
    assert "rd-old" in info.value.message and "rd-new" in info.value.message
    agent = make_agent(tmp_path, ["127.0.0.1:1"], None, expected_cluster_id="rd-x")
    with pytest.raises(ConfigError, match="rd-x"):
        await agent.start()
    # still there: never replaced behind the operator's back
    assert load_identity(ident_dir).cluster_id == "rd-old"


def test_a_malformed_identity_file_is_a_config_error_naming_it(tmp_path):
    tmp_path.joinpath("identity.json").write_text('{"version": 1, "node_id": "7"}')
    with pytest.raises(ConfigError, match=r"identity.json: node_id: expected an integer"):
        load_identity(tmp_path)
    tmp_path.joinpath("identity.json").write_text("not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_identity(tmp_path)
    assert load_identity(tmp_path / "none") is None


def test_a_loose_identity_file_is_tightened(tmp_path):
    store_identity(tmp_path, Identity(node_id=5, cluster_id="c",
                                      internal_token="very-secret-token"))
    os.chmod(tmp_path / "identity.json", 0o644)
    assert load_identity(tmp_path).node_id == 5
    assert stat.S_IMODE((tmp_path / "identity.json").stat().st_mode) == 0o600
    assert "very-secret-token" not in repr(load_identity(tmp_path))


async def test_the_workers_cluster_view(tmp_path):
    cp = await control_plane(min_ttl=2, grace=2)     # a report every 0.5 s
    agent = make_agent(tmp_path, [cp.url()], await cp.token_file(tmp_path))
    try:
        await agent.start()
        await agent.wait_connected(5)
        cluster = agent.cluster()
        assert cluster.node_id == agent.node_id and not cluster.is_leader()
        assert cluster.leader_addr() == cp.url().split("://")[1]
        nodes = await cluster.refresh_nodes()
        mine = next(n for n in nodes if n.node_id == agent.node_id)
        assert mine.state == "ready" and mine.labels == {"zone": "test"}
        assert {n.node_id for n in cluster.list_nodes()} == {n.node_id for n in nodes}
        with pytest.raises(Forbidden, match="admin"):
            await cluster.forward_scale(InternalScaleRequest.legacy("web", 1))
        with pytest.raises(Forbidden, match="admin"):
            await cluster.dispatch_scale(agent.node_id, InternalScaleRequest.legacy("w", 1))
        agent.admin_token = admin_token(cp.server.secret)
        agent.client.admin_token = agent.admin_token
        split = await cluster.forward_scale(InternalScaleRequest.legacy("web", 2))
        assert set(split) == {agent.node_id}
        await until(lambda: len(agent.assignments.containers()) == 2, what="the scale")
        await until(lambda: cp.server.leader.leases.entries[agent.node_id].report
                    is not None and len(cp.server.leader.leases.entries[
                        agent.node_id].report.containers) == 2,
                    what="a report with the 2 containers")
    finally:
        await agent.stop()
        await cp.stop()


async def test_a_registration_whose_answer_was_lost_is_retried_as_the_same_node(tmp_path):
    from raftdir.errors import TimeoutOutcomeUnknown
    cp = await control_plane()
    real = cp.server.register
    calls: list[str | None] = []

    async def commits_then_loses_the_answer(req, request_id, secret=None):
        calls.append(request_id)
        resp = await real(req, request_id, secret)
        if len(calls) == 1:
            raise TimeoutOutcomeUnknown("committed, but the answer was lost")
        return resp
    cp.server.register = commits_then_loses_the_answer
    agent = make_agent(tmp_path, [cp.url()], await cp.token_file(tmp_path, max_uses=1),
                       client_retries=0)
    try:
        await agent.start()
        await agent.wait_connected(10)
        assert len(calls) >= 2 and len(set(calls)) == 1      # one request id throughout
        workers = cp.server.read(lambda d: d.node_ids(kind="worker"))
        assert workers == [agent.node_id]                      # one node, token use 1
    finally:
        await agent.stop()
        await cp.stop()


async def test_an_agent_ahead_of_the_cluster_resyncs_from_the_complete_set(tmp_path):
    """A revision that is not of this cluster's history (a rebuilt or restored cluster):
    the poll is answered full and behind, and the agent replaces its set with it instead of
    skipping everything below its bookmark (issue 15, finding 5)."""
    from raftdir.model import SetEvent
    cp = await control_plane()
    agent = make_agent(tmp_path, [cp.url()], await cp.token_file(tmp_path))
    try:
        await agent.start()
        await agent.wait_connected(5)
        await cp.scale("web", 2)
        await until(lambda: len(agent.assignments.containers()) == 2, what="web's replicas")
        # the cluster's history is not the agent's any more: its bookmark is far ahead
        agent.assignments.revision = 10_000
        agent.assignments.services["ghost"] = SetEvent(service="ghost", assignments=(),
                                                       revision=9_999)
        await cp.scale("web", 1)            # wakes the parked poll; its next one is ahead
        await until(lambda: agent.stats["resyncs"] == 1, what="the resync")
        await until(lambda: agent.assignments.containers() == ["web-default-0"],
                    what="the complete set")
        assert "ghost" not in agent.assignments.services
        assert agent.assignments.revision == cp.server.read(lambda d: d.revision)
    finally:
        await agent.stop()
        await cp.stop()
