"""Shared helpers of the benchmarks: the machine, percentiles, RSS, results, and bench peer
processes (started and killed by PID, driven over stdin/stdout JSON lines)."""

from __future__ import annotations

import json
import os
import platform
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = []
    return {"nproc": os.cpu_count(), "cpu_model": model, "loadavg_at_start": load,
            "python": platform.python_version(), "platform": platform.platform()}


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


def rss_mb(pid: int | None = None) -> float:
    path = f"/proc/{pid or 'self'}/status"
    with open(path) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (seconds)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Check:
    name: str
    value: float | None
    unit: str
    target: str          # e.g. ">= 0.8"
    ok: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "unit": self.unit,
                "target": self.target, "ok": self.ok}


@dataclass
class BenchResult:
    name: str
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def check(self, name: str, value: float | None, unit: str, op: str, bound: float) -> None:
        ok = None
        if value is not None:
            ok = value >= bound if op == ">=" else value <= bound
        self.checks.append(Check(name, value, unit, f"{op} {bound:g}", ok))

    def info(self, name: str, value: float | None, unit: str) -> None:
        self.checks.append(Check(name, value, unit, "", None))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": round(self.seconds, 1), "error": self.error,
                "checks": [c.to_dict() for c in self.checks], "figures": self.figures}


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def print_table(results: list[BenchResult]) -> None:
    rows = [("bench", "figure", "value", "unit", "target", "ok")]
    for r in results:
        if r.error:
            rows.append((r.name, "ERROR", r.error[:60], "", "", "FAIL"))
        for c in r.checks:
            rows.append((r.name, c.name, fmt(c.value), c.unit, c.target,
                         "" if c.ok is None else ("yes" if c.ok else "MISSED")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) if j in (0, 1, 3, 4) else cell.rjust(w)
                        for j, (cell, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- peers

#: Where the raftdir code under test lives (a copy of the committed HEAD by default, so
#: that edits other people make in the shared work tree during a run cannot break it).
CODE_DIR: str | None = None


def use_head_copy(root: Path, dest: Path) -> str:
    """Export ``raftdir/`` at git HEAD into ``dest`` and put it first on the import path
    of this process and of every child; returns the commit."""
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(root), "archive", "HEAD", "raftdir"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    global CODE_DIR
    CODE_DIR = str(dest)
    sys.path.insert(0, CODE_DIR)
    return commit


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    parts = ([CODE_DIR] if CODE_DIR else []) + [str(SCRIPTS)]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


class PeerProc:
    """One bench Raft peer process (``raftdir_bench.raft_peer``): ``request(op, **kw)``
    writes one JSON line and waits (bounded) for the answer with the same id."""

    def __init__(self, args: dict[str, Any], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._next = 0
        self.spawned_at = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> dict[str, Any]:
        errlog = open(self.log_path, "ab")
        self._lines = queue.Queue()
        self.spawned_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "raftdir_bench.raft_peer", json.dumps(self.args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog, env=child_env(),
            text=True, bufsize=1, start_new_session=True)
        errlog.close()
        proc = self.proc

        def reader() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self._lines.put(line)
            self._lines.put(None)
        threading.Thread(target=reader, daemon=True).start()
        msg = self._read(timeout)
        if msg.get("event") != "started":
            raise RuntimeError(f"peer failed to start: {msg}")
        return msg

    def _read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"peer {self.args['self']}: no answer in {timeout:g} s")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"peer {self.args['self']} exited; see {self.log_path}")
            if line.strip():
                return json.loads(line)

    def request(self, op: str, timeout: float = 30.0, **kw: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self._next += 1
        rid = self._next
        self.proc.stdin.write(json.dumps(dict(kw, id=rid, op=op)) + "\n")
        self.proc.stdin.flush()
        while True:
            msg = self._read(timeout)
            if msg.get("id") == rid:
                if not msg.get("ok", False):
                    raise RuntimeError(f"peer {self.args['self']} {op}: {msg}")
                return msg

    def kill(self) -> None:
        """SIGKILL by PID and reap."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class PeerCluster:
    """Three (``size``) bench peers of one kind on 127.0.0.1 with OS-chosen ports."""

    def __init__(self, base: Path, kind: str, size: int = 3, secret: str | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        from raftdir.testing import free_ports
        ports = free_ports(size)
        addrs = [f"127.0.0.1:{p}" for p in ports]
        self.peers: list[PeerProc] = []
        for i, addr in enumerate(addrs):
            d = base / f"{kind}-peer{i + 1}"
            d.mkdir(parents=True, exist_ok=True)
            args = dict(extra or {}, kind=kind, self=addr,
                        partners=[a for a in addrs if a != addr], data_dir=str(d),
                        secret=secret)
            self.peers.append(PeerProc(args, base / f"{kind}-peer{i + 1}.log"))

    def start(self) -> None:
        for p in self.peers:
            p.start()

    def statuses(self) -> list[dict[str, Any] | None]:
        out = []
        for p in self.peers:
            try:
                out.append(p.request("status", timeout=5.0)["status"] if p.alive() else None)
            except (RuntimeError, TimeoutError):
                out.append(None)
        return out

    def wait_leader(self, timeout: float = 30.0) -> PeerProc:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sts = self.statuses()
            leaders = [p for p, s in zip(self.peers, sts)
                       if s and s["is_leader"] and s.get("is_ready", True)]
            if len(leaders) == 1:
                return leaders[0]
            time.sleep(0.05)
        raise TimeoutError("no leader")

    def kill_all(self) -> None:
        for p in self.peers:
            p.kill()


# ---------------------------------------------------------------------------- children

class JsonChild:
    """A child process (``python -m MODULE ARGS``, by PID) that answers JSON lines on
    stdout to JSON lines on stdin; its first line is its greeting (``hello``)."""

    def __init__(self, module: str, args: list[str], what: str,
                 stderr: Any = subprocess.DEVNULL) -> None:
        self.what = what
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=stderr, env=child_env(), start_new_session=True,
            text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.hello = self.wait(120.0)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait(self, timeout: float = 60.0) -> Any:
        line = self.lines.get(timeout=timeout)
        if line is None:
            raise RuntimeError(f"{self.what} died")
        return json.loads(line)

    def ask(self, op: str, timeout: float = 60.0, **kw: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


async def msgpack_post(session: Any, url: str, body: Any, *, auth: str | None = None,
                       write: bool = False, timeout: float = 10.0,
                       request_id: str | None = None) -> tuple[int, Any]:
    """One msgpack POST with the headers ``RaftdirClient`` sends: ``(status, body)``."""
    import uuid

    import aiohttp
    from raftdir.codec import dumps_msgpack, loads_msgpack
    headers = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    if write or request_id:
        headers["X-Request-Id"] = request_id or uuid.uuid4().hex
    async with session.post(url, data=dumps_msgpack(body), headers=headers,
                            timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        data = await resp.read()
        return resp.status, (loads_msgpack(data) if data else None)
