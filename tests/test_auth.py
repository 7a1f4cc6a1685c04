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


# ---------------------------------------------------------------------------- a roll's secrets

def test_during_a_roll_every_secret_of_the_set_is_accepted():
    from raftdir.auth import is_admin_token
    both = [SECRET, OTHER]
    for secret in both:
        check_admin_token(admin_token(secret), both)
        text, _ = issue_join_token(secret, "cluster-a", valid_for_secs=60, max_uses=1,
                                   now_unix_secs=1000)
        verify_join_token(text, both, "cluster-a", 1000)
    third = "ef" * 32
    assert not is_admin_token(admin_token(third), both)
    with pytest.raises(TokenInvalid, match="signature"):
        verify_join_token(token()[0], [OTHER, third], "cluster-a", 1000)


# ---------------------------------------------------------------------------- access tokens

def test_an_access_token_is_random_or_derived_from_the_clients_seed():
    from raftdir.auth import (
        access_token_matches, hash_access_token, issue_access_token, parse_access_token,
    )
    a, a_id = issue_access_token()
    b, b_id = issue_access_token()
    assert a != b and a_id != b_id
    assert parse_access_token(a) == a_id and a.startswith(f"rdt1.{a_id}.")
    # a retried creation (the same seed) makes the same token, whatever the cluster secret
    seed, other = "s" * 43, "t" * 43
    assert issue_access_token(seed) == issue_access_token(seed)
    assert issue_access_token(seed) != issue_access_token(other)
    assert parse_access_token(issue_access_token(seed)[0]) == issue_access_token(seed)[1]
    assert access_token_matches(a, hash_access_token(a))
    for bad in (b, a + "x", None, ""):
        assert not access_token_matches(bad, hash_access_token(a))
    for bad in (None, "", "rdt1", "rdt1.x.y", a.replace("rdt1", "rdt2"), a + "x",
                a.upper(), admin_token(SECRET), token()[0]):
        assert parse_access_token(bad) is None, bad


def test_scopes_are_ordered():
    from raftdir.auth import SCOPES, scope_allows
    from raftdir.core import ACCESS_SCOPES
    assert SCOPES == ACCESS_SCOPES == ("read", "operate", "admin")
    assert [n for n in SCOPES if scope_allows(n, "read")] == ["read", "operate", "admin"]
    assert [n for n in SCOPES if scope_allows(n, "operate")] == ["operate", "admin"]
    assert [n for n in SCOPES if scope_allows(n, "admin")] == ["admin"]
