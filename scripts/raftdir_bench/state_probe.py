"""Hard state per worker, in a fresh process: apply ``N`` RegisterNode commands (decoded
from msgpack bytes, as a Raft peer does) to a ``Directory`` and print one JSON line with
the RSS growth, the msgpack snapshot size and the snapshot/restore times.

Run: ``python -m raftdir_bench.state_probe N``.
"""

from __future__ import annotations

import gc
import json
import sys
import time

import msgpack

from raftdir.core.commands import RegisterNode, encode_command
from raftdir.core.directory import Directory
from raftdir_bench.common import rss_mb
from raftdir_bench.raft_peer import profile


def main() -> None:
    n = int(sys.argv[1])
    d = Directory()
    gc.collect()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    refused = 0
    base_ms = 1_700_000_000_000
    for i in range(n):
        data = encode_command(RegisterNode(
            request_id=f"{i:032x}", profile=profile(i), ttl_secs=200, grace_secs=10,
            secret_hash=f"{i:064x}", token_id="tok-bench", ts_ms=base_ms + i))
        if not d.apply_bytes(data).ok:
            refused += 1
    apply_s = time.perf_counter() - t0
    gc.collect()
    rss1 = rss_mb()
    t0 = time.perf_counter()
    snap = d.to_snapshot()
    packed = msgpack.packb(snap, use_bin_type=True)
    snap_s = time.perf_counter() - t0
    del snap
    t0 = time.perf_counter()
    d2 = Directory.from_snapshot(msgpack.unpackb(packed, raw=False, strict_map_key=False))
    restore_s = time.perf_counter() - t0
    nodes_ok = len(d2.state.nodes) == len(d.state.nodes)
    print(json.dumps({
        "workers": n, "refused": refused, "rss_before_mb": rss0, "rss_after_mb": rss1,
        "rss_per_worker_bytes": (rss1 - rss0) * 1024 * 1024 / n,
        "snapshot_bytes": len(packed), "snapshot_per_worker_bytes": len(packed) / n,
        "apply_us_per_command": apply_s / n * 1e6, "snapshot_s": snap_s,
        "restore_s": restore_s, "restore_ok": nodes_ok,
        "request_ids_kept": len(d.state.request_ids),
        "raftdir_file": __import__("raftdir").__file__}))


if __name__ == "__main__":
    main()
