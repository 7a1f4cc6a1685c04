"""One nemesis run, start to finish: peers, fleet, admin loop, faults, settle, final reads.

Owns: ``Settings`` (what a run is made of) and ``run(settings)``, in this order:

1. ``run.json`` (the settings, the seed, the fault schedule, the machine) and the peers:
   three ``raftdir serve`` (worker-tier server configs, one shared ``cluster.secret``) on
   127.0.0.1 with OS-chosen ports, their Raft links through the proxy mesh;
2. the watcher, a join token, ``workers`` simulated workers registered, two services
   scaled;
3. for ``seconds``: the fleet reporting and polling, the admin loop, the peer faults of the
   schedule and the worker kills/revivals;
4. heal everything (SIGCONT, heal partitions, restart killed peers), wait for one leader
   every peer follows, then ``settle`` seconds and until every dead worker is down (at
   most ``settle_max``);
5. the final reads, recorded: a consistent read of every node and of every scaled service
   from the leader, each live worker's own set once its polls caught up, a full poll of
   each live worker from the leader, and the digests of all three peers until they agree
   at one applied index;
6. stop everything by PID, then run the checker (``checker.check``).

Runs one asyncio event loop in the controller process (the proxies have their own
process). Imports the nemesis's modules, ``raftdir.testing`` and the auth helpers.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..auth import admin_token
from ..server import ServerSettings
from .admin import Admin
from .checker import Verdict, check, format_table
from .faults import FAULT_KINDS, Nemesis, plan, worker_plan
from .history import HISTORY_FILE, RUN_FILE, Recorder
from .http import Http
from .peers import NemesisCluster
from .watcher import Watcher
from .workers import DEAD, LIVE, Fleet, FleetSettings, event_record

__all__ = ["Settings", "run", "RunFailed"]


class RunFailed(Exception):
    """The run itself could not be carried out (no leader ever, a peer would not start)."""


@dataclass(frozen=True)
class Settings:
    out: Path
    seconds: float = 600.0
    workers: int = 150
    seed: int = 1
    heartbeat_min_ttl: int = 4
    heartbeat_grace: int = 6
    slack: float = 1.0
    poll_wait: int = 10
    settle: float = 15.0
    settle_max: float = 60.0
    faults: tuple[str, ...] = FAULT_KINDS
    worker_faults: bool = True
    admin: bool = True
    max_workers: int = 0              # 0: workers + a fifth
    log_level: str = "info"
    checkpoint_interval: float = field(default=ServerSettings.checkpoint_interval)
    expiry_tick: float = field(default=ServerSettings.expiry_tick)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        d["faults"] = list(self.faults)
        return d


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(settings: Settings) -> Verdict:
    """Carry out one run and check it. Raises ``RunFailed`` when the run could not be made."""
    settings.out.mkdir(parents=True, exist_ok=True)
    if (settings.out / HISTORY_FILE).exists():
        raise RunFailed(f"{settings.out}: already holds a run ({HISTORY_FILE}); use an empty "
                        "directory, or --check it")
    try:
        asyncio.run(_main(settings))
    except asyncio.CancelledError:
        raise RunFailed("interrupted by SIGTERM; every peer was stopped") from None
    return check(settings.out)


async def _main(s: Settings) -> None:
    """``_run``, cancelled (so that it stops every peer) on SIGTERM."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    await _run(s)


async def _run(s: Settings) -> None:
    rec = Recorder(s.out / HISTORY_FILE)
    peers_dir = s.out / "peers"
    cluster = NemesisCluster(peers_dir, size=3, log_level=s.log_level,
                             env={"RAFTDIR_DEBUG": "1", "PYTHONFAULTHANDLER": "1"})
    cluster.prepare(heartbeat={"heartbeat_min_ttl": s.heartbeat_min_ttl,
                               "heartbeat_grace": s.heartbeat_grace})
    faults = plan(s.seed, s.seconds, cluster.peers, s.faults)
    steps = worker_plan(s.seed, s.seconds, s.workers) if s.worker_faults else []
    run_info = {
        "origin_wall": rec.origin_wall, "origin_mono": rec.origin_mono,
        "settings": s.to_json(), "command": sys.argv,
        "peers": {str(n): {"raft_addr": p.raft_addr, "api_addr": p.api_addr}
                  for n, p in sorted(cluster.peers.items())},
        "schedule": [asdict(f) for f in faults], "worker_schedule": [asdict(x) for x in steps],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
    }
    (s.out / RUN_FILE).write_text(json.dumps(run_info, indent=1) + "\n")
    http = Http()
    fleet: Fleet | None = None
    watcher: Watcher | None = None
    lag_task: asyncio.Task[None] | None = None
    try:
        await cluster.start_mesh()
        cluster.start()
        rec.event("run", "run", phase="peers_started",
                  pids={str(n): cluster.pid(n) for n in cluster.peers})
        _say(f"nemesis: 3 peers started ({', '.join(p.api_addr for p in cluster.peers.values())})"
             f"; {len(faults)} faults planned over {s.seconds:g} s, seed {s.seed}")
        lag_task = asyncio.ensure_future(_watch_lag(rec))
        endpoints = [p.url for _, p in sorted(cluster.peers.items())]
        watcher = Watcher(rec, http, {n: p.url for n, p in cluster.peers.items()})
        watcher.start()
        await _until(lambda: watcher.leader() is not None, 60.0, "a ready leader")
        fleet = Fleet(FleetSettings(tuple(endpoints), poll_wait=s.poll_wait), rec, http,
                      random.Random(f"nemesis-fleet-{s.seed}"))
        admin = Admin(rec, http, endpoints, admin_token(cluster.secret), fleet,
                      random.Random(f"nemesis-admin-{s.seed}"),
                      max_workers=s.max_workers or s.workers + max(1, s.workers // 5),
                      node_state=watcher.node_states.get)
        made = await admin.create_token(0)
        if made is None:
            raise RunFailed("could not create a join token")
        admin.main_token, admin.main_token_id = made
        joined = await fleet.join(made[0], made[1], s.workers)
        if len(joined) < s.workers:
            raise RunFailed(f"only {len(joined)} of {s.workers} workers could register")
        await admin.scale("web", s.workers)
        await admin.scale("api", max(1, s.workers // 2))
        _say(f"nemesis: {len(joined)} workers registered; load and faults for {s.seconds:g} s "
             f"(history in {s.out / HISTORY_FILE})")

        start, _ = rec.now()
        rec.event("run", "run", phase="load_start")
        nemesis = Nemesis(cluster, fleet, watcher, rec, faults, steps,
                          random.Random(f"nemesis-pick-{s.seed}"))
        tasks = [asyncio.ensure_future(nemesis.run_faults(start)),
                 asyncio.ensure_future(nemesis.run_workers(start))]
        if s.admin:
            tasks.append(asyncio.ensure_future(admin.run(start + s.seconds)))
        progress = asyncio.ensure_future(_progress(rec, watcher, fleet, start, s.seconds))
        try:
            done, _ = await asyncio.wait(tasks, timeout=s.seconds + 5.0,
                                         return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            for t in [*tasks, progress]:
                t.cancel()
            await asyncio.gather(*tasks, progress, return_exceptions=True)
        rec.event("run", "run", phase="load_end")

        # heal, settle
        rec.event("run", "run", phase="heal")
        await nemesis.heal_everything()
        await _until(lambda: _settled(watcher, cluster), 60.0, "one leader every peer follows")
        await asyncio.sleep(s.settle)
        dead = [w for w in fleet.workers if w.status == DEAD]
        await _until(lambda: all(watcher.node_states.get(w.node_id) in ("down", "gone")
                                 for w in dead), max(0.0, s.settle_max - s.settle),
                     "every dead worker marked down", fail=False)
        rec.event("run", "run", phase="final_reads",
                  statuses={w.name: [w.node_id, w.status] for w in fleet.workers})
        _say("nemesis: healed and settled; final reads")
        await _final_reads(rec, http, cluster, watcher, fleet, admin, s)
        if cluster.mesh is not None:
            rec.event("mesh_stats", "run", **await cluster.mesh.stats())
        rec.event("run", "run", phase="end")
    finally:
        if lag_task is not None:
            lag_task.cancel()
        if fleet is not None:
            await fleet.stop()
        if watcher is not None:
            await watcher.stop()
        await cluster.stop_all()
        await http.close()
        rec.event("run", "run", phase="stopped", exit_codes={
            str(n): c for n, c in cluster.exit_codes().items()})
        rec.close()


async def _until(cond: Any, timeout: float, what: str, fail: bool = True,
                 interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() > deadline:
            if fail:
                raise RunFailed(f"timed out after {timeout:g} s waiting for {what}")
            return False
        await asyncio.sleep(interval)


def _settled(watcher: Watcher, cluster: NemesisCluster) -> bool:
    leader = watcher.leader(fresh_within=0.6)
    if leader is None:
        return False
    url = cluster.peers[leader].url
    now = time.monotonic()
    return all(v.up and now - v.seen_at < 0.6 and v.leader_api == url
               for v in (watcher.views.get(n) for n in cluster.peers) if v is not None) \
        and len(watcher.views) == len(cluster.peers)


async def _watch_lag(rec: Recorder, period: float = 0.1, threshold: float = 0.25) -> None:
    """Record the controller's own event-loop stalls: a worker that could not send its
    report in time because of them is the harness's fault, not the server's."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(period)
        lag = loop.time() - before - period
        if lag > threshold:
            rec.event("lag", "run", lag=round(lag, 3))


async def _progress(rec: Recorder, watcher: Watcher, fleet: Fleet, start: float,
                    seconds: float) -> None:
    while True:
        await asyncio.sleep(15.0)
        now, _ = rec.now()
        leader = watcher.leader()
        _say(f"nemesis: {now - start:5.0f}/{seconds:g} s  leader {leader} term "
             f"{watcher.max_term}  workers live {len(fleet.in_state(LIVE))} dead "
             f"{len(fleet.in_state(DEAD))}  records {rec.count}")


async def _leader_call(http: Http, cluster: NemesisCluster, watcher: Watcher, method: str,
                       path: str, *, bearer: str | None = None, body: Any = None,
                       query: dict[str, str] | None = None, deadline: float = 30.0
                       ) -> tuple[int | None, Any]:
    """Ask the leader, retrying until an answer or the deadline: (peer, answer)."""
    end = time.monotonic() + deadline
    ans: Any = None
    while True:
        leader = watcher.leader()
        if leader is not None:
            ans = await http.call(cluster.peers[leader].url, method, path, body, bearer=bearer,
                                  query=query, timeout=10.0)
            if ans.ok or ans.err in ("unknown_service",):
                return leader, ans
        if time.monotonic() > end:
            return leader, ans
        await asyncio.sleep(0.3)


async def _final_reads(rec: Recorder, http: Http, cluster: NemesisCluster, watcher: Watcher,
                       fleet: Fleet, admin: Admin, s: Settings) -> None:
    # every node, and every scaled service, consistently from the leader
    t0, w0 = rec.now()
    peer, ans = await _leader_call(http, cluster, watcher, "GET", "/api/v1/cluster/workers",
                                   query={"consistent": "1"})
    nodes = [{"node": n["node_id"], "kind": n.get("kind"), "state": n.get("state"),
              "draining": n.get("draining")} for n in (ans.body if ans and ans.ok else [])]
    rec.write("final_workers", "final", t0, w0, ok=bool(ans and ans.ok), peer=peer,
              err=None if ans and ans.ok else getattr(ans, "err", "no leader"), nodes=nodes)
    for service in sorted(admin.scaled):
        t0, w0 = rec.now()
        peer, ans = await _leader_call(http, cluster, watcher, "GET",
                                       f"/api/v1/internal/services/{service}/state",
                                       query={"consistent": "1"})
        if ans is not None and ans.ok:
            assigned = ans.body.get("assigned", [])
            rec.write("final_service", "final", t0, w0, ok=True, peer=peer, service=service,
                      replicas=sum(int(a["replicas"]) for a in assigned),
                      assigned={str(a["node_id"]): a["replicas"] for a in assigned})
        else:
            rec.write("final_service", "final", t0, w0, ok=False, peer=peer, service=service,
                      replicas=0 if ans is not None and ans.err == "unknown_service" else None,
                      err=getattr(ans, "err", "no leader"))
    # each live worker's own set, once its polls reached the leader's revision
    leader = watcher.leader()
    revision = 0
    if leader is not None:
        st = await http.call(cluster.peers[leader].url, "GET", "/api/v1/cluster/peers",
                             timeout=5.0)
        revision = int((st.body or {}).get("revision") or 0) if st.ok else 0
    live = [w for w in fleet.workers if w.status == LIVE]
    caught_up = await _until(lambda: all(w.assignments.revision >= revision for w in live),
                             s.poll_wait + 20.0, "every live worker's polls to catch up",
                             fail=False)
    rec.event("final_catch_up", "final", ok=caught_up, revision=revision,
              lagging=[w.node_id for w in live if w.assignments.revision < revision])
    for w in live:
        rec.event("worker_final", "final", node=w.node_id, name=w.name,
                  revision=w.assignments.revision, draining=w.assignments.draining,
                  services={k: [[g.role, list(g.indices)] for g in ev.assignments]
                            for k, ev in sorted(w.assignments.services.items())})
    # the leader's full answer for each live worker
    sem = asyncio.Semaphore(20)

    async def full(w: Any) -> None:
        async with sem:
            t0, w0 = rec.now()
            url = cluster.peers[leader].url if leader is not None else cluster.endpoints[0]
            ans = await http.call(url, "POST", "/api/v1/workers/poll",
                                  {"node_id": w.node_id, "last_revision": 0, "max_wait_secs": 0},
                                  bearer=w.secret, timeout=10.0)
            if ans.ok:
                from ..codec import from_dict
                from ..model import WorkerPollResponse
                resp = from_dict(WorkerPollResponse, ans.body)
                rec.write("final_poll", "final", t0, w0, ok=True, node=w.node_id, server=url,
                          rev=resp.revision, full=resp.full,
                          events=[event_record(e) for e in resp.events])
            else:
                rec.write("final_poll", "final", t0, w0, ok=False, node=w.node_id, server=url,
                          err=ans.err)
    await asyncio.gather(*(full(w) for w in live))
    await _compare_digests(rec, http, cluster, admin.token)


async def _compare_digests(rec: Recorder, http: Http, cluster: NemesisCluster, token: str,
                           deadline: float = 40.0) -> None:
    """Ask every peer for its digest until all three are stable at one applied index."""
    end = time.monotonic() + deadline
    seen_mismatch: dict[str, Any] | None = None
    rounds = 0
    while True:
        rounds += 1
        answers = {}
        t0, w0 = rec.now()
        results = await asyncio.gather(*(http.call(p.url, "GET", "/api/v1/cluster/digest",
                                                   bearer=token, timeout=5.0)
                                         for _, p in sorted(cluster.peers.items())))
        for (n, _), ans in zip(sorted(cluster.peers.items()), results):
            body = ans.body if ans.ok and isinstance(ans.body, dict) else {}
            answers[str(n)] = body
            rec.write("digest", "final", t0, w0, ok=ans.ok, err=ans.err, peer=n,
                      last_applied=body.get("last_applied"), stable=body.get("stable"),
                      revision=body.get("revision"), sha256=body.get("sha256"))
        stable = [b for b in answers.values() if b.get("stable")]
        if len(stable) == len(cluster.peers) and len({b["last_applied"] for b in stable}) == 1:
            shas = {n: b["sha256"] for n, b in answers.items()}
            if len(set(shas.values())) == 1:
                rec.event("digest_result", "final", ok=True, index=stable[0]["last_applied"],
                          peers=sorted(answers), shas=shas, rounds=rounds)
                return
            seen_mismatch = {"index": stable[0]["last_applied"], "shas": shas}
        if time.monotonic() > end:
            why = ("different digests at the same applied index" if seen_mismatch
                   else "never all stable at one applied index")
            rec.event("digest_result", "final", ok=False, why=why, peers=sorted(answers),
                      mismatch=seen_mismatch, last=answers, rounds=rounds)
            return
        await asyncio.sleep(0.2)


def print_verdict(v: Verdict, out: Path) -> None:
    print(format_table(v))
    print(f"(history, logs and verdict.json in {out})")
