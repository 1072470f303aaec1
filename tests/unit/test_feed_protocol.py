"""The feed wire over real sockets on 127.0.0.1: handshake, framing, integrity, and what is refused.

The attacking peer is a raw socket that speaks the wire format of ``tfos.feed.protocol``'s
docstring by hand (``RawPeer``), so a test can replay, reorder, tamper with or cut short
frames. Payloads that must never be unpickled are "bombs": unpickling one records it.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import socket
import struct
import threading
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.threads import Background
from tfos.errors import AuthenticationError, FeedError, FeedTimeout
from tfos.feed import protocol as p
from tfos.feed.node_feed import FeedServer

pytestmark = pytest.mark.timeout(30)

SECRET = os.urandom(32)
WRONG_SECRET = os.urandom(32)
#: every endpoint here is this node of this run (both are bound into the handshake)
RUN_ID, NODE = "run-protocol", "worker:0"
BOUND = p.binding(RUN_ID, NODE)

#: set by unpickling a Bomb; a test fails if anything from an unchecked frame was unpickled
DETONATIONS: list[str] = []


def _detonate(tag: str) -> str:
    DETONATIONS.append(tag)
    return tag


class Bomb:
    """Unpickles to a call of ``_detonate``: proof that a payload was decoded."""

    def __init__(self, tag: str):
        self.tag = tag

    def __reduce__(self):
        return (_detonate, (self.tag,))


@pytest.fixture(autouse=True)
def no_detonations():
    DETONATIONS.clear()
    yield
    assert DETONATIONS == [], "a payload was unpickled before (or without) its mac check"




@pytest.fixture
def feed_server():
    """A node's FeedServer on 127.0.0.1 (this run, this node), closed when the test ends."""
    server = FeedServer(socket.create_server(("127.0.0.1", 0)), SECRET, run_id=RUN_ID, node=NODE, buffer_chunks=4)
    yield server
    server.close()


@pytest.fixture
def listener():
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


def accept_channel(listener: socket.socket, secret: bytes = SECRET) -> p.FeedChannel:
    conn, _ = listener.accept()
    try:
        return p.FeedChannel.accept(conn, secret, BOUND, timeout_s=5.0)
    except BaseException:
        conn.close()
        raise


def connected_pair(listener: socket.socket) -> tuple[p.FeedChannel, p.FeedChannel]:
    """(server side, client side) of one authenticated connection."""
    server = Background(accept_channel, listener)
    client = p.FeedChannel.connect(listener.getsockname()[:2], SECRET, BOUND, timeout_s=5.0)
    return server.result(), client


def frame_bytes(key: bytes, seq: int, ftype: int, payload: bytes, size: int | None = None,
                direction: bytes = b"C") -> bytes:
    """One frame as the module docstring specifies it (client to node), built independently of FeedChannel."""
    head = struct.pack(">BI", ftype, len(payload) + 16 if size is None else size)
    nonce = direction + b"\0\0\0" + seq.to_bytes(8, "big")
    return head + AESGCM(key).encrypt(nonce, payload, head)


def derive(secret: bytes, client_nonce: bytes, server_nonce: bytes, run_id: str = RUN_ID,
           node: str = NODE) -> tuple[bytes, bytes, bytes, bytes]:
    """(node proof, feeder proof, node key, feeder key) of a connection to ``node`` of ``run_id``,
    as the module docstring specifies them."""
    okm = HKDF(algorithm=hashes.SHA256(), length=128, salt=client_nonce + server_nonce,
               info=b"tfos-feed v3 proofs and keys\0" + f"{run_id}\0{node}".encode()).derive(secret)
    return okm[:32], okm[32:64], okm[64:96], okm[96:]


class RawPeer:
    """A feeding task that does the handshake by hand and then writes arbitrary bytes."""

    def __init__(self, address, secret: bytes = SECRET):
        self.sock = socket.create_connection(address, timeout=5.0)
        client_nonce = os.urandom(32)
        self.sock.sendall(b"\x03" + client_nonce)
        reply = _read_exactly(self.sock, 65)
        assert reply[0] == 3
        node_proof, feeder_proof, _node_key, self.key = derive(secret, client_nonce, reply[1:33])
        self.node_proved = reply[33:] == node_proof
        self.sock.sendall(feeder_proof)
        self.seq = 0

    def accepted(self) -> bool:
        try:
            return self.sock.recv(1) == b"\x01"
        except ConnectionResetError:
            return False

    def frame(self, ftype: int, payload: bytes = b"") -> bytes:
        """The next correctly signed frame (not sent)."""
        data = frame_bytes(self.key, self.seq, ftype, payload)
        self.seq += 1
        return data

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def hang_up(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def wait_closed_by_peer(self) -> None:
        """Returns once the other side closed the connection (reads until EOF or reset)."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass

    def close(self) -> None:
        self.sock.close()


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "peer closed during the handshake"
        data += chunk
    return data


def raw_peer_and_server(listener) -> tuple[RawPeer, p.FeedChannel]:
    server = Background(accept_channel, listener)
    peer = RawPeer(listener.getsockname()[:2])
    channel = server.result()
    assert peer.accepted()
    return peer, channel


def bomb(tag: str) -> bytes:
    return pickle.dumps([Bomb(tag)])


# ------------------------------------------------------------------ handshake and round trips

FRAMES = [
    (p.OPEN, b'{"kind": "train", "qname": "input", "partition": 3}'),
    (p.CHUNK, p.encode_records([(1, "a", b"\x00\xff"), (2, "b", None)])),
    (p.CHUNK, b""),
    (p.CLOSE, b""),
    (p.ACK, b"{}"),
    (p.RESULTS, p.encode_records(list(range(1000)))),
    (p.ERROR, "näive ✓".encode()),
    (p.END, b""),
    (p.CHUNK, os.urandom(3 * 1024 * 1024)),  # bigger than the reader's 1 MB buffer
]


@pytest.mark.parametrize("direction", ["client to server", "server to client"])
def test_frames_round_trip_in_order_with_their_types_and_payloads(listener, direction, closing):
    server, client = connected_pair(listener)
    sender, receiver = (client, server) if direction == "client to server" else (server, client)
    closing(server, client)
    writer = Background(lambda: [sender.send(t, payload) for t, payload in FRAMES])
    received = [receiver.recv() for _ in FRAMES]
    writer.result()
    assert received == [(t, bytes(payload)) for t, payload in FRAMES]


def test_both_directions_carry_frames_at_once(listener, closing):
    server, client = connected_pair(listener)
    closing(server, client)
    up = Background(lambda: [client.send(p.CHUNK, b"up%d" % i) for i in range(200)])
    down = Background(lambda: [server.send(p.RESULTS, b"down%d" % i) for i in range(200)])
    got_up = [server.recv() for _ in range(200)]
    got_down = [client.recv() for _ in range(200)]
    up.result()
    down.result()
    assert got_up == [(p.CHUNK, b"up%d" % i) for i in range(200)]
    assert got_down == [(p.RESULTS, b"down%d" % i) for i in range(200)]


def test_memoryview_payloads_are_sent_like_bytes(listener, closing):
    server, client = connected_pair(listener)
    closing(server, client)
    client.send(p.CHUNK, memoryview(b"abcdef")[1:4])
    client.send(p.CHUNK, memoryview(b""))
    assert server.recv() == (p.CHUNK, b"bcd")
    assert server.recv() == (p.CHUNK, b"")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.tuples(st.sampled_from(sorted(p.NAMES)), st.binary(max_size=2048)), max_size=20))
def test_any_sequence_of_frames_round_trips(listener, frames):
    server, client = connected_pair(listener)
    try:  # not the closing fixture: it would keep every example's socket open to the test's end
        for ftype, payload in frames:
            client.send(ftype, payload)
        client.close()
        received = []
        while (frame := server.recv()) is not None:
            received.append(frame)
        assert received == frames
    finally:
        server.close()


def test_records_round_trip_through_encode_and_decode():
    records = [(1, 2.5, "x", b"y", None, [1, 2], {"k": (3,)})] * 3
    assert p.decode_records(p.encode_records(records)) == records


def test_clean_end_of_stream_is_none(listener, closing):
    server, client = connected_pair(listener)
    closing(server)
    client.send(p.CLOSE)
    client.close()
    assert server.recv() == (p.CLOSE, b"")
    assert server.recv() is None
    assert server.recv() is None  # and stays at the end


# ------------------------------------------------------------------------- refusals

def test_wrong_secret_is_refused_on_both_sides(listener):
    host, port = listener.getsockname()[:2]
    server = Background(accept_channel, listener)
    with pytest.raises(AuthenticationError) as client_error:
        p.FeedChannel.connect((host, port), WRONG_SECRET, BOUND, timeout_s=5.0)
    with pytest.raises(AuthenticationError) as server_error:
        server.result()
    # the feeding task checks the node's proof first, so it never sends a proof of its own
    assert str(client_error.value) == (f"feed endpoint {host}:{port} could not prove this run's secret for "
                                       f"node {NODE} of run {RUN_ID} (another node or another run answered "
                                       "there); refusing to send it data")
    # so the node sees a hello and a hang-up, never a wrong proof
    assert str(server_error.value) == ("feed connection refused: closed by the peer after its hello, without a "
                                       "proof of the run's secret (as a feeder does when this node's proof is not "
                                       "what it expects: another run's secret, or a connection meant for another "
                                       "node)")


def test_peer_that_never_answers_the_challenge_is_refused(listener, closing):
    peer = socket.create_connection(listener.getsockname()[:2])
    closing(peer)
    conn, _ = listener.accept()
    with pytest.raises(AuthenticationError) as error:
        p.FeedChannel.accept(conn, SECRET, BOUND, timeout_s=0.3)
    assert str(error.value) == "feed connection refused: no handshake within 0.3 s"
    conn.close()


def test_endpoint_that_hangs_up_at_once_is_a_feed_error(listener):
    host, port = listener.getsockname()[:2]

    def hang_up():
        conn, _ = listener.accept()
        conn.close()

    closer = Background(hang_up)
    with pytest.raises(FeedError) as error:
        p.FeedChannel.connect((host, port), SECRET, BOUND, timeout_s=5.0)
    closer.result()
    assert str(error.value) == f"feed endpoint {host}:{port} closed the connection at once"


def assert_dropped_saying(server: FeedServer, caplog, message: str) -> None:
    """The server took nothing from the connection and logged exactly ``message`` about it."""
    assert server.queue("input").queued == 0
    assert server.stats == {}
    assert [r.getMessage() for r in caplog.records] == [message]


def test_feed_server_drops_a_wrong_secret_peer_without_decoding_anything(caplog, feed_server):
    server = feed_server
    with caplog.at_level(logging.WARNING, logger="tfos.feed.node_feed"):
        peer = RawPeer(("127.0.0.1", server.port), secret=WRONG_SECRET)
        peer_port = peer.sock.getsockname()[1]
        # a bold peer ignores the refusal and sends a well-formed stream anyway
        try:
            peer.send_raw(peer.frame(p.OPEN, b'{"kind": "train", "qname": "input"}')
                          + peer.frame(p.CHUNK, bomb("wrong secret")) + peer.frame(p.CLOSE))
        except OSError:
            pass  # the server may already have reset the connection
        assert not peer.accepted()
        peer.wait_closed_by_peer()
        peer.close()
    assert_dropped_saying(server, caplog, f"refused feed connection from ('127.0.0.1', {peer_port}): "
                          "feed connection refused: not signed with this run's secret for this node "
                          "(another run's, or meant for another node)")


@pytest.mark.parametrize("flip_at", ["payload", "tag"])
def test_feed_server_drops_a_tampered_stream_and_says_why(caplog, flip_at, feed_server):
    server = feed_server
    with caplog.at_level(logging.WARNING, logger="tfos.feed.node_feed"):
        peer = RawPeer(("127.0.0.1", server.port))
        peer_port = peer.sock.getsockname()[1]
        assert peer.accepted()
        opening = peer.frame(p.OPEN, b'{"kind": "train", "qname": "input", "partition": 0}')
        chunk = peer.frame(p.CHUNK, bomb("tampered in a live feed"))
        index = 5 if flip_at == "payload" else len(chunk) - 1
        peer.send_raw(opening + _flip(chunk, index))
        peer.wait_closed_by_peer()
        peer.close()
    assert_dropped_saying(server, caplog, f"feed connection from ('127.0.0.1', {peer_port}) failed: "
                          "feed frame failed its integrity check")


# ------------------------------------------------------------------- frame integrity

def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


@pytest.mark.parametrize(
    "where",
    [
        "first payload byte",
        "last payload byte",
        "type byte (to another valid type)",
        "first tag byte",
        "last tag byte",
        "length (the header is authenticated too)",
    ],
)
def test_tampered_frame_fails_its_integrity_check_before_decoding(listener, where, closing):
    peer, channel = raw_peer_and_server(listener)
    closing(peer, channel)
    payload = bomb("tampered")
    good = peer.frame(p.CHUNK, payload)
    head = struct.calcsize(">BI")
    if where.startswith("length"):
        # one byte shorter: still a well-formed header, but not the one that was sealed
        sent = good[:head - 1] + bytes([good[head - 1] - 1]) + good[head:]
    else:
        sent = _flip(good, {
            "first payload byte": head,
            "last payload byte": head + len(payload) - 1,
            "type byte (to another valid type)": 0,  # CHUNK (2) ^ 1 == CLOSE (3)
            "first tag byte": head + len(payload),
            "last tag byte": len(good) - 1,
        }[where])
    peer.send_raw(sent)
    with pytest.raises(AuthenticationError) as error:
        channel.recv()
    assert str(error.value) == "feed frame failed its integrity check"


def test_frame_signed_with_another_connections_key_is_rejected(listener, closing):
    first_peer, first_channel = raw_peer_and_server(listener)
    second_peer, second_channel = raw_peer_and_server(listener)
    closing(first_peer, first_channel, second_peer, second_channel)
    # a frame recorded on one connection is worthless on another (the nonce keys the cipher)
    second_peer.send_raw(first_peer.frame(p.CHUNK, bomb("cross-connection")))
    with pytest.raises(AuthenticationError) as error:
        second_channel.recv()
    assert str(error.value) == "feed frame failed its integrity check"


def test_replayed_frame_is_rejected(listener, closing):
    peer, channel = raw_peer_and_server(listener)
    closing(peer, channel)
    recorded = peer.frame(p.CHUNK, p.encode_records([1, 2, 3]))
    peer.send_raw(recorded)
    assert channel.recv() == (p.CHUNK, p.encode_records([1, 2, 3]))
    peer.send_raw(recorded)  # same bytes again: its sequence number is used up
    with pytest.raises(AuthenticationError) as error:
        channel.recv()
    assert str(error.value) == "feed frame failed its integrity check"


def test_reordered_frames_are_rejected(listener, closing):
    peer, channel = raw_peer_and_server(listener)
    closing(peer, channel)
    first = peer.frame(p.CHUNK, bomb("first"))
    second = peer.frame(p.CHUNK, bomb("second"))
    peer.send_raw(second + first)
    with pytest.raises(AuthenticationError) as error:
        channel.recv()
    assert str(error.value) == "feed frame failed its integrity check"


def test_dropped_frame_makes_the_next_one_fail(listener, closing):
    peer, channel = raw_peer_and_server(listener)
    closing(peer, channel)
    peer.frame(p.CHUNK, b"lost on the way")  # signed, never sent
    peer.send_raw(peer.frame(p.CHUNK, b"next"))
    with pytest.raises(AuthenticationError) as error:
        channel.recv()
    assert str(error.value) == "feed frame failed its integrity check"


# ------------------------------------------------------------------ malformed streams

@pytest.mark.parametrize(
    ("ftype", "size"),
    [
        (p.CHUNK, p.MAX_FRAME_BYTES + p.TAG_BYTES + 1),
        (p.CHUNK, 2**32 - 1),
        (p.CHUNK, p.TAG_BYTES - 1),  # too short to hold its tag
        (0, 10),  # no such frame type
        (99, 10),
    ],
)
def test_malformed_header_is_a_feed_error_without_reading_the_body(listener, ftype, size, closing):
    peer, channel = raw_peer_and_server(listener)
    closing(peer, channel)
    peer.send_raw(struct.pack(">BI", ftype, size))  # no body follows: recv must not wait for one
    with pytest.raises(FeedError) as error:
        channel.recv()
    assert str(error.value) == f"malformed feed frame (type {ftype}, {size} bytes)"


def test_largest_allowed_header_is_not_malformed(listener, closing):
    peer, channel = raw_peer_and_server(listener)
    closing(peer, channel)
    largest = p.MAX_FRAME_BYTES + p.TAG_BYTES
    peer.send_raw(struct.pack(">BI", p.CHUNK, largest) + b"x" * 10)
    peer.hang_up()
    with pytest.raises(FeedError) as error:
        channel.recv()
    assert str(error.value) == f"feed connection ended inside a frame (10 of {largest} bytes)"


@pytest.mark.parametrize(
    ("cut_at", "message"),
    [
        (3, "feed connection ended inside a frame (3 of 5 bytes)"),  # inside the header
        (5, "feed connection ended inside a frame (0 of 116 bytes)"),  # after the header
        (55, "feed connection ended inside a frame (50 of 116 bytes)"),  # inside the payload
        (105, "feed connection ended inside a frame (100 of 116 bytes)"),  # before the tag
        (120, "feed connection ended inside a frame (115 of 116 bytes)"),  # inside the tag
    ],
)
def test_truncated_stream_is_a_feed_error(listener, cut_at, message, closing):
    peer, channel = raw_peer_and_server(listener)
    closing(peer, channel)
    whole = peer.frame(p.CHUNK, b"r" * 100)
    assert len(whole) == 121
    peer.send_raw(whole[:cut_at])
    peer.hang_up()
    with pytest.raises(FeedError) as error:
        channel.recv()
    assert str(error.value) == message


def test_a_whole_frame_then_a_cut_one_delivers_only_the_whole_one(listener, closing):
    peer, channel = raw_peer_and_server(listener)
    closing(peer, channel)
    cut = bomb("cut")
    peer.send_raw(peer.frame(p.CHUNK, b"whole") + peer.frame(p.CHUNK, cut)[:-1])
    peer.hang_up()
    assert channel.recv() == (p.CHUNK, b"whole")
    with pytest.raises(FeedError) as error:
        channel.recv()
    sealed = len(cut) + p.TAG_BYTES
    assert str(error.value) == f"feed connection ended inside a frame ({sealed - 1} of {sealed} bytes)"


@pytest.mark.timeout(30)
def test_a_frame_bounced_back_to_its_sender_is_rejected(listener, closing):
    server, client = connected_pair(listener)
    closing(server, client)
    # the client's own frame, read raw off the node's socket and sent straight back
    client.send(p.CHUNK, b"bounced")
    server.sock.sendall(_read_exactly(server.sock, 5 + len(b"bounced") + p.TAG_BYTES))
    with pytest.raises(p.AuthenticationError, match="integrity"):
        client.recv()


def test_pickles_payload_round_trips_and_malformed_ones_are_refused_by_name():
    payload = p.encode_pickles([pickle.dumps([1, 2]), pickle.dumps([]), pickle.dumps(["x"])])
    assert p.decode_pickles(payload) == [1, 2, "x"]
    assert p.decode_pickles(b"") == []
    with pytest.raises(FeedError, match="a length is cut short"):
        p.decode_pickles(payload + b"\0\0")
    with pytest.raises(FeedError, match="overruns the frame"):
        p.decode_pickles(payload[:-1])
    with pytest.raises(FeedError, match="holds a dict, not a list"):
        p.decode_pickles(p.encode_pickles([pickle.dumps({"a": 1})]))


# ------------------------------------------------------- malformed control frames (signed)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
CONTROL_PAYLOADS = (
    JSON_VALUES.map(lambda v: json.dumps(v).encode())
    | st.fixed_dictionaries({}, optional={
        "kind": st.sampled_from(["train", "inference", "control", "other"]) | JSON_VALUES,
        "qname": st.just("input") | JSON_VALUES,
        "partition": JSON_VALUES, "feed_timeout": JSON_VALUES, "epoch": JSON_VALUES,
        "expected": JSON_VALUES, "schema": JSON_VALUES,
    }).map(lambda d: json.dumps(d).encode())
    | st.binary(max_size=64)
    | st.sampled_from([b"[" * 100_000, b'{"a":' * 50_000, b"\xff\xfe", b"1e99999"])
)


@pytest.fixture(scope="module")
def fuzzed_server():
    """A node whose feed has ended: every well-formed data session ends at once (an inference
    session on a live node rightly waits for main_fun's answers), while OPEN and the control
    frames are still parsed and checked in full."""
    server = FeedServer(socket.create_server(("127.0.0.1", 0)), SECRET, run_id=RUN_ID, node=NODE, buffer_chunks=4)
    server.terminate()
    yield server
    server.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(opening=CONTROL_PAYLOADS,
       then=st.lists(st.tuples(st.sampled_from([p.OPEN, p.END, p.CLOSE, p.CHUNK]), CONTROL_PAYLOADS), max_size=3))
def test_signed_but_malformed_control_frames_end_the_connection_with_a_feed_error_only(fuzzed_server, opening, then):
    errors: list = []
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    handler = _Records()
    logging.getLogger("tfos.feed.node_feed").addHandler(handler)
    try:
        peer = RawPeer(("127.0.0.1", fuzzed_server.port))
        assert peer.accepted()
        try:
            peer.send_raw(peer.frame(p.OPEN, opening) + b"".join(peer.frame(t, payload) for t, payload in then))
            peer.hang_up()
            peer.wait_closed_by_peer()
        except OSError:
            pass  # the node may reset a connection it refused
        peer.close()
        wait_for(lambda: fuzzed_server._connections == 0, "the connection thread to end")
    finally:
        threading.excepthook = previous_hook
        logging.getLogger("tfos.feed.node_feed").removeHandler(handler)
    assert errors == []
    # a refusal is a one-line warning naming the frame; never a crash with a traceback
    assert [r for r in handler.records if r.levelno > logging.WARNING or r.exc_info] == []


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def wait_for(predicate, what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"waited {timeout_s} s for {what}"
        time.sleep(0.005)


def test_deeply_nested_open_is_refused_by_name(caplog, feed_server):
    server = feed_server
    with caplog.at_level(logging.WARNING, logger="tfos.feed.node_feed"):
        for payload, why in [(b"[" * 100_000, "not JSON (RecursionError)"),
                             (b"[1, 2]", "a JSON list, not an object")]:
            peer = RawPeer(("127.0.0.1", server.port))
            assert peer.accepted()
            peer.send_raw(peer.frame(p.OPEN, payload))
            peer.wait_closed_by_peer()
            peer.close()
            wait_for(lambda why=why: any(why in r.getMessage() for r in caplog.records), why)
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        "malformed OPEN frame: not JSON (RecursionError)",
        "malformed OPEN frame: a JSON list, not an object",
    ]


def test_an_endpoint_that_never_answers_the_handshake_is_a_feed_timeout(listener):
    host, port = listener.getsockname()[:2]  # accepted by the kernel's backlog, never served
    with pytest.raises(FeedTimeout) as error:
        p.FeedChannel.connect((host, port), SECRET, BOUND, timeout_s=0.3)
    assert str(error.value) == f"feed endpoint {host}:{port} did not answer the handshake within 0.3 s"
