"""One bench Raft peer as a process: raw PySyncObj or raftdir's PySyncObjNode + Directory.

Run: ``python -m raftdir_bench.raft_peer '<json>'`` with ``{"kind": "raw"|"node"|"raftdir"|
"unsynced" (raftdir with ``journal_sync`` off),
"self", "partners", "data_dir", "secret"}``. Prints ``{"event": "started"}``, then answers
one JSON request per stdin line (``{"id", "op", ...}``) with one JSON line. Ops:

- ``status``: role, term, commit index, last applied, RSS;
- ``payload``: (raftdir) the encoded size of the load command;
- ``load {threads, seconds, size, max_ops}``: client threads in this (the leader's)
  process, each doing synchronous replicated calls until the time or count bound;
- ``fill {count, window, seconds}``: (raftdir) register ``count`` workers, ``window``
  proposals in flight (propose_async), bounded by ``seconds``;
- ``isolate {seconds}``: drop every Raft message this peer sends or receives for a while
  (``raftdir.testing.raftcut``);
- ``quit``.

The raw peer is a bare ``SyncObj`` with one ``@replicated`` method taking bytes, built from
raftdir's own ``build_conf`` (the same SyncObjConf: no batching, journal + dump, same
timeouts, same password) except that it keeps PySyncObj's default serializer (pickle in a
forked child), since a custom serializer is part of what raftdir adds. Nothing here is
pickled by our code; PySyncObj pickles its own log entries and frames.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import time
from typing import Any

from pysyncobj import SyncObj, replicated

from raftdir.replication.pysyncobj_node import PySyncObjNode, build_conf
from raftdir.replication.secret import raft_password
from raftdir.replication.tuning import RaftTuning


class RawObj(SyncObj):
    def __init__(self, self_addr: str, partners: list[str], conf: Any) -> None:
        super().__init__(self_addr, partners, conf)
        self.count = 0
        self.last = b""

    @replicated
    def put(self, data: bytes) -> int:
        self.count += 1
        self.last = data
        return len(data)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def profile(i: int) -> dict[str, Any]:
    return {"api_addr": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:3670",
            "os": "linux", "arch": "x86_64", "labels": {"sim": "yes", "zone": f"z{i % 4}"},
            "cpu_total": 8, "memory_total_bytes": 16 << 30}


class NullMachine:
    """A state machine that does nothing (to split adapter plumbing from Directory cost)."""

    revision = 0

    def apply_bytes(self, data: bytes) -> Any:
        from raftdir.core.result import Result
        self.revision += 1
        return Result.applied(None, self.revision)

    def to_snapshot(self) -> dict[str, Any]:
        return {"format": 1, "revision": self.revision}

    def restore(self, snap: dict[str, Any]) -> None:
        self.revision = int(snap.get("revision", 0))


class Peer:
    def __init__(self, args: dict[str, Any]) -> None:
        self.kind = args["kind"]
        secret = args.get("secret")
        self.node: PySyncObjNode | None = None
        self.raw: RawObj | None = None
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.renew_node: int | None = None
        if self.kind in ("raftdir", "unsynced"):
            from raftdir.core.directory import Directory
            from raftdir.server import GuardedDirectory
            self.sm = GuardedDirectory(Directory())
            self.node = PySyncObjNode(args["self"], args["partners"], args["data_dir"],
                                      self.sm, secret=secret,
                                      tuning=RaftTuning(journal_sync=self.kind == "raftdir"))
            self.node.start()
        elif self.kind == "node":   # the adapter's own cost: like for like with raw
            self.sm = NullMachine()
            self.node = PySyncObjNode(args["self"], args["partners"], args["data_dir"],
                                      self.sm, secret=secret,
                                      tuning=RaftTuning(journal_sync=False))
            self.node.start()
        else:
            conf = build_conf(args["self"], args["data_dir"], RaftTuning(),
                              password=raft_password(secret) if secret else None,
                              serializer=None, deserializer=None, on_state_changed=None)
            self.raw = RawObj(args["self"], args["partners"], conf)
            self.raw.waitBinded()

    # -- status ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        if self.node is not None:
            st = self.node.status()
            return {"is_leader": st["is_leader"], "is_ready": st["is_ready"],
                    "term": st["term"], "commit_index": st["commit_index"],
                    "last_applied": st["last_applied"], "log_len": st["log_len"],
                    "leader": st["leader"],
                    "nodes": len(self.sm.directory.state.nodes)
                    if self.kind in ("raftdir", "unsynced") else 0,
                    "rss_mb": rss_mb()}
        raw = self.raw
        assert raw is not None
        for _ in range(5):
            try:
                st = raw.getStatus()
                break
            except RuntimeError:
                continue
        leader = raw._getLeader()
        return {"is_leader": st["state"] == 2, "is_ready": bool(raw.isReady()),
                "term": st["raft_term"], "commit_index": st["commit_idx"],
                "last_applied": st["last_applied"], "log_len": st["log_len"],
                "leader": None if leader is None else str(leader.id), "rss_mb": rss_mb()}

    # -- commands ----------------------------------------------------------------------
    def _renew_cmd(self, i: int) -> bytes:
        from raftdir.core.commands import RenewCheckpoint, encode_command
        assert self.node is not None and self.renew_node is not None
        now = int(time.time() * 1000)
        return encode_command(RenewCheckpoint(term=self.node.term(), ts_ms=now,
                                              entries=((self.renew_node, now + i),)))

    def _ensure_renew_node(self) -> None:
        if self.renew_node is not None:
            return
        from raftdir.core.commands import RegisterNode, encode_command
        assert self.node is not None
        res = self.node.propose(encode_command(RegisterNode(
            profile=profile(0), ttl_secs=10, grace_secs=10, secret_hash="ab" * 32,
            ts_ms=int(time.time() * 1000))), 10.0)
        if not res.ok:
            raise RuntimeError(f"register: {res.code} {res.message}")
        self.renew_node = res.value["node_id"]

    def payload(self) -> int:
        self._ensure_renew_node()
        return len(self._renew_cmd(0))

    def load(self, threads: int, seconds: float, size: int, max_ops: int) -> dict[str, Any]:
        if self.kind in ("raftdir", "unsynced"):
            self._ensure_renew_node()
        blob = b"x" * size
        deadline = time.monotonic() + seconds
        per_thread = max(1, max_ops // threads)
        lats: list[list[float]] = [[] for _ in range(threads)]
        errors = [0] * threads
        sizes: list[int] = []

        def work(k: int) -> None:
            mine = lats[k]
            for i in range(per_thread):
                if time.monotonic() >= deadline:
                    return
                t0 = time.perf_counter()
                try:
                    if self.kind == "node":
                        assert self.node is not None
                        res = self.node.propose(blob, 5.0)
                    elif self.node is not None:
                        data = self._renew_cmd(i)
                        if i == 0 and k == 0:
                            sizes.append(len(data))
                        res = self.node.propose(data, 5.0)
                        if not res.ok:
                            errors[k] += 1
                            continue
                    else:
                        assert self.raw is not None
                        self.raw.put(blob, sync=True, timeout=5.0)
                except Exception:  # noqa: BLE001 - counted
                    errors[k] += 1
                    continue
                mine.append(time.perf_counter() - t0)

        cpu0 = time.process_time()
        t0 = time.monotonic()
        ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(seconds + 30)
        elapsed = time.monotonic() - t0
        allv = sorted(v for lst in lats for v in lst)
        n = len(allv)
        return {"ops": n, "errors": sum(errors), "seconds": elapsed,
                "rate": n / elapsed if elapsed else 0.0,
                "p50_ms": allv[n // 2] * 1e3 if n else None,
                "p99_ms": allv[min(n - 1, int(n * 0.99))] * 1e3 if n else None,
                "cpu_s": time.process_time() - cpu0,
                "mean_ms": sum(allv) / n * 1e3 if n else None,
                "max_ms": allv[-1] * 1e3 if n else None,
                "slow_10ms": sum(1 for v in allv if v > 0.010),
                "slow_10ms_total_s": sum(v for v in allv if v > 0.010),
                "size": sizes[0] if sizes else size}

    def fill(self, count: int, window: int, seconds: float, start: int) -> dict[str, Any]:
        """Register workers ``start .. start+count-1`` (request id ``fill-<i>``, so a
        chunk re-sent to a new leader is idempotent). Stops early (``lost_leader``) as
        soon as this peer is not the leader any more."""
        from raftdir.core.commands import RegisterNode, encode_command
        from raftdir.errors import NoLeader, NotLeader
        node = self.node
        assert node is not None

        async def run() -> dict[str, Any]:
            sem = asyncio.Semaphore(window)
            errors: list[str] = []
            done = 0
            lost = False
            deadline = time.monotonic() + seconds

            async def one(i: int) -> None:
                nonlocal done, lost
                async with sem:
                    data = encode_command(RegisterNode(
                        request_id=f"fill-{i}", profile=profile(i), ttl_secs=600,
                        grace_secs=10, secret_hash=f"{i:064x}", token_id="bench",
                        ts_ms=int(time.time() * 1000)))
                    for _attempt in range(5):
                        if lost or time.monotonic() > deadline:
                            return
                        try:
                            res = await node.propose_async(data, 10.0)
                        except (NotLeader, NoLeader) as exc:
                            errors.append(type(exc).__name__)
                            lost = True
                            return
                        except Exception as exc:  # noqa: BLE001 - retried, same request id
                            errors.append(type(exc).__name__)
                            await asyncio.sleep(0.05)
                            continue
                        if res.ok:
                            done += 1
                        else:
                            errors.append(res.code or "refused")
                        return
            t0 = time.monotonic()
            await asyncio.gather(*(one(i) for i in range(start, start + count)))
            return {"ops": done, "seconds": time.monotonic() - t0, "lost_leader": lost,
                    "errors": len(errors), "error_kinds": sorted(set(errors))[:10]}
        fut = asyncio.run_coroutine_threadsafe(run(), self.loop)
        return fut.result(seconds + 60)


def main() -> None:
    args = json.loads(sys.argv[1])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("raftdir").setLevel(logging.INFO)
    peer = Peer(args)
    out = threading.Lock()

    def say(msg: dict[str, Any]) -> None:
        with out:
            sys.stdout.write(json.dumps(msg) + "\n")
            sys.stdout.flush()

    say({"event": "started", "pid": os.getpid()})
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        rid, op = req.get("id"), req["op"]
        reply: dict[str, Any] = {"id": rid, "ok": True}
        try:
            if op == "status":
                reply["status"] = peer.status()
            elif op == "payload":
                reply["size"] = peer.payload()
            elif op == "load":
                reply["result"] = peer.load(int(req["threads"]), float(req["seconds"]),
                                            int(req.get("size", 64)),
                                            int(req.get("max_ops", 10**7)))
            elif op == "fill":
                reply["result"] = peer.fill(int(req["count"]), int(req.get("window", 256)),
                                            float(req.get("seconds", 120)),
                                            int(req.get("start", 0)))
            elif op == "isolate":
                from raftdir.testing.raftcut import cut_raft_traffic
                cut_raft_traffic(peer.raw if peer.raw is not None else peer.node._so,
                                 float(req["seconds"]))
            elif op == "quit":
                say(reply)
                if peer.node is not None:
                    peer.node.stop()
                elif peer.raw is not None:
                    peer.raw.destroy()
                return
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as exc:  # noqa: BLE001 - reported to the driver
            logging.exception("op %s failed", op)
            reply = {"id": rid, "ok": False, "message": repr(exc)}
        say(reply)


if __name__ == "__main__":
    main()
