"""A host daemon embedding raftdir: it reads its cluster mode from its data directory,
starts raftdir, and prints its own node's assignments as they change.

    python examples/embed_daemon.py /tmp/host-data            # single-node (no config)
    python examples/embed_daemon.py examples/three-peers/peer1 # a peer of the demo cluster

In single-node mode it also scales a service, to show the assignments arriving.
Stops on Ctrl-C (or after --seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from raftdir import InternalScaleRequest
from raftdir.daemon import Daemon


async def main(data_dir: str, seconds: float | None) -> None:
    daemon = Daemon.from_data_dir(data_dir)

    def show(change, current) -> None:
        kind = "full resync" if change.full else "update"
        print(f"revision {change.revision} ({kind}): running {current.containers() or 'nothing'}",
              flush=True)

    daemon.on_assignments(show)
    daemon.on_leadership(lambda is_leader, term: print(
        f"leadership: {'leader' if is_leader else 'follower'} (term {term})", flush=True))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with daemon:
        print(f"raftdir started in {daemon.config.TAG} mode as node {daemon.node_id}",
              flush=True)
        if daemon.config.TAG == "single-node":
            for _ in range(200):  # the local node leads at once; its services need a tick
                if daemon.cluster.is_leader():
                    break
                await asyncio.sleep(0.01)
            split = await daemon.cluster.forward_scale(InternalScaleRequest.legacy("web", 3))
            print(f"scaled web to 3: {({n: r.replicas for n, r in split.items()})}",
                  flush=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop after this many seconds (default: run until Ctrl-C)")
    args = parser.parse_args()
    asyncio.run(main(args.data_dir, args.seconds))
