"""Credentials: join tokens, per-node secrets and the admin token (directory.md §4, §11).

Owns: the join-token format and its checks, node-secret issue and hashing, the admin
token. All keys derive from the cluster secret (``derive_key``, also used for the Raft password),
which itself never travels. Pure functions (``secrets`` is the only randomness, and only
in the ``new_*`` functions); any thread. Must not import the API, agent or CLI.

A viewer token is ``rdv1.<payload>.<mac>``: ``payload`` is base64url of the msgpack map
``{tid, exp, scope: "read"}`` and ``mac`` is base64url HMAC-SHA256 of ``rdv1.<payload>`` under a
key derived from the admin token, so whoever holds the admin token (``raftdir token create
--viewer``) can issue one without asking a server, and every server (which derives the
admin token from the cluster secret) can check one. It lets its holder read the dashboard
and nothing else; it cannot be revoked before it expires (rotate the cluster secret for
that). Scoped tokens kept by the cluster (issue 12) replace it.

A join token is ``rdj1.<payload>.<mac>``: ``payload`` is base64url of the msgpack map
``{cid, tid, exp, max}`` (cluster id, token id, expiry in Unix seconds, max uses; 0 = no
limit) and ``mac`` is base64url HMAC-SHA256 of ``rdj1.<payload>`` under the join-token key.
The use count is hard state (``Directory.token_uses``), so ``max`` holds across leader
changes; checking it is the state machine's job, at registration.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import msgpack

from .errors import TokenInvalid, Unauthorized

__all__ = [
    "derive_key", "JoinToken", "issue_join_token", "verify_join_token", "peek_join_token", "new_node_secret",
    "hash_node_secret", "node_secret_matches", "admin_token", "check_admin_token",
    "bearer_token", "ViewerToken", "issue_viewer_token", "verify_viewer_token",
    "is_viewer_token", "MAX_VIEWER_SECS",
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


def verify_join_token(token: str, secret: str, cluster_id: str, now_unix_secs: int
                      ) -> JoinToken:
    """Check the signature, the cluster and the expiry, in that order; raises
    ``TokenInvalid`` whose message names the check that failed."""
    parts = _split(token)
    signed = f"{parts[0]}.{parts[1]}"
    try:
        mac = _unb64(parts[2])
    except ValueError:
        raise TokenInvalid("join token signature is not base64url", field="token") from None
    if not hmac.compare_digest(mac, _mac(secret, signed)):
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


def check_admin_token(presented: str | None, secret: str) -> None:
    if not presented or not hmac.compare_digest(presented.encode("utf-8"),
                                                admin_token(secret).encode("utf-8")):
        raise Unauthorized("this operation needs the admin token "
                           "(Authorization: Bearer <token>)")


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


# ---------------------------------------------------------------------------- viewer tokens

_VIEWER_PREFIX = "rdv1"
#: The longest a viewer token may be valid: it cannot be revoked, only outlived.
MAX_VIEWER_SECS = 30 * 86400


@dataclass(frozen=True)
class ViewerToken:
    """The claims of a verified viewer token (read-only: the dashboard)."""

    token_id: str
    expires_unix_secs: int
    scope: str = "read"


def _viewer_mac(admin: str, signed: str) -> bytes:
    key = hmac.new(admin.encode("utf-8"), b"raftdir/v1/viewer-token", hashlib.sha256).digest()
    return hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()


def issue_viewer_token(admin: str, *, valid_for_secs: int, now_unix_secs: int,
                       token_id: str | None = None) -> tuple[str, ViewerToken]:
    """A new viewer token signed with a key derived from the admin token ``admin``."""
    if not 0 < valid_for_secs <= MAX_VIEWER_SECS:
        raise ValueError(f"valid_for_secs must be in 1..{MAX_VIEWER_SECS}")
    claims = ViewerToken(token_id or secrets.token_hex(8), now_unix_secs + valid_for_secs)
    payload = _b64(msgpack.packb({"tid": claims.token_id, "exp": claims.expires_unix_secs,
                                  "scope": claims.scope}, use_bin_type=True))
    signed = f"{_VIEWER_PREFIX}.{payload}"
    return f"{signed}.{_b64(_viewer_mac(admin, signed))}", claims


def is_viewer_token(token: str | None) -> bool:
    return bool(token) and token.startswith(_VIEWER_PREFIX + ".")


def verify_viewer_token(token: str | None, secret: str, now_unix_secs: int) -> ViewerToken:
    """Check a viewer token's signature (against this cluster's secret), scope and expiry;
    raises ``Unauthorized`` naming the check that failed (never the token)."""
    parts = (token or "").strip().split(".")
    if len(parts) != 3 or parts[0] != _VIEWER_PREFIX:
        raise Unauthorized("viewer token is malformed (expected rdv1.<payload>.<mac>)")
    signed = f"{parts[0]}.{parts[1]}"
    try:
        mac = _unb64(parts[2])
    except ValueError:
        raise Unauthorized("viewer token signature is not base64url") from None
    if not hmac.compare_digest(mac, _viewer_mac(admin_token(secret), signed)):
        raise Unauthorized("viewer token signature does not match this cluster's secret")
    try:
        raw = msgpack.unpackb(_unb64(parts[1]), raw=False, strict_map_key=True)
        claims = ViewerToken(str(raw["tid"]), int(raw["exp"]), str(raw["scope"]))
    except Exception:  # noqa: BLE001 - signed by us, so only a bug gets here
        raise Unauthorized("viewer token payload is unreadable") from None
    if claims.scope != "read":
        raise Unauthorized(f"viewer token scope {claims.scope!r} is not 'read'")
    if now_unix_secs >= claims.expires_unix_secs:
        raise Unauthorized(f"viewer token expired at {claims.expires_unix_secs} (now "
                           f"{now_unix_secs})")
    return claims
