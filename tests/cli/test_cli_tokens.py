"""Access tokens from the command line (issue 12), against a live single-node server whose
reads need a token: `raftdir token create --scope | --viewer`, `token list`, `token
revoke`, each scope's commands allowed and refused, and bad usage as exit 2."""

from __future__ import annotations

import json
from typing import Iterator

import pytest

from cli_harness import ADMIN, LiveServer, run_cli


@pytest.fixture(scope="module")
def closed() -> Iterator[LiveServer]:
    server = LiveServer(require_read_token=True).start()
    try:
        yield server
    finally:
        server.stop()


def make(closed: LiveServer, *args: str) -> dict:
    result = run_cli("token", "create", *args, "-s", closed.url, "--json",
                     env={"RAFTDIR_TOKEN": ADMIN})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_scoped_tokens_are_issued_listed_and_revoked(closed):
    viewer = make(closed, "--viewer", "--valid-for", "8h", "--name", "wall")
    ops = make(closed, "--scope", "operate", "--valid-for", "1d", "--name", "ci-deploy")
    boss = make(closed, "--scope", "admin", "--valid-for", "30d")
    assert viewer["scope"] == "read" and viewer["token"].startswith("rdt1.")
    assert viewer["expires_ms"] - viewer["created_ms"] == 8 * 3600_000
    assert (ops["scope"], ops["name"], ops["creator"]) == ("operate", "ci-deploy",
                                                           "admin-token")
    # plain output is the token alone, on one line
    plain = run_cli("token", "create", "--scope", "read", "-s", closed.url,
                    env={"RAFTDIR_TOKEN": boss["token"]})
    assert plain.exit_code == 0 and plain.stdout.count("\n") == 1
    assert plain.stdout.startswith("rdt1.")

    listing = run_cli("token", "list", "-s", closed.url, env={"RAFTDIR_TOKEN": ADMIN})
    assert listing.exit_code == 0, listing.output
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "SCOPE", "STATE", "CREATED", "EXPIRES",
                                "CREATOR"]
    for made in (viewer, ops, boss):
        row = next(line for line in lines if line.startswith(made["token_id"]))
        assert made["scope"] in row and "active" in row
        assert made["token"] not in listing.stdout
    # the one made with the scoped admin token names it as its creator
    assert f"token {boss['token_id']}" in listing.stdout

    # each scope does what it may, and is refused the rest (exit 1, the reason)
    def as_(token: str, *args: str):
        return run_cli(*args, "-s", closed.url, env={"RAFTDIR_TOKEN": token})

    assert as_(viewer["token"], "workers").exit_code == 0
    assert as_(viewer["token"], "peers").exit_code == 0
    refused = as_(viewer["token"], "scale", "web", "0")
    assert refused.exit_code == 1
    assert "needs a token of scope operate" in refused.stderr and "(forbidden)" in refused.stderr
    assert viewer["token"] not in refused.stderr
    assert as_(ops["token"], "token", "create", "--valid-for", "60").exit_code == 0   # join
    refused = as_(ops["token"], "token", "list")
    assert refused.exit_code == 1 and "scope admin" in refused.stderr
    none = run_cli("workers", "-s", closed.url)
    assert none.exit_code == 1 and "unauthorized" in none.stderr
    assert "--token-file" in none.stderr

    # revoke: refused everywhere from then on; the listing says when
    out = run_cli("token", "revoke", viewer["token_id"], "-s", closed.url,
                  env={"RAFTDIR_TOKEN": ADMIN})
    assert out.exit_code == 0 and out.stdout == f"revoked access token {viewer['token_id']}\n"
    again = run_cli("token", "revoke", viewer["token_id"], "-s", closed.url,
                    env={"RAFTDIR_TOKEN": ADMIN})
    assert again.exit_code == 0 and "was revoked already" in again.stdout
    gone = as_(viewer["token"], "workers")
    assert gone.exit_code == 1 and f"access token {viewer['token_id']} was revoked" in \
        gone.stderr
    rows = json.loads(run_cli("token", "list", "--json", "-s", closed.url,
                              env={"RAFTDIR_TOKEN": ADMIN}).stdout)
    row = next(r for r in rows if r["token_id"] == viewer["token_id"])
    assert row["state"] == "revoked" and row["revoked_ms"] > 0
    unknown = run_cli("token", "revoke", "0" * 16, "-s", closed.url,
                      env={"RAFTDIR_TOKEN": ADMIN})
    assert unknown.exit_code == 1 and "unknown_token" in unknown.stderr


def test_the_token_file_carries_any_token(closed, tmp_path):
    viewer = make(closed, "--scope", "read")
    path = tmp_path / "read.token"
    path.write_text(viewer["token"] + "\n")
    ok = run_cli("leases", "-s", closed.url, "--token-file", str(path))
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize("args,phrase", [
    (["token", "create", "--scope", "root"], "'root' is not one of"),
    (["token", "create", "--scope", "read", "--max-uses", "3"], "is for a join token"),
    (["token", "create", "--name", "x"], "a name is for an access token"),
    (["token", "create", "--scope", "read", "--name", "a b"], "not a token name"),
    (["token", "create", "--scope", "read", "--name", "../x"], "not a token name"),
    (["token", "create", "--viewer", "--scope", "admin"], "--viewer is --scope read"),
    (["token", "create", "--scope", "read", "--valid-for", "366d"], "more than the maximum"),
    (["token", "revoke", "nothex"], "'nothex' is not an access token id"),
    (["token", "create", "--scope", "read", "--valid-for", "\u00b2"], "--valid-for"),
    (["token", "revoke"], "Missing argument 'ID'"),
])
def test_bad_usage_is_exit_2(closed, args, phrase):
    result = run_cli(*args, "-s", closed.url, env={"RAFTDIR_TOKEN": ADMIN})
    assert result.exit_code == 2, result.output
    assert phrase in result.stderr


def test_a_token_file_that_is_not_text_is_exit_2_naming_it(closed, tmp_path):
    bad = tmp_path / "token"
    bad.write_bytes(b"\xff\xfe\x00")
    result = run_cli("token", "list", "-s", closed.url, "--token-file", str(bad))
    assert result.exit_code == 2, result.output
    assert "--token-file" in result.stderr and "not UTF-8" in result.stderr


# ---------------------------------------------------------------------------- secret roll

def test_secret_roll_commands_on_a_data_dir(tmp_path, closed):
    from raftdir.replication.secret import fingerprint, load_secret, load_secrets
    no_secret = run_cli("secret", "create", "--next", "--data-dir", str(tmp_path))
    assert no_secret.exit_code == 2 and "no cluster secret to roll" in no_secret.stderr
    assert run_cli("secret", "create", "--data-dir", str(tmp_path)).exit_code == 0
    old = load_secret(tmp_path)
    early = run_cli("secret", "promote", "--data-dir", str(tmp_path))
    assert early.exit_code == 2 and "no next secret" in early.stderr
    nxt = run_cli("secret", "create", "--next", "--data-dir", str(tmp_path))
    assert nxt.exit_code == 0 and "cluster.secret.next" in nxt.stderr
    again = run_cli("secret", "create", "--next", "--data-dir", str(tmp_path))
    assert again.exit_code == 2 and "already exists" in again.stderr
    new = load_secrets(tmp_path).next
    promoted = run_cli("secret", "promote", "--data-dir", str(tmp_path))
    assert promoted.exit_code == 0, promoted.output
    assert promoted.stdout == (f"{tmp_path}: cluster.secret is now {fingerprint(new)}; the old "
                               f"{fingerprint(old)} is still accepted (cluster.secret.prev) "
                               "until `raftdir secret retire`\n")
    admin = run_cli("token", "admin", "--data-dir", str(tmp_path))
    assert admin.stdout.strip() == __import__("raftdir.auth").auth.admin_token(new)
    retired = run_cli("secret", "retire", "--data-dir", str(tmp_path))
    assert retired.exit_code == 0 and fingerprint(new) in retired.stdout
    twice = run_cli("secret", "retire", "--data-dir", str(tmp_path))
    assert twice.exit_code == 2 and "no old secret to retire" in twice.stderr
    for out in (nxt, promoted, retired, admin):
        assert old not in out.output and new not in out.output

    status = run_cli("secret", "status", "-s", closed.url, env={"RAFTDIR_TOKEN": ADMIN})
    assert status.exit_code == 0, status.output
    lines = status.stdout.splitlines()
    assert lines[0].split() == ["SERVER", "ID", "PHASE", "OWN", "SECRET", "ACCEPTS",
                                "RAFT", "KEYS"]
    assert "steady" in lines[1]
    assert lines[-1] == "no roll in progress: every server holds one secret, the same"
    refused = run_cli("secret", "status", "-s", closed.url)
    assert refused.exit_code == 1 and "(unauthorized)" in refused.stderr


def test_the_advice_follows_every_step_of_a_roll():
    from raftdir.cli import _roll_advice

    def row(phase, own, *accepts):
        return {"server": "s", "phase": phase, "primary": own, "accepts": [own, *accepts]}

    A, B = "a" * 16, "b" * 16
    assert "no roll" in _roll_advice([row("steady", A)] * 3)
    # step 1 half done: everyone still sends under A, which everyone reads
    assert "finish this step on every server" in _roll_advice(
        [row("next installed", A, B), row("steady", A), row("steady", A)])
    assert "promote it" in _roll_advice([row("next installed", A, B)] * 3)
    assert "in progress" in _roll_advice([row("promoted", B, A), row("next installed", A, B),
                                          row("next installed", A, B)])
    assert "retire the old secret" in _roll_advice([row("promoted", B, A)] * 3)
    assert "retire the old secret" in _roll_advice([row("steady", B), row("promoted", B, A),
                                                    row("promoted", B, A)])
    # a server promoted before the others accept the new secret, or one that retired
    # while another still sends under the old secret: they cannot talk
    assert "cannot all talk Raft" in _roll_advice([row("promoted", B, A), row("steady", A)])
    assert "cannot all talk Raft" in _roll_advice([row("steady", B), row("next installed",
                                                                         A, B)])
    assert "not every server answered" in _roll_advice([{"server": "s", "error": "down"}])
