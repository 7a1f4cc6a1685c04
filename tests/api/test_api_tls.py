"""TLS for the API from certificate files, with certificates made in the test."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest

from fakes import ADMIN, FakeControlPlane, serving
from raftdir.api.client import RaftdirClient, Unreachable
from raftdir.api.server import ssl_context_from_files
from raftdir.testing_tls import TestCA


def make_pki(tmp: Path) -> dict[str, tuple[str, str]]:
    """A CA (self-signed) and, signed by it, a server certificate for 127.0.0.1 and a
    client certificate."""
    ca = TestCA(tmp)
    return {"ca": (ca.cert, ca.key), "server": ca.issue("server", ips=["127.0.0.1"]),
            "client": ca.issue("client", server=False, client=True)}


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, tuple[str, str]]:
    return make_pki(tmp_path)


async def test_the_api_serves_https_from_certificate_files(pki):
    ca_file = pki["ca"][0]
    cp = FakeControlPlane()
    async with serving(cp, ssl_context=ssl_context_from_files(*pki["server"])) as api:
        assert api.url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=ca_file)
        async with RaftdirClient([api.url], ssl=trust, admin_token=ADMIN) as c:
            assert (await c.health())["ok"] is True
            assert (await c.create_token(5, 1))["max_uses"] == 1
        # a client that does not trust the CA is refused
        async with RaftdirClient([api.url], retries=0) as c:
            with pytest.raises(Unreachable, match="(?i)certificate"):
                await c.health()
        # plain HTTP on the TLS port gets nowhere
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientError):
                async with s.get(f"http://127.0.0.1:{api.port}/health") as resp:
                    await resp.read()


async def test_mutual_tls_and_forwarding_over_tls(pki):
    ca_file = pki["ca"][0]
    server_ctx = ssl_context_from_files(*pki["server"], ca=ca_file)
    client_ctx = ssl.create_default_context(cafile=ca_file)
    client_ctx.load_cert_chain(*pki["client"])
    leader_cp = FakeControlPlane(1)
    async with serving(leader_cp, ssl_context=server_ctx) as leader:
        follower_cp = FakeControlPlane(2, leader=False, leader_url=leader.url)
        async with serving(follower_cp, ssl_context=server_ctx,
                           forward_ssl=client_ctx) as follower:
            async with RaftdirClient([follower.url], ssl=client_ctx, admin_token=ADMIN) as c:
                await c.create_token(7, 2)  # forwarded, over TLS, with the client cert
                assert ("create_token", (7, 2)) in leader_cp.calls
                assert c.preferred == follower.url  # forwarded, not redirected
            no_cert = ssl.create_default_context(cafile=ca_file)
            async with RaftdirClient([follower.url], ssl=no_cert, retries=0) as c:
                with pytest.raises(Unreachable):
                    await c.health()
