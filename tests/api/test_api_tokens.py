"""Join-token validity (issue 15, finding 3): documented maximums for valid_for_secs and
max_uses, 400 naming the field beyond them (never 500), through the leader and a follower."""

from __future__ import annotations

import aiohttp
import pytest

from fakes import call
from real_pair import ADMIN_H, real_pair
from raftdir.errors import BadRequest
from raftdir.limits import MAX_TOKEN_USES, MAX_TOKEN_VALID_SECS

TOKENS = "/api/v1/cluster/tokens"


@pytest.mark.parametrize("via", ["leader", "follower"])
async def test_token_validity_and_uses_have_a_maximum(via):
    async with real_pair() as pair, aiohttp.ClientSession() as s:
        url = pair.url(via) + TOKENS
        for body, field in (({"valid_for_secs": 2**64 - 1, "max_uses": 1}, "valid_for_secs"),
                            ({"valid_for_secs": 2**63, "max_uses": 1}, "valid_for_secs"),
                            ({"valid_for_secs": MAX_TOKEN_VALID_SECS + 1, "max_uses": 1},
                             "valid_for_secs"),
                            ({"valid_for_secs": 0, "max_uses": 1}, "valid_for_secs"),
                            ({"valid_for_secs": 60, "max_uses": MAX_TOKEN_USES + 1},
                             "max_uses"),
                            ({"valid_for_secs": 60, "max_uses": 2**32 - 1}, "max_uses")):
            st, out, _ = await call(s, "POST", url, body, headers=ADMIN_H)
            assert (st, out["code"], out["field"]) == (400, "bad_request", field), (body, out)
        st, out, _ = await call(s, "POST", url, {"valid_for_secs": MAX_TOKEN_VALID_SECS,
                                                 "max_uses": MAX_TOKEN_USES}, headers=ADMIN_H)
        assert st == 200, out
        now = pair.leader.clock.wall_ms() // 1000
        assert out["expires_unix_secs"] == now + MAX_TOKEN_VALID_SECS
        assert out["max_uses"] == MAX_TOKEN_USES


async def test_the_control_plane_refuses_them_too():
    async with real_pair() as pair:
        for args, field in (((2**64 - 1, 0), "valid_for_secs"),
                            ((60, MAX_TOKEN_USES + 1), "max_uses"),
                            ((60, -1), "max_uses")):
            with pytest.raises(BadRequest) as info:
                await pair.leader.create_token(*args)
            assert info.value.field == field
