"""A DataFrame as the Arrow record batches Spark's JVM makes of it: an RDD of ``bytes``.

``Dataset.toArrowBatchRdd`` (in Spark since 2.3, used by ``toPandas``) converts rows to
Arrow inside the executor's JVM and hands each batch, serialized, to the Python task
that reads the RDD. ``mapInArrow`` converts the same way but streams the batches through
its own Python runner and expects batches back; reading cached MNIST-shaped rows only to
count them, the RDD of batches ran 1.4x-1.7x faster here (see docs/benchmarks.md).

Being an RDD, it also keeps its partitions: ``coalesce`` groups them once for the RDD
object, so the count job and every epoch's feed job read the same groups (a DataFrame's
``coalesce`` is planned afresh by each query).

Each element is an Arrow IPC *message* (a record batch without its schema); the schema is
made once on the driver from the DataFrame's with the session's Arrow settings, and
:func:`count_batches` checks every batch against it before anything is fed.
"""

from __future__ import annotations

import logging

from tfos.errors import FeedError

log = logging.getLogger(__name__)


def arrow_batches(df, from_jvm: bool = True):
    """``(rdd, schema)``: ``df`` as an RDD of serialized Arrow record batches, and their schema.

    ``from_jvm=False`` (or a Spark without ``toArrowBatchRdd``) makes the same batches with
    ``mapInArrow``, slower (the rows go through one more Python hop) but with public API only.
    """
    from pyspark.rdd import RDD
    from pyspark.serializers import NoOpSerializer

    schema = arrow_schema(df)
    if from_jvm:
        try:
            jrdd = df._jdf.toArrowBatchRdd().toJavaRDD()
        except Exception as exc:  # noqa: BLE001 - py4j raises its own errors for a missing method
            log.warning("Spark has no Dataset.toArrowBatchRdd (%s); feeding DataFrames through mapInArrow, "
                        "which is slower", exc)
        else:
            return RDD(jrdd, df.sparkSession.sparkContext, NoOpSerializer()), schema
    blobs = df.mapInArrow(_serialized, "batch binary").rdd.map(_first)
    return blobs, schema


def arrow_schema(df):
    """The Arrow schema Spark's JVM gives ``df``'s batches: the session's time zone and its
    choice of large (64-bit offset) strings and binaries."""
    from pyspark.sql.pandas.types import to_arrow_schema

    conf = df.sparkSession.conf
    large = conf.get("spark.sql.execution.arrow.useLargeVarTypes", "false").lower() == "true"
    try:
        return to_arrow_schema(df.schema, timezone=conf.get("spark.sql.session.timeZone", "UTC"),
                               prefers_large_types=large)
    except TypeError:  # pyspark 3.5: no such keywords; its batches use regular offsets
        return to_arrow_schema(df.schema)
    except Exception as exc:  # noqa: BLE001 - pyspark raises several kinds for types Arrow lacks
        raise FeedError(f"cannot feed this DataFrame: its schema has no Arrow form ({exc}); select or "
                        f"cast the columns to feed") from None


def decode(blob, schema):
    """One serialized record batch, zero-copy over ``blob``."""
    import pyarrow as pa

    return pa.ipc.read_record_batch(pa.py_buffer(blob), schema)


def count_batches(schema, list_columns: list[str]):
    """A ``mapPartitions`` function: ``[(rows, {column: (shortest, longest)})]`` of a partition,
    the lengths over the non-null arrays of each list column (``None`` when there are none)."""

    def count(blobs):
        import pyarrow as pa

        def checked():
            for blob in blobs:
                try:
                    batch = decode(blob, schema)
                    batch.validate()
                except (pa.ArrowInvalid, OSError) as exc:
                    raise FeedError(f"Spark's Arrow batches do not match the schema tfos derived ({schema}): "
                                    f"{exc}; please report this with your Spark version") from None
                yield batch

        yield count_rows(checked(), list_columns)

    return count


#: the rows :func:`count_partitions` yields, one per partition
PARTITION_COUNT_SCHEMA = "partition int, rows long, lengths string"


def count_partitions(list_columns: list[str]):
    """A ``mapInArrow`` function (a DataFrame's own batches, over Spark Connect where there is no
    RDD): one row per partition, ``(partition, rows, lengths as JSON)``, keyed by the task's
    partition id since Spark returns the rows in no set order."""

    def count(batches):
        import json

        import pyarrow as pa
        from pyspark import TaskContext

        rows, lengths = count_rows(batches, list_columns)
        yield pa.RecordBatch.from_pydict(
            {"partition": [TaskContext.get().partitionId()], "rows": [rows], "lengths": [json.dumps(lengths)]},
            schema=pa.schema([("partition", pa.int32()), ("rows", pa.int64()), ("lengths", pa.string())]))

    return count


def partition_counts(rows, list_columns: list[str]) -> list[tuple[int, dict]]:
    """:func:`count_partitions`'s rows as :func:`count_batches`'s ``(rows, lengths)`` in partition
    order; a partition Spark ran no function for (it had no data) counts as empty."""
    import json

    found = {row["partition"]: (row["rows"], {name: tuple(bounds) for name, bounds in
                                              json.loads(row["lengths"]).items()}) for row in rows}
    empty = (0, {name: (None, None) for name in list_columns})
    return [found.get(i, empty) for i in range(max(found, default=-1) + 1)]


def count_rows(batches, list_columns: list[str]) -> tuple[int, dict]:
    """``(rows, {column: (shortest, longest)})`` over record ``batches``."""
    import pyarrow.compute as pc

    rows = 0
    lengths: dict[str, tuple] = {name: (None, None) for name in list_columns}
    for batch in batches:
        rows += batch.num_rows
        for name in list_columns:
            bounds = pc.min_max(pc.list_value_length(batch.column(name)))
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            if low is not None:
                old_low, old_high = lengths[name]
                lengths[name] = (low if old_low is None else min(low, old_low),
                                 high if old_high is None else max(high, old_high))
    return rows, lengths


def one_length(per_partition: list[dict], list_columns: list[str]) -> dict[str, int | None]:
    """Each list column's one array length across partitions, ``None`` when arrays differ (or
    every value is null)."""
    out: dict[str, int | None] = {}
    for name in list_columns:
        lows = [p[name][0] for p in per_partition if p[name][0] is not None]
        highs = [p[name][1] for p in per_partition if p[name][1] is not None]
        out[name] = lows[0] if lows and min(lows) == max(highs) else None
    return out


def _serialized(batches):
    import pyarrow as pa

    for batch in batches:
        yield pa.RecordBatch.from_pydict({"batch": [batch.serialize().to_pybytes()]},
                                         schema=pa.schema([("batch", pa.binary())]))


def _first(row):
    return row[0]
