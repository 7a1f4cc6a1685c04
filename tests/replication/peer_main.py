"""One raftdir Raft peer as a separate process, driven by the replication tests.

Run: ``python peer_main.py '<json args>'`` with args ``{"self", "partners", "data_dir",
"tuning", "secret", "sm"}`` (``sm`` is ``"toy"`` or ``"directory"``). Prints one JSON line
``{"event": "started"}`` (or ``{"event": "bind_failed"}`` and exits 3), then answers one
JSON request per stdin line ``{"id", "op", ...}`` with ``{"id", "ok": true, ...}`` or
``{"id", "ok": false, "error": code, "leader", "message"}``. Ops: propose (``data`` hex),
set (toy), boom (toy), status, lease, isolate (``seconds``), state, barrier, wait_above,
add_peer, remove_peer, quit.
A RevisionNotifier on an asyncio loop in a helper thread is fed by the apply listener,
exactly as the daemon will wire it, so ``wait_above`` proves followers are woken too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from raftdir.errors import ConfigError, RaftdirError  # noqa: E402
from raftdir.replication import RaftTuning, RevisionNotifier  # noqa: E402
from raftdir.replication.pysyncobj_node import PySyncObjNode  # noqa: E402
from raftdir.testing.raftcut import cut_raft_traffic  # noqa: E402


def make_state_machine(kind: str) -> Any:
    if kind == "toy":
        from replication_toy import ToyKV
        return ToyKV()
    if kind == "directory":
        from directory_adapter import make_directory
        return make_directory()
    raise SystemExit(f"unknown sm {kind!r}")


def plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.hex() if isinstance(o, bytes)
                                 else repr(o)))


def main() -> None:
    args = json.loads(sys.argv[1])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sm = make_state_machine(args.get("sm", "toy"))
    node = PySyncObjNode(args["self"], args["partners"], args["data_dir"], sm,
                         secret=args.get("secret"),
                         tuning=RaftTuning.from_dict(args.get("tuning", {})))
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    notifier = RevisionNotifier(0, loop=loop)
    notified = {"revision": 0, "snapshots": 0}

    def on_apply(revision: int, result: Any) -> None:
        notified["revision"] = revision
        if result is None:
            notified["snapshots"] += 1
        notifier.notify(revision)

    node.add_apply_listener(on_apply)
    leadership: list[list[Any]] = []
    node.add_leadership_listener(lambda is_leader, term: leadership.append([is_leader, term]))
    out_lock = threading.Lock()

    def say(msg: dict[str, Any]) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(msg) + "\n")
            sys.stdout.flush()

    try:
        node.start()
    except ConfigError as exc:
        say({"event": "bind_failed", "message": str(exc)})
        sys.exit(3)
    say({"event": "started", "pid": os.getpid()})

    from replication_toy import cmd

    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        rid, op, timeout = req.get("id"), req["op"], float(req.get("timeout", 5.0))
        reply: dict[str, Any] = {"id": rid, "ok": True}
        try:
            if op in ("propose", "set", "boom"):
                if op == "set":
                    data = cmd("set", k=req["k"], v=req["v"])
                elif op == "boom":
                    data = cmd("boom")
                else:
                    data = bytes.fromhex(req["data"])
                r = node.propose(data, timeout)
                reply["result"] = plain({"ok": r.ok, "code": r.code, "message": r.message,
                                         "revision": r.revision, "value": r.value})
            elif op == "status":
                reply["status"] = plain(node.status())
                reply["notified"] = dict(notified)
                reply["leadership"] = list(leadership)
            elif op == "isolate":
                cut_raft_traffic(node._so, float(req["seconds"]))
            elif op == "lease":
                reply["has_lease"] = node.has_lease()
                reply["unleased_seconds"] = node.unleased_seconds()
            elif op == "state":
                reply["state"] = plain(sm.to_snapshot())
                reply["revision"] = sm.revision
                reply["applied"] = getattr(sm, "applied", None)
            elif op == "barrier":
                node.barrier(timeout)
                reply["state"] = plain(sm.to_snapshot())
                reply["revision"] = sm.revision
            elif op == "wait_above":
                fut = asyncio.run_coroutine_threadsafe(
                    notifier.wait_above(int(req["revision"]), timeout), loop)
                reply["revision"] = fut.result(timeout + 5)
            elif op == "add_peer":
                node.add_peer(req["addr"], timeout)
            elif op == "remove_peer":
                node.remove_peer(req["addr"], timeout)
            elif op == "quit":
                node.stop()
                say(reply)
                return
            else:
                raise ValueError(f"unknown op {op!r}")
        except RaftdirError as exc:
            reply = {"id": rid, "ok": False, "error": exc.code, "leader": exc.leader,
                     "message": exc.message}
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            logging.exception("op %s failed", op)
            reply = {"id": rid, "ok": False, "error": "harness", "message": repr(exc)}
        say(reply)


if __name__ == "__main__":
    main()
