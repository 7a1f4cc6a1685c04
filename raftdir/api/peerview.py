"""Every peer's Raft status, asked of each server at once: the rows of ``raftdir peers``
and of the dashboard's peers table (``raftdir.api.dashboard``), one computation for both.

Owns: ``peer_rows`` (role, term, commit and applied index, LAG as the leader's commit index
minus the peer's last applied, LAST CONTACT as when the asker last got an answer from it)
and the few-word reasons a request to a peer failed. Runs on the caller's event loop,
through a ``RaftdirClient`` (``client.servers``, ``client.peers(server=...)``). Imports the
errors only; must not import the CLI, the server or the core.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from typing import Any
from urllib.parse import urlsplit

from ..errors import RaftdirError

__all__ = ["peer_rows", "role", "hostport", "reason"]


def _hostport(url: str | None) -> str:
    """``http://h:p/path`` as ``h:p`` (https keeps its scheme: it matters for TLS)."""
    if not url:
        return "?"
    parts = urlsplit(url if "://" in url else f"http://{url}")
    return parts.netloc if parts.scheme == "http" else f"{parts.scheme}://{parts.netloc}"


def _reason(exc: BaseException) -> str:
    """Why a request to a peer failed, in a few words (``connection refused``)."""
    import aiohttp

    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate rejected: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS error: {getattr(exc, 'os_error', exc)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _os_reason(exc.os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, OSError):
        return _os_reason(exc)
    if isinstance(exc, RaftdirError):
        errors = getattr(exc, "errors", None)
        if errors and len(errors) == 1:
            return _reason(next(iter(errors.values())))
        return exc.message
    return str(exc) or type(exc).__name__


def _os_reason(err: OSError) -> str:
    if isinstance(err, ConnectionRefusedError) or err.errno == errno.ECONNREFUSED \
            or "Connect call failed" in str(err):
        return "connection refused"
    if isinstance(err, socket.gaierror):
        return f"cannot resolve the host name ({err.strerror or err})"
    if isinstance(err, (TimeoutError, socket.timeout)):
        return "timed out"
    return (err.strerror or str(err) or type(err).__name__).lower()


def _role(status: dict[str, Any]) -> str:
    state = status.get("state")
    if state in ("leader", "follower", "candidate", "replica"):
        return state
    return "leader" if status.get("is_leader") else "follower"


def _netloc(url: str) -> str:
    return urlsplit(url if "://" in url else f"//{url}").netloc


async def peer_rows(client: Any, seen: dict[str, float]) -> list[dict[str, Any]]:
    """Ask every server in the list for its Raft status at once (each within the client's
    timeout); one row per peer, an unreachable one too, named by its id when an answer
    lists it among the members; plus the Raft members the answers name that were not
    asked."""

    async def ask(server: str) -> tuple[str, Any, float]:
        started = time.monotonic()
        try:
            answer = await client.peers(server=server)
        except (RaftdirError, OSError, asyncio.TimeoutError) as exc:
            answer = exc
        return server, answer, time.monotonic() - started

    results = await asyncio.gather(*(ask(s) for s in list(client.servers)))
    now = time.monotonic()
    answers = {s: a for s, a, _ in results if isinstance(a, dict)}
    # what the answers know of the membership (the leader's view first)
    members: dict[str, dict[str, Any]] = {}
    for answer in sorted(answers.values(), key=lambda a: _role(a) != "leader"):
        for member in answer.get("members") or ():
            if isinstance(member, dict) and member.get("raft_addr"):
                members.setdefault(member["raft_addr"], member)
    by_api = {m["api_addr"]: m for m in members.values() if m.get("api_addr")}
    leader_commit = max((a.get("commit_index", 0) for a in answers.values()
                         if _role(a) == "leader"), default=None)
    rows: list[dict[str, Any]] = []
    for server, answer, rtt in results:
        if isinstance(answer, dict):
            seen[server] = now
            commit, applied = answer.get("commit_index"), answer.get("last_applied")
            base = leader_commit if leader_commit is not None else commit
            lag = None if base is None or applied is None else max(0, base - applied)
            contact = answer.get("last_contact_secs")
            rows.append({"id": answer.get("node_id"), "raft_addr": answer.get("self"),
                         "api_addr": _hostport(server), "role": _role(answer),
                         "term": answer.get("term"), "commit": commit, "applied": applied,
                         "lag": lag, "last_contact_secs": 0.0 if contact is None else contact,
                         "leader": answer.get("leader"), "rtt_ms": round(rtt * 1000, 1),
                         "asked": True, "error": None, "status": answer})
        else:
            last = seen.get(server)
            member = by_api.get(_netloc(server), {})
            rows.append({"id": member.get("id"), "raft_addr": member.get("raft_addr"),
                         "api_addr": _hostport(server),
                         "role": "unreachable", "term": None, "commit": None,
                         "applied": None, "lag": None,
                         "last_contact_secs": None if last is None else round(now - last, 1),
                         "leader": None, "rtt_ms": None, "asked": True,
                         "error": _reason(answer), "status": None})
    # Raft members that no answer covers (not in --server): what the answers know of them.
    known = {r["raft_addr"] for r in rows if r["raft_addr"]}
    views: dict[str, bool] = {}
    for answer in sorted(answers.values(), key=lambda a: _role(a) != "leader"):
        for addr, connected in (answer.get("partners") or {}).items():
            views.setdefault(addr, bool(connected))
    # the leader the answers name (a follower asked alone still knows who leads)
    named = {a.get("leader") for a in answers.values() if a.get("leader")}
    for addr, connected in sorted(views.items()):
        if addr not in known:
            member = members.get(addr, {})
            role = ("leader" if addr in named else "follower") if connected \
                else "unreachable"
            rows.append({"id": member.get("id"), "raft_addr": addr,
                         "api_addr": member.get("api_addr"), "role": role, "term": None,
                         "commit": None, "applied": None, "lag": None,
                         "last_contact_secs": None, "leader": None, "rtt_ms": None,
                         "asked": False, "error": None if connected else
                         "not connected to the peers that answered", "status": None})
    # Read-only replicas the leader hears from that were not asked: what it knows of them.
    asked = {r["api_addr"] for r in rows}
    for answer in (a for a in answers.values() if _role(a) == "leader"):
        for rep in answer.get("replicas") or ():
            api = _hostport(str(rep.get("api_addr", "")))
            if api in asked:
                continue
            applied = rep.get("applied")
            rows.append({"id": rep.get("node_id"), "raft_addr": None, "api_addr": api,
                         "role": "replica", "term": None, "commit": None,
                         "applied": applied, "lag": None if leader_commit is None or
                         applied is None else max(0, leader_commit - applied),
                         "last_contact_secs": None, "leader": None, "rtt_ms": None,
                         "asked": False, "error": None, "status": None})
    rows.sort(key=lambda r: (r["id"] is None, r["id"] or 0, r["api_addr"] or "",
                             r["raft_addr"] or ""))
    return rows


role = _role
hostport = _hostport
reason = _reason
