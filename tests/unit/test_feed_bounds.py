"""What peers without the secret can cost a node's feed endpoint: bounded threads, bounded
log lines, a bounded time per handshake, and feeding tasks still get through.

Real sockets on 127.0.0.1 against a real ``FeedServer``; the legitimate traffic is the real
feeding side (``feed_partition``) and the TF process's ``DataFeed``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from tests.unit.test_feed_replay import _pump
from tests.unit.test_node_feed import RUN_ID, SECRET, make_server, meta, target  # noqa: F401
from tests.unit.threads import Background
from tfos.feed import node_feed
from tfos.feed import protocol as p
from tfos.feed.client import FeedTarget, feed_partition
from tfos.feed.node_feed import DataFeed

pytestmark = pytest.mark.timeout(60)

FLOOD = 150  # idle connections, and as many dripping ones


def feed_threads() -> int:
    return sum(t.name == "tfos-feed-conn" for t in threading.enumerate())


def drip(socks: list[socket.socket], stop: threading.Event, every_s: float = 0.2) -> None:
    """One byte to each socket every ``every_s``: a handshake that never completes."""
    while not stop.wait(every_s):
        for sock in socks:
            try:
                sock.send(bytes([p.VERSION]))  # this version's hello, a byte at a time
            except OSError:
                pass


def test_idle_and_dripping_floods_hold_bounded_threads_and_log_lines_and_a_feed_still_trains(
        make_server, caplog):  # noqa: F811
    server = make_server(epoch_records=30)
    address = ("127.0.0.1", server.port)
    baseline = feed_threads()
    stop = threading.Event()
    idle: list[socket.socket] = []
    dripping: list[socket.socket] = []
    with caplog.at_level(logging.WARNING, logger="tfos.feed.node_feed"):
        try:
            for _ in range(FLOOD):
                idle.append(socket.create_connection(address))
                dripping.append(socket.create_connection(address))
            dripper = threading.Thread(target=drip, args=(dripping, stop), daemon=True)
            dripper.start()
            time.sleep(0.5)
            held = feed_threads() - baseline
            assert held <= node_feed.MAX_HANDSHAKES, f"{held} connection threads for {2 * FLOOD} peers"
            # the node still takes a real partition while the flood holds its sockets open
            feed = DataFeed(server, feed_timeout=10)
            reader = Background(lambda: [feed.next_batch(10) for _ in range(3)])
            assert feed_partition(range(30), 30, [target(server)], SECRET, meta(), feed_timeout=10) == 30
            assert sum(reader.result(), []) == list(range(30))
        finally:
            stop.set()
            for sock in idle + dripping:
                sock.close()
    refusals = [r for r in caplog.records if "refused feed connection" in r.getMessage()]
    # 300 refused peers: the first in full, the rest counted into at most a couple of lines
    assert 1 <= len(refusals) <= 3, [r.getMessage() for r in refusals]


def test_a_dripping_peer_is_dropped_at_the_total_handshake_deadline_not_per_byte(make_server, monkeypatch):  # noqa: F811
    monkeypatch.setattr(p, "HANDSHAKE_S", 0.5)
    server = make_server()
    sock = socket.create_connection(("127.0.0.1", server.port))
    stop = threading.Event()
    started = time.monotonic()
    dripper = threading.Thread(target=drip, args=([sock], stop, 0.05), daemon=True)
    dripper.start()
    try:
        sock.settimeout(10)
        try:
            while sock.recv(1024):
                pass
        except ConnectionResetError:
            pass
        took = time.monotonic() - started
    finally:
        stop.set()
        sock.close()
    # 33 bytes at one per 50 ms would take 1.65 s; the node ends it at its 0.5 s deadline
    assert took < 1.5, f"a dripping peer held its handshake for {took:.2f} s"


def test_stopping_a_connection_whose_credit_send_is_stuck_ends_in_bounded_time(monkeypatch):
    from tfos.feed.buffer import FeedBuffer

    monkeypatch.setattr(node_feed, "STOP_S", 0.5)
    ours, peer = socket.socketpair()
    sending = threading.Event()

    class StuckChannel:
        """A connection whose peer stopped reading: the credit send blocks in the kernel."""

        sock = ours

        def send_json(self, ftype, obj):
            sending.set()
            while True:
                ours.sendall(b"\0" * (1 << 20))

    try:
        granter = node_feed._Granter(StuckChannel(), FeedBuffer(4))  # a fresh buffer: a "capped" CREDIT at once
        assert sending.wait(10)
        time.sleep(0.2)  # into the blocking send, holding the granter's lock
        started = time.monotonic()
        granter.stop()
        assert time.monotonic() - started < 3
    finally:
        peer.close()
        ours.close()


@pytest.mark.parametrize(("peer_does", "said"), [
    ("closes before its hello", "closed by the peer before its hello"),
    ("sends its hello and goes silent", "no proof of the run's secret within 0.5 s of its hello"),
    ("sends its hello and hangs up", "closed by the peer after its hello, without a proof of the run's secret (as a "
                                     "feeder does when this node's proof is not what it expects: another run's "
                                     "secret, or a connection meant for another node)"),
])
def test_a_refused_handshake_says_what_the_peer_did(make_server, caplog, monkeypatch, peer_does, said):  # noqa: F811
    monkeypatch.setattr(p, "HANDSHAKE_S", 0.5)
    server = make_server()
    with caplog.at_level(logging.WARNING, logger="tfos.feed.node_feed"):
        sock = socket.create_connection(("127.0.0.1", server.port))
        if peer_does != "closes before its hello":
            sock.sendall(bytes([p.VERSION]) + b"\1" * 32)
            sock.recv(65)  # the node's nonce and proof
        if peer_does != "sends its hello and goes silent":
            sock.close()
        deadline = time.monotonic() + 10
        while not any("refused feed connection" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "no refusal logged"
            time.sleep(0.02)
        sock.close()
    (line,) = [r.getMessage() for r in caplog.records if "refused feed connection" in r.getMessage()]
    assert line.endswith(f": feed connection refused: {said}"), line


def test_a_handshake_pushed_out_by_newer_ones_is_logged_as_such(make_server, caplog):  # noqa: F811
    server = make_server()
    address = ("127.0.0.1", server.port)
    with caplog.at_level(logging.WARNING, logger="tfos.feed.node_feed"):
        first = socket.create_connection(address)
        time.sleep(0.2)  # the oldest handshake
        crowd = [socket.create_connection(address) for _ in range(node_feed.MAX_HANDSHAKES)]
        try:
            first.settimeout(10)
            assert first.recv(1) == b""  # pushed out: the node hung up on it
            deadline = time.monotonic() + 10
            while not caplog.records:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        finally:
            for sock in [first, *crowd]:
                sock.close()
    assert caplog.records[0].getMessage().endswith(
        f"dropped mid-handshake to make room: {node_feed.MAX_HANDSHAKES} newer connections were handshaking "
        "at once (a flood of connections?)"), caplog.records[0].getMessage()


def test_a_feeder_whose_handshakes_are_cut_by_a_busy_node_tries_again_within_its_feed_timeout(make_server):  # noqa: F811
    # the node hangs up on the first connections as it does on handshakes a flood pushed out
    server = make_server(epoch_records=20)
    listener = socket.create_server(("127.0.0.1", 0))
    cut = []

    def busy_then_forward():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if len(cut) < 3:
                cut.append(conn)
                conn.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", server.port))
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pump, args=(src, dst, bytearray()), daemon=True).start()

    threading.Thread(target=busy_then_forward, daemon=True).start()
    try:
        busy = FeedTarget("worker:0", "127.0.0.1", listener.getsockname()[1], "0", RUN_ID)
        feed = DataFeed(server, feed_timeout=10)
        reader = Background(lambda: [feed.next_batch(10) for _ in range(2)])
        assert feed_partition(range(20), 20, [busy], SECRET, meta(), feed_timeout=10) == 20
        assert sum(reader.result(), []) == list(range(20))
        assert len(cut) == 3
    finally:
        listener.close()

