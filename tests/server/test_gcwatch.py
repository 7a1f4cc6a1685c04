"""GcWatch: every collection is timed into raftdir_gc_pause_seconds, and a pause longer
than the election timeout is warned about at most once a minute."""

from __future__ import annotations

import gc
import logging
import os

from prometheus_client import CollectorRegistry

from raftdir.gcwatch import GcWatch


def _count(registry: CollectorRegistry, generation: str) -> float:
    value = registry.get_sample_value("raftdir_gc_pause_seconds_count",
                                      {"generation": generation})
    return value or 0.0


def test_collections_are_timed_by_generation_and_long_ones_warned_once(caplog):
    registry = CollectorRegistry()
    watch = GcWatch(registry, warn_over=0.0)  # every pause is "long"
    watch.install()
    try:
        with caplog.at_level(logging.WARNING, logger="raftdir.gcwatch"):
            gc.collect()
            gc.collect()
    finally:
        watch.uninstall()
    assert _count(registry, "2") >= 2
    assert watch.longest > 0
    warnings = [r for r in caplog.records if "garbage collection" in r.getMessage()]
    assert len(warnings) == 1  # at most once a minute
    assert "generation 2" in warnings[0].getMessage()

    before = _count(registry, "2")
    gc.collect()  # uninstalled: no longer counted
    assert _count(registry, "2") == before


def test_short_pauses_are_counted_without_a_warning(caplog):
    registry = CollectorRegistry()
    watch = GcWatch(registry, warn_over=60.0)
    watch.install()
    watch.install()  # idempotent: one callback
    try:
        with caplog.at_level(logging.WARNING, logger="raftdir.gcwatch"):
            gc.collect()
    finally:
        watch.uninstall()
    assert _count(registry, "2") == 1
    assert not [r for r in caplog.records if "garbage collection" in r.getMessage()]


def test_a_forked_child_does_not_keep_the_callback():
    watch = GcWatch(CollectorRegistry(), warn_over=60.0)
    watch.install()
    try:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report whether the callback survived, then leave
            os.write(write, b"1" if watch._callback in gc.callbacks else b"0")
            os._exit(0)
        os.close(write)
        answer = os.read(read, 1)
        os.close(read)
        os.waitpid(pid, 0)
    finally:
        watch.uninstall()
    assert answer == b"0"
