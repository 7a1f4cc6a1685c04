"""Malformed input: each gets 400 (naming the field) or 413, and the server keeps serving."""

from __future__ import annotations

import aiohttp
import msgpack
import pytest

from fakes import (
    ADMIN, GOOD_TOKEN, JSON, MSGPACK, PROFILE, FakeControlPlane, call, fake_pair,
    parse_raw_response, raw_exchange, serving,
)

from raftdir.codec import to_dict

REGISTER = "/api/v1/workers/register"
POLL = "/api/v1/workers/poll"
STATUS = "/api/v1/workers/status"
SCALE = "/api/v1/internal/scale"


def mp(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


# (path, content type, raw body, expected field, a phrase of the message)
CASES = [
    # malformed syntax
    (POLL, MSGPACK, b"\xc1", "body", "malformed msgpack"),
    (POLL, MSGPACK, mp({"node_id": 1})[:-1], "body", "malformed msgpack"),
    (POLL, MSGPACK, mp({"node_id": 1}) + b"\x01", "body", "malformed msgpack"),
    (POLL, MSGPACK, b"", "body", "malformed msgpack"),
    (POLL, JSON, b'{"node_id": 1,', "body", "malformed JSON"),
    (POLL, JSON, b"", "body", "malformed JSON"),
    (POLL, JSON, b'{"node_id": NaN}', "node_id", "NaN"),
    (POLL, JSON, b'{"node_id": 1e999}', "node_id", "finite"),
    (POLL, JSON, b'{"node_id": 1' + b"0" * 5000 + b'}', "node_id", "too large"),
    (STATUS, JSON, b'{"node_id": 1, "ts_ns": 5, "resources": {"cpu_used": NaN, '
                   b'"memory_used_bytes": 1, "gpu_used": 0}}', "resources.cpu_used", "NaN"),
    (SCALE, JSON, b'{"service": "web", "replicas": 1, "spec": {"a": [1, -Infinity]}}',
     "spec.a[1]", "Infinity"),
    (POLL, JSON, b'{"node_id": "\xff"}', "body", "malformed JSON"),
    (POLL, "text/plain", b'{"node_id": 1}', "Content-Type", "not supported"),
    # not a map at the top
    (POLL, JSON, b"[1, 2]", "body", "expected a map"),
    (POLL, MSGPACK, mp("node_id"), "body", "expected a map"),
    # (unknown keys in the worker and scale records are skipped, as ZLayer does:
    # test_unknown_keys_are_skipped_as_zlayer_does below)
    (REGISTER, MSGPACK, mp({"token": GOOD_TOKEN, "profile": {**PROFILE.to_dict(),
                                                           "api_addr": "x"}}),
     "profile.api_addr", "expected host:port"),
    # wrong types and ranges
    (POLL, JSON, b'{"node_id": "1"}', "node_id", "expected an integer"),
    (POLL, JSON, b'{"node_id": true}', "node_id", "got bool"),
    (POLL, JSON, b'{"node_id": 1.0}', "node_id", "got float"),
    (POLL, MSGPACK, mp({"node_id": 1, "max_wait_secs": 2**32}), "max_wait_secs",
     "out of range for u32"),
    (POLL, MSGPACK, mp({"node_id": b"\x01"}), "node_id", "got bytes"),
    (POLL, JSON, b'{"node_id": null}', "node_id", "must not be null"),
    (POLL, JSON, b'{}', "node_id", "required field missing"),
    (SCALE, JSON, b'{"service": "web", "replicas": 2, "spec": [1]}', "spec",
     "expected a map"),
    (SCALE, JSON, b'{"service": "", "replicas": 2}', "service", "must not be empty"),
    (SCALE, JSON, b'{"service": "web", "replicas": 1, "assignments": [{"role": "a", '
                  b'"indices": [0, 1]}]}', "replicas", "does not match"),
    (STATUS, JSON, b'{"node_id": 1, "ts_ns": 5, "resources": {"cpu_used": "x", '
                   b'"memory_used_bytes": 1, "gpu_used": 0}}', "resources.cpu_used",
     "expected a number"),
    # duplicate keys
    (POLL, JSON, b'{"node_id": 1, "node_id": 2}', "node_id", "duplicate key"),
    (POLL, MSGPACK, b"\x82\xa7node_id\x01\xa7node_id\x02", "node_id", "duplicate key"),
    # names in an order are DNS labels (limits.check_service_name): nothing path-like, no
    # space, no control character, no capital, at most 63; resource use is not negative
    (SCALE, JSON, b'{"service": "we\\u0000b", "replicas": 1}', "service", "not a valid name"),
    (SCALE, JSON, b'{"service": "web\\n", "replicas": 1}', "service", "not a valid name"),
    (SCALE, JSON, b'{"service": "../../etc", "replicas": 1}', "service", "not a valid name"),
    (SCALE, JSON, b'{"service": "a/b", "replicas": 1}', "service", "not a valid name"),
    (SCALE, JSON, b'{"service": "my web", "replicas": 1}', "service", "not a valid name"),
    (SCALE, JSON, b'{"service": "Web", "replicas": 1}', "service", "not a valid name"),
    (SCALE, JSON, b'{"service": "-web", "replicas": 1}', "service", "not a valid name"),
    (SCALE, JSON, b'{"service": "web.x", "replicas": 1}', "service", "not a valid name"),
    (SCALE, JSON, b'{"service": "web", "replicas": 1, "assignments": [{"role": "a\\nb", '
                  b'"indices": [0]}]}', "assignments[0].role", "not a valid name"),
    (SCALE, JSON, b'{"service": "web", "replicas": 1, "assignments": [{"role": "../x", '
                  b'"indices": [0]}]}', "assignments[0].role", "not a valid name"),
    (SCALE, JSON, b'{"service": "' + b"s" * 64 + b'", "replicas": 1}', "service",
     "1-63 lowercase letters"),
    (STATUS, JSON, b'{"node_id": 1, "ts_ns": 5, "resources": {"cpu_used": -0.5, '
                   b'"memory_used_bytes": 1, "gpu_used": 0}}', "resources.cpu_used",
     "negative"),
    (STATUS, JSON, b'{"node_id": 1, "ts_ns": 5, "resources": {"cpu_used": 0.5, '
                   b'"memory_used_bytes": 1, "gpu_used": 0}, "containers": [{"service": '
                   b'"a\\u0000", "role": "r", "replica": 0, "state": "running"}]}',
     "containers[0].service", "control character"),
    # a charset other than UTF-8
    (POLL, "application/json; charset=utf-16", b'{"node_id": 1}', "Content-Type",
     "charset"),
    (POLL, "application/msgpack; charset=latin-1", mp({"node_id": 1}), "Content-Type",
     "charset"),
    # msgpack ext types
    (POLL, MSGPACK, mp({"node_id": msgpack.ExtType(5, b"x")}), "node_id", "ext type"),
    (SCALE, MSGPACK, mp({"service": "web", "replicas": 1,
                         "spec": {"t": [msgpack.Timestamp(1, 0)]}}), "spec.t[0]", "ext type"),
    (POLL, MSGPACK, mp(msgpack.ExtType(5, b"x")), "body", "ext type"),
]


@pytest.mark.parametrize("via", ["leader", "follower"])
@pytest.mark.parametrize("path,ctype,raw,field,phrase", CASES,
                         ids=[f"{i}-{c[3]}" for i, c in enumerate(CASES)])
async def test_malformed_bodies_get_400_naming_the_field(path, ctype, raw, field, phrase,
                                                         via):
    async with fake_pair() as pair, aiohttp.ClientSession() as s:
        nid, secret = pair.leader_cp.add_node()
        pair.follower_cp.add_node(nid, secret)
        headers = {"Content-Type": ctype, "Authorization": f"Bearer {secret}"}
        if path == SCALE:
            headers["Authorization"] = f"Bearer {ADMIN}"
        url = pair.url(via)
        st, out, _ = await call(s, "POST", url + path, raw=raw, headers=headers, accept=JSON)
        assert st == 400, out
        assert out["code"] == "bad_request"
        assert out["field"] == field, out
        assert phrase in out["message"], out
        for cp in (pair.leader_cp, pair.follower_cp):
            assert not [c for c in cp.calls if c[0] in ("poll", "report", "register", "scale")]
        # the server keeps serving
        st, out, _ = await call(s, "POST", url + POLL, {"node_id": nid, "max_wait_secs": 0},
                                headers={"Authorization": f"Bearer {secret}"})
        assert st == 200, out


@pytest.mark.parametrize("via", ["leader", "follower"])
async def test_odd_requests_outside_the_body_get_400_naming_the_field(via):
    async with fake_pair() as pair, aiohttp.ClientSession() as s:
        url = pair.url(via)
        # an empty ?consistent= is neither yes nor no
        st, out, _ = await call(s, "GET", url + "/api/v1/cluster/workers?consistent=")
        assert (st, out["field"]) == (400, "consistent"), out
        # a service name in the path: a control character, a slash, '..', a space
        for bad in ("a%00b", "a%0Ab", "a%2Fb", "..%2F..%2Fetc", "a%20b", "Web", "-"):
            for what in ("state", "containers"):
                st, out, _ = await call(s, "GET",
                                        url + f"/api/v1/internal/services/{bad}/{what}")
                assert (st, out["field"]) == (400, "service"), (bad, out)
                assert "not a valid name" in out["message"], out
        # an HTTP/0.9 request line (no version) is not served
        raw = await raw_exchange(pair.api(via).port, b"GET /health\r\n\r\n")
        status, _, body = parse_raw_response(raw)
        assert status == 400 and b"HTTP/0.9" in body, raw
        assert not [c for c in pair.leader_cp.calls + pair.follower_cp.calls
                    if c[0] in ("workers", "barrier", "service_state", "service_containers")]


async def test_oversize_bodies_get_413_by_declared_length_and_by_what_arrives():
    cp = FakeControlPlane()
    nid, secret = cp.add_node()
    auth = {"Authorization": f"Bearer {secret}"}
    async with serving(cp, max_body=1024) as api, aiohttp.ClientSession() as s:
        url = api.url + POLL
        big = b'{"node_id": 1, "pad": "' + b"x" * 4000 + b'"}'
        st, out, _ = await call(s, "POST", url, raw=big, headers={**auth, "Content-Type": JSON})
        assert (st, out["code"]) == (413, "payload_too_large")

        async def chunks():  # chunked: no Content-Length
            for _ in range(8):
                yield b" " * 512

        async with s.post(url, data=chunks(), headers={**auth, "Content-Type": JSON}) as resp:
            assert resp.status == 413
            assert (await resp.json())["code"] == "payload_too_large"
        # exactly at the limit is fine (it is padding whitespace around a valid body)
        body = b'{"node_id": %d, "max_wait_secs": 0}' % nid
        exact = body + b" " * (1024 - len(body))
        st, out, _ = await call(s, "POST", url, raw=exact,
                                headers={**auth, "Content-Type": JSON})
        assert st == 200, out
        st, _, _ = await call(s, "GET", api.url + "/health")
        assert st == 200


async def test_oversize_is_checked_before_auth_decisions_reach_the_control_plane():
    cp = FakeControlPlane()
    async with serving(cp, max_body=64) as api, aiohttp.ClientSession() as s:
        raw = b'{"token": "' + b"t" * 200 + b'"}'
        st, out, _ = await call(s, "POST", api.url + REGISTER, raw=raw)
        assert (st, out["code"]) == (413, "payload_too_large")
        assert not [c for c in cp.calls if c[0] == "register"]


async def test_unknown_keys_are_skipped_as_zlayer_does():
    """ZLayer's worker and scale records have no ``deny_unknown_fields``: a key raftdir does
    not know (a field a newer ZLayer added) is skipped, never a 400; the control plane
    gets the record without it."""
    cp = FakeControlPlane()
    nid, secret = cp.add_node()
    node = {"Authorization": f"Bearer {secret}"}
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        st, out, _ = await call(s, "POST", api.url + POLL,
                                {"node_id": nid, "max_wait_secs": 0, "lastrevision": 3},
                                headers=node)
        assert st == 200, out
        assert cp.calls[-1] == ("poll", nid) and out["revision"] == 0
        report = {"node_id": nid, "ts_ns": 5, "uptime_secs": 9,
                  "resources": {"cpu_used": 0.1, "memory_used_bytes": 1, "gpu_used": 0,
                                "disk_used_bytes": 7},
                  "containers": [{"service": "a", "role": "r", "replica": 0,
                                  "state": "initializing", "restart_count": 4}]}
        st, out, _ = await call(s, "POST", api.url + STATUS, report, headers=node)
        assert st == 200, out
        got = cp.nodes[nid]["report"]
        assert got.containers[0].state == "initializing"
        assert to_dict(got) == {**{k: v for k, v in report.items() if k != "uptime_secs"},
                                "resources": {"cpu_used": 0.1, "memory_used_bytes": 1,
                                              "gpu_used": 0},
                                "containers": [{"service": "a", "role": "r", "replica": 0,
                                                "state": "initializing"}]}
        st, out, _ = await call(s, "POST", api.url + REGISTER,
                                {"token": GOOD_TOKEN, "csr_der": "",
                                 "profile": {**PROFILE.to_dict(), "version": "0.9",
                                             "api_addr": "0.0.0.0:0", "os": "freebsd"}})
        assert st == 200, out
        registered = cp.nodes[out["node_id"]]["profile"]
        assert registered.os == "freebsd" and registered.reachable_api_addr is None
        # raftdir's own bodies stay strict (they are not ZLayer records)
        st, out, _ = await call(s, "POST", api.url + "/api/v1/cluster/tokens",
                                {"valid_for_secs": 60, "max_use": 1},
                                headers={"Authorization": f"Bearer {ADMIN}"})
        assert st == 400 and out["field"] == "max_use", out
        assert "did you mean 'max_uses'" in out["message"]
