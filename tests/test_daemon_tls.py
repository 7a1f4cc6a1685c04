"""The daemon's own TLS connections with a private CA: a worker registering with the
servers, and servers talking to each other (forwarding to the leader, static probes), with
and without client certificates. Found by the multi-host run (tests/multihost): a worker
had no way to trust a private CA, and a server could not reach its peers over TLS."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from raftdir import InternalScaleRequest, RaftPeer, StaticMode, StaticPeer, WorkerTierMode
from raftdir import WorkerTierRole
from raftdir.api.client import RaftdirClient
from raftdir.auth import admin_token
from raftdir.daemon import Daemon, DaemonOptions, TlsFiles
from raftdir.replication.secret import create_secret
from raftdir.testing import async_wait_until, free_ports
from raftdir.testing_tls import TestCA

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


def _worker(tmp_path: Path, url: str, token: str, options: DaemonOptions) -> Daemon:
    data_dir = tmp_path / "worker"
    data_dir.mkdir(parents=True)
    (data_dir / "join.token").write_text(token + "\n")
    mode = WorkerTierMode(role=WorkerTierRole.WORKER, servers=(url,),
                          token_file=str(data_dir / "join.token"))
    return Daemon(mode, data_dir, options=options)


@pytest.mark.parametrize("mutual", [False, True], ids=["server-tls", "mutual-tls"])
def test_a_worker_registers_over_tls_with_the_ca_it_is_given(tmp_path, ca, mutual):
    """``raftdir worker --tls-ca`` (and, for servers run with --tls-ca, --tls-cert and
    --tls-key): without them the worker cannot register, with them it does."""

    async def body() -> None:
        raft_port, api_port = free_ports(2)
        peer = RaftPeer(id=1, raft_addr=f"127.0.0.1:{raft_port}",
                        api_addr=f"127.0.0.1:{api_port}")
        server_dir = tmp_path / "server"
        server_dir.mkdir()
        secret = create_secret(server_dir)
        server = Daemon(WorkerTierMode(role=WorkerTierRole.SERVER, node_id=1, peers=(peer,)),
                        server_dir, options=DaemonOptions(tls=TlsFiles(
                            *ca.issue("server", ips=["127.0.0.1"]),
                            ca=ca.cert if mutual else None)))
        client_cert = ca.issue("worker", server=False, client=True)
        url = f"https://{peer.api_addr}"
        refused = accepted = None
        try:
            await server.start()
            await async_wait_until(server.cluster.is_leader, 20, "leadership")
            trust = ssl.create_default_context(cafile=ca.cert)
            if mutual:
                trust.load_cert_chain(*client_cert)
            async with RaftdirClient([url], admin_token=admin_token(secret), ssl=trust
                                     ) as admin:
                token = (await admin.create_token(600, 2))["token"]
            # without the CA (mutual: without a client certificate) it cannot register
            refused = _worker(tmp_path / "a", url, token,
                              DaemonOptions(tls_trust=ca.cert) if mutual else DaemonOptions())
            await refused.start()
            await async_wait_until(
                lambda: refused.agent.status()["reason"].startswith("cannot register yet"),
                20, "the worker to fail to register")
            if not mutual:
                assert "CERTIFICATE_VERIFY_FAILED" in refused.agent.status()["reason"]
            assert refused.agent.node_id is None
            await refused.stop()
            # with them it registers and reports
            accepted = _worker(tmp_path / "b", url, token, DaemonOptions(
                tls_trust=ca.cert, tls=TlsFiles(*client_cert) if mutual else None))
            await accepted.start()
            await accepted.agent.wait_connected(20)
            assert accepted.agent.node_id is not None and accepted.agent.node_id >= 1_000_000
        finally:
            for daemon in (accepted, refused, server):
                if daemon is not None:
                    await daemon.stop()

    asyncio.run(body())


@pytest.mark.parametrize("mutual", [False, True], ids=["server-tls", "mutual-tls"])
def test_servers_reach_each_other_over_tls_with_a_private_ca(tmp_path, ca, mutual):
    """Static peers probe each other and a follower hands a scale to the leader: the
    connections a server makes itself. With mutual TLS each server presents its own
    certificate (serverAuth and clientAuth); without, it trusts --tls-peer-ca."""

    async def body() -> None:
        ports = free_ports(3)
        peers = tuple(StaticPeer(id=i + 1, api_addr=f"127.0.0.1:{p}")
                      for i, p in enumerate(ports))
        daemons = {}
        for peer in peers:
            cert, key = ca.issue(f"s{peer.id}", ips=["127.0.0.1"], client=mutual)
            options = (DaemonOptions(tls=TlsFiles(cert, key, ca=ca.cert)) if mutual
                       else DaemonOptions(tls=TlsFiles(cert, key), tls_trust=ca.cert))
            daemons[peer.id] = Daemon(StaticMode(node_id=peer.id, peers=peers,
                                                 heartbeat_interval=1, failure_threshold=2),
                                      tmp_path / f"s{peer.id}", options=options)
        try:
            for d in daemons.values():
                await d.start()
            await async_wait_until(lambda: all(
                n.state == "ready" for d in daemons.values() for n in d.cluster.list_nodes()),
                10, "every peer to reach every other over TLS")
            split = await daemons[3].cluster.forward_scale(InternalScaleRequest.legacy("web", 3))
            assert sorted(split) == [1, 2, 3]
        finally:
            for d in daemons.values():
                await d.stop()

    asyncio.run(body())


def test_the_cli_presents_a_client_certificate_to_servers_that_require_one(tmp_path, ca):
    """``raftdir serve --tls-ca`` (mutual TLS): the CLI gets in with --tls-cert/--tls-key
    and is refused without them."""
    from click.testing import CliRunner

    from raftdir import SingleNodeMode
    from raftdir.cli import cli

    (port,) = free_ports(1)
    options = DaemonOptions(api_port=port, tls=TlsFiles(
        *ca.issue("server", ips=["127.0.0.1"]), ca=ca.cert))
    cert, key = ca.issue("operator", server=False, client=True)
    clean = {k: None for k in ("RAFTDIR_SERVER", "RAFTDIR_ADMIN_TOKEN", "RAFTDIR_TLS_CA",
                               "RAFTDIR_TLS_CERT", "RAFTDIR_TLS_KEY")}

    def workers(*extra: str):
        return CliRunner().invoke(cli, ["workers", "--json", "--server",
                                        f"https://127.0.0.1:{port}", "--tls-ca", ca.cert,
                                        *extra], env=clean, prog_name="raftdir")

    with Daemon(SingleNodeMode(), tmp_path / "server", options=options):
        refused = workers()
        assert refused.exit_code == 1 and "127.0.0.1" in refused.output
        allowed = workers("--tls-cert", cert, "--tls-key", key)
        assert allowed.exit_code == 0, allowed.output
        assert workers("--tls-cert", cert).exit_code == 2   # the key goes with it
