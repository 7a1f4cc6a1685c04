"""What raftdir accepts from a client beyond the wire types' own rules: how a node id is
written in a URL or on a command line, the names a service or a role may have, resource
figures that cannot be negative, the sizes of the fields that go into a Raft entry, and
how long a join token may be valid.

Owns: those request-edge rules, ``parse_node_id`` (the API's ``{id}`` and every CLI id) and
``check_request(obj)``, which the HTTP API runs on every decoded body before the control
plane sees it (a refusal names the field's full path).
They are not decode rules of the wire types: a record already in a Raft log or a snapshot
is never re-judged by them, so tightening a rule here cannot change what a replayed log
does. Pure functions; any thread. Imports only ``raftdir.codec``, ``raftdir.errors``,
``raftdir.model`` and the access-token rules of ``raftdir.core.state`` (which the state
machine checks again).

Sizes are measured as the field's msgpack encoding, the bytes it adds to the replicated
command, whatever format the request came in (JSON escapes and 2-byte UTF-8 characters
weigh what they weigh in the entry). Every command is also held to ``MAX_COMMAND_BYTES``
(``raftdir.replication.base``) when it is proposed; these limits keep a registration and a
scale order well inside it and name the field that is too large.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from .codec import dumps_msgpack
from .core.state import TOKEN_ID_RE, TOKEN_NAME_RE
from .errors import BadRequest, PayloadTooLarge
from .model import InternalScaleRequest, WorkerRegisterRequest, WorkerStatusReport

__all__ = ["MAX_NAME_BYTES", "MAX_LABELS_BYTES", "MAX_SPEC_BYTES", "MAX_TOKEN_VALID_SECS",
           "MAX_TOKEN_USES", "MAX_SERVICE_NAME", "parse_node_id", "parse_token_id",
           "check_name", "check_service_name", "check_size", "check_token", "check_token_name",
           "check_request"]

#: The longest name a worker may report for a container's service or role, in UTF-8
#: bytes (a DNS name's length).
MAX_NAME_BYTES = 253
#: The longest service or role name an order may give: one DNS label.
MAX_SERVICE_NAME = 63
#: A worker's labels, all of them, encoded (a registration's one variable-size part).
MAX_LABELS_BYTES = 64 << 10
#: A service's opaque spec, encoded. With the most replicas a legacy order may expand to
#: (``MAX_LEGACY_REPLICAS``), the placement command stays under ``MAX_COMMAND_BYTES``.
MAX_SPEC_BYTES = 256 << 10

#: The longest a join token may be valid: 365 days.
MAX_TOKEN_VALID_SECS = 365 * 86400
#: The most registrations one join token may allow (0 means no limit).
MAX_TOKEN_USES = 1_000_000

_NODE_ID = re.compile(r"(?:0|[1-9][0-9]{0,19})\Z")
#: RFC 1123's DNS label: lowercase letters, digits and '-', not at either end.
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_U64_MAX = 2**64 - 1


def parse_node_id(text: str, path: str = "id") -> int:
    """A node id written as text (a URL's ``{id}``, a CLI argument): plain decimal digits,
    no sign, no spaces, no separators, no leading zero (``0`` itself is fine), at most
    2^64-1. One id has one spelling, so ``01`` is refused everywhere rather than read as 1
    in one place and refused in another."""
    if not _NODE_ID.match(text) or int(text) > _U64_MAX:
        raise BadRequest(f"{path}: {text!r} is not a node id (decimal digits without a "
                         "leading zero, at most 18446744073709551615)", field=path)
    return int(text)


def parse_token_id(text: str, path: str = "id") -> str:
    """An access token's id as written in a URL or on a command line: 16 lowercase hex
    digits."""
    if not TOKEN_ID_RE.match(text):
        raise BadRequest(f"{path}: {text[:40]!r} is not an access token id (16 lowercase hex "
                         "digits, as `raftdir token list` shows them)", field=path)
    return text


def check_token_name(name: str, path: str = "name") -> None:
    """An access token's name: none, or 1-64 of ``A-Z a-z 0-9 . _ @ : -`` starting with a
    letter or digit (it shows in listings and in logs)."""
    if not TOKEN_NAME_RE.match(name):
        raise BadRequest(f"{path}: {name[:80]!r} is not a token name: 1-64 of A-Z a-z 0-9 . "
                         "_ @ : - (starting with a letter or digit)", field=path)


def check_token(valid_for_secs: int, max_uses: int) -> None:
    """A join token's validity (1 s to ``MAX_TOKEN_VALID_SECS``) and its use limit (0, no
    limit, to ``MAX_TOKEN_USES``); a refusal names the field."""
    if not 0 < valid_for_secs <= MAX_TOKEN_VALID_SECS:
        raise BadRequest(f"valid_for_secs: {valid_for_secs} is not from 1 to "
                         f"{MAX_TOKEN_VALID_SECS} (365 days)", field="valid_for_secs")
    if not 0 <= max_uses <= MAX_TOKEN_USES:
        raise BadRequest(f"max_uses: {max_uses} is not from 0 (no limit) to {MAX_TOKEN_USES}",
                         field="max_uses")


def check_size(value: object, limit: int, path: str) -> None:
    """413 naming ``path`` when ``value`` encodes (msgpack) to more than ``limit`` bytes."""
    size = len(dumps_msgpack(value))
    if size > limit:
        raise PayloadTooLarge(f"{path}: {size} bytes encoded, over the limit of {limit}",
                              field=path)


def check_service_name(value: str, path: str = "service") -> None:
    """The one rule for a service or role name that an order gives (a scale order, the
    ``{service}`` of a path, the CLI): a DNS label, 1 to 63 of lowercase ``a-z``, ``0-9``
    and ``-``, starting and ending with a letter or digit. The host daemon builds container
    names from it (ZLayer: ``zlayer-{service}-{replica}``) and DNS names
    (``<role>.<service>.<deployment>.zlayer.internal``), so nothing path-like (``/``,
    ``..``), no space and no control character may pass. ZLayer itself has no rule for
    service names (the keys of a deployment's ``services`` map are taken as they are); its
    replica-group roles and storage names are DNS labels (``crates/zlayer-types/src/spec``),
    and this is that rule, with a DNS label's length."""
    if not isinstance(value, str) or not _DNS_LABEL.match(value):
        shown = value if isinstance(value, str) and len(value) <= 80 else \
            f"{str(value)[:80]}..."
        raise BadRequest(f"{path}: {shown!r} is not a valid name: 1-{MAX_SERVICE_NAME} "
                         "lowercase letters, digits and '-', starting and ending with a "
                         "letter or digit (a DNS label)", field=path)


def check_name(value: str, path: str) -> None:
    """A name a worker reports for a running container's service or role: at most
    ``MAX_NAME_BYTES`` UTF-8 bytes and no control character (NUL, newline, ...: a name
    ends up in logs and listings). Looser than ``check_service_name`` on purpose: a report
    describes what already runs (a ZLayer agent may run services raftdir never placed), and
    refusing it would cost the worker its lease."""
    if len(value.encode("utf-8")) > MAX_NAME_BYTES:
        raise BadRequest(f"{path}: longer than {MAX_NAME_BYTES} bytes", field=path)
    for ch in value:
        if unicodedata.category(ch) == "Cc":
            raise BadRequest(f"{path}: control character {ch!r} is not allowed in a name",
                             field=path)


def _check_register(req: WorkerRegisterRequest) -> None:
    check_size(req.profile.labels, MAX_LABELS_BYTES, "profile.labels")


def _check_scale(req: InternalScaleRequest) -> None:
    check_service_name(req.service, "service")
    for i, group in enumerate(req.assignments):
        check_service_name(group.role, f"assignments[{i}].role")
    if req.spec is not None:
        check_size(req.spec, MAX_SPEC_BYTES, "spec")


def _check_report(report: WorkerStatusReport) -> None:
    if report.resources.cpu_used < 0:
        raise BadRequest(f"resources.cpu_used: {report.resources.cpu_used!r} is negative",
                         field="resources.cpu_used")
    for i, container in enumerate(report.containers):
        check_name(container.service, f"containers[{i}].service")
        check_name(container.role, f"containers[{i}].role")


_CHECKS: dict[type, Any] = {
    WorkerRegisterRequest: _check_register,
    InternalScaleRequest: _check_scale,
    WorkerStatusReport: _check_report,
}


def check_request(obj: Any) -> None:
    """Raise ``BadRequest`` (``PayloadTooLarge`` for a size) naming the field when a
    decoded request body breaks a rule above; bodies of other types pass."""
    check = _CHECKS.get(type(obj))
    if check is not None:
        check(obj)
