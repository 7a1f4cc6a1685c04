"""The nemesis proper: a seeded schedule of faults, and carrying it out against the peers.

Owns: ``plan`` (the whole schedule of peer faults, drawn up front from
``random.Random(seed)``, so a seed replays the same schedule), ``worker_plan`` (when
simulated workers are killed and brought back, from its own seeded stream) and ``Nemesis``
(runs both against a ``NemesisCluster`` and a ``Fleet``, recording ``fault`` records with
``phase`` ``start`` / ``step`` / ``stop`` and ``worker_kill`` / ``worker_revive``).

Peer faults, one at a time, each followed by a recovery time:

- ``kill_leader`` / ``kill_peer``: kill -9 (the leader of the moment, or a drawn peer), then
  a restart after ``duration`` seconds (2-6);
- ``pause``: SIGSTOP one or two drawn peers for 5-25 s, then SIGCONT;
- ``isolate`` / ``isolate_leader``: cut a drawn peer (or the leader of the moment) from
  both others for 5-20 s, then heal;
- ``bridge``: for a drawn order (a, b, c), cut a-c only (a-b and b-c still connect) for
  5-20 s, then heal.

Partitions are ``hold`` (nothing relayed; what a real partition looks like to TCP) or, one
time in four, ``reset`` (every connection through the cut aborted). Who leads is asked of
the watcher when the fault starts; with no leader a drawn peer stands in.

Runs on the controller's event loop. Imports the nemesis's own modules.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from .history import Recorder
from .peers import NemesisCluster
from .watcher import Watcher
from .workers import Fleet

__all__ = ["Fault", "WorkerStep", "plan", "worker_plan", "Nemesis", "FAULT_KINDS"]

FAULT_KINDS = ("kill_leader", "kill_peer", "pause", "isolate", "isolate_leader", "bridge")
_WEIGHTS = {"kill_leader": 2.0, "kill_peer": 1.0, "pause": 2.0, "isolate": 1.0,
            "isolate_leader": 1.5, "bridge": 1.5}


@dataclass(frozen=True)
class Fault:
    index: int
    at: float              # planned start, seconds after the fault phase began
    kind: str
    duration: float        # seconds the fault lasts (kills: until the restart)
    recovery: float        # seconds of quiet after it ends
    peers: tuple[int, ...]  # drawn peers (for *_leader: used when nobody leads)
    mode: str = "hold"     # partitions: hold or reset


@dataclass(frozen=True)
class WorkerStep:
    at: float
    action: str            # kill or revive
    count: int


def plan(seed: int, seconds: float, peer_ids: Iterable[int], kinds: Iterable[str] = FAULT_KINDS,
         warmup: float = 6.0) -> list[Fault]:
    """Every peer fault of a run of ``seconds``, drawn from ``random.Random(seed)``. A fault
    is planned only if it and its recovery end within ``seconds``."""
    rng = random.Random(f"nemesis-faults-{seed}")
    peers = sorted(peer_ids)
    kinds = [k for k in FAULT_KINDS if k in set(kinds)]
    if not kinds:
        return []
    weights = [_WEIGHTS[k] for k in kinds]
    out: list[Fault] = []
    at = warmup
    while True:
        kind = rng.choices(kinds, weights)[0]
        mode = "hold"
        if kind in ("kill_leader", "kill_peer"):
            duration = rng.uniform(2.0, 6.0)
            targets: tuple[int, ...] = (rng.choice(peers),)
        elif kind == "pause":
            duration = rng.uniform(5.0, 25.0)
            targets = tuple(sorted(rng.sample(peers, rng.choice((1, 2)))))
        elif kind == "bridge":
            duration = rng.uniform(5.0, 20.0)
            targets = tuple(rng.sample(peers, 3))
            mode = "reset" if rng.random() < 0.25 else "hold"
        else:
            duration = rng.uniform(5.0, 20.0)
            targets = (rng.choice(peers),)
            mode = "reset" if rng.random() < 0.25 else "hold"
        recovery = rng.uniform(6.0, 12.0)
        if at + duration + recovery > seconds:
            return out
        out.append(Fault(len(out), round(at, 3), kind, round(duration, 3), round(recovery, 3),
                         targets, mode))
        at += duration + recovery


def worker_plan(seed: int, seconds: float, fleet_size: int, warmup: float = 4.0
                ) -> list[WorkerStep]:
    """When workers die and come back: every 6-14 s a kill of 1-3% of the fleet (at least
    one; ``Fleet.kill`` keeps the dead under 10%), and every 10-20 s a revival of 1-3 of the
    dead, until ``seconds``."""
    rng = random.Random(f"nemesis-workers-{seed}")
    steps: list[WorkerStep] = []
    at = warmup
    while True:
        at += rng.uniform(6.0, 14.0)
        if at > seconds - 2.0:
            break
        steps.append(WorkerStep(round(at, 3), "kill",
                                max(1, round(fleet_size * rng.uniform(0.01, 0.03)))))
    at = warmup + 10.0
    while True:
        at += rng.uniform(10.0, 20.0)
        if at > seconds - 2.0:
            break
        steps.append(WorkerStep(round(at, 3), "revive", rng.randint(1, 3)))
    return sorted(steps, key=lambda s: s.at)


class Nemesis:
    """Carries out ``faults`` and ``steps`` from ``start`` (the controller's monotonic
    clock, via the recorder's ``now``)."""

    def __init__(self, cluster: NemesisCluster, fleet: Fleet, watcher: Watcher,
                 rec: Recorder, faults: list[Fault], steps: list[WorkerStep],
                 rng: random.Random) -> None:
        self.cluster = cluster
        self.fleet = fleet
        self.watcher = watcher
        self.rec = rec
        self.faults = faults
        self.steps = steps
        self.rng = rng
        self.killed: set[int] = set()      # peers down by kill -9
        self.done: list[dict[str, Any]] = []

    async def run_faults(self, start: float) -> None:
        for fault in self.faults:
            await self._sleep_until(start + fault.at)
            await self.inject(fault)

    async def run_workers(self, start: float) -> None:
        for step in self.steps:
            await self._sleep_until(start + step.at)
            if step.action == "kill":
                await self.fleet.kill(step.count)
            else:
                await self.fleet.revive(step.count)

    async def _sleep_until(self, t: float) -> None:
        now, _ = self.rec.now()
        if t > now:
            await asyncio.sleep(t - now)

    def _leader_or(self, fallback: int) -> tuple[int, bool]:
        leader = self.watcher.leader()
        return (leader, True) if leader is not None else (fallback, False)

    def _record(self, fault: Fault, phase: str, **fields: Any) -> None:
        self.rec.event("fault", "nemesis", phase=phase, index=fault.index, kind=fault.kind,
                       mode=fault.mode, planned=asdict(fault), **fields)

    async def inject(self, fault: Fault) -> None:
        """One fault: start it, hold it for its duration, end it."""
        kind = fault.kind
        c = self.cluster
        mesh = c.mesh
        assert mesh is not None
        term = self.watcher.max_term
        if kind in ("kill_leader", "kill_peer"):
            target, was_leader = (self._leader_or(fault.peers[0]) if kind == "kill_leader"
                                  else (fault.peers[0], self.watcher.leader() == fault.peers[0]))
            self._record(fault, "start", peers=[target], leader=was_leader, term=term)
            await c.kill9(target)
            self.killed.add(target)
            await asyncio.sleep(fault.duration)
            await c.restart(target)
            self.killed.discard(target)
            self._record(fault, "stop", peers=[target], action="restart",
                         pid=c.pid(target))
        elif kind == "pause":
            targets = list(fault.peers)
            self._record(fault, "start", peers=targets, leader=self.watcher.leader(),
                         term=term)
            for n in targets:
                c.pause(n)
            await asyncio.sleep(fault.duration)
            for n in targets:
                c.resume(n)
            self._record(fault, "stop", peers=targets, action="SIGCONT")
        elif kind in ("isolate", "isolate_leader"):
            target, was_leader = (self._leader_or(fault.peers[0]) if kind == "isolate_leader"
                                  else (fault.peers[0], self.watcher.leader() == fault.peers[0]))
            self._record(fault, "start", peers=[target], leader=was_leader, term=term)
            answer = await mesh.isolate(target, fault.mode)
            self._record(fault, "step", peers=[target], cut=answer.get("cut"))
            await asyncio.sleep(fault.duration)
            answer = await mesh.heal_all()
            self._record(fault, "stop", peers=[target], action="heal", cut=answer.get("cut"))
        elif kind == "bridge":
            a, b, cc = fault.peers
            self._record(fault, "start", peers=[a, b, cc], leader=self.watcher.leader(),
                         term=term)
            answer = await mesh.bridge(a, b, cc, fault.mode)
            self._record(fault, "step", peers=[a, b, cc], cut=answer.get("cut"))
            await asyncio.sleep(fault.duration)
            answer = await mesh.heal_all()
            self._record(fault, "stop", peers=[a, b, cc], action="heal", cut=answer.get("cut"))
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        await asyncio.sleep(fault.recovery)

    async def heal_everything(self) -> None:
        """End whatever a cancelled fault left behind: SIGCONT, heal, restart."""
        c = self.cluster
        for n in sorted(c.paused):
            c.resume(n)
        if c.mesh is not None:
            await c.mesh.heal_all()
        for n in sorted(c.peers):
            if not c.alive(n):
                await c.restart(n)
        self.killed.clear()
        self.rec.event("fault", "nemesis", phase="heal_all", index=-1, kind="heal_all")
