"""``scripts/bench [NAME ...] [--json FILE]``: run raftdir's benchmarks and print a table.

Names: ``adapter`` (A, issue 3), ``state`` (B), ``restart`` (C), ``fleet`` (D, issue 4),
``elections`` (E, issue 8); ``replicas`` (issue 10: 50,000 workers, 3 voters + 2
replicas and + 0) and ``pollcost`` (issue 10: the memory of a parked poll, asyncio against
uvloop) are not in the default set: run them by name.
Every process started is killed by PID at the end; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import common

from .common import BenchResult, log, machine, print_table

NAMES = ("adapter", "state", "restart", "fleet", "elections", "replicas", "pollcost")
DEFAULT = ("adapter", "state", "restart", "fleet", "elections")


def main() -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", default=[], metavar="NAME",
                    help=f"benchmarks to run: {', '.join(NAMES)} (default: all)")
    ap.add_argument("--json", metavar="FILE", help="write machine-readable results here")
    ap.add_argument("--workers", type=int, default=100_000,
                    help="workers for state/restart (default 100000)")
    ap.add_argument("--phase-seconds", type=float, default=2.5,
                    help="adapter: seconds per measured phase (default 2.5)")
    ap.add_argument("--rounds", type=int, default=5, help="adapter: rounds (default 5)")
    ap.add_argument("--fill-seconds", type=float, default=200.0,
                    help="restart: bound on registering the workers (default 200)")
    ap.add_argument("--restart-trials", type=int, default=4)
    ap.add_argument("--fleet", type=int, default=10_000,
                    help="fleet: registered workers (default 10000)")
    ap.add_argument("--fanout", type=int, default=1_000,
                    help="fleet: parked workers for the fan-out (default 1000)")
    ap.add_argument("--status-seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=64,
                    help="fleet: requests in flight for registrations and reports")
    ap.add_argument("--failover-trials", type=int, default=10)
    ap.add_argument("--election-trials", type=int, default=6,
                    help="elections: trials per scenario and kind (default 6)")
    ap.add_argument("--failover-idle", type=float, default=11.0,
                    help="fleet: seconds the cluster idles before each kill (default 11, "
                         "more than PySyncObj's connectionTimeout of 10 s)")
    ap.add_argument("--replica-fleet", type=int, default=50_000,
                    help="replicas: simulated workers (default 50000)")
    ap.add_argument("--steady-seconds", type=float, default=60.0,
                    help="replicas: seconds of steady state measured (default 60)")
    ap.add_argument("--bound", type=float, default=600.0,
                    help="replicas: bound on the registration storm (default 600 s)")
    ap.add_argument("--pollcost-workers", type=int, default=5_000,
                    help="pollcost: parked polls (default 5000)")
    ap.add_argument("--pollcost-seconds", type=float, default=5.0,
                    help="pollcost: seconds of status reports per loop (default 5)")
    ap.add_argument("--election-timeout", type=float, default=None, metavar="SECONDS",
                    help="replicas: the servers' `raftdir serve --election-timeout` "
                         "(default: theirs, 0.2)")
    ap.add_argument("--gc-threshold", default=None, metavar="GEN0[,GEN1[,GEN2]]",
                    help="replicas: the servers' `raftdir serve --gc-threshold`")
    ap.add_argument("--replica-configs", default="2,0", metavar="N[,N...]",
                    help="replicas: the replica counts to run, in order (default 2,0)")
    ap.add_argument("--fleet-uvloop", action="store_true",
                    help="replicas: run the fleet processes on uvloop")
    ap.add_argument("--code", choices=("head", "tree"), default="head",
                    help="benchmark the committed HEAD (a copy; default) or the work tree")
    opts = ap.parse_args()
    names = list(opts.names or DEFAULT)
    for n in names:
        if n not in NAMES:
            ap.error(f"unknown benchmark {n!r}; choose from {', '.join(NAMES)}")
    code_tmp = None
    commit = "work tree"
    if opts.code == "head":
        code_tmp = tempfile.TemporaryDirectory(prefix="raftdir-bench-code-")
        commit = common.use_head_copy(common.SCRIPTS.parent, Path(code_tmp.name))
    if opts.json:
        opts.json = str(Path(opts.json).resolve())
    # children inherit the cwd, and ``python -m`` puts the cwd first on sys.path: run them
    # from scripts/ (no raftdir/ there) so they import the code chosen above
    os.chdir(common.SCRIPTS)
    from . import raft_benches
    funcs = {"adapter": raft_benches.bench_adapter, "state": raft_benches.bench_state,
             "restart": raft_benches.bench_restart}
    if "fleet" in names:
        from . import fleet
        funcs["fleet"] = fleet.bench_fleet
    if "elections" in names:
        from . import elections
        funcs["elections"] = elections.bench_elections
    if "replicas" in names:
        from . import replicas
        funcs["replicas"] = replicas.bench_replicas
    if "pollcost" in names:
        from . import pollcost
        funcs["pollcost"] = pollcost.bench_pollcost
    info = machine()
    info["raftdir_code"] = commit
    log(f"machine: {info}")
    results: list[BenchResult] = []
    started = time.time()
    for name in names:
        t0 = time.monotonic()
        log(f"=== {name}")
        try:
            res = funcs[name](opts)
        except Exception as exc:  # noqa: BLE001 - reported in the table and the JSON
            traceback.print_exc()
            res = BenchResult(name, error=f"{type(exc).__name__}: {exc}")
        res.seconds = time.monotonic() - t0
        results.append(res)
        log(f"=== {name} done in {res.seconds:.0f} s")
    print()
    print(f"raftdir benchmarks: {info['nproc']} cores, {info['cpu_model']}, "
          f"Python {info['python']}")
    print_table(results)
    if opts.json:
        doc = {"command": "scripts/bench " + " ".join(sys.argv[1:]), "machine": info,
               "started_unix": int(started), "results": [r.to_dict() for r in results]}
        with open(opts.json, "w") as f:
            json.dump(doc, f, indent=1)
        log(f"wrote {opts.json}")
    if code_tmp is not None:
        code_tmp.cleanup()
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
