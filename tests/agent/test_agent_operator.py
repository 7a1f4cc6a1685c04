"""The agent as an operator meets it (issue 14), against a real in-process control plane:
one agent per identity (the lock), a profile that follows the host into placement, the
loopback warning, and the worker's own view (the status file, `raftdir worker status`,
the log of applied changes)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent_harness import control_plane, make_agent, settle, step, until
from raftdir.agent import (
    LOCK_FILE, STATUS_FILE, AgentState, lock_holder, load_identity, loopback_warning,
    read_status,
)
from raftdir.clock import ManualClock
from raftdir.config import dump_yaml
from raftdir.errors import ConfigError
from raftdir.model import InternalScaleRequest, WorkerTierMode, WorkerTierRole

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from cli_harness import run_cli  # noqa: E402

ZONE_A = {"placement": {"labels": {"zone": "a"}}}


# ---------------------------------------------------------------------------- one agent per identity

async def test_a_second_agent_on_the_same_identity_refuses_to_start_naming_the_pid(tmp_path):
    cp = await control_plane()
    token_file = await cp.token_file(tmp_path)
    first = make_agent(tmp_path, [cp.url()], token_file)
    second = make_agent(tmp_path, [cp.url()], token_file)
    try:
        await first.start()
        await first.wait_connected(5)
        with pytest.raises(ConfigError) as err:
            await second.start()
        assert err.value.field == "identity_dir"
        assert f"another worker agent (pid {os.getpid()}) is running" in err.value.message
        assert str(tmp_path / "worker" / "identity" / LOCK_FILE) in err.value.message
        await second.stop()       # what a daemon does after a failed start: harmless
        assert first.state is AgentState.CONNECTED
        assert read_status(first.identity_dir)["state"] == "connected"  # not overwritten
        assert cp.server.read(lambda d: len(d.nodes(kind="worker"))) == 1

        await first.stop()        # a clean stop leaves the lock free and empty
        assert lock_holder(first.identity_dir) == (False, None)
        third = make_agent(tmp_path, [cp.url()], token_file)
        try:
            await third.start()
            await third.wait_connected(5)
            assert third.node_id == first.node_id
        finally:
            await third.stop()
    finally:
        await first.stop()
        await cp.stop()


HOLDER = """
import sys, time
from raftdir.agent.lock import AgentLock
AgentLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


async def test_a_lock_held_by_another_process_then_left_by_kill_9_is_taken_over(
        tmp_path, caplog):
    identity_dir = tmp_path / "worker" / "identity"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(identity_dir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert lock_holder(identity_dir) == (True, holder.pid)
        cp = await control_plane()
        agent = make_agent(tmp_path, [cp.url()], await cp.token_file(tmp_path))
        try:
            with pytest.raises(ConfigError) as err:
                await agent.start()
            assert f"pid {holder.pid}" in err.value.message
            holder.send_signal(signal.SIGKILL)
            holder.wait(10)
            assert lock_holder(identity_dir) == (False, holder.pid)   # stale: no flock
            with caplog.at_level(logging.INFO, logger="raftdir.agent.lock"):
                await agent.start()
            taken = [r for r in caplog.records if r.name == "raftdir.agent.lock"]
            assert taken and taken[0].levelno == logging.INFO
            assert f"taking over the lock left by pid {holder.pid} (no longer running)" \
                in taken[0].getMessage()
            assert lock_holder(identity_dir) == (True, os.getpid())
            await agent.wait_connected(5)
        finally:
            await agent.stop()
            await cp.stop()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


# ---------------------------------------------------------------------------- the profile follows the host

async def test_a_label_and_address_change_reach_the_directory_and_placement(tmp_path):
    cp = await control_plane()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    token_a = await cp.token_file(tmp_path / "a")
    token_b = await cp.token_file(tmp_path / "b")
    a = make_agent(tmp_path / "a", [cp.url()], token_a, labels={"zone": "a"},
                   api_addr="127.0.0.1:9001")
    b = make_agent(tmp_path / "b", [cp.url()], token_b, labels={"zone": "a"},
                   api_addr="127.0.0.1:9002")
    a2 = None
    try:
        await a.start()
        await b.start()
        await a.wait_connected(5)
        await b.wait_connected(5)
        await cp.server.scale(InternalScaleRequest.legacy("web", 2, spec=ZONE_A), None)
        await until(lambda: len(a.assignments.containers()) == 1
                    and len(b.assignments.containers()) == 1, what="one replica each")
        node_a = a.node_id
        revision = cp.server.read(lambda d: d.revision)
        await a.stop()

        # The host changed: another address and zone, and its join token is gone (a
        # worker with an identity needs none to send its profile).
        token_a.unlink()
        a2 = make_agent(tmp_path / "a", [cp.url()], None, labels={"zone": "b"},
                        api_addr="127.0.0.1:9011")
        await a2.start()
        await a2.wait_connected(5)
        assert a2.node_id == node_a and a2.stats["registrations"] == 1
        profile = cp.node(node_a)["profile"]
        assert profile["api_addr"] == "127.0.0.1:9011" and profile["labels"] == {"zone": "b"}
        # web requires zone=a: its replica left the node, with events for both nodes
        assert cp.server.read(lambda d: d.placement("web")) == {b.node_id: {"default": [0, 1]}}
        moved = [e for e in cp.server.read(lambda d: d.log_data()) if e["revision"] > revision]
        assert {(e["node_id"], e["kind"]) for e in moved} == {(node_a, "delete"),
                                                             (b.node_id, "set")}
        await until(lambda: a2.assignments.containers() == [] and
                    b.assignments.containers() == ["web-default-0", "web-default-1"],
                    what="both workers to see the move")
        assert load_identity(a2.identity_dir).profile["labels"] == {"zone": "b"}
        # the listing shows the new profile
        listed = {n["node_id"]: n for n in cp.server.workers()}
        assert listed[node_a]["profile"]["api_addr"] == "127.0.0.1:9011"
    finally:
        for agent in (a, b, a2):
            if agent is not None:
                await agent.stop()
        await cp.stop()


async def test_an_unchanged_profile_registers_nothing_and_a_service_without_room_stays(
        tmp_path, caplog):
    cp = await control_plane()
    token = await cp.token_file(tmp_path)
    agent = make_agent(tmp_path, [cp.url()], token, labels={"zone": "a"})
    try:
        await agent.start()
        await agent.wait_connected(5)
        await cp.server.scale(InternalScaleRequest.legacy("db", 1, spec=ZONE_A), None)
        await agent.stop()
        again = make_agent(tmp_path, [cp.url()], token, labels={"zone": "a"})
        await again.start()
        await again.wait_connected(5)
        assert again.stats["registrations"] == 0           # nothing to send
        await again.stop()
        # no other node has zone=a: db cannot move, and it stays where it is
        moved = make_agent(tmp_path, [cp.url()], token, labels={"zone": "c"})
        with caplog.at_level(logging.WARNING, logger="raftdir.leader.services"):
            await moved.start()
            await moved.wait_connected(5)
            await moved.stop()
            for _ in range(2):                    # the maintenance passes that follow
                assert await cp.server.leader.reconcile() == []
        assert cp.server.read(lambda d: d.placement("db")) == {agent.node_id: {"default": [0]}}
        assert cp.node(agent.node_id)["profile"]["labels"] == {"zone": "c"}
        # said once, not at every pass
        assert [r.getMessage() for r in caplog.records
                if "cannot re-place db" in r.getMessage()] == [
            "term 1: cannot re-place db: no ready node can take replicas"]
    finally:
        await cp.stop()


# ---------------------------------------------------------------------------- loopback

@pytest.mark.parametrize("api_addr, servers, warns", [
    ("127.0.0.1:3669", ["http://10.0.0.5:3669"], True),
    ("127.0.0.1:3669", ["http://127.0.0.1:7201", "localhost:7202"], False),
    ("[::1]:3669", ["[fd00::1]:3669"], True),
    ("localhost:3669", ["https://ctl.example.com:443"], True),
    ("10.0.0.7:3669", ["http://10.0.0.5:3669"], False),
    ("10.0.0.7:3669", ["http://127.0.0.1:3669"], False),
])
def test_the_loopback_warning(api_addr, servers, warns):
    text = loopback_warning(api_addr, servers)
    assert (text is not None) == warns
    if warns:
        assert text.startswith(f"api_addr: {api_addr} is a loopback address")
        assert "--api-addr" in text and servers[-1] in text


async def test_an_agent_advertising_loopback_to_remote_servers_warns_at_start(tmp_path,
                                                                              caplog):
    token = tmp_path / "join.token"
    token.write_text("rdj1.x.y\n")
    agent = make_agent(tmp_path, ["http://192.0.2.10:3669"], token,
                       api_addr="127.0.0.1:3669")
    with caplog.at_level(logging.WARNING, logger="raftdir.agent.agent"):
        await agent.start()
        await agent.stop()
    warnings = [r.getMessage() for r in caplog.records if "loopback" in r.getMessage()]
    assert len(warnings) == 1 and "api_addr: 127.0.0.1:3669" in warnings[0]


# ---------------------------------------------------------------------------- its own view

def worker_config(data_dir: Path, servers: list[str], token: Path | None) -> None:
    mode = WorkerTierMode(role=WorkerTierRole.WORKER, servers=tuple(servers),
                          token_file=str(token) if token else None)
    (data_dir / "cluster_mode.yaml").write_text(dump_yaml(mode))


async def test_the_status_file_follows_the_agent_and_worker_status_shows_it(tmp_path,
                                                                           caplog):
    clock = ManualClock()
    cp = await control_plane(clock=clock)
    token = await cp.token_file(tmp_path)
    worker_config(tmp_path, [cp.url()], token)
    agent = make_agent(tmp_path, [cp.url()], token, clock=clock, manual=True)
    status_path = agent.identity_dir / STATUS_FILE
    try:
        with caplog.at_level(logging.INFO, logger="raftdir.agent.agent"):
            await agent.start()
            await agent.wait_connected(5)
            await until(lambda: read_status(agent.identity_dir)["state"] == "connected",
                        what="the status file to say connected")
            doc = read_status(agent.identity_dir)
            assert doc["node_id"] == agent.node_id and doc["pid"] == os.getpid()
            assert doc["report_server"] == cp.url() and doc["leader"] == cp.url()
            assert doc["last_ack_unix_ms"] is not None and doc["labels"] == {"zone": "test"}

            # nothing changes: the file is not rewritten
            await settle()
            inode = status_path.stat().st_ino
            await step(clock, 1.0, [agent])
            assert status_path.stat().st_ino == inode

            await cp.scale("web", 1)
            await until(lambda: read_status(agent.identity_dir)["assignments"] ==
                        ["web-default-0"], what="the status to show web")
            first = agent.assignments.revision
            await cp.scale("web", 2)
            await until(lambda: read_status(agent.identity_dir)["assignments"] ==
                        ["web-default-0", "web-default-1"], what="the status to show web")
        revision = agent.assignments.revision
        assert read_status(agent.identity_dir)["revision"] == revision > first
        assert read_status(agent.identity_dir)["services"] == {"web": {"default": [0, 1]}}
        applied = [r.getMessage() for r in caplog.records
                   if r.getMessage().startswith("assignments at revision")]
        assert applied == [  # the first poll answers the whole set, the next one events
            f"assignments at revision {first}: full resync: web default=0 (1 container)",
            f"assignments at revision {revision}: set web default=0,1 (2 containers)"]

        result = run_cli("worker", "status", "--data-dir", tmp_path)
        assert result.exit_code == 0, result.output
        lines = dict(re.split(r"\s{2,}", line, maxsplit=1)
                     for line in result.stdout.splitlines())
        assert lines["node"].startswith(f"{agent.node_id} (cluster ")
        assert lines["agent"] == f"running, pid {os.getpid()}"
        assert lines["state"].startswith("connected (reports acknowledged)")
        assert lines["reports to"] == f"127.0.0.1:{cp.ports[0]} (the leader)"
        assert lines["revision"] == str(revision)
        assert lines["services"] == "web default=0,1"
        assert lines["containers"] == "web-default-0 web-default-1"
        data = json.loads(run_cli("worker", "--data-dir", tmp_path, "status", "--json").stdout)
        assert data["running"] is True and data["agent_pid"] == os.getpid()
        assert data["node_id"] == agent.node_id and data["revision"] == revision
        assert data["last_ack_secs_ago"] is not None and "internal_token" not in data

        # the server goes away: suspended, then lost, each in the file
        await cp.close_api()
        await step(clock, 6.0, [agent])
        await until(lambda: read_status(agent.identity_dir)["state"] == "suspended",
                    what="suspended")
        await step(clock, 15.0, [agent])
        await until(lambda: read_status(agent.identity_dir)["state"] == "lost", what="lost")
    finally:
        await agent.stop()
        await cp.stop()
    # stopped: the last view stays, the lock says nobody runs, the exit status says so
    result = run_cli("worker", "status", "--data-dir", tmp_path)
    assert result.exit_code == 1
    assert f"not running (last pid {os.getpid()}" in result.stdout
    assert "lost (stopped)" in result.stdout
    assert "no worker agent is running" in result.stderr


def test_worker_status_without_a_status_or_a_worker_config(tmp_path):
    result = run_cli("worker", "status", "--data-dir", tmp_path)   # single-node: no config
    assert result.exit_code == 2 and "role: worker" in result.stderr
    worker_config(tmp_path, ["127.0.0.1:1"], None)
    result = run_cli("worker", "status", "--data-dir", tmp_path)
    assert result.exit_code == 1
    assert f"{tmp_path / 'worker' / 'identity' / STATUS_FILE}: no status" in result.stderr
    result = run_cli("worker", "status")
    assert result.exit_code == 2 and "--data-dir" in result.stderr
    result = run_cli("worker")
    assert result.exit_code == 2 and "--data-dir" in result.stderr
    assert "Traceback" not in result.output
