"""ctx.dataset over a real feed server: one epoch per pass, quota-trimmed, batched or not."""

from __future__ import annotations

import socket
import threading

import pytest

from tfos.context import NodeContext
from tfos.feed.client import ControlChannel, FeedTarget, feed_partition
from tfos.feed.node_feed import DataFeed, FeedServer

pytestmark = pytest.mark.timeout(120)
SECRET = b"s" * 32


@pytest.mark.parametrize("batch_size", [None, 4])
def test_each_pass_reads_one_fed_epoch_trimmed_to_the_quota(batch_size):
    import tensorflow as tf

    server = FeedServer(socket.create_server(("127.0.0.1", 0)), SECRET, run_id="run-dataset", node="worker:0")
    target = FeedTarget("worker:0", "127.0.0.1", server.port, "0", "run-dataset")
    ctx = NodeContext("worker", 0, {"worker": ["h:1"]}, 1, 0, "0", feed=server)
    control = ControlChannel(target, SECRET, "input", feed_timeout=10)
    try:
        sig = (tf.TensorSpec((2,), tf.float32), tf.TensorSpec((), tf.int64))
        ds = ctx.dataset(sig, batch_size=batch_size, feed_timeout=10)
        for epoch in range(2):
            control.epoch({"epoch": epoch, "quota": 9, "expected": 10, "columns": None})
            records = [([float(i), 1.0], epoch * 100 + i) for i in range(10)]
            feeder = threading.Thread(target=feed_partition, args=(
                records, 10, [target], SECRET, {"qname": "input", "partition": 0},
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


def test_raw_bytes_in_rdd_records_become_numeric_tensors_when_the_spec_says_so():
    import numpy as np
    import tensorflow as tf

    from tfos.feed.records import to_columns

    records = [(bytes([i, i + 1, i + 2, i + 3]), i) for i in range(5)]
    images, labels = to_columns(records, (tf.TensorSpec((2, 2), tf.uint8), tf.TensorSpec((), tf.int64)))
    assert images.dtype == np.uint8 and images.shape == (5, 2, 2)
    assert images[3].tolist() == [[3, 4], [5, 6]] and labels.tolist() == [0, 1, 2, 3, 4]
    wide = to_columns([(np.arange(2, dtype=np.float32).tobytes(),)], (tf.TensorSpec((2,), tf.float32),))
    assert wide[0].tolist() == [[0.0, 1.0]]
    as_strings = to_columns(records, (tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.int64)))
    assert as_strings[0][2] == bytes([2, 3, 4, 5])


@pytest.mark.parametrize("values, spec, message", [
    ([b"abcd", b"abc"], ((4,), "uint8"), r"field 0 holds byte strings of 3..4 bytes"),
    ([b"abc"], ((), "float32"), r"field 0 holds byte strings of 3..3 bytes"),
    ([b"abcd"], ((3,), "uint8"), r"column '0': 4 value\(s\) per row cannot take the declared shape \[3\]"),
])
def test_raw_bytes_that_cannot_take_the_spec_fail_with_the_field_and_sizes(values, spec, message):
    import tensorflow as tf

    from tfos.feed.records import to_columns

    with pytest.raises(ValueError, match=message):
        to_columns([(v,) for v in values], (tf.TensorSpec(spec[0], getattr(tf, spec[1])),))
