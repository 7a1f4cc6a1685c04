#!/usr/bin/env python3
"""A runnable worker of a worker tier: registers, reports, polls, and prints its
assignments as they change. Ctrl-C stops it cleanly.

    python examples/worker.py --data-dir /tmp/w1 --server 127.0.0.1:3669 \\
        --token-file /tmp/join.token --api-addr 127.0.0.1:7001

Without ``--server``, the worker-tier config is read from ``<data-dir>/cluster_mode.yaml``.
The identity received at registration is kept in ``<data-dir>/worker/identity/``: run it
again with the same data directory and it comes back as the same node, without using the
token again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from raftdir.agent import AgentState, WorkerAgent
from raftdir.assignments import AssignmentSet, Change
from raftdir.config import CLUSTER_MODE_FILE, load_cluster_mode
from raftdir.errors import RaftdirError
from raftdir.model import WorkerTierMode, WorkerTierRole


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path,
                        help="the worker's data directory (its identity lives there)")
    parser.add_argument("--server", action="append", default=[],
                        help="a control-plane server, host:port or http://host:port "
                             "(repeat for each)")
    parser.add_argument("--token-file", help="a file whose single line is the join token")
    parser.add_argument("--api-addr", default="127.0.0.1:7001",
                        help="this worker's API address as servers should dial it")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="a label of this worker (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the agent does")
    return parser.parse_args(argv)


def build_mode(args: argparse.Namespace) -> WorkerTierMode:
    labels = dict(item.split("=", 1) for item in args.label)
    if args.server:
        return WorkerTierMode(role=WorkerTierRole.WORKER, servers=tuple(args.server),
                              token_file=args.token_file, labels=labels)
    mode = load_cluster_mode(args.data_dir / CLUSTER_MODE_FILE)
    if not isinstance(mode, WorkerTierMode) or not mode.is_worker_tier_worker():
        raise SystemExit(f"{args.data_dir / CLUSTER_MODE_FILE}: not a worker-tier worker "
                         "config; pass --server and --token-file")
    return mode


def show(change: Change, current: AssignmentSet) -> None:
    kind = "full resync" if change.full else "change"
    print(f"revision {change.revision} ({kind}): "
          f"{', '.join(current.containers()) or '(nothing)'}"
          f"{'  [draining]' if current.draining else ''}", flush=True)


def show_state(old: AgentState, new: AgentState, reason: str) -> None:
    print(f"state {old.value} -> {new.value}: {reason}", flush=True)


async def run(args: argparse.Namespace) -> int:
    agent = WorkerAgent.from_config(build_mode(args), args.data_dir, api_addr=args.api_addr)
    agent.on_change(show)
    agent.on_state_change(show_state)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C raises instead
            pass
    try:
        await agent.start()
    except RaftdirError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    async def announce() -> None:
        await agent.wait_connected()
        print(f"node {agent.node_id} connected to {agent.leader}", flush=True)

    announcer = asyncio.ensure_future(announce())
    try:
        await stop.wait()
    finally:
        announcer.cancel()
        await agent.stop()
        print("stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
