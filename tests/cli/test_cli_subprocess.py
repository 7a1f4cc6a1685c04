"""``python -m raftdir`` as a real process: exit codes and messages without a traceback,
and ``raftdir serve`` from start to a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

from cli_harness import ROOT, free_port

ENV = {k: v for k, v in os.environ.items() if not k.startswith("RAFTDIR_")}


def raftdir(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raftdir", *map(str, args)], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=timeout)


def test_config_check_on_a_bad_file_is_exit_2_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: static\nnode_id: 9\npeers: []\n")
    proc = raftdir("config", "check", bad)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {bad}: ")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_peers_against_a_dead_port_is_exit_1_naming_the_peer():
    port = free_port()
    proc = raftdir("peers", "--server", f"127.0.0.1:{port}")
    assert proc.returncode == 1, proc.stderr
    assert f"127.0.0.1:{port}: connection refused" in proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_usage_errors_are_exit_2():
    assert raftdir("peers").returncode == 2  # no server
    assert raftdir("scale", "web").returncode == 2  # no N
    assert raftdir("frobnicate").returncode == 2


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def test_serve_single_node_answers_the_cli_and_stops_cleanly_on_sigterm(tmp_path):
    data_dir = tmp_path / "data"
    assert raftdir("secret", "create", "--data-dir", data_dir).returncode == 0
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftdir", "serve", "--data-dir", str(data_dir),
         "--api-port", str(port)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stderr, lines), daemon=True).start()
    log: list[str] = []

    def wait_for(phrase: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(phrase in line for line in log):
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None:
                raise AssertionError(f"serve exited before {phrase!r}:\n{''.join(log)}")
            log.append(line)
            assert time.monotonic() < deadline, f"no {phrase!r} in:\n{''.join(log)}"

    try:
        wait_for(f"API http://127.0.0.1:{port}", 20)
        peers = raftdir("peers", "--server", f"127.0.0.1:{port}", "--json", "--timeout", "3")
        assert peers.returncode == 0, peers.stderr + "".join(log)
        assert [r["role"] for r in json.loads(peers.stdout)] == ["leader"]

        admin = raftdir("token", "admin", "--data-dir", data_dir).stdout.strip()
        env = {**ENV, "RAFTDIR_ADMIN_TOKEN": admin}
        token = subprocess.run(
            [sys.executable, "-m", "raftdir", "token", "create", "-s", f"127.0.0.1:{port}",
             "--timeout", "3"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=20)
        assert token.returncode == 0, token.stderr
        assert token.stdout.startswith("rdj1.")

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        wait_for("server stopped", 5)
        assert "Traceback" not in "".join(log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
