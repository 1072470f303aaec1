"""ctx.dataset over a real feed server: one epoch per pass, quota-trimmed, batched or not."""

from __future__ import annotations

import socket
import threading

import pytest

from tfos.context import NodeContext
from tfos.feed.client import ControlChannel, FeedTarget, feed_segments
from tfos.feed.node_feed import DataFeed, FeedServer
from tfos.feed.plan import Segment

pytestmark = pytest.mark.timeout(120)
SECRET = b"s" * 32


@pytest.mark.parametrize("batch_size", [None, 4])
def test_each_pass_reads_one_fed_epoch_trimmed_to_the_quota(batch_size):
    import tensorflow as tf

    server = FeedServer(socket.create_server(("127.0.0.1", 0)), SECRET)
    target = FeedTarget("worker:0", "127.0.0.1", server.port, "0")
    ctx = NodeContext("worker", 0, {"worker": ["h:1"]}, 1, 0, "0", _feed=server)
    control = ControlChannel(target, SECRET, "input", feed_timeout=10)
    try:
        sig = (tf.TensorSpec((2,), tf.float32), tf.TensorSpec((), tf.int64))
        ds = ctx.dataset(sig, batch_size=batch_size, feed_timeout=10)
        for epoch in range(2):
            control.epoch({"epoch": epoch, "quota": 9, "expected": 10, "columns": None})
            records = [([float(i), 1.0], epoch * 100 + i) for i in range(10)]
            feeder = threading.Thread(target=feed_segments, args=(
                records, [Segment(0, 0, 10)], [target], SECRET, {"qname": "input", "partition": 0},
                10, 3))
            feeder.start()
            elements = list(ds.as_numpy_iterator())
            feeder.join(10)
            if batch_size is None:
                labels = [int(label) for _, label in elements]
            else:
                assert [len(label) for _, label in elements] == [4, 4, 1]
                labels = [int(x) for _, label in elements for x in label]
            assert labels == [epoch * 100 + i for i in range(9)]
        assert server.stats["dropped"] == 2
        control.end()
        assert list(ds.as_numpy_iterator()) == []  # the feed ended: no more epochs
    finally:
        control.close()
        DataFeed(server).terminate()
        server.close()
