"""One HTTP attempt at one server, as the nemesis makes them: no retries, no failover.

Owns: ``Http.call`` (one request to one server, msgpack both ways, a per-attempt timeout)
and ``Answer`` (what came back: the decoded body, or an error code). The nemesis's
workers and admin loop decide themselves where to retry, so that every attempt, and the
server it went to, is in the history. ``raftdir.api.client.RaftdirClient`` hides that (it
retries and fails over inside one call), which is right for an agent and wrong here.

Error codes: the server's (``not_leader``, ``no_leader``, ``reregister``, ...), or, when no
answer came, ``unreachable`` (the connection was refused: nothing was sent), ``timeout``
(no answer within the timeout) or ``connection`` (the connection broke). Runs on the
controller's event loop. Imports the codec and the errors only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import aiohttp

from ..api.client import normalize_endpoint
from ..codec import dumps_msgpack, loads_json, loads_msgpack
from ..errors import RaftdirError, error_from_body

__all__ = ["Http", "Answer", "Retry", "NO_ANSWER", "DEFINITE_REFUSALS"]

MSGPACK = "application/msgpack"
#: Error codes that mean no answer came (the write may or may not have been applied,
#: except ``unreachable``: a refused connection sent nothing).
NO_ANSWER = frozenset({"timeout", "connection", "unreachable"})
#: Error codes that mean the server refused the write: it was not applied.
DEFINITE_REFUSALS = frozenset({
    "bad_request", "unauthorized", "token_invalid", "forbidden", "token_exhausted",
    "unknown_node", "unknown_service", "node_not_ready", "stale", "conflict", "reregister",
    "not_found", "method_not_allowed", "payload_too_large", "no_leader", "not_leader",
    "request_timeout", "overloaded",
})


@dataclass
class Answer:
    ok: bool
    status: int | None = None
    body: Any = None
    err: str | None = None
    leader: str | None = None     # the 421 hint, when there was one
    message: str = ""


class Retry:
    """Where the next try of one call goes, and when: the leader a ``not_leader`` answer
    names, at once (at most 3 such hops in a row); otherwise the next of ``servers()``
    after a backoff that starts at ``first`` and doubles up to ``cap``."""

    def __init__(self, servers: Callable[[], Sequence[str]], first: float = 0.1,
                 cap: float = 0.5) -> None:
        self.servers, self.first, self.cap = servers, first, cap
        self.reset()

    def reset(self) -> None:
        """After a success: the next failure starts the backoff again."""
        self.delay, self.hops = self.first, 0

    async def after(self, server: str, ans: Answer) -> str:
        if ans.err == "not_leader" and ans.leader and self.hops < 3:
            self.hops += 1
            return normalize_endpoint(ans.leader)
        return await self.elsewhere(server)

    async def elsewhere(self, server: str) -> str:
        """The next server, after the backoff (no leader hint is followed)."""
        self.hops = 0
        servers = list(self.servers())
        await asyncio.sleep(self.delay)
        self.delay = min(self.cap, self.delay * 2)
        try:
            return servers[(servers.index(server) + 1) % len(servers)]
        except ValueError:
            return servers[0]


class Http:
    """Requests through one shared aiohttp session (``close()`` it)."""

    def __init__(self, max_connections: int = 0) -> None:
        self._max = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max, force_close=False))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, server: str, method: str, path: str, body: Any = None, *,
                   bearer: str | None = None, request_id: str | None = None,
                   timeout: float = 2.0, query: dict[str, str] | None = None) -> Answer:
        headers = {"Accept": MSGPACK}
        data = None
        if body is not None:
            data = dumps_msgpack(body)
            headers["Content-Type"] = MSGPACK
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        if request_id:
            headers["X-Request-Id"] = request_id
        try:
            async with self._http().request(
                    method, server + path, data=data, headers=headers, params=query,
                    timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                raw = await resp.read()
                ctype = resp.headers.get("Content-Type", "")
                status = resp.status
        except asyncio.TimeoutError:
            return Answer(False, err="timeout", message=f"no answer in {timeout:g} s")
        except (aiohttp.ClientConnectorError, ConnectionRefusedError) as exc:
            return Answer(False, err="unreachable", message=str(exc))
        except (aiohttp.ClientError, OSError) as exc:
            return Answer(False, err="connection", message=str(exc) or type(exc).__name__)
        try:
            decoded = _decode(ctype, raw) if raw else None
        except RaftdirError:
            decoded = raw[:200].decode("utf-8", "replace")
        if 200 <= status < 300:
            return Answer(True, status, decoded)
        err = error_from_body(decoded, status)
        code = decoded.get("code") if isinstance(decoded, dict) else None
        return Answer(False, status, decoded,
                      err=code if isinstance(code, str) and code else f"http_{status}",
                      leader=err.leader, message=err.message)


def _decode(ctype: str, data: bytes) -> Any:
    if "msgpack" in ctype.split(";", 1)[0].lower():
        return loads_msgpack(data)
    return loads_json(data)
