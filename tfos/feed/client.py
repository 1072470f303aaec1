"""The feeding side: Spark tasks that stream their partition to TF nodes, and the
driver's control connection that tells each node about epochs and the feed's end.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass

from tfos.errors import FeedError, FeedTimeout
from tfos.feed import protocol as p

#: records per chunk; big enough to amortise framing and pickling, small enough to bound memory
CHUNK_RECORDS = 1000


@dataclass(frozen=True)
class FeedTarget:
    """A node that consumes fed data, as a feeding task needs to know it."""

    name: str  # "worker:0"
    host: str
    port: int
    executor_id: str

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


class NodeGone(FeedError):
    """The node's feed endpoint refuses connections: its TF process has ended."""


def _open(target: FeedTarget, secret: bytes, meta: dict, feed_timeout: float) -> p.FeedChannel:
    try:
        channel = p.FeedChannel.connect(target.address, secret, timeout_s=min(feed_timeout, 30.0))
    except ConnectionRefusedError:
        raise NodeGone(f"node {target.name} at {target.host}:{target.port} no longer takes data") from None
    except OSError as exc:
        raise FeedError(f"cannot reach the feed of node {target.name} at {target.host}:{target.port} "
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
        raise FeedError(f"node {target.name} closed the feed connection during {what}; did it fail?")
    return json.loads(frame[1]) if frame[1] else {}


def feed_segments(records, segments, targets: list[FeedTarget], secret: bytes, meta: dict,
                  feed_timeout: float, chunk_records: int = CHUNK_RECORDS) -> int:
    """Stream ``records`` (one partition) to the nodes its ``segments`` name; returns the count."""
    iterator = iter(records)
    position = 0
    for segment in segments:
        target = targets[segment.node]
        try:
            channel = _open(target, secret, dict(meta, kind="train"), feed_timeout)
        except NodeGone:
            # main_fun returned (or terminate() ended it): the rest is not wanted; if the
            # node crashed instead, the driver has its failure report and raises that
            return position
        try:
            if _expect_ack(channel, target, "OPEN").get("terminated"):
                return position  # the node called terminate(): skip the rest at once
            try:
                while position < segment.end:
                    chunk = list(itertools.islice(iterator, min(chunk_records, segment.end - position)))
                    if not chunk:
                        break
                    channel.send(p.CHUNK, p.encode_records(chunk))
                    position += len(chunk)
                # inside the try: with the socket's buffers full after the last chunk, CLOSE
                # blocks like a chunk and must fail like one (not as a bare socket timeout)
                channel.send(p.CLOSE, b"")
            except TimeoutError:
                raise FeedTimeout(
                    f"waited {feed_timeout:g} s for node {target.name} (executor {target.executor_id}) to take "
                    f"more data; it had taken {position - segment.start} records of this partition's "
                    f"{segment.end - segment.start}; is its main_fun reading the feed?"
                ) from None
            except OSError as exc:
                raise FeedError(f"feed to node {target.name} broke after {position} records: {exc}; "
                                f"did the node fail?") from None
            _expect_ack(channel, target, "the end of a partition")
        finally:
            channel.close()
        if position < segment.end:
            break
    leftover = sum(1 for _ in iterator)
    return position + leftover


def infer_partition(records, target: FeedTarget, secret: bytes, meta: dict, feed_timeout: float,
                    chunk_records: int = CHUNK_RECORDS):
    """Stream ``records`` to ``target`` for inference; yield one result per record, in order."""
    channel = _open(target, secret, dict(meta, kind="inference", feed_timeout=feed_timeout), feed_timeout)
    # the node gives up on missing results after feed_timeout and says why; wait a bit longer
    channel.sock.settimeout(feed_timeout + 5.0)
    results: list = []
    state = {"error": None, "closed": False}
    done = threading.Event()

    def read_results():
        try:
            first = True
            while True:
                frame = channel.recv()
                if frame is None:
                    state["error"] = f"node {target.name} closed the inference connection; did it fail?"
                    return
                ftype, payload = frame
                if ftype == p.ACK:
                    if first:
                        first = False
                        continue
                    state["closed"] = True
                    return
                if ftype == p.RESULTS:
                    results.extend(p.decode_records(payload))
                elif ftype == p.ERROR:
                    state["error"] = f"node {target.name}: {payload.decode(errors='replace')}"
                    return
                else:
                    state["error"] = f"node {target.name} sent an unexpected {p.NAMES[ftype]} frame"
                    return
        except TimeoutError:
            state["error"] = f"node {target.name} sent no inference results for {feed_timeout:g} s"
        except (OSError, FeedError) as exc:
            state["error"] = f"inference results from node {target.name} broke: {exc}"
        finally:
            done.set()

    reader = threading.Thread(target=read_results, name="tfos-inference-results", daemon=True)
    reader.start()
    sent = 0
    try:
        iterator = iter(records)
        while True:
            chunk = list(itertools.islice(iterator, chunk_records))
            if not chunk:
                break
            channel.send(p.CHUNK, p.encode_records(chunk))
            sent += len(chunk)
        channel.send(p.CLOSE, b"")
    except (OSError, TimeoutError) as exc:
        if not state["error"]:
            state["error"] = f"feed to node {target.name} broke after {sent} records: {exc}"
    done.wait()
    channel.close()
    if state["error"]:
        raise FeedError(state["error"])
    if len(results) != sent:
        raise FeedError(f"node {target.name} returned {len(results)} results for {sent} records; "
                        f"main_fun must call batch_results() with one result per record")
    yield from results


class ControlChannel:
    """The driver's connection to one node's feed: epoch plans and the end of the feed."""

    def __init__(self, target: FeedTarget, secret: bytes, qname: str, feed_timeout: float):
        self.target = target
        self._channel = _open(target, secret, {"kind": "control", "qname": qname}, feed_timeout)
        _expect_ack(self._channel, target, "the control connection")

    def epoch(self, info: dict) -> None:
        self._channel.send_json(p.OPEN, info)
        _expect_ack(self._channel, self.target, f"epoch {info.get('epoch')}'s plan")

    def end(self) -> None:
        self._channel.send_json(p.END, {})
        _expect_ack(self._channel, self.target, "the end of the feed")

    def close(self) -> None:
        self._channel.close()
