"""Scale on a real DirectoryServer (LocalNode, manual clock): the answer is the placement
the directory committed."""

from __future__ import annotations

import pytest

from raftdir import InternalScaleRequest, UnknownService

from server_harness import harness, run


@run
async def test_a_retried_scale_answers_the_placement_committed_the_first_time():
    h = await harness()
    try:
        a, b = await h.register(2)
        req = InternalScaleRequest.legacy("web", 4)
        first = await h.server.scale(req, "scale-1")
        assert sorted(first) == [a.node_id, b.node_id]
        committed = h.server.read(lambda d: d.placement("web"))
        (c,) = await h.register(1)        # a fresh placement would now give c a share
        retry = await h.server.scale(req, "scale-1")
        assert retry == first
        assert c.node_id not in retry
        assert h.server.read(lambda d: d.placement("web")) == committed
        # a new request is placed afresh, over the three workers
        again = await h.server.scale(req, "scale-2")
        assert sorted(again) == [a.node_id, b.node_id, c.node_id]
        assert {n: s.groups()[0].indices for n, s in again.items()} == {
            n: tuple(r["default"]) for n, r in
            h.server.read(lambda d: d.placement("web")).items()}
    finally:
        await h.server.stop()


@run
async def test_an_unknown_service_is_said_to_be_unknown_not_zero_and_healthy():
    h = await harness()
    try:
        await h.register(1)
        with pytest.raises(UnknownService, match="'nosuch' is not known"):
            h.server.service_state("nosuch")
        with pytest.raises(UnknownService):
            h.server.service_containers("nosuch")
        await h.server.scale(InternalScaleRequest.legacy("web", 2), None)
        assert h.server.service_state("web")["assigned"][0]["replicas"] == 2
        await h.server.scale(InternalScaleRequest.legacy("web", 0), None)
        with pytest.raises(UnknownService):      # scaled to 0: gone from the directory
            h.server.service_state("web")
    finally:
        await h.server.stop()
