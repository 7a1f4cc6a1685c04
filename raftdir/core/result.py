"""The outcome of applying one command to the directory.

Owns: ``Result``, the value ``Directory.apply`` returns on every peer and the adapter hands
back to the proposer. Plain data only; imports nothing from raftdir but ``errors`` codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Result"]


@dataclass(frozen=True)
class Result:
    """``ok`` with a plain-data ``value``, or a refusal: ``code`` is one of the stable error
    codes of ``raftdir.errors`` (``unknown_node``, ``token_exhausted``, ``stale``, ...) and
    the state was left as it was. ``revision`` is the directory's revision after the apply.
    An ``internal`` code means apply raised: a bug, reported loudly by the adapter."""

    ok: bool
    value: Any = None
    code: str | None = None
    message: str = ""
    revision: int = 0

    @classmethod
    def applied(cls, value: Any = None, revision: int = 0) -> "Result":
        return cls(True, value, None, "", revision)

    @classmethod
    def refused(cls, code: str, message: str, revision: int = 0) -> "Result":
        return cls(False, None, code, message, revision)
