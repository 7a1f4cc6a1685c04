"""Credentials: join tokens, per-node secrets, the admin token and scoped access tokens
(directory.md §4, §11).

Owns: the join-token format and its checks, node-secret issue and hashing, the admin token
(derived from the cluster secret: the bootstrap credential), the access-token format
(issue, parse, hash, compare), the scopes and their order, and the rule that every compare
of a secret or token is constant-time (``hmac.compare_digest``). Keys derive from the
cluster secret (``derive_key``, also used for the Raft password), which itself never
travels. During a roll of the secret (docs/operations.md) a server accepts every secret of
its set: the checks here take one secret or several. Pure functions (``secrets`` is the
only randomness, and only in the ``new_*`` / ``issue_*`` functions); any thread. Must not
import the API, agent or CLI.

A join token is ``rdj1.<payload>.<mac>``: ``payload`` is base64url of the msgpack map
``{cid, tid, exp, max}`` (cluster id, token id, expiry in Unix seconds, max uses; 0 = no
limit) and ``mac`` is base64url HMAC-SHA256 of ``rdj1.<payload>`` under the join-token key.
The use count is hard state (``Directory.token_uses``), so ``max`` holds across leader
changes; checking it is the state machine's job, at registration.

An access token is ``rdt1.<id>.<secret>``: ``id`` is 16 hex digits, ``secret`` 32 random
bytes in base64url (43 characters). The directory keeps its id, name, scope, expiry,
creator and the SHA-256 of the whole token, never the token (``CreateAccessToken``), so
every server checks it from its own applied state and a leader change changes nothing. It
does not depend on the cluster secret: rolling the secret leaves access tokens valid. Its
scope is ``read`` (listings, service state, metrics, the dashboard), ``operate`` (scale,
drain, evict, join tokens) or ``admin`` (membership, access tokens, backup, digest), each
allowing what the ones before it do; the admin token is ``admin``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass
from typing import Sequence

import msgpack

from .errors import TokenInvalid, Unauthorized

__all__ = [
    "derive_key", "JoinToken", "issue_join_token", "verify_join_token", "peek_join_token",
    "new_node_secret", "hash_node_secret", "node_secret_matches", "admin_token",
    "check_admin_token", "is_admin_token", "matches_any", "bearer_token", "presented_token",
    "is_loopback_host", "SCOPES", "scope_allows",
    "Grant", "ADMIN_PRINCIPAL", "issue_access_token", "ACCESS_SEED_RE", "parse_access_token",
    "hash_access_token", "access_token_matches",
]

_PREFIX = "rdj1"


def derive_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose (``"raft-password"``, ``"join-token"``,
    ``"admin-token"``, ...): HMAC-SHA256 keyed by the secret. Keys for different purposes
    are independent, so leaking one (say the admin token) reveals nothing of the others."""
    if not secret:
        raise ValueError("derive_key needs a non-empty secret")
    if not purpose:
        raise ValueError("derive_key needs a purpose")
    return hmac.new(secret.encode("utf-8"), b"raftdir/v1/" + purpose.encode("utf-8"),
                    hashlib.sha256).digest()



@dataclass(frozen=True)
class JoinToken:
    """The claims of a verified join token."""

    cluster_id: str
    token_id: str
    expires_unix_secs: int
    max_uses: int  # 0: no limit


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, signed: str) -> bytes:
    return hmac.new(derive_key(secret, "join-token"), signed.encode("ascii"),
                    hashlib.sha256).digest()


def issue_join_token(secret: str, cluster_id: str, *, valid_for_secs: int, max_uses: int,
                     now_unix_secs: int, token_id: str | None = None) -> tuple[str, JoinToken]:
    """A new signed join token and its claims."""
    if valid_for_secs <= 0:
        raise ValueError("valid_for_secs must be positive")
    if max_uses < 0:
        raise ValueError("max_uses must not be negative")
    claims = JoinToken(cluster_id, token_id or secrets.token_hex(8),
                       now_unix_secs + valid_for_secs, max_uses)
    payload = _b64(msgpack.packb({"cid": claims.cluster_id, "tid": claims.token_id,
                                  "exp": claims.expires_unix_secs, "max": claims.max_uses},
                                 use_bin_type=True))
    signed = f"{_PREFIX}.{payload}"
    return f"{signed}.{_b64(_mac(secret, signed))}", claims


def _split(token: str) -> list[str]:
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != _PREFIX:
        raise TokenInvalid("join token is malformed (expected rdj1.<payload>.<mac>)",
                           field="token")
    return parts


def _claims(payload: str) -> JoinToken:
    try:
        claims = msgpack.unpackb(_unb64(payload), raw=False, strict_map_key=True)
        return JoinToken(str(claims["cid"]), str(claims["tid"]), int(claims["exp"]),
                         int(claims["max"]))
    except Exception:  # noqa: BLE001 - whatever is wrong, the payload is unreadable
        raise TokenInvalid("join token payload is unreadable", field="token") from None


def peek_join_token(token: str) -> JoinToken | None:
    """The claims of a join token read WITHOUT checking its signature (a worker's hint to
    catch an identity from another cluster early); None when it is not a join token."""
    try:
        return _claims(_split(token)[1])
    except TokenInvalid:
        return None


def _secrets(secret: str | Sequence[str]) -> tuple[str, ...]:
    return (secret,) if isinstance(secret, str) else tuple(secret)


def _any_matches(presented: bytes, expected: list[bytes]) -> bool:
    """Whether ``presented`` equals one of ``expected``, comparing with every one of them
    in constant time (no early exit: the time says nothing about which one matched)."""
    found = False
    for value in expected:
        found |= hmac.compare_digest(presented, value)
    return found


def matches_any(presented: str | None, expected: Sequence[str]) -> bool:
    """``_any_matches`` for text: a presented token against the ones accepted."""
    if not presented:
        return False
    return _any_matches(presented.encode("utf-8"), [e.encode("utf-8") for e in expected])


def verify_join_token(token: str, secret: str | Sequence[str], cluster_id: str,
                      now_unix_secs: int) -> JoinToken:
    """Check the signature (under ``secret``, or any of several during a roll of the
    cluster secret), the cluster and the expiry, in that order; raises ``TokenInvalid``
    whose message names the check that failed."""
    parts = _split(token)
    signed = f"{parts[0]}.{parts[1]}"
    try:
        mac = _unb64(parts[2])
    except ValueError:
        raise TokenInvalid("join token signature is not base64url", field="token") from None
    if not _any_matches(mac, [_mac(s, signed) for s in _secrets(secret)]):
        raise TokenInvalid("join token signature does not match this cluster's secret",
                           field="token")
    parsed = _claims(parts[1])
    if parsed.cluster_id != cluster_id:
        raise TokenInvalid(f"join token is for cluster {parsed.cluster_id!r}, not "
                           f"{cluster_id!r}", field="token")
    if now_unix_secs >= parsed.expires_unix_secs:
        raise TokenInvalid(f"join token expired at {parsed.expires_unix_secs} (now "
                           f"{now_unix_secs})", field="token")
    return parsed


def new_node_secret() -> str:
    """A fresh per-node secret, handed to the node once at registration."""
    return secrets.token_urlsafe(32)


def hash_node_secret(node_secret: str) -> str:
    """What the directory stores instead of the secret (hex SHA-256; the secret is 256
    random bits, so no slow hash is needed)."""
    return hashlib.sha256(node_secret.encode("utf-8")).hexdigest()


def node_secret_matches(node_secret: str | None, stored_hash: str | None) -> bool:
    if not node_secret or not stored_hash:
        return False
    return hmac.compare_digest(hash_node_secret(node_secret), stored_hash)


def admin_token(secret: str) -> str:
    """The admin token: derived from the cluster secret, so every server accepts it."""
    return derive_key(secret, "admin-token").hex()


def is_admin_token(presented: str | None, secret: str | Sequence[str]) -> bool:
    """Whether ``presented`` is the admin token of ``secret`` (or of any of several, during
    a roll), compared in constant time."""
    return matches_any(presented, [admin_token(s) for s in _secrets(secret)])


def check_admin_token(presented: str | None, secret: str | Sequence[str]) -> None:
    if not is_admin_token(presented, secret):
        raise Unauthorized("this operation needs the admin token "
                           "(Authorization: Bearer <token>)")


def is_loopback_host(host: str) -> bool:
    """True when ``host`` (no port; an IPv6 literal with or without brackets) is a loopback
    host: 127.0.0.0/8, ``::1`` or ``localhost``. Any other DNS name, the unspecified host
    and the empty host (every address) are not: they may be reachable from elsewhere. An
    API bound to a loopback host answers reads without a token (unless told not to); a
    Raft address on one needs no cluster secret."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None; ``Unauthorized``
    for one that is not ASCII text (``presented_token``)."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return presented_token(value.strip() or None) if scheme.lower() == "bearer" else None


def presented_token(value: str | None) -> str | None:
    """A token as a request presents it: every token and secret raftdir issues is ASCII,
    so anything else (aiohttp hands non-UTF-8 header bytes over as surrogates, which
    cannot be encoded for a compare) is refused as ``Unauthorized``, not a 500."""
    if value is not None and not value.isascii():
        raise Unauthorized("the token presented is not ASCII text; raftdir's tokens are")
    return value


# ---------------------------------------------------------------------------- access tokens

#: The scopes of an access token, weakest first (the state machine's
#: ``raftdir.core.state.ACCESS_SCOPES``; not imported from there, so that the worker agent,
#: which uses this module, loads nothing of the core).
SCOPES = ("read", "operate", "admin")
#: Who the admin token stands for, as a grant's principal and a token's ``creator``.
ADMIN_PRINCIPAL = "admin-token"
_ACCESS_PREFIX = "rdt1"
_ACCESS_RE = re.compile(r"rdt1\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})\Z")


def scope_allows(have: str, need: str) -> bool:
    """Whether a credential of scope ``have`` may do what needs scope ``need``."""
    return SCOPES.index(have) >= SCOPES.index(need)


@dataclass(frozen=True)
class Grant:
    """What a checked credential may do: its ``scope``, and who it is (``principal``: the
    admin token, or ``token <id>`` with its name) for a token's ``creator``."""

    scope: str
    principal: str
    token_id: str | None = None


#: A client's seed of an access token: 22-86 characters of base64url, at least 128 random
#: bits (``RaftdirClient.create_access_token`` sends 256, ``secrets.token_urlsafe(32)``).
ACCESS_SEED_RE = re.compile(r"[A-Za-z0-9_-]{22,86}\Z")


def issue_access_token(seed: str | None = None) -> tuple[str, str]:
    """A new access token and its id: random, or derived from ``seed``, the client's
    random seed for this one token, so that a retried creation (the same seed) makes the
    same token and the command that keeps its hash is the same request. The seed is as secret as the token (it travels in the request as the token
    does in the answer); nothing else goes in, neither the request id (which a client may
    choose and reuse: a revoked token would come back) nor the cluster secret (a retry
    across a roll of the secret makes the same token)."""
    if seed:
        token_id = hashlib.sha256(b"raftdir/v1/access-token-id\x00" + seed.encode("ascii")
                                  ).hexdigest()[:16]
        raw = hashlib.sha256(b"raftdir/v1/access-token\x00" + seed.encode("ascii")).digest()
    else:
        token_id, raw = secrets.token_hex(8), secrets.token_bytes(32)
    return f"{_ACCESS_PREFIX}.{token_id}.{_b64(raw)}", token_id


def parse_access_token(token: str | None) -> str | None:
    """The id of a well-formed access token (its form only: nothing is checked), or
    None."""
    if not token or not token.startswith(_ACCESS_PREFIX + "."):
        return None
    m = _ACCESS_RE.match(token)
    return m.group(1) if m else None


#: What the directory keeps instead of an access token, and its constant-time check: the
#: same as for a node secret (hex SHA-256; a token holds 256 random bits, so no slow hash
#: is needed).
hash_access_token = hash_node_secret
access_token_matches = node_secret_matches
