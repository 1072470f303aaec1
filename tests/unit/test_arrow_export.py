"""The DataFrame side of the feed without Spark: serialized Arrow batches are decoded
against the driver's schema, counted per partition, and a schema mismatch is caught."""

import pyarrow as pa
import pytest

from tfos.errors import FeedError
from tfos.feed.arrow_export import count_batches, decode, one_length

SCHEMA = pa.schema([("id", pa.int64()), ("image", pa.binary()), ("vec", pa.list_(pa.float32()))])


def blob(ids, vecs):
    batch = pa.RecordBatch.from_pydict(
        {"id": ids, "image": [bytes([i % 256]) * 4 for i in ids], "vec": vecs}, schema=SCHEMA)
    return batch.serialize().to_pybytes()


def test_a_serialized_batch_decodes_to_the_same_rows():
    rows = decode(blob([1, 2], [[1.0], None]), SCHEMA).to_pydict()
    assert rows == {"id": [1, 2], "image": [b"\x01" * 4, b"\x02" * 4], "vec": [[1.0], None]}


def test_a_partition_is_counted_with_the_bounds_of_each_array_column():
    count = count_batches(SCHEMA, ["vec"])
    blobs = [blob([1, 2], [[1.0, 2.0], None]), blob([], []), blob([3], [[1.0, 2.0, 3.0]])]
    assert list(count(iter(blobs))) == [(3, {"vec": (2, 3)})]
    assert list(count(iter([]))) == [(0, {"vec": (None, None)})]


def test_an_array_column_has_one_length_only_when_every_partition_agrees():
    assert one_length([{"v": (4, 4)}, {"v": (None, None)}, {"v": (4, 4)}], ["v"]) == {"v": 4}
    assert one_length([{"v": (4, 4)}, {"v": (4, 5)}], ["v"]) == {"v": None}
    assert one_length([{"v": (3, 3)}, {"v": (4, 4)}], ["v"]) == {"v": None}
    assert one_length([{"v": (None, None)}], ["v"]) == {"v": None}


def test_batches_that_do_not_match_the_schema_fail_the_count_and_say_so():
    wide = pa.schema([("id", pa.int64()), ("image", pa.large_binary()), ("vec", pa.list_(pa.float32()))])
    count = count_batches(wide, [])
    with pytest.raises(FeedError, match="do not match the schema"):
        list(count(iter([blob([1, 2, 3], [None, None, None])])))
