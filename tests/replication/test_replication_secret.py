"""The cluster secret file, derived keys and the loopback rule."""

from __future__ import annotations

import os
import stat

import pytest

from raftdir.errors import ConfigError
from raftdir.replication.secret import (
    SECRET_FILE,
    check_raft_security,
    create_secret,
    derive_key,
    is_loopback_address,
    load_secret,
    raft_password,
)


def test_create_writes_0600_hex_and_load_reads_it(tmp_path):
    value = create_secret(tmp_path)
    path = tmp_path / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(value) == 64 and int(value, 16) >= 0
    assert load_secret(tmp_path) == value
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_FILE]  # no temp file left


def test_create_refuses_to_overwrite_unless_forced(tmp_path):
    first = create_secret(tmp_path / SECRET_FILE)
    with pytest.raises(ConfigError, match="already exists"):
        create_secret(tmp_path)
    assert load_secret(tmp_path) == first
    second = create_secret(tmp_path, force=True)
    assert second != first and load_secret(tmp_path) == second
    assert stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode) == 0o600


def test_missing_file_is_none(tmp_path):
    assert load_secret(tmp_path) is None


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o602])
def test_group_or_other_permission_bits_are_refused(tmp_path, mode):
    create_secret(tmp_path)
    os.chmod(tmp_path / SECRET_FILE, mode)
    with pytest.raises(ConfigError, match=f"mode {mode:04o}.*chmod 600") as info:
        load_secret(tmp_path)
    assert info.value.field == "cluster_secret"


@pytest.mark.parametrize("content", ["", "short", "z" * 64, "ab cd" * 10])
def test_malformed_secret_is_refused(tmp_path, content):
    path = tmp_path / SECRET_FILE
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="hex"):
        load_secret(tmp_path)


def test_derived_keys_are_stable_and_independent():
    s = "ab" * 32
    k1 = derive_key(s, "raft-password")
    assert k1 == derive_key(s, "raft-password") and len(k1) == 32
    assert k1 != derive_key(s, "admin-token")
    assert k1 != derive_key("cd" * 32, "raft-password")
    assert raft_password(s) == k1.hex()
    with pytest.raises(ValueError):
        derive_key("", "x")


@pytest.mark.parametrize("addr,loop", [
    ("127.0.0.1:1", True), ("127.9.9.9:80", True), ("localhost:5", True),
    ("[::1]:7", True), ("10.0.0.1:7", False), ("0.0.0.0:7", False),
    ("example.com:7", False), ("[fe80::1]:9", False),
])
def test_loopback_detection(addr, loop):
    assert is_loopback_address(addr) is loop


def test_non_loopback_raft_addr_needs_a_secret():
    check_raft_security("127.0.0.1:4000", None)
    check_raft_security("10.1.2.3:4000", "ab" * 32)
    with pytest.raises(ConfigError, match="10.1.2.3:4000.*cluster secret") as info:
        check_raft_security("10.1.2.3:4000", None)
    assert info.value.field == "raft_addr"
    with pytest.raises(ConfigError, match="host:port"):
        check_raft_security("nonsense", None)
