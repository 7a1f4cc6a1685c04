"""The three-peer local demo: ``raftdir demo`` and ``./scripts/demo``.

Owns: the story the demo tells, step by step, and its summary. Three server processes on
127.0.0.1 (the configs of ``examples/three-peers/``) and six worker agent processes
(``raftdir worker``); an election, six registrations, a scale of ``web`` to 12 replicas,
kill -9 of the leader, the new leader, no worker marked down, polls resumed (a second
scale reaches every worker), the old leader restarted and caught up. Every acknowledged
write is checked at the end with a consistent read. Runs in the caller's main thread; all
processes are stopped by PID on exit, on error and on Ctrl-C (unless ``--keep``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click

from .auth import admin_token
from .config import dump_yaml, load_cluster_mode
from .model import InternalScaleRequest, RaftPeer, WorkerTierMode, WorkerTierRole
from .testing import LocalCluster, free_ports

__all__ = ["demo_command", "run_demo"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "three-peers"
DEADLINE_SECS = 60.0


class DemoFailed(Exception):
    pass


@dataclass
class Story:
    """What happened, for the summary."""

    started: float = field(default_factory=time.monotonic)
    leaders: list[int] = field(default_factory=list)
    registered: list[int] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    revision: int = 0
    failover_secs: float | None = None
    marked_down: list[int] = field(default_factory=list)

    def say(self, text: str) -> None:
        click.echo(f"[{time.monotonic() - self.started:5.1f}s] {text}")

    def left(self) -> float:
        return DEADLINE_SECS - (time.monotonic() - self.started)


def _port_free(addr: str) -> bool:
    import socket
    host, port = addr.rsplit(":", 1)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            s.bind((host, int(port)))
            return True
        except OSError:
            return False


def prepare_servers(base: Path, story: Story, replicas: int = 0) -> LocalCluster:
    """Copy the example configs into ``base/peerN``; if any example port is taken, move
    the whole cluster to ports the OS picks (and say so). ``replicas``: read-only replicas
    (ids 4, 5, ..., API ports 7204, ...) added to every config's peers, in
    ``base/replicaN``."""
    modes = [load_cluster_mode(EXAMPLES / f"peer{i}" / "cluster_mode.yaml") for i in (1, 2, 3)]
    peers = modes[0].peers + tuple(RaftPeer(id=4 + j, api_addr=f"127.0.0.1:{7204 + j}",
                                            replica=True) for j in range(replicas))
    if not all(_port_free(a) for p in peers for a in (p.raft_addr, p.api_addr) if a):
        ports = free_ports(2 * len(peers))
        peers = tuple(replace(p, raft_addr=None if p.replica else f"127.0.0.1:{ports[2 * i]}",
                              api_addr=f"127.0.0.1:{ports[2 * i + 1]}")
                      for i, p in enumerate(peers))
        story.say("example ports are busy; using ports the OS picked instead")
    modes += [replace(modes[0], node_id=p.id) for p in peers if p.replica]
    dirs = []
    for mode in modes:
        replica = mode.node_id > 3
        data_dir = base / f"{'replica' if replica else 'peer'}{mode.node_id}"
        data_dir.mkdir(parents=True, exist_ok=True)
        moved = replace(mode, peers=peers)
        (data_dir / "cluster_mode.yaml").write_text(dump_yaml(moved))
        dirs.append(data_dir)
    return LocalCluster(base).adopt(dirs)


@dataclass
class Workers:
    """Worker agent processes (``raftdir worker``), one data dir each."""

    base: Path
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)

    def start(self, count: int, servers: list[str], token: str) -> None:
        for i in range(1, count + 1):
            data_dir = self.base / f"worker{i}"
            data_dir.mkdir(parents=True, exist_ok=True)
            token_file = data_dir / "join.token"
            token_file.write_text(token + "\n")
            os.chmod(token_file, 0o600)
            mode = WorkerTierMode(role=WorkerTierRole.WORKER, servers=tuple(servers),
                                  token_file=str(token_file), labels={"demo": f"w{i}"})
            (data_dir / "cluster_mode.yaml").write_text(dump_yaml(mode))
            log = open(data_dir / "worker.log", "ab")
            self.procs[i] = subprocess.Popen(
                [sys.executable, "-m", "raftdir", "worker", "--data-dir", str(data_dir),
                 "--api-addr", f"127.0.0.1:{7300 + i}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
            log.close()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


async def peer_table(client: Any) -> str:
    """The same table as ``raftdir peers``, indented."""
    from .cli import peer_rows, peers_listing
    listing = peers_listing(await peer_rows(client, {}))
    return "\n".join("    " + line for line in listing.text().splitlines())


async def _until(story: Story, what: str, check: Any, timeout: float,
                 interval: float = 0.1) -> Any:
    deadline = time.monotonic() + min(timeout, max(0.5, story.left()))
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = await check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_error = exc
        await asyncio.sleep(interval)
    raise DemoFailed(f"timed out waiting for {what}"
                     + (f" (last error: {last_error})" if last_error else ""))


async def _story(cluster: LocalCluster, workers: Workers, story: Story, count: int) -> None:
    from .api.client import RaftdirClient

    cluster.start()
    story.say(f"started peers {', '.join(str(n) for n in cluster.voters)}"
              + (f" and read-only replicas {', '.join(map(str, cluster.replicas))}"
                 if cluster.replicas else "")
              + f" (pids {', '.join(str(p.proc.pid) for _, p in sorted(cluster.peers.items()))})")
    client = RaftdirClient(cluster.endpoints, admin_token=admin_token(cluster.secret),
                           timeout=2.0, retries=10, backoff=(0.05, 0.5))
    try:
        async def one_leader() -> int | None:
            return cluster.leader_id()
        leader = await _until(story, "the election", one_leader, 20)
        story.leaders.append(leader)
        term = (await client.peers(server=cluster.peers[leader].url)).get("term")
        story.say(f"election: peer {leader} leads (term {term})")
        click.echo(await peer_table(client))

        token = (await client.create_token(600, count))["token"]
        story.writes.append("token")
        workers.start(count, cluster.endpoints, token)

        async def registered() -> list[dict] | None:
            nodes = [n for n in await client.workers() if n["kind"] == "worker"]
            return nodes if len(nodes) >= count else None
        nodes = await _until(story, f"{count} registrations", registered, 20)
        story.registered = sorted(n["node_id"] for n in nodes)
        story.say(f"{count} workers registered: {', '.join(map(str, story.registered))}")

        await _scale_and_show(client, story, "web", 12)
        if cluster.replicas:
            await _show_polls(client, cluster, story)

        old = leader
        pid = cluster.peers[old].proc.pid
        story.say(f"kill -9 peer {old} (the leader, pid {pid})")
        killed_at = time.monotonic()
        cluster.kill(old)

        async def new_leader() -> int | None:
            n = cluster.leader_id()
            return n if n is not None and n != old else None
        leader = await _until(story, "a new leader", new_leader, 20, interval=0.05)
        story.failover_secs = time.monotonic() - killed_at
        story.leaders.append(leader)
        story.say(f"new leader: peer {leader}, {story.failover_secs:.2f} s after the kill")

        nodes = [n for n in await client.workers(consistent=True) if n["kind"] == "worker"]
        story.marked_down = [n["node_id"] for n in nodes if n["state"] != "ready"]
        story.say(f"workers still ready: {len(nodes) - len(story.marked_down)}/{len(nodes)}"
                  + ("" if not story.marked_down else f"; down: {story.marked_down}"))

        await _scale_and_show(client, story, "api", 6, proves="polls resumed after the "
                              "failover: every worker runs its share of api")

        story.say(f"restarting peer {old}")
        cluster.start(old)

        async def caught_up() -> tuple[int, int] | None:
            statuses = await client.per_server("peers")
            me = statuses.get(cluster.peers[old].url)
            lead = statuses.get(cluster.peers[leader].url)
            if not isinstance(me, dict) or not isinstance(lead, dict):
                return None
            if me.get("revision") == lead.get("revision") and \
                    me.get("last_applied", 0) >= lead.get("commit_index", 1) - 2:
                return me["last_applied"], lead["commit_index"]
            return None
        applied, commit = await _until(story, f"peer {old} to catch up", caught_up, 20)
        story.say(f"peer {old} caught up: applied {applied}, leader commit {commit}")
        click.echo(await peer_table(client))
        await _check_writes(client, story)
    finally:
        await client.close()


async def _scale_and_show(client: Any, story: Story, service: str, replicas: int,
                          proves: str | None = None) -> None:
    split = await client.scale(InternalScaleRequest.legacy(service, replicas))
    story.writes.append(f"scale {service} {replicas}")
    shares = ", ".join(f"{n}: {r.replicas}" for n, r in sorted(split.items()))
    story.say(f"scale {service} -> {replicas} replicas; each worker's share: {shares}")

    async def running() -> dict | None:
        state = await client.service_state(service)
        return state if state["running"] == replicas and not state["unknown"] else None
    state = await _until(story, f"workers to report {service} running", running, 25)
    per_node = ", ".join(f"{n.node_id}: {n.running}" for n in state["nodes"]
                         if n.running)
    story.say((proves or f"every worker runs its share of {service}") + f" ({per_node})")


async def _show_polls(client: Any, cluster: LocalCluster, story: Story) -> None:
    """Where the workers' polls wait: spread over the peers and the replicas."""
    async def parked() -> dict[int, int] | None:
        out = {}
        for n, peer in sorted(cluster.peers.items()):
            for line in (await client.metrics(peer.url)).splitlines():
                if line.startswith("raftdir_api_parked_polls "):
                    out[n] = int(float(line.split()[1]))
        return out if sum(out.values()) >= len(story.registered) else None
    where = await _until(story, "every worker to park a poll", parked, 10)
    story.say("parked polls: " + ", ".join(
        f"{'replica' if n in cluster.replicas else 'peer'} {n}: {k}"
        for n, k in sorted(where.items())))


async def _check_writes(client: Any, story: Story) -> None:
    """Every acknowledged write is in the directory, read through a barrier."""
    nodes = {n["node_id"]: n for n in await client.workers(consistent=True)}
    for node_id in story.registered:
        if node_id not in nodes:
            story.lost.append(f"registration of {node_id}")
    for write in story.writes:
        if not write.startswith("scale "):
            continue
        _, service, replicas = write.split()
        state = await client.service_state(service, consistent=True)
        assigned = sum(a["replicas"] for a in state.get("assigned", []))
        if assigned != int(replicas):
            story.lost.append(f"{write} (assigned {assigned})")
    story.revision = max((s.get("revision", 0) for s in
                          (await client.per_server("peers")).values()
                          if isinstance(s, dict)), default=0)


def summary(story: Story, ok: bool) -> str:
    lines = ["", "summary:",
             f"  leaders:        {' -> '.join(f'peer {n}' for n in story.leaders) or 'none'}",
             f"  failover:       " + (f"{story.failover_secs:.2f} s from kill -9 to a new "
                                      "leader" if story.failover_secs else "-"),
             f"  registrations:  {len(story.registered)}",
             f"  marked down:    {len(story.marked_down)}",
             f"  revision:       {story.revision}",
             f"  lost writes:    {len(story.lost)}" + (f" ({'; '.join(story.lost)})"
                                                        if story.lost else ""),
             f"  result:         {'ok' if ok else 'FAILED'} in "
             f"{time.monotonic() - story.started:.1f} s"]
    return "\n".join(lines)


def run_demo(data_dir: Path | None = None, *, keep: bool = False, workers: int = 6,
             replicas: int = 0) -> int:
    """Run the demo; returns the exit status (0 when every step held)."""
    base = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="raftdir-demo-"))
    story = Story()
    click.echo(f"raftdir demo: three peers"
               + (f", {replicas} read-only replica{'s' if replicas > 1 else ''}"
                  if replicas else "")
               + f" on 127.0.0.1 and {workers} workers (data in {base})")
    cluster = prepare_servers(base, story, replicas)
    fleet = Workers(base)
    ok = False

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        asyncio.run(_story(cluster, fleet, story, workers))
        ok = not story.lost and not story.marked_down and len(story.registered) == workers
    except DemoFailed as exc:
        story.say(f"FAILED: {exc}")
    except KeyboardInterrupt:
        story.say("interrupted")
        keep = False
    except BrokenPipeError:
        keep = False
    except Exception as exc:  # noqa: BLE001 - a failed step is reported, then cleaned up
        story.say(f"FAILED: {type(exc).__name__}: {exc}")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if not (keep and ok):
            fleet.stop()       # first: nothing below may leave processes behind
            cluster.stop()
        try:
            click.echo(summary(story, ok))
            if keep and ok:
                click.echo(_keep_note(cluster, fleet, base))
        except BrokenPipeError:  # the reader went away (| head): the cleanup is done
            pass
        if not keep and data_dir is None and ok:
            shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


def _keep_note(cluster: LocalCluster, fleet: Workers, base: Path) -> str:
    pids = [p.proc.pid for p in cluster.peers.values() if p.proc] + \
        [p.pid for p in fleet.procs.values()]
    return (f"\nthe cluster keeps running (data in {base}). Explore it:\n"
            f"  dashboard: {dashboard_url(cluster)} (any server's /ui; sign in with the "
            "admin token below, or one from `raftdir token create --viewer`)\n"
            f"  export RAFTDIR_SERVER={','.join(cluster.endpoints)}\n"
            f"  export RAFTDIR_ADMIN_TOKEN={admin_token(cluster.secret)}\n"
            "  raftdir peers\n  raftdir workers\n  raftdir leases\n"
            "  raftdir service-state web\n  raftdir scale web 18\n"
            f"(raftdir is .venv/bin/raftdir, or run `source .venv/bin/activate` first)\n"
            f"stop it and remove its data with:\n"
            f"  kill {' '.join(map(str, pids))}; rm -r {base}")


def dashboard_url(cluster: LocalCluster) -> str:
    """The dashboard of the first running server (every server serves it)."""
    running = [p for _, p in sorted(cluster.peers.items()) if cluster.alive(p.node_id)]
    return (running or [cluster.peers[min(cluster.peers)]])[0].url + "/ui"


@click.command("demo")
@click.option("--keep", is_flag=True,
              help="Leave the cluster running at the end and print commands to explore it.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the peers and workers keep their data (default: a temporary "
                   "directory, removed after a successful run).")
@click.option("--workers", type=click.IntRange(1, 50), default=6, show_default=True,
              help="How many worker agents to start.")
@click.option("--replicas", type=click.IntRange(0, 9), default=0, show_default=True,
              help="Read-only replicas beside the three peers (no vote; the workers "
                   "learn them from their acks and spread their polls over them).")
def demo_command(keep: bool, data_dir: Path | None, workers: int, replicas: int) -> None:
    """Run the three-peer local demo: an election, registrations, a scale, kill -9 of
    the leader, a failover with no worker marked down, a second scale and the old leader
    catching up. Ends with a summary; exit 0 when no write was lost."""
    sys.exit(run_demo(data_dir, keep=keep, workers=workers, replicas=replicas))

