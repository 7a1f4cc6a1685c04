"""PySyncObj's read timeout, as raftdir patches it (pysyncobj.md finding 5): a link idle
both ways survives the first send after the idle spell (the RequestVote of a failover), and
a peer that stops answering while we keep sending is still disconnected after the
timeout (a dead connection is noticed and its write buffer does not grow for ever)."""

from __future__ import annotations

import socket
import time

import pytest
from pysyncobj.poller import createPoller
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection

from raftdir.replication.pysyncobj_node import spare_idle_links_from_the_read_timeout

TIMEOUT = 0.5


@pytest.fixture
def link():
    """(poller, connect(on_message) -> client TcpConnection, accepted raw socket)."""
    spare_idle_links_from_the_read_timeout()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    poller = createPoller("auto")
    opened = [srv]

    def connect(disconnected: list[float]):
        client = TcpConnection(poller, onDisconnected=lambda: disconnected.append(
            time.monotonic()), timeout=TIMEOUT)
        client.connect("127.0.0.1", srv.getsockname()[1])
        peer, _ = srv.accept()
        opened.append(peer)
        deadline = time.monotonic() + 2
        while client.state == CONNECTION_STATE.CONNECTING and time.monotonic() < deadline:
            poller.poll(0.01)
        assert client.state == CONNECTION_STATE.CONNECTED
        return client, peer

    yield poller, connect
    for s in opened:
        s.close()


def spin(poller, seconds: float, each=None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        poller.poll(0.02)
        if each is not None and not each():
            return


def test_a_silent_peer_is_still_disconnected_while_we_send(link):
    poller, connect = link
    disconnected: list[float] = []
    client, _silent = connect(disconnected)  # accepts, never reads, never answers
    start = time.monotonic()

    def send():
        if client.state == CONNECTION_STATE.DISCONNECTED:
            return False
        client.send({"entries": [b"x" * 2000]})
        return True

    spin(poller, 4 * TIMEOUT + 2, send)
    assert disconnected, "a peer that never answers was never disconnected"
    assert TIMEOUT * 0.9 <= disconnected[0] - start <= 2 * TIMEOUT + 1


def test_a_link_idle_both_ways_survives_the_next_send(link):
    poller, connect = link
    disconnected: list[float] = []
    client, peer_socket = connect(disconnected)
    received: list = []
    peer_gone: list[float] = []
    peer_socket.setblocking(False)   # as PySyncObj's server hands accepted sockets over
    peer = TcpConnection(poller, socket=peer_socket, timeout=TIMEOUT,
                         onMessageReceived=received.append,
                         onDisconnected=lambda: peer_gone.append(time.monotonic()))
    spin(poller, 2 * TIMEOUT)  # followers that never talk to each other
    client.send({"request_vote": 1})
    spin(poller, 2, lambda: not received)
    # neither the sending side nor the receiving side took the idle link for a dead one
    assert received == [{"request_vote": 1}]
    assert not disconnected and not peer_gone
    assert client.state == peer.state == CONNECTION_STATE.CONNECTED
