"""A small data-driven test runner for the core (after etcd-io/raft's ``datadriven``).

A script file is a series of blocks::

    # comments and blank lines between blocks are kept
    register secret=aa token=t1 max=2
    ----
    ok rev=0 {"cluster_id":null,...}

The line before ``----`` is a command with ``key=value`` arguments (values are JSON when
they parse as JSON, else strings; a value has no spaces: write JSON compactly). The
expected output runs to the next blank line. With ``RAFTDIR_REWRITE=1`` in the
environment, the runner writes the actual outputs back into the file instead of comparing;
review the diff by hand.

Write commands: bootstrap, register, profile (update_profile), renew, down, ready, drain,
deregister, place, barrier, compact, mktoken (create_access_token), revoke
(revoke_access_token), raw (apply_bytes of a JSON map packed as msgpack), rawhex
(apply_bytes of hex).
Every write takes ``req=`` (request id) and ``ts=`` (proposer ms; sticky: later commands
reuse the last one given). Queries: poll, node, nodes, leases, placement, services, tokens,
access (the access tokens), state, log. ``reset max_ids=N`` starts over with a fresh directory. ``restart`` replaces the directory with one restored from a msgpack
round trip of its snapshot. After every command the invariants of ``core_invariants`` are
checked.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from raftdir.core import (
    Barrier, Bootstrap, Compact, CreateAccessToken, Deregister, Directory, Drain, MarkDown,
    MarkReady, RegisterNode, RenewCheckpoint, Result, RevokeAccessToken, SetPlacement,
    Undrain, UpdateProfile,
)
from raftdir.errors import RaftdirError

from core_invariants import check_invariants

REWRITE = os.environ.get("RAFTDIR_REWRITE") == "1"

STRING_ARGS = {"id_str", "secret", "token", "service", "cluster", "addr", "os", "arch",
               "kind", "req", "tid", "name", "scope", "hash", "creator"}


@dataclass
class Block:
    command: str
    expected: list[str]
    line: int
    prefix: list[str] = field(default_factory=list)  # comment/blank lines before it


def parse_script(text: str) -> tuple[list[Block], list[str]]:
    lines = text.split("\n")
    blocks: list[Block] = []
    pending: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            pending.append(line)
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1] != "----":
            raise ValueError(f"line {i + 1}: expected '----' after command {line!r}")
        start = i + 1
        i += 2
        expected = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        blocks.append(Block(line, expected, start, pending))
        pending = []
    return blocks, pending


def render_script(blocks: list[Block], trailer: list[str]) -> str:
    out: list[str] = []
    for b in blocks:
        out.extend(b.prefix)
        out.append(b.command)
        out.append("----")
        out.extend(b.expected)
    out.extend(trailer)
    text = "\n".join(out)
    return text if text.endswith("\n") else text + "\n"


def parse_args(command: str) -> tuple[str, dict[str, Any]]:
    words = command.split()
    name, args = words[0], {}
    for word in words[1:]:
        key, sep, raw = word.partition("=")
        if not sep:
            raise ValueError(f"argument {word!r} is not key=value")
        if key in STRING_ARGS:
            args[key] = raw
            continue
        try:
            args[key] = json.loads(raw)
        except ValueError:
            args[key] = raw
    return name, args


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def fmt_result(r: Result) -> str:
    if r.ok:
        return f"ok rev={r.revision} {dumps(r.value)}"
    return f"refused {r.code} rev={r.revision}: {r.message}"


def fmt_share(assignments: list[dict]) -> str:
    return " ".join(f"{a['role']}={dumps(a['indices'])}" for a in assignments) or "(empty)"


def fmt_event(ev: dict) -> str:
    if ev["kind"] == "set":
        spec = f" spec={dumps(ev['spec'])}" if "spec" in ev else ""
        return f"set {ev['service']} rev={ev['revision']} {fmt_share(ev['assignments'])}{spec}"
    if ev["kind"] == "delete":
        return f"delete {ev['service']} rev={ev['revision']}"
    return f"{ev['kind']} rev={ev['revision']}"   # drain, undrain


def fmt_node(n: dict) -> str:
    p = n["profile"]
    return (f"{n['node_id']} {n['kind']} {n['state']} reg={n['registered_ms']} "
            f"renewed={n['renewed_ms']} ttl={n['ttl_secs']} grace={n['grace_secs']}"
            f"{' drained' if n['draining'] else ''}"
            f" services={dumps(n['services'])} {p['os']}/{p['arch']} {p['api_addr']}"
            f"{' labels=' + dumps(p['labels']) if p['labels'] else ''}")


class Env:
    def __init__(self) -> None:
        self.d = Directory()
        self.ts = 1_700_000_000_000

    def do_reset(self, a: dict) -> str:
        self.d = Directory(max_request_ids=a.get("max_ids", 10_000))
        return "ok"

    def profile(self, a: dict) -> dict:
        p = {"api_addr": a.get("addr", "10.0.0.9:3669"), "os": a.get("os", "linux"),
             "arch": a.get("arch", "x86_64")}
        for key, name in (("labels", "labels"), ("cpu", "cpu_total"),
                          ("mem", "memory_total_bytes")):
            if key in a:
                p[name] = a[key]
        return p

    def common(self, a: dict) -> dict:
        if "ts" in a:
            self.ts = a["ts"]
        return {"request_id": a.get("req"), "ts_ms": self.ts}

    def run(self, command: str) -> list[str]:
        name, a = parse_args(command)
        method = getattr(self, "do_" + name.replace("-", "_"), None)
        if method is None:
            raise ValueError(f"unknown script command {name!r}")
        out = method(a)
        check_invariants(self.d)
        return out if isinstance(out, list) else [out]

    # -- writes
    def apply(self, cmd: Any) -> str:
        return fmt_result(self.d.apply(cmd))

    def do_bootstrap(self, a: dict) -> str:
        return self.apply(Bootstrap(cluster_id=a.get("cluster", "c1"), **self.common(a)))

    def do_register(self, a: dict) -> str:
        return self.apply(RegisterNode(
            desired_node_id=a.get("desired"), kind=a.get("kind", "worker"),
            profile=self.profile(a), ttl_secs=a.get("ttl", 30), grace_secs=a.get("grace", 10),
            secret_hash=a.get("secret", "aa"), token_id=a.get("token"),
            token_max_uses=a.get("max"), **self.common(a)))

    def do_profile(self, a: dict) -> str:
        return self.apply(UpdateProfile(node_id=a["id"], profile=self.profile(a),
                                        **self.common(a)))

    def do_renew(self, a: dict) -> str:
        return self.apply(RenewCheckpoint(term=a.get("term", 1), entries=a["entries"],
                                          **self.common(a)))

    def do_down(self, a: dict) -> str:
        return self.apply(MarkDown(term=a.get("term", 1), node_ids=a["ids"], **self.common(a)))

    def do_ready(self, a: dict) -> str:
        return self.apply(MarkReady(term=a.get("term", 1), node_id=a["id"],
                                    renewed_ms=a.get("renewed", self.ts), **self.common(a)))

    def do_drain(self, a: dict) -> str:
        return self.apply(Drain(node_id=a["id"], **self.common(a)))

    def do_undrain(self, a: dict) -> str:
        return self.apply(Undrain(node_id=a["id"], **self.common(a)))

    def do_deregister(self, a: dict) -> str:
        return self.apply(Deregister(node_id=a["id"], **self.common(a)))

    def do_place(self, a: dict) -> str:
        placement = a.get("placement", {})
        if isinstance(placement, dict):
            placement = {int(k): v for k, v in placement.items()}
        return self.apply(SetPlacement(
            service=a["service"], replicas=a.get("replicas", 0), groups=a.get("groups", {}),
            spec=a.get("spec"), placement=placement, **self.common(a)))

    def do_barrier(self, a: dict) -> str:
        return self.apply(Barrier(term=a["term"], **self.common(a)))

    def do_compact(self, a: dict) -> str:
        return self.apply(Compact(upto_revision=a["upto"], **self.common(a)))

    def do_mktoken(self, a: dict) -> str:
        return self.apply(CreateAccessToken(
            token_id=a["tid"], name=a.get("name", ""), scope=a.get("scope", "read"),
            token_hash=a.get("hash", "ab" * 32), expires_ms=a["expires"],
            creator=a.get("creator", "admin-token"), **self.common(a)))

    def do_revoke(self, a: dict) -> str:
        return self.apply(RevokeAccessToken(token_id=a["tid"], **self.common(a)))

    def do_raw(self, a: dict) -> str:
        return fmt_result(self.d.apply_bytes(msgpack.packb(a["json"], use_bin_type=True)))

    def do_rawhex(self, a: dict) -> str:
        return fmt_result(self.d.apply_bytes(bytes.fromhex(a["hex"])))

    # -- queries
    def do_poll(self, a: dict) -> list[str]:
        try:
            resp = self.d.poll_data(a["id"], a.get("last", 0))
            self.d.events_since(a["id"], a.get("last", 0))  # the wire object builds too
        except RaftdirError as exc:
            return [f"error {exc.code}: {exc.message}"]
        head = f"revision={resp['revision']}" + (" full" if resp.get("full") else "")
        return [head] + [fmt_event(ev) for ev in resp.get("events", ())]

    def do_node(self, a: dict) -> str:
        n = self.d.node(a["id"])
        return "none" if n is None else fmt_node(n)

    def do_nodes(self, a: dict) -> list[str]:
        return [fmt_node(n) for n in self.d.nodes(a.get("kind"), a.get("state"))] or ["(none)"]

    def do_leases(self, a: dict) -> list[str]:
        return [dumps(lease.to_dict()) for lease in self.d.leases()] or ["(none)"]

    def do_placement(self, a: dict) -> str:
        p = self.d.placement(a["service"])
        if p is None:
            return "none"
        svc = self.d.service(a["service"])
        assert svc is not None
        return (f"replicas={svc['replicas']} groups={dumps(svc['groups'])} "
                f"spec={dumps(svc['spec'])} placement={dumps({str(k): v for k, v in p.items()})}")

    def do_services(self, a: dict) -> str:
        return dumps(self.d.services())

    def do_tokens(self, a: dict) -> str:
        return str(self.d.token_uses(a["token"]))

    def do_access(self, a: dict) -> list[str]:
        return [dumps(t) for t in self.d.access_tokens()] or ["(none)"]

    def do_state(self, a: dict) -> str:
        d = self.d
        return (f"cluster={d.cluster_id} revision={d.revision} compacted={d.compacted_revision}"
                f" now={d.now_ms} term={d.max_term} next_id={d.next_node_id}"
                f" nodes={d.node_count()} ready={d.node_count(state='ready')}"
                f" request_ids={len(d.state.request_ids)}")

    def do_log(self, a: dict) -> list[str]:
        return [f"{ev['node_id']}: {fmt_event(ev)}" for ev in self.d.log_data()] or ["(empty)"]

    def do_restart(self, a: dict) -> str:
        snap = self.d.to_snapshot()
        packed = msgpack.packb(snap, use_bin_type=True)
        self.d = Directory.from_snapshot(msgpack.unpackb(packed, raw=False,
                                                         strict_map_key=False))
        return f"restored {len(packed)} bytes"


def run_script(path: Path) -> None:
    blocks, trailer = parse_script(path.read_text())
    env = Env()
    failures = []
    for b in blocks:
        try:
            actual = env.run(b.command)
        except AssertionError:
            raise
        except Exception as exc:  # a crash of the core or the runner is a failure too
            raise AssertionError(f"{path.name}:{b.line}: {b.command!r} raised {exc!r}") from exc
        if REWRITE:
            b.expected = actual
        elif actual != b.expected:
            failures.append(f"{path.name}:{b.line}: {b.command}\n  expected:\n    "
                            + "\n    ".join(b.expected) + "\n  actual:\n    "
                            + "\n    ".join(actual))
    if REWRITE:
        path.write_text(render_script(blocks, trailer))
    assert not failures, "\n".join(failures)
