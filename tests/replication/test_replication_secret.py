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


# ---------------------------------------------------------------------------- a roll's files

def test_a_roll_installs_promotes_and_retires_without_ever_missing_a_secret(tmp_path):
    from raftdir.replication.secret import (
        NEXT_SECRET_FILE, PREV_SECRET_FILE, SecretSet, fingerprint, load_secrets,
        promote_secret, retire_secret, secret_files_stamp,
    )
    assert load_secrets(tmp_path) is None
    old = create_secret(tmp_path)
    steady = load_secrets(tmp_path)
    assert steady == SecretSet(old) and steady.phase == "steady"
    assert steady.accepted == (old,) and steady.stable == old
    stamp = secret_files_stamp(tmp_path)

    with pytest.raises(ConfigError, match="no next secret"):
        promote_secret(tmp_path)
    with pytest.raises(ConfigError, match="no old secret to retire"):
        retire_secret(tmp_path)

    new = create_secret(tmp_path / NEXT_SECRET_FILE)
    assert secret_files_stamp(tmp_path) != stamp
    installed = load_secrets(tmp_path)
    assert (installed.phase, installed.accepted, installed.stable) == (
        "next installed", (old, new), old)
    assert stat.S_IMODE((tmp_path / NEXT_SECRET_FILE).stat().st_mode) == 0o600

    promoted = promote_secret(tmp_path)
    assert promoted == load_secrets(tmp_path) == SecretSet(new, None, old)
    assert (promoted.phase, promoted.accepted, promoted.stable) == ("promoted", (new, old),
                                                                    old)
    assert load_secret(tmp_path) == new
    assert stat.S_IMODE((tmp_path / PREV_SECRET_FILE).stat().st_mode) == 0o600
    # a second roll cannot start before this one is finished
    create_secret(tmp_path / NEXT_SECRET_FILE)
    with pytest.raises(ConfigError, match="last roll is not finished"):
        promote_secret(tmp_path)
    os.unlink(tmp_path / NEXT_SECRET_FILE)

    retired = retire_secret(tmp_path)
    assert retired == load_secrets(tmp_path) == SecretSet(new)
    assert sorted(p.name for p in tmp_path.iterdir()) == [SECRET_FILE]
    # fingerprints tell secrets apart and give nothing away
    assert fingerprint(old) != fingerprint(new) and len(fingerprint(old)) == 16
    assert old not in str(promoted.describe()) and new not in str(promoted.describe())
    assert promoted.describe() == {"phase": "promoted", "primary": fingerprint(new),
                                   "accepts": [fingerprint(new), fingerprint(old)]}


def test_a_promotion_cut_short_after_its_first_write_is_finished_by_the_next(tmp_path):
    """``promote`` writes ``.prev`` first, then renames ``.next`` over ``cluster.secret``;
    stopped in between, the server still holds old (own) and new (accepted), and running it
    again finishes the job."""
    from raftdir.replication.secret import (
        NEXT_SECRET_FILE, PREV_SECRET_FILE, SecretSet, load_secrets, promote_secret,
    )
    old = create_secret(tmp_path)
    new = create_secret(tmp_path / NEXT_SECRET_FILE)
    create_secret(tmp_path / PREV_SECRET_FILE)
    (tmp_path / PREV_SECRET_FILE).write_text(old + "\n")
    assert load_secrets(tmp_path).accepted == (old, new)
    assert promote_secret(tmp_path) == SecretSet(new, None, old)


@pytest.mark.parametrize("name", ["cluster.secret.next", "cluster.secret.prev"])
def test_a_roll_file_is_checked_like_the_secret(tmp_path, name):
    from raftdir.replication.secret import load_secrets
    create_secret(tmp_path)
    path = tmp_path / name
    path.write_text("ab" * 32 + "\n")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=f"{name}: cluster secret has mode 0644"):
        load_secrets(tmp_path)
    os.chmod(path, 0o600)
    path.write_text("half")
    with pytest.raises(ConfigError, match="hex"):
        load_secrets(tmp_path)
