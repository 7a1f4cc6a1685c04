"""The recorded history of a nemesis run: one JSON object per line, in ``history.jsonl``.

Owns: the record layout and the two clocks every record carries, writing records as they
happen (``Recorder``) and reading them back (``load``). Every other part of the nemesis
writes through a ``Recorder``; the checker reads only what ``load`` returns, so a run can be
checked again later (``scripts/nemesis --check DIR``).

A record is ``{"op": ..., "who": ..., "t0", "t1", "w0", "w1", "ok", "err", ...}``:

- ``t0`` / ``t1``: invoke and completion, seconds on the controller's monotonic clock since
  the run's origin; ``w0`` / ``w1``: the same moments on the wall clock (Unix seconds),
  which is what the server logs' timestamps use. An instantaneous event has ``t0 == t1``.
- ``who``: ``worker:<name>``, ``admin``, ``nemesis``, ``watcher``, ``final``, ``run``.
- ``ok``: the operation was acknowledged; ``err``: otherwise its error code (the server's
  code, or ``timeout`` / ``unreachable`` / ``connection`` when no answer came).
- the rest depends on ``op`` (docs/robustness.md lists them).

Runs on the controller's event loop (one thread); the file is flushed every second and on
``close()``. Imports nothing of raftdir.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

__all__ = ["Recorder", "load", "HISTORY_FILE", "RUN_FILE"]

HISTORY_FILE = "history.jsonl"
RUN_FILE = "run.json"


class Recorder:
    """Appends records to ``path``. ``origin_mono`` / ``origin_wall``: the run's origin."""

    def __init__(self, path: Path, origin_mono: float | None = None,
                 origin_wall: float | None = None) -> None:
        self.path = Path(path)
        self.origin_mono = time.monotonic() if origin_mono is None else origin_mono
        self.origin_wall = time.time() if origin_wall is None else origin_wall
        self._file = open(self.path, "a", encoding="utf-8")
        self._last_flush = time.monotonic()
        self.count = 0

    def now(self) -> tuple[float, float]:
        """(t, w): run seconds on the monotonic clock, and the wall clock."""
        return time.monotonic() - self.origin_mono, time.time()

    def write(self, op: str, who: str, t0: float, w0: float, *, t1: float | None = None,
              w1: float | None = None, **fields: Any) -> dict[str, Any]:
        """Record one operation that started at ``(t0, w0)``; completion defaults to now
        (pass ``t1 = t0, w1 = w0`` for an instantaneous event)."""
        if t1 is None or w1 is None:
            t1, w1 = self.now()
        rec = {"op": op, "who": who, "t0": round(t0, 4), "t1": round(t1, 4),
               "w0": round(w0, 4), "w1": round(w1, 4)}
        rec.update(fields)
        self._file.write(json.dumps(rec, separators=(",", ":"), sort_keys=False) + "\n")
        self.count += 1
        now = time.monotonic()
        if now - self._last_flush > 1.0:
            self._file.flush()
            self._last_flush = now
        return rec

    def event(self, op: str, who: str, **fields: Any) -> dict[str, Any]:
        """An instantaneous event, now."""
        t, w = self.now()
        return self.write(op, who, t, w, t1=t, w1=w, **fields)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()


def load(out_dir: Path) -> Iterator[dict[str, Any]]:
    """Every record of a run, in the order written. A torn last line (the controller was
    killed while writing) is skipped; any other bad line raises ``ValueError``."""
    path = Path(out_dir) / HISTORY_FILE
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if i >= len(lines) - 2:
                return
            raise ValueError(f"{path}:{i + 1}: not a JSON record") from None
