"""The systemd units in examples/systemd: they parse, run the raftdir commands with options
those commands have, keep their data in their StateDirectory, are hardened, and (where
systemd-analyze exists) systemd itself accepts them."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from raftdir.cli import cli

UNITS = Path(__file__).resolve().parent.parent / "examples" / "systemd"
INSTALLED = "/opt/raftdir/venv/bin/raftdir"
EXPECTED = {
    "raftdir-server.service": ("serve", "/var/lib/raftdir"),
    "raftdir-worker.service": ("worker", "/var/lib/raftdir-worker"),
}


def _unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string((UNITS / name).read_text())
    return parser


def _exec_start(unit: configparser.RawConfigParser) -> list[str]:
    """ExecStart as argv (backslash-newline continuations joined, as systemd does)."""
    return shlex.split(unit["Service"]["ExecStart"].replace("\\\n", " "))


def test_the_two_units_are_there():
    assert sorted(p.name for p in UNITS.glob("*.service")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exec_start_runs_the_raftdir_command_with_options_it_has(name):
    command, data_dir = EXPECTED[name]
    argv = _exec_start(_unit(name))
    assert argv[:4] == [INSTALLED, command, "--data-dir", data_dir]
    known = {opt for param in cli.commands[command].params for opt in param.opts}
    used = {arg for arg in argv[2:] if arg.startswith("--")}
    assert used <= known, used - known
    if command == "serve":
        assert {"--tls-cert", "--tls-key", "--tls-peer-ca"} <= used
    else:
        assert {"--tls-ca", "--api-addr"} <= used


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_dedicated_user_its_state_directory_and_hardening(name):
    service = _unit(name)["Service"]
    _, data_dir = EXPECTED[name]
    assert service["User"] == "raftdir" and service["Group"] == "raftdir"
    assert f"/var/lib/{service['StateDirectory']}" == data_dir
    assert service["StateDirectoryMode"] == "0700" and service["UMask"] == "0077"
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"   # a config error: no restart loop
    assert service["NoNewPrivileges"] == "yes"
    assert service["CapabilityBoundingSet"] == ""
    assert service["ProtectSystem"] == "strict"
    assert int(service["LimitNOFILE"]) >= 65536
    assert service["KillSignal"] == "SIGTERM"          # raftdir's clean stop


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_them(tmp_path):
    """Verified as installed, with ExecStart pointing at this environment's raftdir (verify
    insists that the program exists). Any complaint (an unknown key, a bad value) fails."""
    here = Path(sys.executable).with_name("raftdir")
    program = str(here) if here.exists() else sys.executable
    paths = []
    for name in EXPECTED:
        copy = tmp_path / name
        copy.write_text((UNITS / name).read_text().replace(INSTALLED, program))
        paths.append(str(copy))
    out = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
