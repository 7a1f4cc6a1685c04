"""Start ``raftdir`` with its outgoing Raft connections redirected (the nemesis's peers).

Usage::

    python -m raftdir.testing.nemesis_peer [--exit-with-parent] \\
        --dial 127.0.0.1:7102=127.0.0.1:40001 --dial 127.0.0.1:7103=127.0.0.1:40002 \\
        -- serve --data-dir D --log-level info

``--exit-with-parent``: the peer exits as soon as the process that started it is gone (a
controller killed with SIGKILL leaves no peer running behind it).

Owns: one patch of PySyncObj in this process, then ``raftdir.cli.main`` with the arguments
after ``--``. PySyncObj identifies a peer by the address string it was configured with
(``TCPNode.id``), and of two peers only the one whose address string is greater dials the
other (``TCPTransport._shouldConnect``); the dialer then announces its own address. So
every peer keeps its configured Raft address (its identity, what it binds and announces),
and only where this process *dials* changes: ``TCPNode.ip`` / ``TCPNode.port`` look the
peer's identity up in the ``--dial`` map (a TCP proxy the nemesis can cut) and fall back to
the address itself. Nothing else of PySyncObj or raftdir is touched.

Runs in the peer process, before anything starts (the parent watch is one daemon thread).
Imports ``pysyncobj.node`` and ``raftdir.cli`` only; must not import the nemesis.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Sequence

__all__ = ["parse_dials", "install_dial_map", "exit_with_parent", "main"]


def parse_dials(values: Sequence[str]) -> dict[str, tuple[str, int]]:
    """``["ID_HOST:ID_PORT=HOST:PORT", ...]`` as ``{identity: (host, port)}``. Raises
    ``ValueError`` naming the bad value."""
    out: dict[str, tuple[str, int]] = {}
    for value in values:
        ident, sep, target = value.partition("=")
        host, colon, port = target.rpartition(":")
        if not sep or not ident or not colon or not host or not port.isdigit() \
                or not 0 < int(port) < 65536 or ":" not in ident:
            raise ValueError(f"--dial {value!r}: expected IDENTITY_HOST:PORT=HOST:PORT")
        out[ident] = (host, int(port))
    return out


def install_dial_map(dials: dict[str, tuple[str, int]]) -> None:
    """Make PySyncObj dial ``dials[identity]`` instead of the identity's own address, in
    this process. Idempotent (the latest map wins)."""
    from pysyncobj.dns_resolver import globalDnsResolver
    from pysyncobj.node import TCPNode

    def ip(self: TCPNode) -> str:
        target = dials.get(self.address)
        return globalDnsResolver().resolve(target[0] if target else self.host)

    def port(self: TCPNode) -> int:
        target = dials.get(self.address)
        return target[1] if target else int(self.address.rsplit(":", 1)[1])

    TCPNode.ip = property(ip)      # type: ignore[assignment,method-assign]
    TCPNode.port = property(port)  # type: ignore[assignment,method-assign]
    TCPNode._raftdir_dial_map = dials  # type: ignore[attr-defined]


def exit_with_parent(period: float = 0.5) -> None:
    """Exit this process (at once, no clean-up: like the kill -9 it stands in for) when its
    parent is gone, checked every ``period`` seconds on a daemon thread."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period)
        print("nemesis_peer: the process that started this peer is gone; exiting",
              file=sys.stderr, flush=True)
        os._exit(0)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args or args[0] in ("-h", "--help"):
        print(__doc__.split("Owns:")[0].strip(), file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    cut = args.index("--")
    ours, theirs = args[:cut], args[cut + 1:]
    values: list[str] = []
    watch_parent = False
    i = 0
    while i < len(ours):
        if ours[i] == "--exit-with-parent":
            watch_parent = True
            i += 1
        elif ours[i] == "--dial" and i + 1 < len(ours):
            values.append(ours[i + 1])
            i += 2
        elif ours[i].startswith("--dial="):
            values.append(ours[i][len("--dial="):])
            i += 1
        else:
            print(f"nemesis_peer: unexpected argument {ours[i]!r} before --", file=sys.stderr)
            return 2
    try:
        install_dial_map(parse_dials(values))
    except ValueError as exc:
        print(f"nemesis_peer: {exc}", file=sys.stderr)
        return 2
    if watch_parent:
        exit_with_parent()
    from raftdir.cli import main as raftdir_main
    sys.argv = ["raftdir", *theirs]
    raftdir_main()   # exits with raftdir's own status
    return 0


if __name__ == "__main__":
    sys.exit(main())
