"""The error tree of raftdir: one base class, a stable code per error, its HTTP status.

Owns: every exception raftdir raises on purpose, and the registry from code string to
class that the client uses to turn an error body back into the same exception.
Imports nothing from the rest of raftdir, so every layer can use it.

::

    RaftdirError                      internal               500
    ├── BadRequest                    bad_request            400   (field)
    │   └── ConfigError               config_invalid         400   (file, field)
    ├── RequestTimeout                request_timeout        408
    ├── PayloadTooLarge               payload_too_large      413
    ├── Unauthorized                  unauthorized           401
    │   └── TokenInvalid              token_invalid          401   (reason)
    ├── Forbidden                     forbidden              403
    │   └── TokenExhausted            token_exhausted        403
    ├── UnknownNode                   unknown_node           404
    │   └── UnknownService            unknown_service        404
    ├── UnknownToken                  unknown_token          404
    ├── Conflict                      conflict               409
    │   ├── NodeNotReady              node_not_ready         409
    │   └── Stale                     stale                  409
    ├── Reregister                    reregister             410
    ├── NotLeader                     not_leader             421   (leader)
    ├── NoLeader                      no_leader              503
    │   └── ReplicaBehind             replica_behind         503   (leader: where to go)
    ├── Overloaded                    overloaded             503
    └── TimeoutOutcomeUnknown         timeout_outcome_unknown 504

Every error carries ``code``, ``status`` and a message; ``to_body()`` gives the wire form
``{code, message, field?, leader?}`` and ``error_from_body()`` rebuilds the exception.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "RaftdirError",
    "BadRequest",
    "ConfigError",
    "RequestTimeout",
    "PayloadTooLarge",
    "Unauthorized",
    "TokenInvalid",
    "Forbidden",
    "TokenExhausted",
    "UnknownNode",
    "UnknownService",
    "UnknownToken",
    "Conflict",
    "NodeNotReady",
    "Stale",
    "Reregister",
    "NotLeader",
    "NoLeader",
    "Overloaded",
    "ReplicaBehind",
    "TimeoutOutcomeUnknown",
    "ERRORS_BY_CODE",
    "error_from_body",
]


class RaftdirError(Exception):
    """Base of every raftdir error. ``code`` is stable across versions and shared by
    server and client; ``status`` is the HTTP status the API answers with."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str = "", *, field: str | None = None,
                 leader: str | None = None) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.field = field
        self.leader = leader

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.leader is not None:
            body["leader"] = self.leader
        return body

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class BadRequest(RaftdirError):
    """Input that does not decode or validate; ``message`` is ``path: problem``."""

    code = "bad_request"
    status = 400


class ConfigError(BadRequest):
    """A configuration file that cannot be used; ``message`` is ``FILE: path: problem``."""

    code = "config_invalid"
    status = 400

    def __init__(self, message: str, *, file: str | None = None,
                 field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.file = file


class RequestTimeout(RaftdirError):
    """The request (its head or its body) did not arrive in time."""

    code = "request_timeout"
    status = 408


class PayloadTooLarge(RaftdirError):
    code = "payload_too_large"
    status = 413


class Unauthorized(RaftdirError):
    """Missing or wrong credentials (node secret, admin token)."""

    code = "unauthorized"
    status = 401


class TokenInvalid(Unauthorized):
    """A join token failed a check; the message names which (signature, cluster, expiry)."""

    code = "token_invalid"
    status = 401


class Forbidden(RaftdirError):
    """Valid credentials, but not for this (a report or poll for another node id)."""

    code = "forbidden"
    status = 403


class TokenExhausted(Forbidden):
    """A join token whose ``max_uses`` are all used."""

    code = "token_exhausted"
    status = 403


class UnknownNode(RaftdirError):
    code = "unknown_node"
    status = 404


class UnknownService(UnknownNode):
    code = "unknown_service"
    status = 404


class UnknownToken(RaftdirError):
    """No access token with that id (``raftdir token revoke``)."""

    code = "unknown_token"
    status = 404


class Conflict(RaftdirError):
    code = "conflict"
    status = 409


class NodeNotReady(Conflict):
    code = "node_not_ready"
    status = 409


class Stale(Conflict):
    """A command older than what the state already holds (an older term or revision)."""

    code = "stale"
    status = 409


class Reregister(RaftdirError):
    """The node's record was removed: it must register again."""

    code = "reregister"
    status = 410


class NotLeader(RaftdirError):
    """This peer does not lead; ``leader`` is the leader's API address when known."""

    code = "not_leader"
    status = 421


class NoLeader(RaftdirError):
    code = "no_leader"
    status = 503


class Overloaded(RaftdirError):
    """This server is at its connection limit: retry later or ask another server."""

    code = "overloaded"
    status = 503


class ReplicaBehind(NoLeader):
    """A read-only replica that lags the leader by more than its limit refuses polls until
    it caught up; ``leader`` names a server to ask instead (the leader, when known)."""

    code = "replica_behind"
    status = 503


class TimeoutOutcomeUnknown(RaftdirError):
    """The write may still commit: retry with the same request id."""

    code = "timeout_outcome_unknown"
    status = 504


def _collect(cls: type[RaftdirError]) -> dict[str, type[RaftdirError]]:
    table = {cls.code: cls}
    for sub in cls.__subclasses__():
        table.update(_collect(sub))
    return table


#: code string -> exception class, for every error in the tree.
ERRORS_BY_CODE: dict[str, type[RaftdirError]] = _collect(RaftdirError)


def error_from_body(body: Any, status: int = 500) -> RaftdirError:
    """Rebuild the exception an error body ``{code, message, field?, leader?}`` stands for.
    An unknown code (a newer server) becomes the base class with that message."""
    if not isinstance(body, dict):
        return RaftdirError(f"HTTP {status}: {body!r}"[:500])
    cls = ERRORS_BY_CODE.get(str(body.get("code")), RaftdirError)
    message = str(body.get("message", ""))
    field = body.get("field")
    leader = body.get("leader")
    if cls is ConfigError:
        return ConfigError(message, field=field)
    return cls(message, field=field if isinstance(field, str) else None,
               leader=leader if isinstance(leader, str) else None)
