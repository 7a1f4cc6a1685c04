"""A deliberately simple reference model of the directory, for the random tests.

Plain dicts and lists, no indices, everything recomputed by scanning: it states the rules
of directory.md once more, as directly as possible, so that the fast core can be compared
with it on random command sequences. It takes commands already through
``canonical_command`` (decoding is tested on its own) and answers with the same plain data
as ``Directory``'s queries.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

from raftdir.core import (
    Barrier, Bootstrap, Compact, CreateAccessToken, Deregister, Drain, MarkDown, MarkReady,
    RegisterNode, RenewCheckpoint, RevokeAccessToken, SetPlacement, Undrain, UpdateProfile,
)

LEADER = (RenewCheckpoint, MarkDown, MarkReady, Barrier)


class Refused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Reference:
    def __init__(self, max_request_ids: int = 10_000) -> None:
        self.cluster_id: str | None = None
        self.nodes: dict[int, dict] = {}
        self.next_id = 1_000_000
        self.tokens: dict[str, int] = {}
        self.access: dict[str, dict] = {}   # access-token id -> its fields
        self.services: dict[str, dict] = {}
        self.log: list[dict] = []  # {"rev", "node", "kind", "service", "share", "spec"}
        self.revision = 0
        self.compacted = 0
        self.max_term = 0
        self.now = 0
        self.seen: list[tuple[str, Any, tuple]] = []  # (request id, command, result)
        self.max_ids = max_request_ids

    # ---------------------------------------------------------------- apply

    def apply(self, cmd: Any) -> tuple:
        """(ok, value, code, revision), like ``Result`` without the message."""
        # what it asks, not when, nor what the leader chose for it
        chosen = {"RegisterNode": {"ttl_secs": 0, "grace_secs": 0},
                  "SetPlacement": {"placement": {}},
                  "CreateAccessToken": {"expires_ms": 0}}.get(type(cmd).__name__, {})
        key = dataclasses.replace(cmd, ts_ms=0, **chosen)
        if cmd.request_id is not None:
            for rid, seen_key, result in self.seen:
                if rid == cmd.request_id:
                    return result if seen_key == key else (False, None, "conflict",
                                                           self.revision)
        if isinstance(cmd, LEADER) and cmd.term < self.max_term:
            return (False, None, "stale", self.revision)
        before = copy.deepcopy(self.__dict__)
        try:
            value = getattr(self, "do_" + cmd.TYPE)(cmd, max(self.now, cmd.ts_ms))
        except Refused as r:
            self.__dict__.update(before)
            return (False, None, r.code, self.revision)
        self.now = max(self.now, cmd.ts_ms)
        if isinstance(cmd, LEADER):
            self.max_term = max(self.max_term, cmd.term)
        result = (True, value, None, self.revision)
        if cmd.request_id is not None:
            self.seen.append((cmd.request_id, key, result))
            self.seen = self.seen[-self.max_ids:]
        return result

    def emit(self, node: int, kind: str, service: str | None = None,
             share: dict | None = None, spec: dict | None = None) -> int:
        self.revision += 1
        self.log.append({"rev": self.revision, "node": node, "kind": kind,
                         "service": service, "share": share, "spec": spec})
        return self.revision

    def holds(self, node: int) -> list[str]:
        return sorted(name for name, svc in self.services.items() if node in svc["placement"])

    def do_bootstrap(self, cmd: Bootstrap, now: int) -> dict:
        if not cmd.cluster_id:
            raise Refused("bad_request")
        if self.cluster_id not in (None, cmd.cluster_id):
            raise Refused("conflict")
        created = self.cluster_id is None
        self.cluster_id = cmd.cluster_id
        return {"cluster_id": cmd.cluster_id, "created": created}

    def reg_value(self, nid: int, existing: bool) -> dict:
        n = self.nodes[nid]
        return {"node_id": nid, "kind": n["kind"], "state": n["state"], "ttl_secs": n["ttl"],
                "grace_secs": n["grace"], "cluster_id": self.cluster_id, "existing": existing}

    def do_register_node(self, cmd: RegisterNode, now: int) -> dict:
        if cmd.kind not in ("server", "worker"):
            raise Refused("bad_request")
        if not re.fullmatch(r"[0-9a-f]{1,256}", cmd.secret_hash):
            raise Refused("bad_request")
        if cmd.token_max_uses is not None and cmd.token_id is None:
            raise Refused("bad_request")
        if cmd.token_id == "":
            raise Refused("bad_request")
        if cmd.kind == "server" and cmd.desired_node_id is None:
            raise Refused("bad_request")
        want = cmd.desired_node_id
        if want in self.nodes and self.nodes[want]["secret"] == cmd.secret_hash:
            if self.nodes[want]["kind"] != cmd.kind:
                raise Refused("conflict")
            return self.reg_value(want, True)
        if cmd.token_id is not None and cmd.token_max_uses is not None \
                and self.tokens.get(cmd.token_id, 0) >= cmd.token_max_uses:
            raise Refused("token_exhausted")
        if cmd.kind == "server":
            if want in self.nodes:
                raise Refused("conflict")
            nid = want
        elif want is not None and want >= 1_000_000 and want not in self.nodes:
            nid = want
        else:
            nid = min(i for i in range(self.next_id, self.next_id + len(self.nodes) + 1)
                      if i not in self.nodes)
            self.next_id = nid + 1
        self.nodes[nid] = {"kind": cmd.kind, "state": "ready", "registered": now,
                           "renewed": now, "ttl": cmd.ttl_secs, "grace": cmd.grace_secs,
                           "secret": cmd.secret_hash, "profile": self.profile_of(cmd.profile),
                           "drain_rev": 0,
                           "resync": 0, "since": self.revision}
        if cmd.token_id is not None:
            self.tokens[cmd.token_id] = self.tokens.get(cmd.token_id, 0) + 1
        return self.reg_value(nid, False)

    @staticmethod
    def profile_of(p: dict) -> dict:
        return {"api_addr": p["api_addr"], "os": p["os"], "arch": p["arch"],
                "labels": dict(p.get("labels", {})), "cpu_total": p.get("cpu_total", 0),
                "memory_total_bytes": p.get("memory_total_bytes", 0)}

    def do_update_profile(self, cmd: UpdateProfile, now: int) -> dict:
        n = self.nodes.get(cmd.node_id)
        if n is None:
            raise Refused("unknown_node")
        new = self.profile_of(cmd.profile)
        changed = [name for name in new if new[name] != n["profile"][name]]
        n["profile"] = new
        return {"node_id": cmd.node_id, "changed": changed}

    def do_renew_checkpoint(self, cmd: RenewCheckpoint, now: int) -> dict:
        renewed, unknown = set(), set()
        for nid, ms in cmd.entries:
            if nid not in self.nodes:
                unknown.add(nid)
            elif ms > self.nodes[nid]["renewed"]:
                self.nodes[nid]["renewed"] = ms
                renewed.add(nid)
        return {"renewed": sorted(renewed), "unknown": sorted(unknown)}

    def do_mark_down(self, cmd: MarkDown, now: int) -> dict:
        went, unknown = set(), set()
        for nid in cmd.node_ids:
            if nid not in self.nodes:
                unknown.add(nid)
            elif self.nodes[nid]["state"] != "down":
                self.nodes[nid]["state"] = "down"
                went.add(nid)
        return {"went_down": sorted(went), "unknown": sorted(unknown)}

    def do_mark_ready(self, cmd: MarkReady, now: int) -> dict:
        n = self.nodes.get(cmd.node_id)
        if n is None:
            raise Refused("unknown_node")
        resync = n["state"] == "down"
        if resync:
            n["state"] = "draining" if n["drain_rev"] else "ready"
            n["resync"] = self.revision
        n["renewed"] = max(n["renewed"], cmd.renewed_ms)
        return {"node_id": cmd.node_id, "state": n["state"], "resync": resync}

    def do_drain(self, cmd: Drain, now: int) -> dict:
        n = self.nodes.get(cmd.node_id)
        if n is None:
            raise Refused("unknown_node")
        if n["drain_rev"]:
            return {"node_id": cmd.node_id, "state": n["state"], "events_for": []}
        n["drain_rev"] = self.emit(cmd.node_id, "drain")
        if n["state"] == "ready":
            n["state"] = "draining"
        return {"node_id": cmd.node_id, "state": n["state"], "events_for": [cmd.node_id]}

    def do_undrain(self, cmd: Undrain, now: int) -> dict:
        n = self.nodes.get(cmd.node_id)
        if n is None:
            raise Refused("unknown_node")
        if not n["drain_rev"]:
            return {"node_id": cmd.node_id, "state": n["state"], "events_for": []}
        n["drain_rev"] = 0
        self.emit(cmd.node_id, "undrain")
        if n["state"] == "draining":
            n["state"] = "ready"
        return {"node_id": cmd.node_id, "state": n["state"], "events_for": [cmd.node_id]}

    def do_deregister(self, cmd: Deregister, now: int) -> dict:
        if cmd.node_id not in self.nodes:
            raise Refused("unknown_node")
        if self.holds(cmd.node_id):
            raise Refused("conflict")
        del self.nodes[cmd.node_id]
        return {"node_id": cmd.node_id}

    def do_set_placement(self, cmd: SetPlacement, now: int) -> dict:
        if not cmd.service:
            raise Refused("bad_request")
        pairs = []
        for role, ix in cmd.groups.items():
            if role == "" or len(set(ix)) != len(ix):
                raise Refused("bad_request")
            pairs += [(role, i) for i in ix]
        if cmd.replicas != len(pairs):
            raise Refused("bad_request")
        placed = []
        new: dict[int, dict] = {}
        for nid, share in cmd.placement.items():
            for role, ix in share.items():
                for i in ix:
                    placed.append((role, i))
                    new.setdefault(nid, {}).setdefault(role, []).append(i)
        if sorted(placed) != sorted(pairs):
            raise Refused("bad_request")
        for nid in sorted(new):
            if nid not in self.nodes:
                raise Refused("unknown_node")
            if self.nodes[nid]["state"] != "ready":
                raise Refused("node_not_ready")
        new = {nid: {r: sorted(ix) for r, ix in share.items()} for nid, share in new.items()}
        old = self.services.get(cmd.service)
        spec = cmd.spec if cmd.spec is not None else (old["spec"] if old else None)
        spec_changed = old is not None and spec != old["spec"]
        old_placement = old["placement"] if old else {}
        events_for = []
        changed = dict(old["changed"]) if old else {}
        for nid in sorted(set(old_placement) | set(new)):
            if nid in new:
                if old_placement.get(nid) != new[nid] or spec_changed:
                    changed[nid] = self.emit(nid, "set", cmd.service, new[nid], spec)
                    events_for.append(nid)
            else:
                self.emit(nid, "delete", cmd.service)
                changed.pop(nid, None)
                events_for.append(nid)
        if pairs:
            self.services[cmd.service] = {
                "replicas": cmd.replicas, "spec": spec, "placement": new, "changed": changed,
                "groups": {r: sorted(ix) for r, ix in cmd.groups.items() if ix}}
        else:
            self.services.pop(cmd.service, None)
        return {"service": cmd.service, "events_for": events_for,
                "deleted": old is not None and not pairs}

    def do_barrier(self, cmd: Barrier, now: int) -> dict:
        return {"term": max(self.max_term, cmd.term), "previous_term": self.max_term}

    def do_compact(self, cmd: Compact, now: int) -> dict:
        upto = min(cmd.upto_revision, self.revision)
        if upto <= self.compacted:
            return {"compacted_revision": self.compacted, "dropped": 0}
        dropped = [ev for ev in self.log if ev["rev"] <= upto]
        self.log = [ev for ev in self.log if ev["rev"] > upto]
        self.compacted = upto
        return {"compacted_revision": upto, "dropped": len(dropped)}

    def do_create_access_token(self, cmd: CreateAccessToken, now: int) -> dict:
        week = 7 * 86400 * 1000
        if not re.fullmatch(r"[0-9a-f]{16}", cmd.token_id):
            raise Refused("bad_request")
        if cmd.name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}", cmd.name):
            raise Refused("bad_request")
        if cmd.scope not in ("read", "operate", "admin"):
            raise Refused("bad_request")
        if not re.fullmatch(r"[0-9a-f]{64}", cmd.token_hash):
            raise Refused("bad_request")
        if not (0 < len(cmd.creator) <= 200 and cmd.creator.isprintable()):
            raise Refused("bad_request")
        if cmd.expires_ms <= now:
            raise Refused("bad_request")
        if cmd.token_id in self.access:
            raise Refused("conflict")
        gone = sorted(t for t, a in self.access.items()
                      if (a["revoked_ms"] and a["revoked_ms"] + week <= now)
                      or a["expires_ms"] + week <= now)
        if len(self.access) - len(gone) >= 1000:
            raise Refused("conflict")
        for t in gone:
            del self.access[t]
        self.access[cmd.token_id] = {
            "token_id": cmd.token_id, "name": cmd.name, "scope": cmd.scope,
            "created_ms": now, "expires_ms": cmd.expires_ms, "creator": cmd.creator,
            "revoked_ms": 0}
        return dict(self.access[cmd.token_id], dropped=gone)

    def do_revoke_access_token(self, cmd: RevokeAccessToken, now: int) -> dict:
        a = self.access.get(cmd.token_id)
        if a is None:
            raise Refused("unknown_token")
        first = not a["revoked_ms"]
        if first:
            a["revoked_ms"] = now
        return {"token_id": cmd.token_id, "revoked": first, "revoked_ms": a["revoked_ms"]}

    # ---------------------------------------------------------------- queries

    def access_list(self) -> list[dict]:
        return [dict(a) for a in sorted(self.access.values(),
                                        key=lambda a: (a["created_ms"], a["token_id"]))]

    def node(self, nid: int) -> dict | None:
        n = self.nodes.get(nid)
        if n is None:
            return None
        return {"node_id": nid, "kind": n["kind"], "state": n["state"],
                "profile": copy.deepcopy(n["profile"]), "registered_ms": n["registered"],
                "renewed_ms": n["renewed"], "ttl_secs": n["ttl"], "grace_secs": n["grace"],
                "draining": bool(n["drain_rev"]), "services": self.holds(nid)}

    def nodes_list(self) -> list[dict]:
        return [self.node(nid) for nid in sorted(self.nodes)]  # type: ignore[misc]

    def placement(self, name: str) -> dict | None:
        svc = self.services.get(name)
        if svc is None:
            return None
        return {nid: {r: list(ix) for r, ix in sorted(share.items())}
                for nid, share in sorted(svc["placement"].items())}

    @staticmethod
    def event(ev: dict) -> dict:
        if ev["kind"] == "set":
            out = {"kind": "set", "service": ev["service"],
                   "assignments": [{"role": r, "indices": list(ix)}
                                   for r, ix in sorted(ev["share"].items())],
                   "revision": ev["rev"]}
            if ev["spec"] is not None:
                out["spec"] = ev["spec"]
            return out
        if ev["kind"] == "delete":
            return {"kind": "delete", "service": ev["service"], "revision": ev["rev"]}
        return {"kind": ev["kind"], "revision": ev["rev"]}   # drain, undrain

    def poll(self, nid: int, last: int) -> dict | None:
        n = self.nodes.get(nid)
        if n is None:
            return None
        if last > self.revision:
            return {"revision": last}
        if last == 0 or last < self.compacted or last < n["resync"]:
            events = []
            for name in self.holds(nid):
                svc = self.services[name]
                events.append({"rev": svc["changed"][nid], "kind": "set", "service": name,
                               "share": svc["placement"][nid], "spec": svc["spec"]})
            if n["drain_rev"]:
                events.append({"rev": n["drain_rev"], "kind": "drain"})
            events.sort(key=lambda ev: ev["rev"])
            out: dict = {"revision": self.revision}
            if events:
                out["events"] = [self.event(ev) for ev in events]
            out["full"] = True
            return out
        mine = [ev for ev in self.log
                if ev["node"] == nid and ev["rev"] > max(last, n["since"])]
        out = {"revision": self.revision}
        if mine:
            out["events"] = [self.event(ev) for ev in mine]
        return out
