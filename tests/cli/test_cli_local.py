"""Commands that need no server: secret create, token admin, serve/worker config errors,
and help text on every command of the tree."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import click
import pytest

from cli_harness import ROOT, run_cli
from raftdir.auth import admin_token
from raftdir.cli import cli, render_table
from raftdir.replication.secret import load_secret

EXAMPLES = ROOT / "examples"


@pytest.fixture(autouse=True)
def _keep_the_gc_thresholds():
    """``serve`` sets this process's GC thresholds before it runs the server; a test that
    stops it there must not leave them set for the rest of the run."""
    import gc
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


# ---------------------------------------------------------------------------- secret create

def test_secret_create_writes_0600_and_refuses_to_overwrite(tmp_path):
    data_dir = tmp_path / "new" / "dir"  # created, parents too
    result = run_cli("secret", "create", "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    path = data_dir / "cluster.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = load_secret(data_dir)
    assert first and len(first) >= 32
    assert first not in result.output  # the secret itself is never printed
    assert str(path) in result.stderr

    again = run_cli("secret", "create", "--data-dir", data_dir)
    assert again.exit_code == 2
    assert "already exists" in again.stderr and "--force" in again.stderr
    assert load_secret(data_dir) == first

    forced = run_cli("secret", "create", "--data-dir", data_dir, "--force")
    assert forced.exit_code == 0, forced.output
    assert load_secret(data_dir) != first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_secret_create_where_a_file_is_in_the_way_is_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli("secret", "create", "--data-dir", blocker)
    assert result.exit_code == 2


# ---------------------------------------------------------------------------- token admin

def test_token_admin_prints_the_token_derived_from_the_secret(tmp_path):
    assert run_cli("secret", "create", "--data-dir", tmp_path).exit_code == 0
    result = run_cli("token", "admin", "--data-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout == admin_token(load_secret(tmp_path)) + "\n"


def test_token_admin_without_a_usable_secret_is_exit_2(tmp_path):
    result = run_cli("token", "admin", "--data-dir", tmp_path)
    assert result.exit_code == 2
    assert "no cluster secret" in result.stderr and "raftdir secret create" in result.stderr

    secret = tmp_path / "cluster.secret"
    secret.write_text("ab" * 32 + "\n")
    secret.chmod(0o644)
    result = run_cli("token", "admin", "--data-dir", tmp_path)
    assert result.exit_code == 2
    assert f"{secret}: cluster secret has mode 0644" in result.stderr

    secret.chmod(0o600)
    secret.write_text("too short\n")
    result = run_cli("token", "admin", "--data-dir", tmp_path)
    assert result.exit_code == 2 and "hex characters" in result.stderr


# ---------------------------------------------------------------------------- serve, worker

def test_serve_with_a_bad_config_is_exit_2_naming_file_and_field(tmp_path):
    config = tmp_path / "cluster_mode.yaml"
    config.write_text("mode: raft\nnode_id: 1\npeers:\n  - {id: 1, api_addr: 10.0.0.1:1}\n")
    result = run_cli("serve", "--data-dir", tmp_path)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {config}: peers[0].raft_addr: ")

    config.write_text("mode: raft\nbogus: 1\n")
    result = run_cli("serve", "--data-dir", tmp_path)
    assert result.exit_code == 2 and str(config) in result.stderr


def test_serve_and_worker_refuse_each_others_configs(tmp_path):
    shutil.copy(EXAMPLES / "worker-tier-worker.yaml", tmp_path / "cluster_mode.yaml")
    result = run_cli("serve", "--data-dir", tmp_path)
    assert result.exit_code == 2 and "raftdir worker" in result.stderr

    single = tmp_path / "single"
    single.mkdir()  # no cluster_mode.yaml: single-node
    result = run_cli("worker", "--data-dir", single)
    assert result.exit_code == 2
    assert "role: worker" in result.stderr and "single-node" in result.stderr


@pytest.mark.parametrize("command,args,phrase", [
    ("serve", ["--tls-cert", "CERT"], "--tls-cert and --tls-key go together"),
    ("serve", ["--tls-key", "CERT"], "--tls-cert and --tls-key go together"),
    ("serve", ["--tls-ca", "CERT"], "--tls-ca needs"),
    ("serve", ["--tls-peer-ca", "CERT"], "--tls-peer-ca needs"),
    ("serve", ["--api-port", "0"], "--api-port"),
    ("serve", ["--tls-cert", "missing.pem", "--tls-key", "CERT"], "missing.pem"),
    ("worker", ["--tls-cert", "CERT"], "--tls-cert and --tls-key go together"),
    ("worker", ["--tls-ca", "missing.pem"], "missing.pem"),
])
def test_serve_and_worker_tls_and_port_options_are_checked(tmp_path, command, args, phrase):
    cert = tmp_path / "cert.pem"
    cert.write_text("not really a certificate")
    args = [str(cert) if a == "CERT" else a for a in args]
    result = run_cli(command, "--data-dir", tmp_path, *args)
    assert result.exit_code == 2 and phrase in result.stderr


# ---------------------------------------------------------------------------- help, table

def walk(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield path + (name,), command
        if isinstance(command, click.Group):
            yield from walk(command, path + (name,))


def test_every_command_in_the_tree_has_help_text():
    commands = list(walk(cli))
    names = {" ".join(p) for p, _ in commands}
    assert names >= {
        "serve", "worker", "worker status", "peers", "peers add", "peers remove", "workers", "leases", "ps",
        "service-state", "scale", "drain", "evict", "token", "token create", "token admin",
        "secret", "secret create", "config", "config check"}
    result = run_cli("--help")
    assert result.exit_code == 0 and "Usage: raftdir" in result.stdout
    for path, command in commands:
        result = run_cli(*path, "--help")
        assert result.exit_code == 0, path
        assert f"Usage: raftdir {' '.join(path)}" in result.stdout, path
        assert (command.help or "").strip(), f"{' '.join(path)} has no help text"
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"{' '.join(path)} {param.opts[0]} has no help"


def test_every_listing_has_json_and_peers_and_workers_have_watch():
    by_name = {" ".join(p): c for p, c in walk(cli)}
    for name in ("peers", "workers", "leases", "ps", "service-state", "scale",
                 "token create", "config check"):
        assert "--json" in [o for p in by_name[name].params for o in p.opts], name
    for name in ("peers", "workers"):
        opts = [o for p in by_name[name].params for o in p.opts]
        assert {"--watch", "--interval", "--count"} <= set(opts), name


def test_the_table_renderer():
    text = render_table(("ID", "NAME", "X"), [(1, "a", None), (22, "bbb", True)])
    assert text.splitlines() == ["ID  NAME  X", "1   a     -", "22  bbb   True"]
    assert render_table(("A", "B"), []) == "A  B"


def test_version():
    result = run_cli("--version")
    assert result.exit_code == 0 and result.stdout.startswith("raftdir, version ")


def test_the_examples_dir_is_where_the_harness_says():
    assert (EXAMPLES / "worker-tier-worker.yaml").is_file(), Path(EXAMPLES)


def test_serve_election_timeout_and_max_connections_reach_the_daemon(tmp_path, monkeypatch):
    import raftdir.cli as cli_module

    started = []
    monkeypatch.setattr(cli_module, "_run_daemon", lambda daemon, what: started.append(daemon))
    monkeypatch.setattr(cli_module, "_raise_open_file_limit", lambda: None)
    shutil.copy(EXAMPLES / "raft.yaml", tmp_path / "cluster_mode.yaml")
    result = run_cli("serve", "--data-dir", tmp_path, "--election-timeout", "1.5",
                     "--max-connections", "30000")
    assert result.exit_code == 0, result.output
    tuning = started[0].options.raft_tuning
    assert (tuning.raft_min_timeout, tuning.raft_max_timeout) == (1.5, 4.5)
    assert started[0].options.max_connections == 30_000

    started.clear()
    assert run_cli("serve", "--data-dir", tmp_path).exit_code == 0
    assert started[0].options.raft_tuning is None  # the defaults
    assert started[0].options.max_connections == 10_000

    for option, value in (("--election-timeout", "0.1"), ("--max-connections", "0")):
        result = run_cli("serve", "--data-dir", tmp_path, option, value)
        assert result.exit_code == 2 and option in result.stderr


def test_serve_raises_the_soft_open_file_limit_to_the_hard_one(monkeypatch):
    import resource

    import raftdir.cli as cli_module

    calls = []
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 65536))
    monkeypatch.setattr(resource, "setrlimit", lambda which, limits: calls.append(limits))
    cli_module._raise_open_file_limit()
    assert calls == [(65536, 65536)]

    calls.clear()
    monkeypatch.setattr(resource, "getrlimit", lambda which: (65536, 65536))
    cli_module._raise_open_file_limit()
    assert calls == []


@pytest.mark.parametrize("value", ["0", "a,b", "1,2,3,4", "", "-5"])
def test_serve_gc_threshold_is_checked_naming_the_option(tmp_path, value):
    result = run_cli("serve", "--data-dir", tmp_path, "--gc-threshold", value)
    assert result.exit_code == 2 and "--gc-threshold" in result.stderr, result.output


def test_serve_gc_threshold_is_set_before_the_server_runs(tmp_path, monkeypatch):
    import gc

    import raftdir.cli as cli_module

    seen = []
    monkeypatch.setattr(cli_module, "_run_daemon",
                        lambda daemon, what: seen.append(gc.get_threshold()))
    monkeypatch.setattr(cli_module, "_raise_open_file_limit", lambda: None)
    before = gc.get_threshold()
    assert run_cli("serve", "--data-dir", tmp_path).exit_code == 0
    gc.set_threshold(*before)
    result = run_cli("serve", "--data-dir", tmp_path, "--gc-threshold", "50000,20")
    assert result.exit_code == 0, result.output
    # the default: full collections 100 times rarer than CPython's (docs/design.md)
    assert seen == [(700, 10, 1000), (50000, 20, before[2])]
