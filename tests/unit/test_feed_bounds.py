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

from tests.unit.test_node_feed import SECRET, make_server, meta, target  # noqa: F401
from tests.unit.threads import Background
from tfos.feed import node_feed
from tfos.feed import protocol as p
from tfos.feed.client import feed_partition
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
