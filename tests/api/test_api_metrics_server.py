"""/metrics of a real DirectoryServer through its API: the control plane's gauges and
counters, its histograms (propose latency by command, poll wait by outcome) and
prometheus-client's process and Python collectors, all read back with prometheus-client's
own parser."""

from __future__ import annotations

import gc

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from raftdir.api.server import start_api
from raftdir.model import (
    InternalScaleRequest, WorkerPollRequest, WorkerProfile, WorkerRegisterRequest,
)
from raftdir.server import DirectoryServer, ServerSettings

SECRET = "5e" * 32


async def test_a_servers_metrics_include_its_histograms_and_the_process_collectors():
    server = DirectoryServer(ServerSettings(node_id=1), secret=SECRET)
    await server.start()
    api = await start_api(server, "127.0.0.1", 0)
    try:
        token = (await server.create_token(60, 0))["token"]
        reg = await server.register(WorkerRegisterRequest(
            token=token, profile=WorkerProfile(api_addr="10.0.0.9:3669", os="linux",
                                               arch="x86_64")), None)
        await server.scale(InternalScaleRequest.legacy("web", 2), None)
        full = await server.poll(WorkerPollRequest(node_id=reg.node_id, max_wait_secs=0),
                                 reg.internal_token)                # its full set
        await server.poll(WorkerPollRequest(node_id=reg.node_id, last_revision=full.revision,
                                            max_wait_secs=0), reg.internal_token)
        gc.collect()
        async with aiohttp.ClientSession() as s:
            async with s.get(api.url + "/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain; version=")
                text = await resp.text()
    finally:
        await api.close()
        await server.stop()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    propose = families["raftdir_propose_seconds"]
    assert propose.type == "histogram"
    counts = {s.labels["command"]: s.value for s in propose.samples
              if s.name == "raftdir_propose_seconds_count"}
    assert counts["register_node"] == 2   # this server's own node, then the worker
    assert counts["set_placement"] == 1
    assert counts["barrier"] >= 1                    # the leader's first write
    waits = {s.labels["outcome"]: s.value for s in families["raftdir_poll_wait_seconds"].samples
             if s.name == "raftdir_poll_wait_seconds_count"}
    assert waits == {"changes": 1, "bookmark": 1}
    assert families["raftdir_workers_ready"].samples[0].value == 1
    pauses = {s.labels["generation"]: s.value for s in families["raftdir_gc_pause_seconds"].samples
              if s.name == "raftdir_gc_pause_seconds_count"}
    assert pauses["2"] >= 1
    assert families["raftdir_raft_is_leader"].type == "gauge"
    for name in ("process_resident_memory_bytes", "process_open_fds", "python_info"):
        assert name in families, name
