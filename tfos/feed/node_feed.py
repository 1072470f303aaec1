"""The TF process's end of the feed: a server that accepts feeding tasks, and the
``DataFeed`` / ``tf.data`` views user code reads from.

Chunks go into one :class:`~tfos.feed.buffer.FeedBuffer` per ``qname`` (a few chunks
deep). A training connection is sent CREDIT frames, one per chunk slot its handler
reserved in the buffer, and may send a chunk only against one, so a feeding task never
writes to a full node (see buffer.py for why); inference connections push back through
TCP as their handler waits for room.
"""

from __future__ import annotations

import collections
import logging
import queue
import socket
import threading
import time

from tfos.errors import AuthenticationError, FeedError, FeedTimeout
from tfos.feed import protocol as p
from tfos.feed.buffer import FeedBuffer
from tfos.feed.records import head, mapped_arrow_columns, rows_of
from tfos.log_limit import RateLimitedLog

log = logging.getLogger(__name__)

#: chunks buffered per queue: at most ~32 MB (chunks aim at 8 MB; 1000 MNIST records are 0.8 MB)
BUFFER_CHUNKS = 4
#: grants a training connection may hold at once: two, so the feeding task encodes the next
#: chunk while the node reads the last
CREDITS_PER_CONNECTION = 2
#: records one grant allows at most (a chunk of records, a frame of pickled batches or Arrow rows)
MAX_GRANT_RECORDS = 1 << 16
#: connections in their handshake at once (each has a thread for at most p.HANDSHAKE_S); a new
#: one past this pushes out the oldest, so a flood of idle peers cannot lock feeding tasks out
MAX_HANDSHAKES = 32
#: seconds a training connection's credit thread gets to stop (and again once its socket is shut)
STOP_S = 10.0
#: authenticated connections at once (feeding tasks, the driver's control channel); more are refused
MAX_CONNECTIONS = 256

_CHUNK, _PARTITION_END, _EPOCH, _END = "chunk", "partition_end", "epoch", "end"


class FeedServer:
    """Accepts authenticated feeding connections on ``listener`` (a bound, listening socket)
    for node ``node`` (``"worker:1"``) of run ``run_id``: a connection meant for another node
    or run fails its handshake (protocol.py)."""

    def __init__(self, listener: socket.socket, secret: bytes, *, run_id: str, node: str,
                 buffer_chunks: int = BUFFER_CHUNKS):
        self._listener = listener
        self._secret = secret
        self._bound_to = p.binding(run_id, node)
        #: who this endpoint is: the node of the run that feeding connections must mean
        self.run_id, self.node = run_id, node
        self._buffer_chunks = buffer_chunks
        self._queues: dict[str, FeedBuffer] = {}
        self._lock = threading.Lock()
        self.terminated = threading.Event()
        self.stats = collections.Counter()
        #: per qname, the fed DataFrame's columns as ``[{"name", "dtype", "shape"}]`` (records.py)
        self.schemas: dict[str, list] = {}
        self._schema_ready: dict[str, threading.Event] = collections.defaultdict(threading.Event)
        self._closing = False
        self._handshaking: collections.OrderedDict[socket.socket, None] = collections.OrderedDict()
        #: handshakes ended to make room for newer ones (their threads say so when they fail)
        self._pushed_out: set[socket.socket] = set()
        self._connections = 0
        self._refusals = RateLimitedLog(log, "refused feed connections")
        threading.Thread(target=self._accept_loop, name="tfos-feed-accept", daemon=True).start()

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    def queue(self, qname: str) -> FeedBuffer:
        with self._lock:
            if qname not in self._queues:
                self._queues[qname] = FeedBuffer(self._buffer_chunks)
            return self._queues[qname]

    def terminate(self) -> None:
        """The node wants no more data: every queue drops what it holds and refuses the rest."""
        self.terminated.set()
        with self._lock:
            buffers = list(self._queues.values())
        for buffer in buffers:
            buffer.terminate()

    def wait_schema(self, qname: str, timeout_s: float) -> list | None:
        """The schema of the DataFrame fed on ``qname``, once ``cluster.train`` sent it."""
        with self._lock:
            ready = self._schema_ready[qname]
        return self.schemas[qname] if ready.wait(timeout_s) else None

    def close(self) -> None:
        self._closing = True
        try:
            # close() alone does not wake a thread blocked in accept() (Linux): the
            # listener would keep accepting and serving feeds; shutdown() does wake it
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._listener.close()
        except OSError:
            pass
        self._refusals.flush()

    # ------------------------------------------------------------ connections

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                sock, peer = self._listener.accept()
            except OSError:
                return
            pushed_out = None
            with self._lock:
                if self._connections >= MAX_CONNECTIONS:
                    full = True
                else:
                    full = False
                    if len(self._handshaking) >= MAX_HANDSHAKES:
                        pushed_out, _ = self._handshaking.popitem(last=False)
                        self._pushed_out.add(pushed_out)
                    self._handshaking[sock] = None
                    self._connections += 1
            if full:
                self._refusals.log("refused feed connection from %s: %d connections open already, the most "
                                   "allowed", peer, MAX_CONNECTIONS)
                sock.close()
                continue
            if pushed_out is not None:
                p.wake(pushed_out)  # its thread fails its handshake at once and says so
            threading.Thread(target=self._serve, args=(sock, peer), name="tfos-feed-conn", daemon=True).start()

    def _serve(self, sock: socket.socket, peer) -> None:
        try:
            try:
                channel = p.FeedChannel.accept(sock, self._secret, self._bound_to, timeout_s=p.HANDSHAKE_S)
            except (FeedError, OSError) as exc:  # FeedAuthenticationError is a FeedError
                with self._lock:
                    pushed_out = sock in self._pushed_out
                why = (f"dropped mid-handshake to make room: {MAX_HANDSHAKES} newer connections were "
                       f"handshaking at once (a flood of connections?)") if pushed_out else exc
                self._refusals.log("refused feed connection from %s: %s", peer, why)
                sock.close()
                return
            finally:
                with self._lock:
                    self._handshaking.pop(sock, None)
                    self._pushed_out.discard(sock)
            try:
                self._handle(channel)
            # AuthenticationError (a tampered frame) is not a FeedError: catch it too, or it
            # escapes the thread unlogged
            except (FeedError, AuthenticationError, OSError) as exc:
                log.warning("feed connection from %s failed: %s", peer, exc)
            except Exception:  # noqa: BLE001 - a connection thread must say why it died
                log.exception("feed connection from %s failed", peer)
            finally:
                channel.close()
        finally:
            with self._lock:
                self._connections -= 1

    def _handle(self, channel: p.FeedChannel) -> None:
        frame = channel.recv()
        if frame is None or frame[0] != p.OPEN:
            raise FeedError("feed connection did not start with OPEN")
        meta = p.json_object(frame[1], "OPEN")
        kind = meta.get("kind")
        qname = meta.get("qname", "input")
        if not isinstance(qname, str) or kind not in ("train", "inference", "control"):
            raise FeedError(f"malformed OPEN frame: kind {kind!r}, qname {qname!r}")
        buffer = self.queue(qname)
        if kind == "control":
            self._control(channel, buffer, qname)
            return
        if self.terminated.is_set():
            channel.send_json(p.ACK, {"terminated": True})
            return
        channel.send_json(p.ACK, {"terminated": False})
        if kind == "inference":
            self._inference(channel, buffer, meta)
        else:
            self._train(channel, buffer, meta)

    def _train(self, channel: p.FeedChannel, buffer: FeedBuffer, meta: dict) -> None:
        """A training connection: grant room as the buffer frees, take one chunk per grant."""
        granter = _Granter(channel, buffer)
        received = 0
        try:
            while True:
                ftype, payload = _next_frame(channel, meta)
                if ftype in (p.CHUNK, p.ARROW, p.PICKLES):
                    granted = granter.take_grant()
                    if granted is None:
                        raise FeedError(f"feeding task for partition {meta.get('partition')} sent a chunk "
                                        f"without a grant")
                    records = _DECODERS[ftype](payload)
                    try:
                        buffer.fill(granted, (_CHUNK, records, None), len(records), meta.get("partition"))
                    except FeedError:
                        # more than the partition's count said: the data changed since; say so
                        granter.stop()
                        channel.send_json(p.ERROR, {"records": received + len(records), "granted": granted})
                        raise
                    received += len(records)
                    self.stats["records"] += len(records)
                    self.stats["chunks"] += 1
                elif ftype == p.CLOSE:
                    granter.stop()
                    channel.send_json(p.ACK, {"records": received, "terminated": self.terminated.is_set()})
                    return
                else:
                    raise FeedError(f"unexpected {p.NAMES[ftype]} frame in a feed stream")
        finally:
            granter.stop()

    def _inference(self, channel: p.FeedChannel, buffer: FeedBuffer, meta: dict) -> None:
        """An inference connection: chunks wait for room; results go back on the connection."""
        source = _Source(channel)
        while True:
            ftype, payload = _next_frame(channel, meta)
            if ftype in (p.CHUNK, p.ARROW, p.PICKLES):
                if self.terminated.is_set():
                    continue  # drain, so the feeding task finishes promptly
                records = _DECODERS[ftype](payload)
                self.stats["records"] += len(records)
                self.stats["chunks"] += 1
                source.sent += len(records)
                buffer.put((_CHUNK, records, source))
            elif ftype == p.CLOSE:
                timeout = meta.get("feed_timeout", 600)
                if not isinstance(timeout, int | float) or not 0 < timeout < 1e9:
                    raise FeedError(f"malformed OPEN frame: feed_timeout {timeout!r}")
                if not (buffer.put((_PARTITION_END, None, source)) and source.wait_done(timeout, self.terminated)):
                    # never leave the feeding task waiting for results that will not come
                    channel.send(p.ERROR, (
                        f"node answered {source.answered} of {source.sent} records of partition "
                        f"{meta.get('partition')} "
                        + ("before terminate() ended its feed" if self.terminated.is_set() else
                           f"within {timeout:g} s; main_fun must call batch_results() once per batch")
                    ).encode())
                    return
                channel.send_json(p.ACK, {"records": source.sent, "terminated": self.terminated.is_set()})
                return
            else:
                raise FeedError(f"unexpected {p.NAMES[ftype]} frame in a feed stream")

    def _control(self, channel: p.FeedChannel, buffer: FeedBuffer, qname: str) -> None:
        """The driver's orders: epoch plans and the end of the feed, in queue order."""
        channel.send_json(p.ACK, {})
        while True:
            frame = channel.recv()
            if frame is None:
                return
            ftype, payload = frame
            info = p.json_object(payload, p.NAMES.get(ftype, str(ftype))) if payload else {}
            if ftype == p.OPEN and info.get("epoch") is not None:
                expected = info.get("expected", 0)
                schema = info.get("schema")
                if type(expected) is not int or expected < 0 or not isinstance(schema, list | None):
                    raise FeedError(f"malformed epoch order: expected {expected!r}, schema of type "
                                    f"{type(schema).__name__}")
                if schema:
                    self.schemas[qname] = schema
                    with self._lock:
                        self._schema_ready[qname].set()
                buffer.put_marker((_EPOCH, info, None), epoch_records=expected)
            elif ftype == p.END:
                buffer.put_marker((_END, info, None))
            channel.send_json(p.ACK, {})


def _next_frame(channel: p.FeedChannel, meta: dict) -> tuple[int, bytes]:
    """The feeding task's next frame; its end of stream is an error (it ends with CLOSE)."""
    frame = channel.recv()
    if frame is None:
        raise FeedError(f"feeding task for partition {meta.get('partition')} hung up mid-stream")
    return frame


class _Granter:
    """Sends a training connection its CREDIT frames from a thread of its own, as the buffer
    frees room: at most ``CREDITS_PER_CONNECTION`` unused at once. ``stop`` returns the
    unused ones to the buffer; after it, nothing more is sent on the channel."""

    def __init__(self, channel: p.FeedChannel, buffer: FeedBuffer):
        self._channel = channel
        self._buffer = buffer
        self._cond = threading.Condition()
        self._grants: collections.deque = collections.deque()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="tfos-feed-credit", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._stopped or len(self._grants) < CREDITS_PER_CONNECTION)
                    if self._stopped:
                        return
                records, why = self._buffer.grant(MAX_GRANT_RECORDS, cancelled=lambda: self._stopped)
                with self._cond:
                    if self._stopped:
                        if records:
                            self._buffer.release(records)
                        return
                    if records:
                        self._grants.append(records)
                    # sent under the lock: stop() waits for it, so no frame follows the final ACK
                    self._channel.send_json(p.CREDIT, {"records": records, "done": why})
                    if not records:
                        return  # capped or terminated: this connection gets nothing more
        except OSError as exc:
            log.debug("feed credit not sent: %s", exc)

    def take_grant(self) -> int | None:
        with self._cond:
            if not self._grants:
                return None
            granted = self._grants.popleft()
            self._cond.notify_all()
            return granted

    def stop(self) -> None:
        """Bounded: a CREDIT send stuck on a peer that stopped reading is cut by shutting the
        connection down, and the thread gets ``STOP_S`` to end after that."""
        if not self._cond.acquire(timeout=STOP_S):
            p.wake(self._channel.sock)  # the grant thread holds the lock in a send that does not end
            if not self._cond.acquire(timeout=STOP_S):
                raise FeedError(f"the credit thread of a feed connection did not stop in {2 * STOP_S:g} s")
        try:
            self._stopped = True
            self._cond.notify_all()
        finally:
            self._cond.release()
        self._buffer.wake()
        self._thread.join(STOP_S)
        if self._thread.is_alive():
            raise FeedError(f"the credit thread of a feed connection did not stop in {STOP_S:g} s")
        with self._cond:
            unused, self._grants = list(self._grants), collections.deque()
        for granted in unused:
            self._buffer.release(granted)


_DECODERS = {p.CHUNK: p.decode_records, p.ARROW: p.decode_arrow, p.PICKLES: p.decode_pickles}


class _Source:
    """An inference connection: results go back on it, in the order its records came."""

    def __init__(self, channel: p.FeedChannel):
        self.channel = channel
        self.sent = 0
        self.answered = 0
        self._done = threading.Condition()
        self._ended = False

    def send_results(self, results: list) -> None:
        self.channel.send(p.RESULTS, p.encode_records(results))
        with self._done:
            self.answered += len(results)
            self._done.notify_all()

    def end(self) -> None:
        with self._done:
            self._ended = True
            self._done.notify_all()

    def wait_done(self, timeout_s: float | None = None, terminated: threading.Event | None = None) -> bool:
        """Wait until every record sent got its result; False on timeout or termination."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._done:
            while not (self._ended and self.answered >= self.sent):
                if terminated is not None and terminated.is_set():
                    return False
                left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
                if left <= 0:
                    return False
                self._done.wait(left)
            return True


class DataFeed:
    """TensorFlowOnSpark's ``DataFeed``: pull batches of fed records; push back inference results.

    Args:
        server: the node's feed server.
        train_mode: ``False`` for inference (results go back with ``batch_results``).
        qname_in: the input queue name (``cluster.train(..., qname=...)``).
        input_mapping: for DataFrame input, ``{column: tensor_name}``; ``next_batch`` then
            returns ``{tensor_name: [values]}``.
        feed_timeout: seconds ``next_batch`` waits for data before raising ``FeedTimeout``.
    """

    def __init__(self, server: FeedServer, train_mode: bool = True, qname_in: str = "input",
                 qname_out: str = "output", input_mapping: dict | None = None,
                 feed_timeout: float = 600.0, node_name: str = ""):
        self._server = server
        self.train_mode = train_mode
        self.qname_in = qname_in
        self.qname_out = qname_out
        self.input_mapping = input_mapping
        self.feed_timeout = feed_timeout
        self.node_name = node_name
        self._queue = server.queue(qname_in)
        self._pending: collections.deque = collections.deque()  # (records, start, source)
        self._handed: collections.deque = collections.deque()  # (source, count) awaiting results
        self._columns: list[str] | None = None
        self.done_feeding = False
        self.records = 0

    def next_batch(self, batch_size: int):
        """Up to ``batch_size`` records; fewer at the end of an inference partition or of the feed.

        Records are what the RDD held; DataFrame rows come as tuples in column order, or, with
        ``input_mapping``, as ``{tensor_name: column values}`` (NumPy arrays for numeric columns).
        Blocks for data at most ``feed_timeout`` seconds (then ``FeedTimeout``).
        """
        pieces: list = []
        taken = 0
        while taken < batch_size and not self.done_feeding:
            if not self._pending:
                item = self._get()
                kind, payload, source = item
                if kind == _CHUNK:
                    self._pending.append([payload, 0, source])
                    continue
                if kind == _PARTITION_END:
                    source.end()
                    if taken:
                        break
                    continue
                if kind == _EPOCH:
                    if payload.get("columns"):
                        self._columns = payload["columns"]
                    continue
                if kind == _END:
                    self.done_feeding = True
                    break
            records, start, source = self._pending[0]
            size = min(len(records) - start, batch_size - taken)
            pieces.append(records[start:start + size] if isinstance(records, list) else records.slice(start, size))
            taken += size
            if source is not None:
                self._handed.append((source, size))
            if start + size >= len(records):
                self._pending.popleft()
            else:
                self._pending[0][1] = start + size
        self.records += taken
        if self.input_mapping:
            return self._map_columns(pieces)
        return rows_of(pieces)

    def should_stop(self) -> bool:
        """True once the driver ended the feed (``shutdown``) or ``terminate`` was called."""
        return self.done_feeding

    def batch_results(self, results) -> None:
        """Send back one result per record of the batches taken, in the same order (inference)."""
        results = list(results)
        while results:
            if not self._handed:
                raise FeedError(f"batch_results got {len(results)} more results than records fed")
            source, count = self._handed[0]
            part, results = results[:count], results[count:]
            source.send_results(part)
            if len(part) < count:
                self._handed[0] = (source, count - len(part))
            else:
                self._handed.popleft()

    def terminate(self) -> None:
        """Stop early: the rest of the feed is skipped (feeding tasks finish at once)."""
        self._server.terminate()
        self.done_feeding = True

    def _get(self):
        deadline = time.monotonic() + self.feed_timeout
        while True:
            try:
                return self._queue.get(min(1.0, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    raise FeedTimeout(
                        f"node {self.node_name} waited {self.feed_timeout:g} s for data on queue "
                        f"{self.qname_in!r}; {self.records} records had arrived "
                        f"({self._server.stats['chunks']} chunks; buffer: {self._queue.describe()}); "
                        f"is cluster.train()/inference() running?"
                    ) from None

    def _map_columns(self, pieces: list) -> dict:
        if not pieces:
            return {name: [] for name in self.input_mapping.values()}
        if all(not isinstance(piece, list) for piece in pieces):
            return mapped_arrow_columns(pieces, self.input_mapping)
        rows = rows_of(pieces)
        columns = self._columns or []
        out = {name: [] for name in self.input_mapping.values()}
        index = {c: i for i, c in enumerate(columns)}
        for column, name in self.input_mapping.items():
            if column not in index:
                raise FeedError(f"input_mapping names column {column!r}, but the DataFrame has {columns}")
            i = index[column]
            out[name] = [row[i] for row in rows]
        return out


def epoch_chunks(server: FeedServer, qname: str, feed_timeout: float, node_name: str = ""):
    """Generator of one epoch's ``(chunk, columns)`` pairs, trimmed to the epoch's quota.

    Yields nothing and returns when the feed has ended. The quota makes every node
    yield the same number of records per epoch; records past it are drained and counted
    in ``server.stats["dropped"]``.
    """
    feed = DataFeed(server, qname_in=qname, feed_timeout=feed_timeout, node_name=node_name)
    # wait for the epoch plan; data before it is left over from an abandoned pass
    while True:
        kind, payload, _ = feed._get()
        if kind == _END:
            return
        if kind == _EPOCH:
            break
        if kind == _CHUNK:
            server.stats["dropped"] += len(payload)
            log.warning("node %s: %d fed records arrived outside an epoch (an abandoned pass over "
                        "ctx.dataset?); dropped", node_name, len(payload))
    quota, expected = payload["quota"], payload["expected"]
    columns = payload.get("columns")
    yielded = received = 0
    while received < expected:
        kind, records, _ = feed._get()
        if kind == _END:
            raise FeedError(f"the feed ended inside epoch {payload.get('epoch')} ({received} of {expected} records)")
        if kind != _CHUNK:
            continue
        received += len(records)
        feed.records += len(records)  # the evidence a FeedTimeout reports
        room = quota - yielded
        if room > 0:
            part = records if len(records) <= room else head(records, room)
            yielded += len(part)
            yield part, columns
        server.stats["dropped"] += max(0, len(records) - max(room, 0))

