"""The feed wire: an encrypted, mutually authenticated, framed byte stream from a feeding task to a TF node.

Handshake (version 3), modelled on Spark's ``AuthEngine``: both sides contribute fresh
randomness and both prove they hold the run's secret before any frame moves, for one node
of one run.

1. feeding task -> node: ``version (1 byte) | client nonce Nc (32 bytes)``
2. node -> feeding task: ``version | server nonce Ns (32) | node proof (32)``
3. feeding task -> node: ``feeder proof (32)``, sent only once the node's proof checked out
4. node -> feeding task: ``0x01`` once the feeder's proof checked out

Every value comes from one HKDF-SHA256 with the secret as input key material, ``Nc | Ns``
as salt, and the connection's target in its info (``proof_and_keys``; :func:`binding`: the
run id and the node's name, ``worker:1``, which the node knows of itself and the feeding side
of the node it dialled): its 128 bytes are the node's proof, the feeder's proof, and one
AES-256-GCM key per direction. So a connection that reaches another node than the one it
was meant for (a relay, a stale address, a port reused by the next run) fails the
handshake on both sides, instead of delivering one node's epoch plan or partition to
another. Since each side's nonce is fresh, a recorded handshake or session is
worthless later: its proofs do not answer the new nonces, and the keys are new, so no
keystream is ever used twice. A node that speaks another version gets its version byte
back and the connection closes, so a mismatch says so instead of failing as a bad secret.

Frames: ``type (1 byte) | length (4 bytes) | sealed payload (length bytes, its last 16 the
GCM tag)``. The GCM nonce is a running sequence number per direction and the header is
authenticated data, so a frame cannot be altered, replayed, reordered or bounced back to
its sender (the directions have different keys). Payloads are parsed (and record chunks
unpickled) only after they open, so nothing from an unauthenticated peer is ever unpickled.

Before authentication a node reads at most 33 bytes, computes one HKDF, and gives the
whole handshake ``HANDSHAKE_S`` seconds in total (not per read: a peer dripping bytes
cannot hold it longer).

Why AES-GCM rather than an HMAC per frame: the records are encrypted too, and with
AES-NI sealing plus opening costs less CPU than hashing the payload twice did.
"""

from __future__ import annotations

import hmac
import json
import os
import pickle
import socket
import struct
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tfos.deadline import Deadline
from tfos.errors import FeedAuthenticationError as AuthenticationError
from tfos.errors import FeedError, FeedTimeout

#: the handshake's version byte; both ends must speak the same one (3: the target is bound in)
VERSION = 3
NONCE_BYTES = 32
#: a proof of the secret (an HKDF output over both nonces)
MAC_BYTES = 32
#: the GCM tag that ends every sealed payload
TAG_BYTES = 16
#: seconds a node gives the whole handshake, however slowly its bytes arrive
HANDSHAKE_S = 10.0
_HELLO = struct.Struct(f">B{NONCE_BYTES}s")  # version, client nonce
_REPLY = struct.Struct(f">B{NONCE_BYTES}s{MAC_BYTES}s")  # version, server nonce, node proof
_ACCEPTED = b"\x01"
_HEAD = struct.Struct(">BI")
_GCM_NONCE = struct.Struct(">c3xQ")  # direction, padding, sequence number: 12 bytes
#: largest frame accepted (a chunk of records), bytes
MAX_FRAME_BYTES = 64 * 1024 * 1024

# frame types; CHUNK carries pickled records (RDDs), ARROW one Arrow record batch (DataFrames),
# PICKLES several of pyspark's own pickled batches of records, forwarded as Spark stored them;
# CREDIT (node to feeding task) grants room for one chunk of at most N records (buffer.py)
OPEN, CHUNK, CLOSE, ACK, RESULTS, ERROR, END, ARROW, PICKLES, CREDIT = range(1, 11)
NAMES = {OPEN: "OPEN", CHUNK: "CHUNK", CLOSE: "CLOSE", ACK: "ACK", RESULTS: "RESULTS", ERROR: "ERROR",
         END: "END", ARROW: "ARROW", PICKLES: "PICKLES", CREDIT: "CREDIT"}
_BLOB_LENGTH = struct.Struct(">I")
#: frames smaller than this go out in one write
_COALESCE_BYTES = 64 * 1024


class FeedChannel:
    """One authenticated connection; ``send``/``recv`` whole frames. Not thread-safe per direction."""

    def __init__(self, sock: socket.socket, send_key: bytes, recv_key: bytes, is_server: bool):
        self.sock = sock
        self._seal = AESGCM(send_key)
        self._open = AESGCM(recv_key)
        # separate keys already keep the directions apart; the direction byte in the GCM
        # nonce says it a second time, at no cost
        self._out, self._in = (b"S", b"C") if is_server else (b"C", b"S")
        self._send_seq = 0
        self._recv_seq = 0
        self._file = sock.makefile("rb", buffering=1 << 20)
        # small frames (CREDIT, ACK) must leave at once: under Nagle's algorithm a frame's second
        # write waits for the peer's delayed ACK (40 ms), once per credit
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -------------------------------------------------------------- handshake

    @classmethod
    def accept(cls, sock: socket.socket, secret: bytes, bound_to: bytes, timeout_s: float = HANDSHAKE_S) -> FeedChannel:
        """Node side: prove the secret to the peer, check its proof, both for this node
        (``bound_to``: :func:`binding`); raises AuthenticationError (or FeedError for another
        protocol version) within ``timeout_s`` in total."""
        deadline = Deadline(timeout_s, "a feed handshake")
        hello = _recv_exact(sock, _HELLO.size, deadline)
        if hello is None:
            if deadline.expired():
                raise AuthenticationError(f"feed connection refused: no handshake within {timeout_s:g} s")
            raise AuthenticationError("feed connection refused: closed by the peer before its hello")
        version, client_nonce = _HELLO.unpack(hello)
        if version != VERSION:
            _send_quietly(sock, bytes([VERSION]))
            raise FeedError(f"feed connection refused: it speaks feed protocol version {version}, this node "
                            f"{VERSION} (the feeding side runs another tfos version)")
        server_nonce = os.urandom(NONCE_BYTES)
        derived = proof_and_keys(secret, client_nonce, server_nonce, bound_to)
        sock.settimeout(deadline.remaining())
        sock.sendall(_REPLY.pack(VERSION, server_nonce, derived.node_proof))
        answer = _recv_exact(sock, MAC_BYTES, deadline)
        if answer is None:
            # a hello, then silence or a hang-up: no proof was offered, so none was wrong
            if deadline.expired():
                raise AuthenticationError(f"feed connection refused: no proof of the run's secret within "
                                          f"{timeout_s:g} s of its hello")
            raise AuthenticationError("feed connection refused: closed by the peer after its hello, "
                                      "without a proof of the run's secret (as a feeder does when this node's "
                                      "proof is not what it expects: another run's secret, or a connection "
                                      "meant for another node)")
        if not hmac.compare_digest(answer, derived.feeder_proof):
            raise AuthenticationError("feed connection refused: not signed with this run's secret for this node "
                                      "(another run's, or meant for another node)")
        sock.sendall(_ACCEPTED)
        sock.settimeout(None)
        return cls(sock, derived.node_key, derived.feeder_key, is_server=True)

    @classmethod
    def connect(cls, address: tuple[str, int], secret: bytes, bound_to: bytes, timeout_s: float = 30.0) -> FeedChannel:
        """Feeding side: connect, check that the node proves the secret for ``bound_to`` (the
        node it means: :func:`binding`), then prove it too."""
        where = f"{address[0]}:{address[1]}"
        sock = socket.create_connection(address, timeout=timeout_s)
        try:
            client_nonce = os.urandom(NONCE_BYTES)
            sock.sendall(_HELLO.pack(VERSION, client_nonce))
            deadline = Deadline(timeout_s, "a feed handshake")
            reply = _recv_exact(sock, _REPLY.size, deadline, allow_short=True)
            if not reply:
                if deadline.expired():  # a stuck node, not a closed one
                    raise FeedTimeout(f"feed endpoint {where} did not answer the handshake within {timeout_s:g} s")
                raise HandshakeCut(f"feed endpoint {where} closed the connection at once")
            if reply[0] != VERSION:
                raise FeedError(f"feed endpoint {where} speaks feed protocol version {reply[0]}, this task "
                                f"{VERSION}: the driver and the executors run different tfos versions")
            if len(reply) < _REPLY.size:
                raise HandshakeCut(f"feed endpoint {where} ended the handshake early "
                                   f"({len(reply)} of {_REPLY.size} bytes)")
            _, server_nonce, node_proof = _REPLY.unpack(reply)
            derived = proof_and_keys(secret, client_nonce, server_nonce, bound_to)
            if not hmac.compare_digest(node_proof, derived.node_proof):
                # not this node of this run (another node, another run, a replay): send it nothing
                raise AuthenticationError(f"feed endpoint {where} could not prove this run's secret for "
                                          f"{_describe(bound_to)} (another node or another run answered there); "
                                          f"refusing to send it data")
            sock.sendall(derived.feeder_proof)
            if _recv_exact(sock, 1, deadline) != _ACCEPTED:
                raise AuthenticationError(f"feed endpoint {where} refused this run's secret")
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        return cls(sock, derived.feeder_key, derived.node_key, is_server=False)

    # ----------------------------------------------------------------- frames

    def send(self, ftype: int, payload: bytes | memoryview = b"") -> None:
        if isinstance(payload, memoryview) and payload.format != "B":
            payload = payload.cast("B")  # AESGCM takes unsigned bytes only (Arrow's views are signed)
        if len(payload) > MAX_FRAME_BYTES:  # the peer would refuse it as malformed, and say less
            raise FeedError(f"a {NAMES.get(ftype, ftype)} frame of {len(payload):,} bytes is over the feed's "
                            f"limit of {MAX_FRAME_BYTES:,}")
        head = _HEAD.pack(ftype, len(payload) + TAG_BYTES)
        sealed = self._seal.encrypt(_GCM_NONCE.pack(self._out, self._send_seq), payload, head)
        self._send_seq += 1
        if len(sealed) < _COALESCE_BYTES:  # one segment; a big frame is not worth the copy
            self.sock.sendall(head + sealed)
        else:
            self.sock.sendall(head)
            self.sock.sendall(sealed)

    def recv(self) -> tuple[int, bytes] | None:
        """The next (type, payload), or ``None`` at a clean end of stream."""
        head = self._read(_HEAD.size, allow_eof=True)
        if head is None:
            return None
        ftype, size = _HEAD.unpack(head)
        if not TAG_BYTES <= size <= MAX_FRAME_BYTES + TAG_BYTES or ftype not in NAMES:
            raise FeedError(f"malformed feed frame (type {ftype}, {size} bytes)")
        sealed = self._read(size)
        try:
            payload = self._open.decrypt(_GCM_NONCE.pack(self._in, self._recv_seq), sealed, head)
        except InvalidTag:
            raise AuthenticationError("feed frame failed its integrity check") from None
        self._recv_seq += 1
        return ftype, payload

    def send_json(self, ftype: int, obj) -> None:
        self.send(ftype, json.dumps(obj).encode())

    def close(self) -> None:
        """Close, never raising: there is nothing a caller could do about a failed close."""
        # wake a thread reading this channel first: the buffered reader's close waits
        # for its lock, which a blocked read holds
        wake(self.sock)
        try:
            self._file.close()
        except OSError:
            pass
        finally:
            self.sock.close()

    def _read(self, size: int, allow_eof: bool = False) -> bytes | None:
        data = self._file.read(size)
        if len(data) == size:
            return data
        if allow_eof and not data:
            return None
        raise FeedError(f"feed connection ended inside a frame ({len(data)} of {size} bytes)")


class HandshakeCut(FeedError):
    """The node hung up during the handshake before proving anything: it was busy (its
    handshakes full, a flood of connections pushing the oldest out) or ending. The feeding
    side tries again within its ``feed_timeout``."""


class Derived(NamedTuple):
    """What one handshake derives from the secret and both nonces."""

    node_proof: bytes
    feeder_proof: bytes
    node_key: bytes  # seals node -> feeding task
    feeder_key: bytes  # seals feeding task -> node


def binding(run_id: str, node: str) -> bytes:
    """What a feed connection is for: node ``node`` (``"worker:1"``) of run ``run_id``."""
    if not run_id or not node or "\0" in run_id + node:
        raise ValueError(f"a feed connection is bound to a run and a node; received: run {run_id!r}, node {node!r}")
    return f"{run_id}\0{node}".encode()


def _describe(bound_to: bytes) -> str:
    run_id, _, node = bound_to.decode("utf-8", "replace").partition("\0")
    return f"node {node} of run {run_id}"


def proof_and_keys(secret: bytes, client_nonce: bytes, server_nonce: bytes, bound_to: bytes) -> Derived:
    """Both proofs and both directions' keys of one connection to the node ``bound_to`` names:
    128 bytes of HKDF-SHA256 over the secret, salted with both nonces (fresh whenever either
    nonce is), ``bound_to`` in the info, cut in four."""
    okm = HKDF(algorithm=hashes.SHA256(), length=32 * 4, salt=client_nonce + server_nonce,
               info=b"tfos-feed v3 proofs and keys\0" + bound_to).derive(secret)
    return Derived(*(okm[i:i + 32] for i in range(0, 128, 32)))


def json_object(payload: bytes, what: str) -> dict:
    """A control frame's JSON object; a FeedError, never another exception, for anything else.

    Only ever called on a payload that opened (a peer holding the secret), but that peer may
    still run another version or be buggy: depth and size are bounded by the frame.
    """
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise FeedError(f"malformed {what} frame: not JSON ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise FeedError(f"malformed {what} frame: a JSON {type(value).__name__}, not an object")
    return value


def encode_records(records: list) -> bytes:
    return pickle.dumps(records, protocol=5)


def decode_records(payload: bytes) -> list:
    # only ever called on a payload whose mac was checked (FeedChannel.recv)
    return pickle.loads(payload)


def encode_pickles(blobs: list[bytes]) -> bytes:
    """Pickled lists of records, each as ``length (4 bytes) | pickle``, in one payload."""
    return b"".join(part for blob in blobs for part in (_BLOB_LENGTH.pack(len(blob)), blob))


def decode_pickles(payload: bytes) -> list:
    # only ever called on a payload that opened (FeedChannel.recv): a sealed frame
    records: list = []
    view = memoryview(payload)
    offset = 0
    while offset < len(view):
        if offset + _BLOB_LENGTH.size > len(view):
            raise FeedError("malformed PICKLES frame: a length is cut short")
        (size,) = _BLOB_LENGTH.unpack_from(view, offset)
        offset += _BLOB_LENGTH.size
        if offset + size > len(view):
            raise FeedError(f"malformed PICKLES frame: a batch of {size} bytes overruns the frame")
        batch = pickle.loads(view[offset:offset + size])
        if not isinstance(batch, list):
            raise FeedError(f"malformed PICKLES frame: a batch holds a {type(batch).__name__}, not a list")
        records.extend(batch)
        offset += size
    return records


def encode_arrow(batch) -> memoryview:
    """One record batch as an Arrow IPC stream (schema + batch): self-describing, no pickle."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return memoryview(sink.getvalue())


def decode_arrow(payload: bytes):
    # only ever called on a payload whose mac was checked (FeedChannel.recv); zero-copy
    import pyarrow as pa

    return pa.ipc.open_stream(pa.py_buffer(payload)).read_next_batch()


def _recv_exact(sock: socket.socket, size: int, deadline: Deadline, allow_short: bool = False) -> bytes | None:
    """``size`` bytes before ``deadline`` (a total, not per read); ``None`` if they do not come
    (with ``allow_short``, whatever came before the peer closed or time ran out)."""
    chunks, got = [], 0
    while got < size:
        left = deadline.remaining()
        if not left:
            break
        try:
            sock.settimeout(left)
            chunk = sock.recv(size - got)
        except (TimeoutError, OSError):
            break
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    data = b"".join(chunks)
    if got == size:
        return data
    return data if allow_short else None


def wake(sock: socket.socket) -> None:
    """Make a thread blocked reading ``sock`` return (close alone does not wake it on Linux)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass
