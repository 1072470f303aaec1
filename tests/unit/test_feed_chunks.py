"""How a feeding task cuts a partition into frames: wide records go fewer to a frame, and
nothing ever exceeds the protocol's frame limit (the node would refuse it)."""

from __future__ import annotations

import pickle
import socket

import pyarrow as pa
import pytest

from tfos.errors import FeedError
from tfos.feed import client
from tfos.feed import protocol as p


@pytest.fixture
def small_limits(monkeypatch):
    """A 64 KB frame limit and 16 KB chunks, so the tests need no large buffers."""
    monkeypatch.setattr(p, "MAX_FRAME_BYTES", 64 << 10)
    monkeypatch.setattr(client, "CHUNK_BYTES", 16 << 10)


def drain(chunks, limit: int = 1 << 30):
    """Every (frame type, payload size, records) the chunker makes, and the records decoded."""
    frames, records = [], []
    while True:
        ftype, payload, count = chunks.take(limit)
        if not count:
            return frames, records
        frames.append((ftype, len(payload), count))
        if ftype == p.ARROW:
            records += p.decode_arrow(bytes(payload)).column(0).to_pylist()
        elif ftype == p.PICKLES:
            records += p.decode_pickles(bytes(payload))
        else:
            records += p.decode_records(bytes(payload))


def test_wide_records_go_fewer_to_a_chunk_and_all_arrive_in_order(small_limits):
    records = [(i, bytes([i]) * 5000) for i in range(40)]  # ~5 KB each: 3 fit 16 KB
    frames, got = drain(client.RecordChunks(records, chunk_records=1000))
    assert got == records
    # the first chunk is halved until under the limit (40 -> 10 records), and sizes the next ones
    assert frames[0][2] == 10 and all(count <= 3 for _, _, count in frames[1:])
    assert max(size for _, size, _ in frames) <= p.MAX_FRAME_BYTES


def test_a_record_over_the_frame_limit_alone_is_refused_with_its_size(small_limits):
    chunks = client.RecordChunks([b"x" * 100, b"y" * (70 << 10)], chunk_records=10)
    assert chunks.take(10)[2] == 1  # the chunk is halved until it fits: the small record goes alone
    with pytest.raises(FeedError, match=r"a record of [\d,]+ bytes pickled is over the feed's frame limit"):
        chunks.take(10)


def test_arrow_batches_of_wide_rows_are_cut_by_bytes(small_limits):
    batch = pa.RecordBatch.from_pydict({"id": list(range(40)), "image": [bytes(2000)] * 40})
    frames, got = drain(client.ArrowChunks([batch], chunk_records=1000))
    assert got == list(range(40))
    assert {count for _, _, count in frames} == {8} and len(frames) == 5  # 16 KB / ~2 KB per row


def test_a_pickled_batch_over_the_frame_limit_is_cut_into_records(small_limits):
    small, big = [1, 2, 3], [bytes([i]) * 10_000 for i in range(12)]  # the second blob is ~120 KB
    blobs = [pickle.dumps(small), pickle.dumps(big)]
    frames, got = drain(client.PickledBatches(blobs, [3, 12]))
    assert got == small + big
    assert frames[0] == (p.PICKLES, frames[0][1], 3)  # the small batch is forwarded as stored
    assert all(ftype == p.CHUNK for ftype, _, _ in frames[1:])
    assert max(size for _, size, _ in frames) <= p.MAX_FRAME_BYTES


def test_a_frame_over_the_limit_is_refused_by_its_sender(small_limits):
    a, b = socket.socketpair()
    try:
        channel = p.FeedChannel(a, b"k" * 32, b"j" * 32, is_server=False)
        with pytest.raises(FeedError, match=r"a CHUNK frame of [\d,]+ bytes is over the feed's limit"):
            channel.send(p.CHUNK, b"z" * (65 << 10))
    finally:
        a.close()
        b.close()
