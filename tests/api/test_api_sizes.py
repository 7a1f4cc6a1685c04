"""Sizes (issue 15, finding 2): every field that goes into a Raft entry is bounded in
encoded bytes, 413 naming the field beyond it, through the leader and a follower; the
limits keep every command under the size a PySyncObj entry carries in one message. A real
three-peer cluster replicating maximum-size entries: tests/cluster/test_large_entries.py."""

from __future__ import annotations

import aiohttp
import msgpack
import pytest

from fakes import ADMIN, GOOD_TOKEN, MSGPACK, PROFILE, call, fake_pair
from real_pair import ADMIN_H, real_pair
from raftdir.codec import dumps_msgpack
from raftdir.core.commands import RegisterNode, SetPlacement, encode_command
from raftdir.limits import MAX_LABELS_BYTES, MAX_NAME_BYTES, MAX_SPEC_BYTES
from raftdir.model import MAX_LEGACY_REPLICAS
from raftdir.replication.base import MAX_COMMAND_BYTES
from raftdir.testing import map_of_size as sized_map


@pytest.mark.parametrize("via", ["leader", "follower"])
async def test_labels_and_spec_over_their_limits_are_413_naming_the_field(via):
    async with fake_pair() as pair, aiohttp.ClientSession() as s:
        url = pair.url(via)
        profile = {**PROFILE.to_dict(), "labels": sized_map(MAX_LABELS_BYTES + 1)}
        st, out, _ = await call(s, "POST", url + "/api/v1/workers/register",
                                {"token": GOOD_TOKEN, "profile": profile}, fmt=MSGPACK)
        assert (st, out["code"], out["field"]) == (413, "payload_too_large",
                                                   "profile.labels"), out
        # measured in the entry's bytes, whatever the request's format (here JSON)
        profile["labels"] = sized_map(MAX_LABELS_BYTES, "x")
        st, out, _ = await call(s, "POST", url + "/api/v1/workers/register",
                                {"token": GOOD_TOKEN, "profile": profile})
        assert st == 200, out
        profile["labels"] = sized_map(MAX_LABELS_BYTES)
        st, out, _ = await call(s, "POST", url + "/api/v1/workers/register",
                                {"token": GOOD_TOKEN, "profile": profile}, fmt=MSGPACK)
        assert st == 200, out
        headers = {"Authorization": f"Bearer {ADMIN}"}
        st, out, _ = await call(s, "POST", url + "/api/v1/internal/scale",
                                {"service": "web", "replicas": 1,
                                 "spec": sized_map(MAX_SPEC_BYTES + 1)},
                                fmt=MSGPACK, headers=headers)
        assert (st, out["code"], out["field"]) == (413, "payload_too_large", "spec"), out
        st, out, _ = await call(s, "POST", url + "/api/v1/internal/scale",
                                {"service": "web", "replicas": 1,
                                 "spec": sized_map(MAX_SPEC_BYTES)},
                                fmt=MSGPACK, headers=headers)
        assert st == 200, out
    assert [c[0] for c in pair.follower_cp.calls if c[0] in ("register", "scale")] == \
        (["register", "register", "scale"] if via == "follower" else [])


@pytest.mark.parametrize("via", ["leader", "follower"])
async def test_a_scale_whose_command_would_pass_the_entry_limit_is_413(via):
    async with real_pair() as pair, aiohttp.ClientSession() as s:
        await pair.register()
        indices = list(range(200_000))      # 1 MiB of body at most, twice that in Raft
        body = msgpack.packb({"service": "web", "replicas": len(indices),
                              "assignments": [{"role": "r", "indices": indices}]})
        assert len(body) < 1 << 20
        st, out, _ = await call(s, "POST", pair.url(via) + "/api/v1/internal/scale",
                                raw=body, fmt=MSGPACK, headers=ADMIN_H)
        assert (st, out["code"], out["field"]) == (413, "payload_too_large",
                                                   "assignments"), out
        assert "a Raft entry may carry" in out["message"]
        assert pair.leader.read(lambda d: d.service("web")) is None
        # the legacy shape at its largest, with the largest spec, is taken
        st, out, _ = await call(s, "POST", pair.url(via) + "/api/v1/internal/scale",
                                {"service": "web", "replicas": MAX_LEGACY_REPLICAS,
                                 "spec": sized_map(MAX_SPEC_BYTES)},
                                fmt=MSGPACK, headers=ADMIN_H)
        assert st == 200, out
        assert pair.follower.read(lambda d: d.service("web"))["replicas"] == \
            MAX_LEGACY_REPLICAS


def test_the_largest_registration_and_scale_fit_in_a_command():
    labels = sized_map(MAX_LABELS_BYTES)
    profile = {**PROFILE.to_dict(), "labels": labels,
               "api_addr": "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + ".de:65535"}
    reg = RegisterNode(request_id="r" * 128, desired_node_id=2**64 - 1, kind="worker",
                       profile=profile, ttl_secs=2**32 - 1, grace_secs=2**32 - 1,
                       secret_hash="f" * 64, token_id="t" * 64, token_max_uses=2**32 - 1,
                       ts_ms=2**64 - 1)
    assert len(encode_command(reg)) < MAX_LABELS_BYTES + 2048 < MAX_COMMAND_BYTES
    indices = tuple(range(MAX_LEGACY_REPLICAS))
    nodes = 1000
    scale = SetPlacement(request_id="r" * 128, ts_ms=2**64 - 1, service="s" * MAX_NAME_BYTES,
                         replicas=len(indices), groups={"default": indices},
                         spec=sized_map(MAX_SPEC_BYTES),
                         placement={2**63 + k: {"default": indices[k::nodes]}
                                    for k in range(nodes)})
    assert len(encode_command(scale)) <= MAX_COMMAND_BYTES


def test_one_replica_on_each_of_50000_workers_fits_in_a_command():
    # the 50,000-worker benchmark's scale (issue 10) was refused 413 at 1 MiB: a node's
    # share costs ~20 bytes (its id, the role, the index), and every index is in the
    # groups again
    n = 50_000
    fan = SetPlacement(request_id="r" * 128, ts_ms=2**64 - 1, service="s" * 63,
                       replicas=n, groups={"default": tuple(range(n))},
                       spec=sized_map(MAX_SPEC_BYTES),
                       placement={2**63 + k: {"default": (k,)} for k in range(n)})
    assert len(encode_command(fan)) <= MAX_COMMAND_BYTES


def test_pysyncobj_carries_the_largest_command_in_one_message():
    import pysyncobj.pickle as pysyncobj_pickle
    from raftdir.replication.pysyncobj_node import APPEND_ENTRIES_BATCH_BYTES
    # what PySyncObj's @replicated call stores for our one entry point: protocol-2 pickle
    # of (method id, (data,), {}), where every byte >= 0x80 takes two
    entry = b"\x00" + pysyncobj_pickle.dumps((0, (b"\xff" * MAX_COMMAND_BYTES,), {}))
    assert len(entry) < APPEND_ENTRIES_BATCH_BYTES


def test_the_adapter_refuses_a_command_over_the_limit():
    from raftdir.errors import PayloadTooLarge
    from raftdir.replication.pysyncobj_node import PySyncObjNode
    node = PySyncObjNode.__new__(PySyncObjNode)
    with pytest.raises(PayloadTooLarge):
        node._submit(None, b"x" * (MAX_COMMAND_BYTES + 1), lambda res, err: None)
