"""A raftdir server process for the benchmarks: ``Daemon.from_data_dir(DATA_DIR)`` until
SIGTERM/SIGINT. Used only while ``python -m raftdir serve`` does not exist yet.

Run: ``python -m raftdir_bench.server_main DATA_DIR``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from raftdir.daemon import Daemon


async def run(data_dir: str) -> None:
    daemon = Daemon.from_data_dir(data_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await daemon.start()
    try:
        await stop.wait()
    finally:
        await daemon.stop()


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(sys.argv[1]))


if __name__ == "__main__":
    main()
