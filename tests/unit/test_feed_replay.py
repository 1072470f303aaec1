"""Recorded feed sessions replayed at a feeding task or a node: each replay must fail.

A ``RecordingProxy`` sits between the real feeding side and a real ``FeedServer`` on
127.0.0.1 and keeps every byte of one session each way: what an eavesdropper on the
cluster network would have. The attacker then accepts a later connection from a feeding
task (a spoofed node address) and plays the node's recorded bytes back, or plays the
feeder's recorded bytes at the node. Without the secret, none of that may deliver a
partition, answer an inference, or make the feeding task encrypt anything.
"""

from __future__ import annotations

import logging
import socket
import threading

import pytest

from tests.unit.test_node_feed import RUN_ID, SECRET, make_server, meta, serve_inference, target  # noqa: F401
from tests.unit.threads import Background
from tfos.errors import AuthenticationError
from tfos.feed import protocol as p
from tfos.feed.client import ControlChannel, FeedTarget, feed_partition, infer_partition
from tfos.feed.node_feed import DataFeed

pytestmark = pytest.mark.timeout(30)


class RecordingProxy:
    """Forwards connections to ``upstream`` and records, per connection, the bytes each way."""

    def __init__(self, upstream: tuple[str, int]):
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.sessions: list[dict[str, bytearray]] = []
        self._pumps: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def target(self) -> FeedTarget:
        return self.target_for("worker:0")

    def target_for(self, node: str, run_id: str = RUN_ID) -> FeedTarget:
        """The proxy's address under the name of ``node`` of ``run_id``: what a feeding task dials."""
        return FeedTarget(node, "127.0.0.1", self._listener.getsockname()[1], "0", run_id)

    def _accept(self) -> None:
        while True:
            try:
                feeder, _ = self._listener.accept()
            except OSError:
                return
            node = socket.create_connection(self._upstream)
            session = {"to_node": bytearray(), "to_feeder": bytearray()}
            self.sessions.append(session)
            for src, dst, record in ((feeder, node, session["to_node"]), (node, feeder, session["to_feeder"])):
                pump = threading.Thread(target=_pump, args=(src, dst, record), daemon=True)
                pump.start()
                self._pumps.append(pump)

    def finished(self) -> list[dict[str, bytes]]:
        """The sessions, once every connection has closed both ways."""
        self._listener.close()
        for pump in self._pumps:
            pump.join(10)
            assert not pump.is_alive(), "a proxied connection stayed open"
        return [{k: bytes(v) for k, v in s.items()} for s in self.sessions]


def _pump(src: socket.socket, dst: socket.socket, record: bytearray) -> None:
    try:
        while data := src.recv(65536):
            record += data
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ReplayingNode:
    """A fake node: reads a feeding task's hello, sends a recorded node transcript, and
    keeps whatever the feeding task sends after its hello."""

    def __init__(self, transcript: bytes):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._job = Background(self._serve, transcript)

    @property
    def target(self) -> FeedTarget:
        return FeedTarget("worker:0", "127.0.0.1", self._listener.getsockname()[1], "0", RUN_ID)

    def _serve(self, transcript: bytes) -> bytes:
        conn, _ = self._listener.accept()
        conn.settimeout(5)
        try:
            hello = conn.recv(33)
            assert len(hello) == 33 and hello[0] == p.VERSION
            conn.sendall(transcript)
            after = bytearray()
            try:
                while data := conn.recv(65536):
                    after += data
            except (ConnectionResetError, TimeoutError):
                pass
            return bytes(after)
        finally:
            conn.close()
            self._listener.close()

    def bytes_after_hello(self) -> bytes:
        return self._job.result()


def record_training_session(make_server) -> bytes:  # noqa: F811
    """The node's side of one real session that delivered partition 0 (records 0..49)."""
    server = make_server(epoch_records=50)
    proxy = RecordingProxy(("127.0.0.1", server.port))
    assert feed_partition(range(50), 50, [proxy.target], SECRET, meta(), feed_timeout=10) == 50
    (session,) = proxy.finished()
    assert server.stats["records"] == 50
    return session


def test_a_replayed_node_transcript_neither_reports_a_partition_delivered_nor_makes_the_feeder_encrypt(
        make_server):  # noqa: F811
    recorded = record_training_session(make_server)
    # the node's handshake, CREDITs and its final ACK "50 records received", all recorded
    fake = ReplayingNode(recorded["to_feeder"])
    with pytest.raises(AuthenticationError) as error:
        feed_partition(range(50, 100), 50, [fake.target], SECRET, meta(), feed_timeout=10)
    assert "could not prove this run's secret" in str(error.value)
    # not a byte after its hello: no proof to relay, no ciphertext to set against the old one
    assert fake.bytes_after_hello() == b""


def test_a_replayed_inference_session_returns_no_old_results(make_server):  # noqa: F811
    server = make_server()
    consumer = Background(serve_inference, DataFeed(server, train_mode=False, feed_timeout=10), 4)
    proxy = RecordingProxy(("127.0.0.1", server.port))
    assert list(infer_partition(range(10), proxy.target, SECRET, meta(), feed_timeout=10)) == [
        r * 10 for r in range(10)]
    (session,) = proxy.finished()
    fake = ReplayingNode(session["to_feeder"])
    with pytest.raises(AuthenticationError) as error:
        list(infer_partition(range(100, 110), fake.target, SECRET, meta(partition=1), feed_timeout=10))
    assert "could not prove this run's secret" in str(error.value)
    assert fake.bytes_after_hello() == b""
    control = ControlChannel(target(server), SECRET, "input", feed_timeout=10)
    control.end()
    control.close()
    assert sum(consumer.result()) == 10  # the node saw the real partition only


def test_a_replayed_feeder_transcript_is_refused_by_the_node_and_queues_nothing(make_server, caplog):  # noqa: F811
    recorded = record_training_session(make_server)
    server = make_server(epoch_records=50)
    with caplog.at_level(logging.WARNING, logger="tfos.feed.node_feed"):
        attacker = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        attacker.sendall(recorded["to_node"])  # the old hello, proof and frames in one go
        reply = attacker.recv(65)
        try:
            while attacker.recv(65536):
                pass  # the node must close on us
        except ConnectionResetError:
            pass
        attacker.close()
    assert len(reply) == 65 and reply[0] == p.VERSION  # the node proved itself to a fresh nonce
    assert server.queue("input").queued == 0
    assert server.stats == {}
    assert any("not signed with this run's secret" in r.getMessage() for r in caplog.records)


def test_two_sessions_with_the_same_records_share_no_keystream(make_server):  # noqa: F811
    server = make_server(epoch_records=100)
    proxy = RecordingProxy(("127.0.0.1", server.port))
    for _ in range(2):
        assert feed_partition([b"\0" * 4000] * 50, 50, [proxy.target], SECRET, meta(), feed_timeout=10) == 50
    first, second = proxy.finished()
    # past the hellos, the same plaintext at the same place: a reused keystream would repeat it
    a, b = first["to_node"][33 + 32:], second["to_node"][33 + 32:]
    assert len(a) == len(b) > 4000
    same = sum(x == y for x, y in zip(a, b, strict=True))
    assert same < len(a) // 50, f"{same} of {len(a)} ciphertext bytes equal: keystream reused?"


# ------------------------------------------------------------- misrouted connections


def test_a_connection_relayed_to_another_node_fails_its_handshake_and_delivers_nothing(make_server, caplog):  # noqa: F811
    # a relay on the network (or a stale address) takes connections meant for worker:1 to
    # worker:0, a node of the same run with the same secret
    meant = make_server(epoch_records=5, node="worker:1")
    other = make_server(epoch_records=5, node="worker:0")
    relay = RecordingProxy(("127.0.0.1", other.port))
    with caplog.at_level(logging.WARNING, logger="tfos.feed.node_feed"):
        # the driver's control connection with worker:1's epoch plan
        with pytest.raises(AuthenticationError) as error:
            ControlChannel(relay.target_for("worker:1"), SECRET, "input", feed_timeout=10)
        assert "could not prove this run's secret for node worker:1 of run run-feed-test" in str(error.value)
        # a feeding task's partition for worker:1
        with pytest.raises(AuthenticationError):
            feed_partition(range(5), 5, [relay.target_for("worker:1")], SECRET, meta(), feed_timeout=10)
        # worker:0 of another run at the address (a port the next run reused)
        with pytest.raises(AuthenticationError):
            feed_partition(range(5), 5, [relay.target_for("worker:0", run_id="run-earlier")], SECRET, meta(),
                           feed_timeout=10)
        wait_refusals = [r for r in caplog.records if "meant for another node" in r.getMessage()]
    assert other.queue("input").queued == 0 and other.stats == {}  # nothing reached worker:0
    assert meant.stats == {}
    assert len(wait_refusals) >= 1, [r.getMessage() for r in caplog.records]
    # the same relay, dialled for the node that is behind it, is transparent
    assert feed_partition(range(5), 5, [relay.target_for("worker:0")], SECRET, meta(), feed_timeout=10) == 5
    assert other.stats["records"] == 5
    relay.finished()
