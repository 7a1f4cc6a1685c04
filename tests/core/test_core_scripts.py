"""Scripted table tests of the pure directory: one test per file in ``testdata/``.
Rewrite the expected outputs with ``RAFTDIR_REWRITE=1`` (then review the diff by hand)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core_script import REWRITE, parse_script, render_script, run_script

TESTDATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script(path: Path) -> None:
    run_script(path)


def test_scripts_exist() -> None:
    assert len(SCRIPTS) >= 5


def test_parse_render_round_trip() -> None:
    for path in SCRIPTS:
        text = path.read_text()
        blocks, trailer = parse_script(text)
        assert render_script(blocks, trailer) == text, path.name


@pytest.mark.skipif(REWRITE, reason="rewriting expected outputs")
def test_runner_detects_a_wrong_expectation(tmp_path: Path) -> None:
    script = tmp_path / "wrong.txt"
    script.write_text("bootstrap cluster=c1\n----\nok rev=0 {}\n")
    with pytest.raises(AssertionError, match="expected"):
        run_script(script)
