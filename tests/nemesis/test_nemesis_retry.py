"""The nemesis clients' retry rule (``raftdir.nemesis.http.Retry``): a leader hint is
followed at once, three times in a row at most; otherwise the next server, after a backoff
that doubles up to its cap and starts again after a success."""

from __future__ import annotations

import time

from raftdir.nemesis.http import Answer, Retry

SERVERS = ["http://a:1", "http://b:1", "http://c:1"]


async def test_hints_then_the_next_server_with_a_doubling_backoff():
    retry = Retry(lambda: SERVERS, first=0.01, cap=0.04)
    hint = Answer(ok=False, err="not_leader", leader="c:1")
    started = time.monotonic()
    assert [await retry.after("http://a:1", hint) for _ in range(3)] == ["http://c:1"] * 3
    assert time.monotonic() - started < 0.01            # hints are followed at once
    assert await retry.after("http://c:1", hint) == "http://a:1"   # a 4th: move on
    delays = []
    for _ in range(3):
        delays.append(retry.delay)
        await retry.after("http://a:1", Answer(ok=False, err="timeout"))
    assert delays == [0.02, 0.04, 0.04]
    assert await retry.elsewhere("http://gone:1") == "http://a:1"   # not listed: the first
    retry.reset()
    assert (retry.delay, retry.hops) == (0.01, 0)
    assert await retry.after("http://a:1", hint) == "http://c:1"
