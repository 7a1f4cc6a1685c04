"""Pure pieces of the agent: platform names, the token's cluster hint, import boundary,
and the daemon driving the agent through its embedding API."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent_harness import control_plane, until
from raftdir.agent.agent import token_cluster_id
from raftdir.agent.profile import detect_profile, normalize_arch, normalize_os
from raftdir.auth import issue_join_token


@pytest.mark.parametrize("raw,wire", [("Linux", "linux"), ("Darwin", "darwin"),
                                      ("Windows", "windows"), ("macOS", "darwin"),
                                      ("FreeBSD", "freebsd"), ("SunOS", "solaris"),
                                      ("Plan9", "plan9")])
def test_os_names_are_normalised(raw, wire):
    assert normalize_os(raw) == wire


@pytest.mark.parametrize("raw,wire", [("x86_64", "x86_64"), ("AMD64", "x86_64"),
                                      ("arm64", "aarch64"), ("aarch64", "aarch64"),
                                      ("riscv64", "riscv64"), ("i686", "x86"),
                                      ("armv7l", "arm"), ("ppc64le", "powerpc64"),
                                      ("s390x", "s390x")])
def test_arch_names_are_normalised(raw, wire):
    assert normalize_arch(raw) == wire


def test_profile_overrides_and_fallbacks():
    p = detect_profile("10.0.0.7:7001", {"gpu": "a100"}, os_name="Darwin", arch="arm64",
                       cpus=8, memory_bytes=1 << 30)
    assert (p.os, p.arch, p.cpu_total, p.memory_total_bytes, p.labels) == \
        ("darwin", "aarch64", 8, 1 << 30, {"gpu": "a100"})
    # what platform says passes through (lowercased), as ZLayer's worker sends Rust's names
    p = detect_profile("10.0.0.7:7001", os_name="FreeBSD", arch="riscv64")
    assert (p.os, p.arch) == ("freebsd", "riscv64")
    p = detect_profile("10.0.0.7:7001", os_name="", arch=" ")
    assert (p.os, p.arch) == ("unknown", "unknown")
    assert detect_profile("10.0.0.7:7001").cpu_total >= 1


def test_the_tokens_cluster_hint():
    token, _ = issue_join_token("c4" * 32, "rd-abc", valid_for_secs=60, max_uses=1,
                                now_unix_secs=1)
    assert token_cluster_id(token) == "rd-abc"
    assert token_cluster_id("garbage") is None
    assert token_cluster_id("rdj1.!!!.x") is None


def test_the_agent_does_not_import_the_server_side():
    code = ("import sys, raftdir.agent; bad = [m for m in sys.modules if m in "
            "('raftdir.server', 'raftdir.api.server', 'raftdir.leader.services', "
            "'raftdir.core.directory', 'raftdir.cli', 'pysyncobj')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout


async def test_the_daemon_runs_a_worker_through_the_agent(tmp_path):
    from raftdir.daemon import Daemon
    from raftdir.model import WorkerTierMode, WorkerTierRole

    cp = await control_plane()
    mode = WorkerTierMode(role=WorkerTierRole.WORKER, servers=(cp.url(),),
                          token_file=str(await cp.token_file(tmp_path)))
    daemon = Daemon(mode, tmp_path)
    seen = []
    daemon.on_assignments(lambda change, current: seen.append(current.containers()))
    try:
        await daemon.start()
        await until(lambda: daemon.status()["agent"]["state"] == "connected",
                    what="the agent to connect")
        assert daemon.node_id == daemon.agent.node_id and not daemon.cluster.is_leader()
        await cp.scale("web", 1)
        await until(lambda: seen and seen[-1] == ["web-default-0"], what="the assignment")
        assert daemon.status()["assignments"] == ["web-default-0"]
    finally:
        await daemon.stop()
        await cp.stop()
