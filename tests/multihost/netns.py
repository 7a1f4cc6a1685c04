"""A test's own network of hosts: Linux network namespaces joined by one bridge.

Owns: for one test run, a namespace holding a bridge (the switch) and one namespace per
host, each host joined to the switch by a veth pair whose two ends are created directly in
the two namespaces (nothing is added to the root namespace, so no traffic reaches it), the
host's address on its end; running commands and processes inside a host
(``ip netns exec``); and deleting all of it again. Every name carries a tag unique to the
run (this process's id and random bits), so parallel runs and leftovers never clash.

Processes started here are stopped by their PID (``ip netns exec`` execs the command, so
the PID is the command's own). Needs root and iproute2; ``probe()`` says why not.

Used by tests only; imports nothing from raftdir.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

__all__ = ["probe", "Network", "Host", "Proc", "stop_process"]

IP = "ip"


def _ip(*args: str, netns: str | None = None, check: bool = True,
        timeout: float = 10.0) -> subprocess.CompletedProcess:
    argv = [IP, *(["-n", netns] if netns else []), *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {out.returncode}: {out.stderr.strip()}")
    return out


def _tag() -> str:
    return f"{os.getpid():x}{secrets.token_hex(2)}"


def probe() -> str | None:
    """None when this machine can build a network of namespaces; else why not. Tries for
    real: a namespace with a bridge and a veth pair in it, deleted again."""
    missing = [tool for tool in (IP, "ss") if shutil.which(tool) is None]
    if missing:
        return f"iproute2 is not installed (no {' or '.join(missing)})"
    ns = f"rdt-probe-{_tag()}"
    made = _ip("netns", "add", ns, check=False)
    if made.returncode != 0:
        return (f"cannot create a network namespace (`ip netns add` needs root): "
                f"{made.stderr.strip()}")
    try:
        for args in (("link", "add", "br0", "type", "bridge"),
                     ("link", "add", "v0", "type", "veth", "peer", "name", "v1")):
            out = _ip(*args, netns=ns, check=False)
            if out.returncode != 0:
                return f"`ip {' '.join(args)}` failed in a namespace: {out.stderr.strip()}"
        return None
    finally:
        _ip("netns", "del", ns, check=False)


def stop_process(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM ``proc`` (by its PID), SIGKILL it after ``grace`` seconds, reap it."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclass
class Proc:
    """A process running in a host, with the file its output goes to."""

    host: "Host"
    argv: list[str]
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@dataclass
class Host:
    """One host: a namespace with ``eth0`` on the switch (``addr``) and its own loopback."""

    network: "Network"
    name: str
    ns: str
    addr: str
    procs: list[Proc] = field(default_factory=list)

    def argv(self, args: Sequence[str]) -> list[str]:
        return [IP, "netns", "exec", self.ns, *args]

    def run(self, args: Sequence[str], *, timeout: float = 60.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run ``args`` in this host and wait for it (output captured as text)."""
        return subprocess.run(self.argv(args), capture_output=True, text=True,
                              timeout=timeout, env=env, stdin=subprocess.DEVNULL)

    def start(self, args: Sequence[str], log: Path, *,
              env: dict[str, str] | None = None) -> Proc:
        """Start ``args`` in this host in a session of its own, stdout and stderr to
        ``log`` (appended)."""
        with open(log, "ab") as out:
            popen = subprocess.Popen(self.argv(args), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env,
                                     start_new_session=True)
        proc = Proc(self, list(args), popen, log)
        self.procs.append(proc)
        return proc

    def listening(self) -> list[tuple[str, int, int | None]]:
        """Every listening TCP socket in this host: (address, port, pid or None)."""
        out = self.run(["ss", "-Hltnp"], timeout=10)
        if out.returncode != 0:
            raise RuntimeError(f"ss -ltnp in {self.name}: {out.stderr.strip()}")
        sockets = []
        for line in out.stdout.splitlines():
            cols = line.split()
            if len(cols) < 4:
                continue
            local = cols[3]
            host, _, port = local.rpartition(":")
            pid = None
            if "pid=" in line:
                pid = int(line.split("pid=", 1)[1].split(",", 1)[0])
            sockets.append((host.strip("[]"), int(port), pid))
        return sockets


class Network:
    """A switch and hosts on ``subnet`` (a /24 in 10.0.0.0/8 that no address of the root
    namespace is in, unless given). Use as a context manager; ``close()`` stops every
    process still running in a host (by PID) and deletes every namespace it made."""

    def __init__(self, subnet: str | None = None) -> None:
        self.tag = _tag()
        self.subnet = ipaddress.ip_network(subnet or _free_subnet())
        self.switch = f"rdt-{self.tag}-sw"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._next = 10

    def __enter__(self) -> "Network":
        try:
            self._add_ns(self.switch)
            _ip("link", "add", "br0", "type", "bridge", netns=self.switch)
            _ip("link", "set", "br0", "up", netns=self.switch)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._namespaces.append(ns)
        _ip("link", "set", "lo", "up", netns=ns)

    def add_host(self, name: str, host_number: int | None = None) -> Host:
        """A new host ``name`` at ``subnet``'s address ``host_number`` (default: the next
        free one from .11)."""
        if host_number is None:
            self._next += 1
            host_number = self._next
        addr = str(self.subnet.network_address + host_number)
        ns = f"rdt-{self.tag}-{name}"
        self._add_ns(ns)
        port = f"p-{name}"[:15]
        _ip("link", "add", "name", "eth0", "netns", ns, "type", "veth", "peer", "name",
            port, "netns", self.switch)
        _ip("link", "set", port, "master", "br0", netns=self.switch)
        _ip("link", "set", port, "up", netns=self.switch)
        _ip("addr", "add", f"{addr}/{self.subnet.prefixlen}", "dev", "eth0", netns=ns)
        _ip("link", "set", "eth0", "up", netns=ns)
        host = Host(self, name, ns, addr)
        self.hosts[name] = host
        return host

    def namespaces(self) -> list[str]:
        """Every namespace that exists with this network's tag in its name."""
        listed = _ip("netns", "list", check=False).stdout.split()
        return [ns for ns in listed if ns.startswith(f"rdt-{self.tag}-")]

    def close(self) -> None:
        try:
            for host in self.hosts.values():
                for proc in host.procs:
                    stop_process(proc.popen)
        finally:
            self._delete_namespaces()

    def _delete_namespaces(self) -> None:
        problems = []
        for ns in reversed(self._namespaces):
            out = _ip("netns", "del", ns, check=False)
            if out.returncode != 0 and "No such file" not in out.stderr:
                problems.append(f"{ns}: {out.stderr.strip()}")
        self._namespaces = [ns for ns in self._namespaces if ns in self.namespaces()]
        if problems:
            raise RuntimeError("could not delete namespaces: " + "; ".join(problems))


def _free_subnet(attempts: int = 50) -> str:
    """A random 10.a.b.0/24 that no IPv4 address or route of the root namespace is in
    (so a look at the root namespace never confuses the two)."""
    used = []
    for args in (("-4", "-o", "addr"), ("-4", "route", "show", "table", "all")):
        for word in _ip(*args, check=False).stdout.split():
            if "." not in word:
                continue
            try:
                used.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    for _ in range(attempts):
        net = ipaddress.ip_network(f"10.{secrets.randbelow(250) + 3}."
                                   f"{secrets.randbelow(256)}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return str(net)
    raise RuntimeError(f"no free 10.x.y.0/24 in {attempts} tries")

