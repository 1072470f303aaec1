"""The feed wire: an encrypted, authenticated, framed byte stream from a feeding task to a TF node.

Handshake: the node sends a random 32-byte nonce; the client answers with
HMAC-SHA256(secret, "tfos-feed" + nonce). Both then derive the connection's key,
``HMAC-SHA256(secret, "tfos-feed-key" + nonce)``, and seal every frame with AES-256-GCM:
a frame is ``type (1 byte) | length (4 bytes) | sealed payload (length bytes, its last 16
the GCM tag)``. The GCM nonce is the direction and a running sequence number, and the
header is authenticated data, so a frame cannot be altered, replayed, reordered or
bounced back to its sender. Payloads are parsed (and record chunks unpickled) only after
they open, so nothing from an unauthenticated peer is ever unpickled.

Why AES-GCM rather than an HMAC per frame: the records are encrypted too, and with
AES-NI sealing plus opening costs less CPU than hashing the payload twice did.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
import socket
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tfos.errors import FeedAuthenticationError as AuthenticationError
from tfos.errors import FeedError

NONCE_BYTES = 32
#: the client's answer to the challenge (an HMAC-SHA256)
MAC_BYTES = 32
#: the GCM tag that ends every sealed payload
TAG_BYTES = 16
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

    def __init__(self, sock: socket.socket, key: bytes, is_server: bool):
        self.sock = sock
        self._key = key
        self._aead = AESGCM(key)
        # the mac binds the direction too, so a frame cannot be bounced back to its sender
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
    def accept(cls, sock: socket.socket, secret: bytes, timeout_s: float = 10.0) -> FeedChannel:
        """Server side: challenge the peer; raises AuthenticationError if it fails."""
        sock.settimeout(timeout_s)
        nonce = os.urandom(NONCE_BYTES)
        sock.sendall(nonce)
        answer = _recv_exact(sock, MAC_BYTES)
        expected = hmac.new(secret, b"tfos-feed" + nonce, hashlib.sha256).digest()
        if answer is None or not hmac.compare_digest(answer, expected):
            raise AuthenticationError("feed connection refused: not signed with this run's secret")
        sock.sendall(b"\x01")
        sock.settimeout(None)
        return cls(sock, connection_key(secret, nonce), is_server=True)

    @classmethod
    def connect(cls, address: tuple[str, int], secret: bytes, timeout_s: float = 30.0) -> FeedChannel:
        """Client side: connect and answer the node's challenge."""
        sock = socket.create_connection(address, timeout=timeout_s)
        nonce = _recv_exact(sock, NONCE_BYTES)
        if nonce is None:
            sock.close()
            raise FeedError(f"feed endpoint {address[0]}:{address[1]} closed the connection at once")
        sock.sendall(hmac.new(secret, b"tfos-feed" + nonce, hashlib.sha256).digest())
        ok = _recv_exact(sock, 1)
        if ok != b"\x01":
            sock.close()
            raise AuthenticationError(f"feed endpoint {address[0]}:{address[1]} refused this run's secret")
        sock.settimeout(None)
        return cls(sock, connection_key(secret, nonce), is_server=False)

    # ----------------------------------------------------------------- frames

    def send(self, ftype: int, payload: bytes | memoryview = b"") -> None:
        if isinstance(payload, memoryview) and payload.format != "B":
            payload = payload.cast("B")  # AESGCM takes unsigned bytes only (Arrow's views are signed)
        if len(payload) > MAX_FRAME_BYTES:  # the peer would refuse it as malformed, and say less
            raise FeedError(f"a {NAMES.get(ftype, ftype)} frame of {len(payload):,} bytes is over the feed's "
                            f"limit of {MAX_FRAME_BYTES:,}")
        head = _HEAD.pack(ftype, len(payload) + TAG_BYTES)
        sealed = self._aead.encrypt(_GCM_NONCE.pack(self._out, self._send_seq), payload, head)
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
            payload = self._aead.decrypt(_GCM_NONCE.pack(self._in, self._recv_seq), sealed, head)
        except InvalidTag:
            raise AuthenticationError("feed frame failed its integrity check") from None
        self._recv_seq += 1
        return ftype, payload

    def send_json(self, ftype: int, obj) -> None:
        self.send(ftype, json.dumps(obj).encode())

    def close(self) -> None:
        """Close, never raising: there is nothing a caller could do about a failed close."""
        try:
            # wake a thread reading this channel first: the buffered reader's close waits
            # for its lock, which a blocked read holds
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
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


def connection_key(secret: bytes, nonce: bytes) -> bytes:
    """The AES-256-GCM key of one connection: fresh per connection (the node's nonce is)."""
    return hmac.new(secret, b"tfos-feed-key" + nonce, hashlib.sha256).digest()


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


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks, got = [], 0
    while got < size:
        try:
            chunk = sock.recv(size - got)
        except (TimeoutError, OSError):
            return None
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
