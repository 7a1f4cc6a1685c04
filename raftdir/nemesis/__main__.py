"""``python -m raftdir.nemesis`` (``scripts/nemesis``): run the nemesis, or check a run.

Owns the command line only: options, their defaults and ``--help``, the output directory,
the exit status (0: every check passed; 1: a check was violated; 2: usage error; 3: the run
itself could not be carried out). Imports ``run`` and ``checker``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

from .faults import FAULT_KINDS

EXIT_OK, EXIT_VIOLATED, EXIT_USAGE, EXIT_RUN_FAILED = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/nemesis",
        description="raftdir's fault-injection suite: three peers on 127.0.0.1, a fleet of "
                    "simulated workers, a seeded schedule of kill -9, SIGSTOP and partitions; "
                    "every operation recorded, then checked (docs/robustness.md). Exit status: "
                    "0 every check passed, 1 a check was violated, 2 usage error, 3 the run "
                    "could not be carried out.")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, metavar="M",
                        help="how long the load and the faults last (default 10 minutes)")
    length.add_argument("--seconds", type=float, metavar="S",
                        help="the same in seconds")
    p.add_argument("--workers", type=int, default=150, metavar="N",
                   help="simulated workers registered at the start (default 150); up to a "
                        "fifth more join during the run")
    p.add_argument("--seed", type=int, default=None, metavar="N",
                   help="seed of the fault schedule, the worker kills and the admin mix; the "
                        "same seed replays the same schedule (default: a random one, printed)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="where the history, the peers' data and logs and verdict.json go "
                        "(an empty or new directory; default: a new temporary directory, "
                        "printed)")
    p.add_argument("--check", type=Path, default=None, metavar="DIR",
                   help="do not run: check the run recorded in DIR again and print its "
                        "verdict")
    p.add_argument("--heartbeat-min-ttl", type=int, default=4, metavar="S",
                   help="the peers' heartbeat_min_ttl in seconds (default 4)")
    p.add_argument("--heartbeat-grace", type=int, default=6, metavar="S",
                   help="the peers' heartbeat_grace in seconds (default 6); renewals are "
                        "checkpointed every 5 s, the server's default")
    p.add_argument("--slack", type=float, default=1.0, metavar="S",
                   help="observation slack added to the dead-worker bound, for commit and "
                        "log latency (default 1.0)")
    p.add_argument("--poll-wait", type=int, default=10, metavar="S",
                   help="max_wait_secs of the workers' long-polls (default 10)")
    p.add_argument("--settle", type=float, default=15.0, metavar="S",
                   help="quiet seconds after healing before the final reads (default 15; "
                        "longer, up to 60 s, while dead workers are not yet down)")
    p.add_argument("--faults", default=",".join(FAULT_KINDS), metavar="KINDS",
                   help="comma-separated peer faults to draw from (default all: "
                        f"{','.join(FAULT_KINDS)}); 'none' for no peer faults")
    p.add_argument("--no-worker-faults", action="store_true",
                   help="do not kill and revive simulated workers")
    p.add_argument("--no-admin", action="store_true",
                   help="no admin loop (no scales, drains, evictions or new workers after "
                        "the start)")
    p.add_argument("--log-level", default="info", choices=["debug", "info"],
                   help="the peers' log level (default info; the checker needs info)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from .checker import check, format_table
    if args.check is not None:
        if not (args.check / "history.jsonl").is_file() or not (args.check / "run.json").is_file():
            parser.error(f"--check {args.check}: no recorded run there (history.jsonl, run.json)")
        verdict = check(args.check)
        print(format_table(verdict))
        print(f"(verdict.json written in {args.check})")
        return EXIT_OK if verdict.ok else EXIT_VIOLATED
    seconds = args.seconds if args.seconds is not None else 60.0 * (
        args.minutes if args.minutes is not None else 10.0)
    if seconds < 10:
        parser.error("the run must last at least 10 seconds")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.heartbeat_min_ttl < 1 or args.heartbeat_grace < 0:
        parser.error("--heartbeat-min-ttl must be >= 1 and --heartbeat-grace >= 0")
    kinds = tuple(k for k in args.faults.split(",") if k and k != "none")
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        parser.error(f"--faults: unknown kind(s) {', '.join(unknown)} "
                     f"(known: {', '.join(FAULT_KINDS)})")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    out = args.out or Path(tempfile.mkdtemp(prefix="raftdir-nemesis-"))
    if out.exists() and any(out.iterdir()):
        parser.error(f"--out {out}: not empty (use a new directory)")
    from .run import RunFailed, Settings, print_verdict, run
    settings = Settings(out=out.resolve(), seconds=seconds, workers=args.workers, seed=seed,
                        heartbeat_min_ttl=args.heartbeat_min_ttl,
                        heartbeat_grace=args.heartbeat_grace, slack=args.slack,
                        poll_wait=args.poll_wait, settle=args.settle, faults=kinds,
                        worker_faults=not args.no_worker_faults, admin=not args.no_admin,
                        log_level=args.log_level)
    print(f"nemesis: seed {seed}, {seconds:g} s, {args.workers} workers; output in {out}",
          file=sys.stderr, flush=True)
    try:
        verdict = run(settings)
    except RunFailed as exc:
        print(f"nemesis: the run failed: {exc} (logs in {out})", file=sys.stderr)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        print(f"nemesis: interrupted; every peer stopped (partial run in {out})",
              file=sys.stderr)
        return EXIT_RUN_FAILED
    print_verdict(verdict, out)
    return EXIT_OK if verdict.ok else EXIT_VIOLATED


if __name__ == "__main__":
    sys.exit(main())
