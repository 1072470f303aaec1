"""The feeding side: Spark tasks that stream their partition to TF nodes, and the
driver's control connection that tells each node about epochs and the feed's end.
"""

from __future__ import annotations

import collections
import itertools
import queue
import socket
import struct
import threading
import time
from dataclasses import dataclass

from tfos.deadline import Deadline
from tfos.errors import FeedConnectionError, FeedError, FeedTimeout
from tfos.feed import protocol as p
from tfos.reservation.auth import Secret

#: records per chunk; big enough to amortise framing and pickling, small enough to bound memory
CHUNK_RECORDS = 1000
#: Arrow chunks cost less per record to make, so they can be larger (6.4 MB of MNIST rows); each
#: is one element of ``ctx.dataset``, whose fixed cost per element favours large ones
ARROW_CHUNK_RECORDS = 8192
#: bytes a chunk aims at: wide records (large images) go fewer to a chunk, so a node's
#: buffer of a few chunks stays small and no frame nears the protocol's MAX_FRAME_BYTES
CHUNK_BYTES = 8 << 20


@dataclass(frozen=True)
class FeedTarget:
    """A node that consumes fed data, as a feeding task needs to know it."""

    name: str  # "worker:0"
    host: str
    port: int
    executor_id: str
    run_id: str  # with the name, bound into the handshake: only this node of this run answers it

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


class NodeGone(FeedError):
    """The node's feed endpoint refuses connections: its TF process has ended."""


def _open(target: FeedTarget, secret: Secret | bytes, meta: dict, feed_timeout: float) -> p.FeedChannel:
    # feeding closures carry a Secret (repr Secret(***)); its bytes come out only for the handshake
    raw = secret.value if isinstance(secret, Secret) else secret
    deadline = Deadline(feed_timeout, f"the feed of node {target.name} to take a connection")
    delay = 0.1
    while True:
        try:
            channel = p.FeedChannel.connect(target.address, raw, p.binding(target.run_id, target.name),
                                            timeout_s=max(deadline.slice(30.0), 0.1))
            break
        except ConnectionRefusedError:
            raise NodeGone(f"node {target.name} at {target.host}:{target.port} no longer takes data") from None
        except (TimeoutError, FeedTimeout, p.HandshakeCut) as exc:
            # a busy endpoint (a full backlog, or handshakes pushed out by a flood of connections):
            # try again while the feed_timeout lasts
            if deadline.expired():
                raise FeedTimeout(deadline.message(f"last: {exc}", f"is node {target.name} at "
                                                   f"{target.host}:{target.port} swamped or stuck?")) from None
            time.sleep(deadline.slice(delay))
            delay = min(delay * 2, 1.0)
        except OSError as exc:
            raise FeedConnectionError(f"cannot reach the feed of node {target.name} at {target.host}:{target.port} "
                            f"(executor {target.executor_id}): {exc}; did the node fail?") from None
    channel.sock.settimeout(feed_timeout)
    channel.send_json(p.OPEN, meta)
    return channel


def _expect_ack(channel: p.FeedChannel, target: FeedTarget, what: str) -> dict:
    try:
        frame = channel.recv()
    except TimeoutError:
        raise FeedTimeout(f"node {target.name} did not acknowledge {what} in time") from None
    if frame is None or frame[0] != p.ACK:
        raise FeedConnectionError(f"node {target.name} closed the feed connection during {what}; did it fail?")
    return p.json_object(frame[1], "ACK") if frame[1] else {}


class RecordChunks:
    """An RDD partition's records, cut into pickled chunks of at most ``chunk_records``,
    fewer when records are wide (see :func:`encode_bounded`)."""

    def __init__(self, records, chunk_records: int = CHUNK_RECORDS):
        self._iterator = iter(records)
        self._chunk_records = chunk_records
        self._pending: list = []  # records taken from the iterator but not sent yet

    def take(self, limit: int) -> tuple[int, bytes | memoryview, int]:
        """(frame type, payload, records) of the next chunk of at most ``limit`` records; 0 records at the end."""
        ftype, payload, count, _chunk = self.take_with_chunk(limit)
        return ftype, payload, count

    def take_with_chunk(self, limit: int):
        size = min(self._chunk_records, limit)
        chunk, self._pending = self._pending[:size], self._pending[size:]
        chunk += itertools.islice(self._iterator, size - len(chunk))
        if not chunk:
            return p.CHUNK, b"", 0, None
        payload, sent, self._chunk_records = encode_bounded(chunk, self._chunk_records)
        self._pending = chunk[sent:] + self._pending
        return p.CHUNK, payload, sent, chunk[:sent]

    def skip_rest(self) -> int:
        left, self._pending = len(self._pending), []
        return left + sum(1 for _ in self._iterator)


def encode_bounded(records: list, chunk_records: int) -> tuple[bytes, int, int]:
    """``(payload, records encoded, chunk size to use next)``: the pickled head of ``records``
    that fits a frame. Records average ``CHUNK_BYTES / chunk_records`` or less in the usual
    case, and all of them go at once; wider ones shrink the next chunks, and a chunk over
    the protocol's limit is halved until it fits (a record over it alone is refused)."""
    count = len(records)
    payload = p.encode_records(records)
    while len(payload) > p.MAX_FRAME_BYTES:
        if count == 1:
            raise FeedError(f"a record of {len(payload):,} bytes pickled is over the feed's frame limit of "
                            f"{p.MAX_FRAME_BYTES:,} bytes; split it, or read such data with InputMode.TENSORFLOW")
        count //= 2
        payload = p.encode_records(records[:count])
    if len(payload) > CHUNK_BYTES:
        chunk_records = max(1, count * CHUNK_BYTES // len(payload))
    return payload, count, chunk_records


#: bytes of pyspark's pickled batches gathered into one PICKLES frame, at most
PICKLES_FRAME_BYTES = 4 << 20


class PickledBatches:
    """An RDD partition as pyspark stores it: pickled lists of records (``blobs``), whose
    record counts (``sizes``) the count job measured.

    Whole batches are forwarded as they are, several to a frame; only a batch that
    straddles a segment's end is unpickled and cut. The feeding task thus never unpickles
    and re-pickles the records it passes on.
    """

    def __init__(self, blobs, sizes, chunk_records: int = CHUNK_RECORDS, frame_bytes: int = PICKLES_FRAME_BYTES):
        self._blobs = iter(blobs)
        self._sizes = list(sizes)
        self._next = 0  # index in _sizes of the next unread blob
        self._rest: list = []  # records of a cut batch, not sent yet
        self._ahead: bytes | None = None  # a blob read by _peek, not consumed yet
        self._chunk_records = chunk_records
        self._frame_bytes = frame_bytes

    def take(self, limit: int) -> tuple[int, bytes, int]:
        if self._rest:
            return self._take_rest(limit)
        blobs: list[bytes] = []
        count = size = 0
        while self._next < len(self._sizes) and count < self._chunk_records:
            records = self._sizes[self._next]
            blob_size = len(self._peek())
            cut = count + records > limit or blob_size > p.MAX_FRAME_BYTES
            if blobs and (cut or size + blob_size > self._frame_bytes):
                break  # send what is gathered; this batch starts the next frame
            if cut:
                # the segment ends inside this batch, or the batch alone is over a frame: cut it
                self._rest = p.decode_records(self._read())
                return self._take_rest(limit)
            blob = self._read()
            blobs.append(blob)
            count += records
            size += len(blob)
        return p.PICKLES, (p.encode_pickles(blobs) if blobs else b""), count

    def _take_rest(self, limit: int) -> tuple[int, bytes, int]:
        part = self._rest[:min(limit, self._chunk_records)]
        payload, sent, _ = encode_bounded(part, len(part))
        self._rest = self._rest[sent:]
        return p.CHUNK, payload, sent

    def _peek(self) -> bytes:
        """The next blob, read ahead (kept for :meth:`_read`)."""
        if self._ahead is None:
            self._ahead = next(self._blobs, None)
        return self._ahead if self._ahead is not None else b""

    def _read(self) -> bytes:
        blob = self._ahead if self._ahead is not None else next(self._blobs, None)
        self._ahead = None
        if blob is None:
            raise FeedError(f"the partition ended after {self._next} of the {len(self._sizes)} batches the count "
                            f"job saw; the data is not deterministic: cache() it")
        self._next += 1
        return blob

    def skip_rest(self) -> int:
        left = len(self._rest) + sum(self._sizes[self._next:])
        self._next = len(self._sizes)
        self._rest, self._ahead = [], None
        # batches the count did not see (data that changed) are counted, so the check notices
        return left + sum(len(p.decode_records(blob)) for blob in self._blobs)


class ArrowChunks:
    """A DataFrame partition's Arrow record batches (from ``mapInArrow``), re-cut into chunks."""

    def __init__(self, batches, chunk_records: int = ARROW_CHUNK_RECORDS):
        self._batches = iter(batches)
        self._chunk_records = chunk_records
        self._current = None
        self._offset = 0
        self._rows = chunk_records  # rows per chunk of the current batch (fewer when rows are wide)

    def take(self, limit: int) -> tuple[int, bytes | memoryview, int]:
        ftype, payload, count, _chunk = self.take_with_chunk(limit)
        return ftype, payload, count

    def take_with_chunk(self, limit: int):
        """Like ``take``, plus the record batch sent."""
        while self._current is None or self._offset >= self._current.num_rows:
            self._current = next(self._batches, None)
            self._offset = 0
            if self._current is None:
                return p.ARROW, b"", 0, None
            row_bytes = self._current.nbytes / max(1, self._current.num_rows)
            self._rows = max(1, min(self._chunk_records, int(CHUNK_BYTES // max(row_bytes, 1))))
        size = min(self._rows, limit, self._current.num_rows - self._offset)
        piece = self._current.slice(self._offset, size)
        self._offset += size
        return p.ARROW, p.encode_arrow(piece), size, piece

    def skip_rest(self) -> int:
        left = self._current.num_rows - self._offset if self._current is not None else 0
        return left + sum(batch.num_rows for batch in self._batches)


def _as_chunks(records, chunk_records: int) -> RecordChunks | ArrowChunks | PickledBatches:
    if isinstance(records, (RecordChunks, ArrowChunks, PickledBatches)):
        return records
    return RecordChunks(records, chunk_records)


def feed_partition(records, size: int, targets: list[FeedTarget], secret: bytes, meta: dict,
                   feed_timeout: float, chunk_records: int = CHUNK_RECORDS) -> int:
    """Stream one partition of ``size`` counted records (records, or its :class:`ArrowChunks`
    or :class:`PickledBatches`) to whichever nodes grant room, a chunk per grant.

    Holds a connection to every node, so it never waits on a full node while another
    could take data (node_feed.py, buffer.py): it waits only when every node that still
    wants records is full, at most ``feed_timeout`` seconds (``FeedTimeout`` naming each
    node and its state). Returns the records read: fewer than ``size`` when nodes ended
    their feed (``terminate()``, ``main_fun`` returned) before the partition's end, more
    when the data grew since it was counted.
    """
    chunks = _as_chunks(records, chunk_records)
    if size <= 0:
        return chunks.skip_rest()
    position = 0
    with _Links(targets, secret, dict(meta, kind="train"), feed_timeout) as links:
        while position < size:
            node, granted = links.next_grant(f"{position} of its {size} records sent")
            if node is None:
                break
            ftype, payload, count = chunks.take(min(granted, size - position))
            if not count:
                break  # the data ended early: the driver's count check says so
            links.send(node, ftype, payload, count)
            position += count
        links.close()
        if links.cut_short:
            return position
    return position + chunks.skip_rest()


class _Links:
    """A feeding task's connections to every node: the grants they sent, their final ACKs."""

    def __init__(self, targets: list[FeedTarget], secret: bytes, meta: dict, feed_timeout: float):
        self._targets = targets
        self._meta = meta
        self._timeout = feed_timeout
        self._events: queue.Queue = queue.Queue()  # (node, frame or None, error text)
        self._channels: dict[int, p.FeedChannel] = {}
        self._grants = {i: collections.deque() for i in range(len(targets))}
        self._sent = dict.fromkeys(range(len(targets)), 0)
        #: why a node takes no more: "capped" (its share is in), "terminated", "gone"
        self.done: dict[int, str] = {}
        self._acks: dict[int, dict] = {}
        self._readers: set[int] = set()  # connections whose frames a thread reads
        self._next = meta.get("partition", 0) % max(1, len(targets))  # where the round-robin starts
        try:
            for i, target in enumerate(targets):
                self._connect(i, target, secret)
        except BaseException:
            self._close_channels()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._close_channels()

    @property
    def cut_short(self) -> bool:
        """Whether a node ended its feed, so the rest of the partition is not wanted."""
        return any(why in ("terminated", "gone") for why in self.done.values())

    def _connect(self, i: int, target: FeedTarget, secret: bytes) -> None:
        try:
            channel = _open(target, secret, self._meta, self._timeout)
        except NodeGone:
            # main_fun returned (or terminate() ended it): it wants no more; if the node
            # crashed instead, the driver has its failure report and raises that
            self.done[i] = "gone"
            return
        self._channels[i] = channel
        if _expect_ack(channel, target, "OPEN").get("terminated"):
            self.done[i] = "terminated"
            return
        # a thread reads grants for as long as the partition lasts: no timeout on reads, but
        # sends still give up after feed_timeout (the kernel's send timeout, not the socket's,
        # which would apply to the reads too)
        channel.sock.settimeout(None)
        seconds = max(self._timeout, 0.001)
        channel.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                                struct.pack("ll", int(seconds), int(seconds % 1 * 1e6)))
        self._readers.add(i)
        threading.Thread(target=self._read, args=(i, channel), name="tfos-feed-grants", daemon=True).start()

    def _read(self, i: int, channel: p.FeedChannel) -> None:
        """Everything node ``i`` sends (grants, then the final ACK), as events."""
        try:
            while True:
                frame = channel.recv()
                self._events.put((i, frame, ""))
                if frame is None or frame[0] != p.CREDIT:
                    return
        except (OSError, FeedError) as exc:  # FeedError: the stream was cut inside a frame
            self._events.put((i, None, str(exc)))

    def _handle(self, i: int, frame, error: str) -> None:
        if frame is None:
            if i not in self._acks:
                self.done.setdefault(i, "gone")
                self._acks[i] = {"gone": error or "closed the connection"}
            return
        ftype, payload = frame
        info = p.json_object(payload, p.NAMES[ftype]) if payload else {}
        if ftype == p.CREDIT:
            if info.get("records"):
                self._grants[i].append(int(info["records"]))
            else:
                self.done[i] = info.get("done") or "capped"
        elif ftype in (p.ACK, p.ERROR):
            self._acks[i] = info
            if ftype == p.ERROR:
                self._refused(i, info)
        else:
            raise FeedError(f"node {self._targets[i].name} sent an unexpected {p.NAMES.get(ftype, ftype)} frame")

    def _refused(self, i: int, info: dict) -> None:
        """Node ``i`` refused a chunk: raise why."""
        name, partition = self._targets[i].name, self._meta.get("partition")
        if "records" in info:  # more records than it granted room for: the data changed since its count
            raise FeedError(f"node {name} received {info['records']} records of partition {partition} where "
                            f"{self._sent[i]} were sent; the data is not deterministic: cache() it")
        raise FeedError(f"node {name} refused the feed of partition {partition}: {info.get('error')}")

    def _drain(self, block_s: float = 0.0) -> bool:
        """Handle the events that came; wait up to ``block_s`` for the first. False if none came."""
        try:
            event = self._events.get(timeout=block_s) if block_s > 0 else self._events.get_nowait()
        except queue.Empty:
            return False
        self._handle(*event)
        while True:
            try:
                self._handle(*self._events.get_nowait())
            except queue.Empty:
                return True

    def next_grant(self, progress: str) -> tuple[int | None, int]:
        """``(node, records)`` of a grant, round-robin over the nodes holding one; ``(None, 0)``
        once no node takes more. Blocks at most ``feed_timeout`` for one."""
        deadline = time.monotonic() + self._timeout
        n = len(self._targets)
        while True:
            self._drain()
            for k in range(n):
                i = (self._next + k) % n
                if self._grants[i]:
                    self._next = (i + 1) % n
                    return i, self._grants[i].popleft()
            if len(self.done) == n:
                return None, 0
            left = deadline - time.monotonic()
            if left <= 0:
                raise FeedTimeout(
                    f"waited {self._timeout:g} s for room on any node to feed partition "
                    f"{self._meta.get('partition')} ({progress}): {self._states()}; every node that still "
                    f"wants records is full and none took data meanwhile: is each main_fun reading its feed?"
                )
            self._drain(min(left, 1.0))

    def _states(self) -> str:
        states = []
        for i, target in enumerate(self._targets):
            why = self.done.get(i)
            state = {"capped": "has its share", "terminated": "ended its feed", "gone": "is gone"}.get(why, "full")
            states.append(f"{target.name} (executor {target.executor_id}) {state}, "
                          f"{self._sent[i]} records sent to it by this task")
        return "; ".join(states)

    def send(self, i: int, ftype: int, payload, count: int = 0) -> None:
        target = self._targets[i]
        try:
            self._channels[i].send(ftype, payload)
        except (TimeoutError, BlockingIOError):  # BlockingIOError: SO_SNDTIMEO ran out
            raise FeedTimeout(f"waited {self._timeout:g} s for node {target.name} (executor {target.executor_id}) "
                              f"to read its feed ({self._sent[i]} records of partition {self._meta.get('partition')} "
                              f"sent to it); did the node hang?") from None
        except OSError as exc:
            raise FeedConnectionError(f"feed to node {target.name} broke after {self._sent[i]} records of partition "
                            f"{self._meta.get('partition')}: {exc}; did the node fail?") from None
        self._sent[i] += count

    def close(self) -> None:
        """End every open connection (CLOSE) and check each node's count of what it received."""
        waiting = []
        for i in self._channels:
            if i not in self._readers or i in self._acks:
                continue  # ended at OPEN (terminated), or its connection is gone
            try:
                self.send(i, p.CLOSE, b"")
            except FeedError:
                if self._sent[i]:
                    raise  # records it may not have taken
                self.done.setdefault(i, "gone")
                continue
            waiting.append(i)
        deadline = time.monotonic() + self._timeout
        while any(i not in self._acks for i in waiting):
            left = deadline - time.monotonic()
            if left <= 0:
                names = [self._targets[i].name for i in waiting if i not in self._acks]
                raise FeedTimeout(f"node(s) {', '.join(names)} did not acknowledge the end of partition "
                                  f"{self._meta.get('partition')} within {self._timeout:g} s")
            self._drain(min(left, 1.0))
        for i in waiting:
            ack = self._acks[i]
            if "gone" in ack:
                if self._sent[i]:
                    raise FeedConnectionError(f"node {self._targets[i].name} closed the feed connection during the end of "
                                    f"partition {self._meta.get('partition')}: {ack['gone']}; did it fail?")
                continue
            if ack.get("terminated"):
                self.done[i] = "terminated"
            elif ack.get("records", self._sent[i]) != self._sent[i]:
                raise FeedError(
                    f"node {self._targets[i].name} received {ack['records']} records of partition "
                    f"{self._meta.get('partition')} where {self._sent[i]} were sent; the data is not "
                    f"deterministic: cache() it"
                )

    def _close_channels(self) -> None:
        for channel in self._channels.values():
            channel.close()


def infer_partition(records, target: FeedTarget, secret: bytes, meta: dict, feed_timeout: float,
                    chunk_records: int = CHUNK_RECORDS, by_chunk: bool = False):
    """Stream a partition (records, or its :class:`ArrowChunks`) to ``target`` for inference;
    yield one result per record, in order, as the node answers.

    A thread sends the chunks while this generator reads results, so neither side holds
    more than a few chunks. With ``by_chunk``, yields ``(chunk_records_sent, results)`` per
    chunk instead (the DataFrame path pairs results with their input rows).
    """
    chunks = _as_chunks(records, chunk_records)
    channel = _open(target, secret, dict(meta, kind="inference", feed_timeout=feed_timeout), feed_timeout)
    # the node gives up on missing results after feed_timeout and says why; wait a bit longer
    channel.sock.settimeout(feed_timeout + 5.0)
    sent: queue.Queue = queue.Queue(maxsize=4)  # (count, chunk) in send order; None at the end
    stop = threading.Event()
    failure: list[str] = []

    def send_all():
        total = 0
        try:
            while not stop.is_set():
                ftype, payload, count, chunk = chunks.take_with_chunk(1 << 62)
                if not count:
                    break
                _put_until(sent, (count, chunk), stop)
                channel.send(ftype, payload)
                total += count
            channel.send(p.CLOSE, b"")
        except (OSError, TimeoutError) as exc:
            if not stop.is_set():
                failure.append(f"feed to node {target.name} broke after {total} records: {exc}")
        except Exception as exc:  # noqa: BLE001 - reported by the reading generator, which raises it
            # anything else (a record that cannot be encoded) must end the partition at once,
            # not leave the reader waiting feed_timeout for results of records never sent
            failure.append(f"feeding partition {meta.get('partition')} to node {target.name} failed after "
                           f"{total} records: {type(exc).__name__}: {exc}")
            try:  # wake the reader: the node may be waiting for the rest of a batch
                channel.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        finally:
            _put_until(sent, None, stop)

    sender = threading.Thread(target=send_all, name="tfos-inference-send", daemon=True)
    try:
        _expect_ack(channel, target, "an inference partition")
        sender.start()
        pending: list = []
        while True:
            item = sent.get()
            if item is None:
                break
            count, chunk = item
            while len(pending) < count:
                try:
                    pending.extend(_next_results(channel, target, feed_timeout, failure))
                except FeedError:
                    if failure:  # the sender's failure is the cause, not the connection it cut
                        raise FeedError(failure[0]) from None
                    raise
            results, pending = pending[:count], pending[count:]
            if by_chunk:
                yield chunk, results
            else:
                yield from results
        if failure:
            raise FeedError(failure[0])
        frame = _next_frame(channel, target, feed_timeout)
        if pending or frame[0] != p.ACK:
            raise FeedError(f"node {target.name} returned more results than records fed; main_fun must "
                            f"call batch_results() with one result per record")
    finally:
        stop.set()
        channel.close()


def _put_until(q: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            pass


def _next_frame(channel: p.FeedChannel, target: FeedTarget, feed_timeout: float) -> tuple[int, bytes]:
    try:
        frame = channel.recv()
    except TimeoutError:
        raise FeedTimeout(f"node {target.name} sent no inference results for {feed_timeout:g} s") from None
    except OSError as exc:
        raise FeedError(f"inference results from node {target.name} broke: {exc}") from None
    if frame is None:
        raise FeedError(f"node {target.name} closed the inference connection; did it fail?")
    if frame[0] == p.ERROR:
        raise FeedError(f"node {target.name}: {frame[1].decode(errors='replace')}")
    return frame


def _next_results(channel: p.FeedChannel, target: FeedTarget, feed_timeout: float, failure: list) -> list:
    ftype, payload = _next_frame(channel, target, feed_timeout)
    if ftype == p.RESULTS:
        return p.decode_records(payload)
    if ftype == p.ACK:
        if failure:
            raise FeedError(failure[0])
        raise FeedError(f"node {target.name} ended the partition with results missing; main_fun must call "
                        f"batch_results() with one result per record")
    raise FeedError(f"node {target.name} sent an unexpected {p.NAMES[ftype]} frame")


class ControlChannel:
    """The driver's connection to one node's feed: epoch plans and the end of the feed."""

    def __init__(self, target: FeedTarget, secret: bytes, qname: str, feed_timeout: float):
        self.target = target
        self._channel = _open(target, secret, {"kind": "control", "qname": qname}, feed_timeout)
        _expect_ack(self._channel, target, "the control connection")

    def settimeout(self, feed_timeout: float) -> None:
        """How long each later answer may take (each ``train()`` call has its own ``feed_timeout``)."""
        self._channel.sock.settimeout(feed_timeout)

    def epoch(self, info: dict) -> None:
        self._channel.send_json(p.OPEN, info)
        # numbered from 1 in messages, as the driver's log and the Spark UI number epochs
        _expect_ack(self._channel, self.target, f"epoch {info.get('epoch', -1) + 1}'s plan")

    def end(self) -> None:
        self._channel.send_json(p.END, {})
        _expect_ack(self._channel, self.target, "the end of the feed")

    def close(self) -> None:
        self._channel.close()
