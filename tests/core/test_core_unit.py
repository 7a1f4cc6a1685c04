"""Unit tests of the core's codec, snapshots and memory footprint."""

from __future__ import annotations

import dataclasses

import re
import tracemalloc

import msgpack
import pytest

from raftdir.core import (
    COMMANDS, Barrier, Bootstrap, Compact, CreateAccessToken, Deregister, Directory, Drain,
    MarkDown, MarkReady, RegisterNode, RenewCheckpoint, Result, RevokeAccessToken,
    SetPlacement, Undrain, UpdateProfile, decode_command, encode_command,
)
from raftdir.core.commands import canonical_command
from raftdir.errors import BadRequest
from raftdir.model import DrainEvent, SetEvent, WorkerLease, WorkerPollResponse

PROFILE = {"api_addr": "10.0.0.1:3669", "os": "linux", "arch": "x86_64"}

EXAMPLES = [
    Bootstrap(cluster_id="c1"),
    RegisterNode(desired_node_id=7, kind="server", profile=PROFILE, ttl_secs=30, grace_secs=10,
                 secret_hash="ab", token_id=None, token_max_uses=None, request_id="r",
                 ts_ms=5),
    RegisterNode(profile=dict(PROFILE, labels={"zone": "a"}), ttl_secs=30, grace_secs=10,
                 secret_hash="ab", token_id="t", token_max_uses=3),
    RenewCheckpoint(term=2, entries=((1, 2), (3, 4))),
    MarkDown(term=2, node_ids=(1, 2)),
    MarkReady(term=2, node_id=1, renewed_ms=9),
    Drain(node_id=1),
    Deregister(node_id=1),
    SetPlacement(service="web", replicas=2, groups={"default": (0, 1)},
                 spec={"image": "x", "n": [1, 2.5, None, True]},
                 placement={1_000_000: {"default": (0, 1)}}),
    Barrier(term=3),
    Compact(upto_revision=4),
    Undrain(node_id=1),
    UpdateProfile(node_id=1, profile=dict(PROFILE, labels={"zone": "b"}, cpu_total=2)),
    CreateAccessToken(token_id="0123456789abcdef", name="ci", scope="read",
                      token_hash="ab" * 32, expires_ms=2_000_000_000_000,
                      creator="admin token"),
    RevokeAccessToken(token_id="0123456789abcdef"),
]


def test_every_command_has_an_example() -> None:
    assert {type(c) for c in EXAMPLES} == set(COMMANDS.values())


@pytest.mark.parametrize("cmd", EXAMPLES, ids=[c.TYPE for c in EXAMPLES])
def test_command_round_trip(cmd) -> None:
    raw = encode_command(cmd)
    back = decode_command(raw)
    assert type(back) is type(cmd)
    assert encode_command(back) == raw
    plain = msgpack.unpackb(raw, raw=False)
    assert list(plain)[:2] == ["type", "v"] and plain["type"] == cmd.TYPE


def test_int_keyed_maps_travel_as_pairs() -> None:
    plain = msgpack.unpackb(encode_command(EXAMPLES[8]), raw=False)
    assert plain["placement"] == [[1_000_000, {"default": [0, 1]}]]


@pytest.mark.parametrize("mutate, field", [
    (lambda p: p.pop("term"), "term"),
    (lambda p: p.update(term=-1), "term"),
    (lambda p: p.update(term="1"), "term"),
    (lambda p: p.update(extra=1), "extra"),
    (lambda p: p.update(v=True), "v"),
    (lambda p: p.update(type=None), "type"),
])
def test_decode_names_the_field(mutate, field) -> None:
    plain = msgpack.unpackb(encode_command(Barrier(term=1)), raw=False)
    mutate(plain)
    with pytest.raises(BadRequest) as err:
        decode_command(msgpack.packb(plain, use_bin_type=True))
    assert err.value.field == field and err.value.message.startswith(field + ":")


def test_decode_rejects_bytes_and_bad_specs() -> None:
    good = msgpack.unpackb(encode_command(EXAMPLES[8]), raw=False)
    for spec, problem in [(b"bin", "expected a map"), ({"x": b"bin"}, 'spec["x"]'),
                          ({"x": float("nan")}, "finite"), ([1], "expected a map")]:
        plain = dict(good, spec=spec)
        with pytest.raises(BadRequest, match=re.escape(problem)):
            decode_command(msgpack.packb(plain, use_bin_type=True))
    with pytest.raises(BadRequest, match="duplicate key"):
        decode_command(b"\x82" + (msgpack.packb("type") + msgpack.packb("drain")) * 2)
    with pytest.raises(BadRequest):
        decode_command("not bytes")  # type: ignore[arg-type]


def test_apply_refuses_what_is_not_a_command() -> None:
    d = Directory()
    r = d.apply("bootstrap")  # type: ignore[arg-type]
    assert (r.ok, r.code) == (False, "bad_request")
    r = d.apply(Bootstrap(cluster_id=5))  # type: ignore[arg-type]
    assert (r.ok, r.code) == (False, "bad_request") and r.message.startswith("cluster_id:")
    r = d.apply(Barrier(term=2**64))
    assert (r.ok, r.code, r.message) == (False, "bad_request",
                                         f"term: {2**64} is out of range for u64")
    assert d == Directory()


def loaded() -> Directory:
    d = Directory(max_request_ids=5)
    for i, secret in enumerate(["aa", "bb", "cc"]):
        assert d.apply(RegisterNode(profile=dict(PROFILE, labels={"zone": f"z{i}"}),
                                    ttl_secs=30, grace_secs=10, secret_hash=secret,
                                    request_id=f"r{i}", ts_ms=1_000 * i)).ok
    assert d.apply(SetPlacement(service="web", replicas=2, groups={"default": [0, 1]},
                                spec={"image": "x"},
                                placement={1_000_000: {"default": [0]},
                                           1_000_001: {"default": [1]}})).ok
    assert d.apply(Drain(node_id=1_000_002)).ok
    assert d.apply(Compact(upto_revision=1)).ok
    assert d.apply(CreateAccessToken(token_id="00000000000000aa", name="ops", scope="admin",
                                     token_hash="cd" * 32, expires_ms=9_000,
                                     creator="admin token", ts_ms=3_000)).ok
    assert d.apply(RevokeAccessToken(token_id="00000000000000aa")).ok
    return d


def test_snapshot_round_trip_and_restore_in_place() -> None:
    d = loaded()
    snap = d.to_snapshot()
    assert snap["format"] == 4
    assert snap["access_tokens"] == [["00000000000000aa", "ops", "admin", "cd" * 32, 3_000,
                                      9_000, "admin token", 3_000]]
    again = Directory.from_snapshot(msgpack.unpackb(msgpack.packb(snap), raw=False,
                                                    strict_map_key=False))
    assert again == d and again.revision == d.revision == 3
    other = Directory()
    other.restore(snap)
    assert other == d
    # the restored directory remembers request ids: a retry (same command, proposed
    # later) gets the first result; another command reusing the id is a conflict
    retry = RegisterNode(profile=dict(PROFILE, labels={"zone": "z1"}), ttl_secs=30,
                         grace_secs=10, secret_hash="bb", request_id="r1", ts_ms=99_000)
    first = d.apply(retry)
    assert first == other.apply(retry)
    assert first.value["node_id"] == 1_000_001
    # the leader may hand out another TTL on a retry: still the same request
    assert d.apply(dataclasses.replace(retry, ttl_secs=45)) == first
    reuse = RegisterNode(profile=PROFILE, ttl_secs=1, grace_secs=1, secret_hash="ff",
                         request_id="r1")
    assert (other.apply(reuse).code, d.apply(reuse).code) == ("conflict", "conflict")
    assert other == d
    assert d != Directory()


def test_from_snapshot_rejects_unknown_format_and_garbage() -> None:
    snap = loaded().to_snapshot()
    old = {k: v for k, v in snap.items() if not k.startswith("access_token")}
    for bad in [dict(snap, format=5), dict(snap, format=0), dict(snap, format=True),
                {"format": 3}, {"format": 4}, dict(old, format=4), dict(snap, format=3),
                dict(snap, access_token_fields=["token_id"]),
                dict(snap, access_tokens=[["00000000000000aa", "ops"]]),
                dict(snap, extra=1), dict(snap, nodes=[[1, 2]]), [], None]:
        with pytest.raises(BadRequest):
            Directory.from_snapshot(bad)  # type: ignore[arg-type]
    d = loaded()
    with pytest.raises(BadRequest):
        d.restore(dict(snap, format=9))
    assert d == loaded()  # a failed restore leaves the state as it was


def test_a_format_1_snapshot_is_read_and_its_request_ids_match_any_retry() -> None:
    d = loaded()
    snap = d.to_snapshot()
    # format 1 (before request ids were bound to their command): [id, result] rows
    old = dict(before_tokens(snap), format=1,
               request_ids=[[rid, res] for rid, _fp, res in snap["request_ids"]])
    restored = Directory.from_snapshot(old)
    assert restored.revision == d.revision
    assert restored.to_snapshot()["format"] == 4
    # an entry without a fingerprint answers its first result to whoever retries it, as
    # the version that wrote it did
    retry = RegisterNode(profile=dict(PROFILE, labels={"zone": "z1"}), ttl_secs=30,
                         grace_secs=10, secret_hash="bb", request_id="r1", ts_ms=99_000)
    first = d.apply(retry)
    assert restored.apply(retry) == first
    other = RegisterNode(profile=PROFILE, ttl_secs=1, grace_secs=1, secret_hash="ff",
                         request_id="r1")
    assert restored.apply(other) == first
    with pytest.raises(BadRequest, match="request_ids|malformed"):
        Directory.from_snapshot(dict(before_tokens(snap), format=1))  # format-2 rows


def before_tokens(snap: dict) -> dict:
    """A format-4 snapshot as a format-3 writer wrote it: no access tokens."""
    return {k: v for k, v in snap.items() if not k.startswith("access_token")}


@pytest.mark.parametrize("fmt", [2, 3])
def test_a_format_2_or_3_snapshot_is_read_and_written_back_as_format_4(fmt) -> None:
    d = loaded()
    snap = d.to_snapshot()
    # the rows of formats 2 and 3 are those of format 4, without the access tokens
    restored = Directory.from_snapshot(dict(before_tokens(snap), format=fmt))
    assert restored.access_tokens() == [] and restored.revision == d.revision
    again = restored.to_snapshot()
    assert again["format"] == 4 and again["access_tokens"] == []
    assert before_tokens(again) == dict(before_tokens(snap), format=4)


def test_register_node_v2_takes_zlayer_profiles_and_v1_is_still_read() -> None:
    zlayer = {"api_addr": "0.0.0.0:0", "os": "freebsd", "arch": "riscv64", "labels": {}}
    cmd = RegisterNode(profile=zlayer, ttl_secs=30, grace_secs=10, secret_hash="cd",
                       ts_ms=1)
    plain = msgpack.unpackb(encode_command(cmd), raw=False)
    assert plain["v"] == 2
    assert decode_command(encode_command(cmd)) == canonical_command(cmd)
    # a version-1 command (what the previous raftdir wrote to its journal) still applies
    v1 = dict(plain, v=1, profile=dict(PROFILE), secret_hash="ce")
    d = loaded()
    result = d.apply_bytes(msgpack.packb(v1, use_bin_type=True))
    assert result.ok, result
    assert d.apply_bytes(msgpack.packb(dict(plain, v=3), use_bin_type=True)).code == \
        "bad_request"
    assert d.apply(cmd).ok
    lease = d.lease(d.node_ids(kind="worker")[-1])
    assert (lease.profile.os, lease.profile.reachable_api_addr) == ("freebsd", None)


def test_wire_objects() -> None:
    d = loaded()
    resp = d.events_since(1_000_002, 0)
    assert resp == WorkerPollResponse(revision=3, events=(DrainEvent(revision=3),), full=True)
    resp = d.events_since(1_000_000, 0)
    assert isinstance(resp.events[0], SetEvent) and resp.events[0].spec == {"image": "x"}
    leases = d.leases()
    assert [lease.node_id for lease in leases] == [1_000_000, 1_000_001, 1_000_002]
    assert isinstance(leases[1], WorkerLease) and leases[1].acquired_unix_secs == 1
    assert leases[2].profile.labels == {"zone": "z2"}
    assert d.node(1_000_000)["services"] == ["web"] and "secret_hash" not in d.node(1_000_000)
    assert d.secret_hash(1_000_000) == "aa"
    assert d.node_count("worker", "ready") == 2 and d.node_count() == 3
    assert d.holdings(1_000_001) == ["web"]
    # a query result is a copy: mutating it does not reach the state
    d.service("web")["spec"]["image"] = "changed"
    d.poll_data(1_000_000, 0)["events"][0]["spec"]["image"] = "changed"
    assert d.service("web")["spec"] == {"image": "x"}


def test_results_are_plain_data() -> None:
    d = loaded()
    for _fingerprint, r in d.state.request_ids.values():
        assert isinstance(r, Result)
        assert msgpack.unpackb(msgpack.packb(r.value), raw=False) == r.value


def test_memory_per_worker() -> None:
    """Hard state per registered worker, well under the 2 KiB target (measured with
    tracemalloc on a small fleet; scripts/bench measures RSS at 100,000)."""
    n = 5_000
    cmds = [encode_command(RegisterNode(
        profile={"api_addr": f"10.0.{i >> 8}.{i & 255}:3669", "os": "linux",
                 "arch": "x86_64", "labels": {"zone": f"eu-{i % 3}"}, "cpu_total": 8,
                 "memory_total_bytes": 2**34},
        ttl_secs=600, grace_secs=10, secret_hash=f"{i * 7919:064x}", token_id="t",
        ts_ms=1_700_000_000_000 + i)) for i in range(n)]
    d = Directory()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for raw in cmds:
            assert d.apply_bytes(raw).ok
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    per_worker = grown / n
    snap_bytes = len(msgpack.packb(d.to_snapshot())) / n
    assert per_worker < 1024, per_worker
    assert snap_bytes < 512, snap_bytes


def test_node_brief_is_what_a_heartbeat_needs() -> None:
    d = loaded()
    assert d.node_brief(1_000_001) == ("worker", "ready", 30, 10, "bb")
    assert d.node_brief(1_000_002)[1] == "draining"
    assert d.node_brief(42) is None


def test_a_retry_whose_maps_list_their_keys_in_another_order_is_the_same_request() -> None:
    """A client's JSON may come back with its keys re-ordered: the request id still
    matches the first try (spec and profile labels, at any depth); another spec does not."""
    from raftdir.core.directory import _fingerprint
    d = loaded()
    spec = {"image": "x", "env": {"A": "1", "B": "2"}, "ports": [{"p": 80, "h": 1}]}
    reordered = {"ports": [{"h": 1, "p": 80}], "env": {"B": "2", "A": "1"}, "image": "x"}
    first_try = SetPlacement(service="db", replicas=1, groups={"default": (0,)}, spec=spec,
                             placement={1_000_000: {"default": (0,)}}, request_id="s1")
    retry = dataclasses.replace(first_try, spec=reordered, ts_ms=5_000)
    assert _fingerprint(first_try) == _fingerprint(retry)
    first = d.apply(first_try)
    assert first.ok
    assert d.apply(retry) == first
    assert d.apply(dataclasses.replace(retry, spec=dict(reordered, image="y"))).code == \
        "conflict"
    # a list keeps its order: another order is another request
    assert d.apply(dataclasses.replace(retry, spec=dict(
        reordered, ports=[{"p": 81}, {"p": 80, "h": 1}]))).code == "conflict"
    # a registration's profile labels, too
    labels = {"zone": "a", "rack": "r1"}
    reg = RegisterNode(profile=dict(PROFILE, labels=labels), ttl_secs=30, grace_secs=10,
                       secret_hash="dd", request_id="r9")
    registered = d.apply(reg)
    assert registered.ok
    again = dataclasses.replace(reg, profile={"labels": dict(reversed(labels.items())),
                                              **dict(reversed(PROFILE.items()))})
    assert d.apply(again) == registered
    # a new request with the stored spec in another key order changes nothing: no events
    events_before = d.revision
    same = d.apply(dataclasses.replace(retry, request_id="s2"))
    assert same.ok and same.value["events_for"] == [] and d.revision == events_before
