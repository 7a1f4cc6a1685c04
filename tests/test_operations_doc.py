"""docs/operations.md: every log line raftdir writes at WARNING and above is listed with
its meaning, the guide's links and sections are there, and the README links it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "operations.md"
LEVELS = {"warning", "error", "critical", "exception"}

# Lines whose format string is only placeholders: the texts the guide names them by.
BY_CONTENT = {
    ("raftdir/config.py", "%s: %s"): ("only used by a worker; ignored for role server",),
    ("raftdir/agent/agent.py", "%s"): ("status report failed: %s",   # two calls
                                       "refusing the registration: the server is in cluster"),
}


def _levels(func: ast.expr) -> list[str]:
    """``log.warning`` -> ["warning"]; ``(log.warning if x else log.debug)`` -> ["warning"]."""
    if isinstance(func, ast.IfExp):
        return _levels(func.body) + _levels(func.orelse)
    if isinstance(func, ast.Attribute) and func.attr in LEVELS \
            and isinstance(func.value, ast.Name) and "log" in func.value.id.lower():
        return [func.attr]
    return []


def log_lines() -> list[tuple[str, int, str]]:
    """(file, line, format string) of every call at WARNING and above in raftdir/."""
    found = []
    for path in sorted((ROOT / "raftdir").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.Call) and _levels(node.func) and node.args:
                first = node.args[0]
                assert isinstance(first, ast.Constant) and isinstance(first.value, str), \
                    f"{rel}:{node.lineno}: log with a constant format string"
                found.append((rel, node.lineno, first.value))
    return found


def test_the_scan_finds_the_log_lines():
    lines = log_lines()
    assert len(lines) >= 40
    assert any(fmt.startswith("raft connection with %s dropped") for _, _, fmt in lines)


@pytest.mark.parametrize("where,fmt", [(f"{f}:{n}", fmt) for f, n, fmt in log_lines()])
def test_every_log_line_at_warning_and_above_is_explained(where, fmt):
    text = DOC.read_text()
    section = text.split("## What each log line at WARNING and above means", 1)[1]
    key = (where.rsplit(":", 1)[0], fmt)
    for wanted in BY_CONTENT.get(key, (f"`{fmt}`",)):
        assert wanted in section, f"{where}: {wanted} is not in docs/operations.md"


def test_the_guide_has_its_sections_and_the_readme_links_it():
    text = DOC.read_text()
    heads = re.findall(r"^## (.+)$", text, flags=re.M)
    for head in ("A three-host cluster by hand", "Running under systemd",
                 "Adding and removing servers", "Upgrades", "Backup and restore",
                 "When a majority of servers is lost",
                 "What each log line at WARNING and above means"):
        assert head in heads, head
    for link in re.findall(r"\]\((\.\./[^)#]+|[a-z][^):#]+\.md)\)", text):
        assert (DOC.parent / link).resolve().exists(), link
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
                          for h in heads}, anchor
    assert "(docs/operations.md)" in (ROOT / "README.md").read_text()
