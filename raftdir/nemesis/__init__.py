"""The nemesis: raftdir's own fault-injection suite (``scripts/nemesis``, issue 8).

A run starts three ``raftdir serve`` peers on 127.0.0.1 whose Raft links go through TCP
proxies that can be cut, drives them with an asyncio fleet of simulated workers and an
admin loop, injects a seeded schedule of faults (kill -9, SIGSTOP, partitions, dead
workers), records every operation in ``history.jsonl`` and then checks the history
against the promises of directory.md §5-§6. docs/robustness.md describes the checks.

Modules, in the order a run uses them:

- ``run``: one run start to finish (``Settings``, ``run``);
- ``peers``: the three peers and the process faults (``NemesisCluster``);
- ``faults``: the seeded schedule and carrying it out (``plan``, ``Nemesis``);
- ``workers``: the simulated fleet (``Worker``, ``Fleet``);
- ``admin``: registrations, scales, drains, evictions, raced tokens (``Admin``);
- ``watcher``: what each peer says, and the leader's node states (``Watcher``);
- ``http``: one HTTP attempt at one server (``Http``);
- ``history``: the JSON-lines record (``Recorder``, ``load``);
- ``logscan``: the server logs (``scan_files``);
- ``checker``: the checks and the verdict table (``check``).

The proxies and the peer launcher are in ``raftdir.testing.proxy`` and
``raftdir.testing.nemesis_peer``. Nothing here is imported by raftdir itself.
"""
