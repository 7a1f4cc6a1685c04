"""Join tokens, node secrets and the admin token."""

from __future__ import annotations

import pytest

from raftdir import TokenInvalid, Unauthorized
from raftdir.auth import (
    admin_token, bearer_token, check_admin_token, hash_node_secret, issue_join_token,
    new_node_secret, node_secret_matches, verify_join_token,
)

SECRET = "ab" * 32
OTHER = "cd" * 32


def token(**kw):
    args = dict(valid_for_secs=600, max_uses=3, now_unix_secs=1000)
    args.update(kw)
    return issue_join_token(SECRET, "cluster-a", **args)


def test_a_fresh_token_verifies_with_its_claims():
    text, claims = token()
    got = verify_join_token(text, SECRET, "cluster-a", now_unix_secs=1500)
    assert got == claims
    assert (got.cluster_id, got.expires_unix_secs, got.max_uses) == ("cluster-a", 1600, 3)


@pytest.mark.parametrize("mutate,reason", [
    (lambda t: t, None),
    (lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), "signature does not match"),
    (lambda t: "rdj2" + t[4:], "malformed"),
    (lambda t: t.replace(".", "", 1), "malformed"),
    (lambda t: "garbage", "malformed"),
])
def test_tampered_tokens_name_the_failed_check(mutate, reason):
    text, _ = token()
    if reason is None:
        verify_join_token(mutate(text), SECRET, "cluster-a", 1000)
        return
    with pytest.raises(TokenInvalid, match=reason):
        verify_join_token(mutate(text), SECRET, "cluster-a", 1000)


def test_payload_swapped_between_tokens_fails_the_signature():
    a, _ = token(max_uses=1)
    b, _ = token(max_uses=100)
    forged = ".".join([a.split(".")[0], b.split(".")[1], a.split(".")[2]])
    with pytest.raises(TokenInvalid, match="signature"):
        verify_join_token(forged, SECRET, "cluster-a", 1000)


def test_another_clusters_secret_or_id_is_refused():
    text, _ = token()
    with pytest.raises(TokenInvalid, match="signature"):
        verify_join_token(text, OTHER, "cluster-a", 1000)
    with pytest.raises(TokenInvalid, match="for cluster 'cluster-a', not 'cluster-b'"):
        verify_join_token(text, SECRET, "cluster-b", 1000)


def test_expiry_is_exclusive_at_the_deadline():
    text, _ = token(valid_for_secs=60)
    verify_join_token(text, SECRET, "cluster-a", 1059)
    with pytest.raises(TokenInvalid, match="expired at 1060"):
        verify_join_token(text, SECRET, "cluster-a", 1060)


def test_node_secret_hash_matches_only_its_secret():
    s1, s2 = new_node_secret(), new_node_secret()
    assert s1 != s2 and len(s1) >= 40
    assert node_secret_matches(s1, hash_node_secret(s1))
    assert not node_secret_matches(s2, hash_node_secret(s1))
    assert not node_secret_matches(None, hash_node_secret(s1))
    assert not node_secret_matches(s1, None)


def test_admin_token_is_derived_and_checked():
    assert admin_token(SECRET) == admin_token(SECRET) != admin_token(OTHER)
    check_admin_token(admin_token(SECRET), SECRET)
    for bad in (None, "", admin_token(OTHER)):
        with pytest.raises(Unauthorized):
            check_admin_token(bad, SECRET)


def test_bearer_header_parsing():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token(None) is None and bearer_token("Bearer ") is None


# ---------------------------------------------------------------------------- viewer tokens

def test_a_viewer_token_is_checked_against_the_cluster_secret_and_its_expiry():
    from raftdir.auth import (
        MAX_VIEWER_SECS, is_viewer_token, issue_viewer_token, verify_viewer_token,
    )
    admin = admin_token(SECRET)
    token, claims = issue_viewer_token(admin, valid_for_secs=60, now_unix_secs=1000)
    assert is_viewer_token(token) and not is_viewer_token(admin) and not is_viewer_token(None)
    assert verify_viewer_token(token, SECRET, 1059) == claims
    assert claims.scope == "read" and claims.expires_unix_secs == 1060
    failures = {
        "expired": (token, SECRET, 1060),
        "signature does not match": (token, "another" * 8, 1000),
        "malformed": (token.replace("rdv1.", "rdj1."), SECRET, 1000),
        "signature does not match ": (token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),
                                      SECRET, 1000),
    }
    for why, args in failures.items():
        with pytest.raises(Unauthorized) as err:
            verify_viewer_token(*args)
        assert why.strip() in err.value.message and token not in err.value.message
    # the payload is signed: a longer life or another scope does not verify
    prefix, payload, mac = token.split(".")
    other, _ = issue_viewer_token(admin, valid_for_secs=MAX_VIEWER_SECS, now_unix_secs=1000)
    with pytest.raises(Unauthorized):
        verify_viewer_token(f"{prefix}.{other.split('.')[1]}.{mac}", SECRET, 1000)
    with pytest.raises(ValueError):
        issue_viewer_token(admin, valid_for_secs=MAX_VIEWER_SECS + 1, now_unix_secs=0)


def test_a_server_lets_the_admin_and_viewer_tokens_read_and_only_the_admin_write():
    from raftdir.auth import issue_viewer_token
    from raftdir.clock import ManualClock
    from raftdir.server import DirectoryServer, ServerSettings
    clock = ManualClock()
    server = DirectoryServer(ServerSettings(node_id=1), secret=SECRET, clock=clock)
    now = clock.wall_ms() // 1000
    viewer, _ = issue_viewer_token(admin_token(SECRET), valid_for_secs=30, now_unix_secs=now)
    server.check_reader(admin_token(SECRET))
    server.check_reader(viewer)
    with pytest.raises(Unauthorized):
        server.check_admin(viewer)            # reading only
    for bad in (None, "", "x", admin_token("other" * 8)):
        with pytest.raises(Unauthorized):
            server.check_reader(bad)
    clock.advance(31)
    with pytest.raises(Unauthorized, match="expired"):
        server.check_reader(viewer)
    with pytest.raises(Unauthorized):
        DirectoryServer(ServerSettings(node_id=1), secret=None).check_reader(viewer)
