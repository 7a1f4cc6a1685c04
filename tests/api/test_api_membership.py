"""The membership routes (issue 15, finding 1): the id and the Raft address of POST and
DELETE /api/v1/cluster/peers must agree with the directory's server records and the current
Raft membership, or the change is refused (409 naming ``id`` or ``raft_addr``); a live
peer's id cannot be taken; every change is undone by the opposite call with the same body.
Through the leader and through a follower, on real servers (the Raft membership is
``real_pair.MemberNode``'s; PySyncObj's own is exercised in tests/cli)."""

from __future__ import annotations

import aiohttp
import pytest

from fakes import call
from real_pair import ADMIN_H, RAFT, real_pair
from raftdir.testing import free_ports

PEERS = "/api/v1/cluster/peers"
VIAS = ["leader", "follower"]


async def change(s, pair, via: str, method: str, **body) -> tuple[int, dict]:
    st, out, _ = await call(s, method, pair.url(via) + PEERS, body, headers=ADMIN_H)
    return st, out


def refused(answer: tuple[int, dict], field: str) -> bool:
    st, out = answer
    return (st, out.get("code"), out.get("field")) == (409, "conflict", field)


@pytest.mark.parametrize("via", VIAS)
async def test_a_live_peers_id_or_raft_address_cannot_be_taken(via):
    async with real_pair() as pair, aiohttp.ClientSession() as s:
        members = list(pair.leader_raft.members)
        worker, _ = await pair.register()
        api = f"127.0.0.1:{free_ports(1)[0]}"
        # the report: id 1 (the live leader) at a dead address
        for peer_id in (1, 2):
            answer = await change(s, pair, via, "POST", id=peer_id,
                                  raft_addr="127.0.0.1:1", api_addr=api)
            assert refused(answer, "id"), answer
            assert "live peer" in answer[1]["message"]
        # a new id at a member's address, or a worker's id
        assert refused(await change(s, pair, via, "POST", id=5, raft_addr=RAFT[1],
                                    api_addr=api), "raft_addr")
        assert refused(await change(s, pair, via, "POST", id=worker,
                                    raft_addr="127.0.0.1:17109", api_addr=api), "id")
        # a live peer's API address
        assert refused(await change(s, pair, via, "POST", id=5, raft_addr="127.0.0.1:17105",
                                    api_addr=pair.peers[1].api_addr), "api_addr")
        # removing an address that is not a member, or a member under another id
        answer = await change(s, pair, via, "DELETE", id=1, raft_addr="127.0.0.1:1")
        assert refused(answer, "raft_addr"), answer
        answer = await change(s, pair, via, "DELETE", id=2, raft_addr=RAFT[1])
        assert refused(answer, "id"), answer
        assert "peer 1" in answer[1]["message"]
        assert pair.leader_raft.members == members and not pair.leader_raft.membership_log
        for node_id in (1, 2):
            assert pair.node(node_id)["state"] == "ready"


@pytest.mark.parametrize("via", VIAS)
async def test_every_membership_change_is_undone_by_the_opposite_call(via):
    async with real_pair() as pair, aiohttp.ClientSession() as s:
        raft = pair.leader_raft
        before = list(raft.members)
        third = {"id": 3, "raft_addr": "127.0.0.1:17103",
                 "api_addr": f"127.0.0.1:{free_ports(1)[0]}"}
        st, out = await change(s, pair, via, "POST", **third)
        assert st == 200 and out["added"] is True, out
        assert third["raft_addr"] in raft.members
        node = pair.node(3)
        assert (node["kind"], node["state"]) == ("server", "ready")
        assert node["profile"]["labels"]["raft_addr"] == third["raft_addr"]
        assert refused(await change(s, pair, via, "POST", **third), "raft_addr")  # twice
        # undo the add
        st, out = await change(s, pair, via, "DELETE", id=3, raft_addr=third["raft_addr"])
        assert st == 200 and out["removed"] is True, out
        assert raft.members == before and pair.node(3)["state"] == "down"
        # a removed peer comes back only as it was
        assert refused(await change(s, pair, via, "POST", **{**third, "api_addr":
                                                             "127.0.0.1:1"}), "api_addr")
        assert refused(await change(s, pair, via, "POST", **{**third, "raft_addr":
                                                             "127.0.0.1:17199"}), "raft_addr")
        # undo the removal: the same body again
        st, out = await change(s, pair, via, "POST", **third)
        assert st == 200, out
        assert third["raft_addr"] in raft.members and pair.node(3)["state"] == "ready"
        st, out = await change(s, pair, via, "DELETE", id=3, raft_addr=third["raft_addr"])
        assert st == 200 and raft.members == before

        # a configured peer: removed, then added back with its configured addresses
        two = pair.peers[1]
        st, out = await change(s, pair, via, "DELETE", id=2, raft_addr=two.raft_addr)
        assert st == 200 and two.raft_addr not in raft.members, out
        assert pair.node(2)["state"] == "down"
        assert f"http://{two.api_addr}" not in pair.leader.servers()
        st, out = await change(s, pair, via, "POST", id=2, raft_addr=two.raft_addr,
                               api_addr=two.api_addr)
        assert st == 200, out
        assert sorted(raft.members) == sorted(before) and pair.node(2)["state"] == "ready"
        assert f"http://{two.api_addr}" in pair.leader.servers()


@pytest.mark.parametrize("via", VIAS)
async def test_removing_a_server_that_is_no_raft_member_any_more_marks_it_down(via):
    # After `raftdir recover` the lost peers are no Raft members, but their server records
    # still hold replicas: removing them marks them down, so the replicas move.
    async with real_pair() as pair, aiohttp.ClientSession() as s:
        raft = pair.leader_raft
        third = {"id": 3, "raft_addr": "127.0.0.1:17103",
                 "api_addr": f"127.0.0.1:{free_ports(1)[0]}"}
        st, out = await change(s, pair, via, "POST", **third)
        assert st == 200 and out["added"] is True, out
        raft.members.remove(third["raft_addr"])       # lost with a majority, recovered
        assert pair.node(3)["state"] == "ready"
        st, out = await change(s, pair, via, "DELETE", **third)
        assert st == 200 and out == {"id": 3, "raft_addr": third["raft_addr"],
                                     "removed": False, "marked_down": True}, out
        assert pair.node(3)["state"] == "down"
        st, out = await change(s, pair, via, "DELETE", **third)   # again: nothing to do
        assert st == 200 and out["marked_down"] is False, out
        # an address no record of that id ever had is still refused
        assert refused(await change(s, pair, via, "DELETE", id=3, raft_addr="127.0.0.1:1"),
                       "raft_addr")
