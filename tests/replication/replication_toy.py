"""A toy state machine for the replication tests: a KV map with a revision counter.

Commands are msgpack maps: ``{"op": "set", "k": str, "v": any}`` (revision + 1),
``{"op": "refuse"}`` (a refusal with code ``stale``), ``{"op": "sleep", "secs": s}`` (a slow apply), ``{"op": "boom"}`` (raises: a bug the
node must contain). Snapshot: ``{"format": 1, "kv": {...}, "revision": n}``.
"""

from __future__ import annotations

import time
from typing import Any

import msgpack

from raftdir.core.result import Result


def cmd(op: str, **fields: Any) -> bytes:
    return msgpack.packb({"op": op, **fields}, use_bin_type=True)


class ToyKV:
    def __init__(self) -> None:
        self.kv: dict[str, Any] = {}
        self._revision = 0
        self.applied = 0

    @property
    def revision(self) -> int:
        return self._revision

    def apply_bytes(self, data: bytes) -> Result:
        self.applied += 1
        c = msgpack.unpackb(data, raw=False)
        op = c.get("op")
        if op == "set":
            self.kv[c["k"]] = c["v"]
            self._revision += 1
            return Result.applied({"k": c["k"]}, revision=self._revision)
        if op == "refuse":
            return Result.refused("stale", "refused on purpose", revision=self._revision)
        if op == "sleep":  # a slow apply, to provoke proposer timeouts
            time.sleep(c["secs"])
            return Result.applied(None, revision=self._revision)
        if op == "boom":
            raise ValueError("boom on purpose")
        return Result.refused("bad_request", f"unknown op {op!r}", revision=self._revision)

    def to_snapshot(self) -> dict[str, Any]:
        return {"format": 1, "kv": dict(self.kv), "revision": self._revision}

    def restore(self, snapshot: dict[str, Any]) -> None:
        if snapshot.get("format") != 1:
            raise ValueError("unknown toy snapshot format")
        self.kv = dict(snapshot["kv"])
        self._revision = int(snapshot["revision"])
