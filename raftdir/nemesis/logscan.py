"""What the server logs of a nemesis run say: mark-downs, leaders taking office, trouble.

Owns: parsing ``server.log`` lines (``%(asctime)s %(levelname)s %(name)s: %(message)s``, the
format of ``raftdir serve``; ``asctime`` is local wall time to the millisecond) into
``LogFacts``:

- ``markdowns``: ``term T: leases expired, marked down: [ids]`` (``raftdir.leader.services``,
  logged by the leader once the ``mark_down`` committed), the precise time of a mark-down;
- ``ready``: ``term T: leader services ready on node N``, the moment a leader can serve;
- ``tracebacks`` (every ``Traceback`` with the exception line that ends it),
  ``criticals`` (every ``CRITICAL`` line) and ``unretrieved`` ("Task exception was never
  retrieved").

Times are Unix wall seconds, comparable with the history's ``w0``/``w1``. Pure functions
over text and files; imports nothing of raftdir.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

__all__ = ["LogFacts", "LogLine", "scan_text", "scan_files", "parse_asctime"]

_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ([A-Z]+) (\S+): (.*)$")
_MARKDOWN = re.compile(r"term (\d+): leases expired, marked down: \[([\d, ]*)\]")
_READY = re.compile(r"term (\d+): leader services ready on node (\d+)")


def parse_asctime(text: str) -> float:
    """``2024-05-01 12:00:00,123`` (local time) as Unix seconds."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


@dataclass(frozen=True)
class LogLine:
    peer: int
    line: int          # 1-based line number in the peer's log
    w: float           # wall time of the line (or of the last timestamped line before it)
    text: str


@dataclass
class LogFacts:
    markdowns: list[tuple[float, int, int, tuple[int, ...]]] = field(default_factory=list)
    """(w, peer, term, node ids)"""
    ready: list[tuple[float, int, int]] = field(default_factory=list)
    """(w, peer, term)"""
    tracebacks: list[LogLine] = field(default_factory=list)
    criticals: list[LogLine] = field(default_factory=list)
    unretrieved: list[LogLine] = field(default_factory=list)
    lines: int = 0


def scan_text(peer: int, text: str, facts: LogFacts | None = None) -> LogFacts:
    facts = facts or LogFacts()
    last_w = 0.0
    lines = text.splitlines()
    facts.lines += len(lines)
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _LINE.match(line)
        if m:
            try:
                last_w = parse_asctime(m.group(1))
            except ValueError:
                pass
            level, message = m.group(2), m.group(4)
            if level == "CRITICAL":
                facts.criticals.append(LogLine(peer, i + 1, last_w, line))
            if "Task exception was never retrieved" in message:
                facts.unretrieved.append(LogLine(peer, i + 1, last_w, line))
            md = _MARKDOWN.search(message)
            if md:
                ids = tuple(int(x) for x in md.group(2).replace(" ", "").split(",") if x)
                facts.markdowns.append((last_w, peer, int(md.group(1)), ids))
            rd = _READY.search(message)
            if rd:
                facts.ready.append((last_w, peer, int(rd.group(1))))
        elif line.startswith("Traceback (most recent call last)"):
            # the exception line: the first line after the indented frames
            j = i + 1
            while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
                j += 1
            what = lines[j].strip() if j < len(lines) else "?"
            facts.tracebacks.append(LogLine(peer, i + 1, last_w, what))
        elif "Task exception was never retrieved" in line:
            facts.unretrieved.append(LogLine(peer, i + 1, last_w, line))
        i += 1
    return facts


def scan_files(logs: dict[int, Path]) -> LogFacts:
    """Every peer's log (``{peer id: path}``); a missing file scans as empty."""
    facts = LogFacts()
    for peer, path in sorted(logs.items()):
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        scan_text(peer, text, facts)
    facts.markdowns.sort()
    facts.ready.sort()
    return facts
