"""The driver's half of InputMode.SPARK: plan the feed, run the feeding Spark jobs, end the feed.

Over a classic SparkContext the feed jobs read RDDs: the data's own, or a DataFrame's Arrow
batches made in the JVM (``arrow_export``). Over Spark Connect there are no RDDs: a
DataFrame is counted and fed with ``mapInArrow`` in its own partitions (one result row per
partition, keyed by its partition id), persisted while a ``train()`` call reads it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

from tfos.errors import ControlChannelError, FeedError
from tfos.feed.arrow_export import (
    PARTITION_COUNT_SCHEMA,
    arrow_batches,
    count_batches,
    count_partitions,
    decode,
    one_length,
    partition_counts,
)
from tfos.feed.client import (
    ArrowChunks,
    ControlChannel,
    FeedTarget,
    PickledBatches,
    feed_partition,
    infer_partition,
)
from tfos.feed.plan import FeedPlan, plan_feed
from tfos.feed.records import describe_schema

log = logging.getLogger(__name__)


@dataclass
class FeedReport:
    """What one ``train()`` call fed: returned by it and kept in ``cluster.feed_reports``."""

    qname: str
    num_epochs: int
    records_per_epoch: int
    nodes: list[str]
    records_per_node: list[int]
    quota_per_node: int
    #: records per epoch that ``ctx.dataset`` skips so every node runs the same steps
    dropped_per_epoch: int
    epochs_fed: int = 0
    terminated: bool = False
    #: how records travelled: "arrow" (DataFrames: the JVM's Arrow batches; over Spark Connect,
    #: ``mapInArrow``'s), "pickled batches" (a cached,
    #: checkpointed or source RDD: pyspark's stored batches forwarded as they are) or
    #: "records" (re-chunked in the feeding task: an uncached map chain)
    transport: str = ""
    #: records per partition as the feed jobs read them (cached data: coalesced to one
    #: partition per task slot, see ``feed_view``)
    partition_sizes: list[int] = field(default_factory=list, repr=False)

    def __str__(self) -> str:
        per_node = ", ".join(f"{n} {c}" for n, c in zip(self.nodes, self.records_per_node, strict=True))
        text = (f"fed {self.epochs_fed} of {self.num_epochs} epoch(s) of {self.records_per_epoch} records "
                f"on queue {self.qname!r} ({per_node}); ctx.dataset yields {self.quota_per_node} per node "
                f"per epoch, dropping {self.dropped_per_epoch}")
        return text + (" (stopped early by a node)" if self.terminated else "")


@dataclass
class Prepared:
    """Data ready for the feed jobs: what they read (``view``) and its records per partition."""

    view: object  # an RDD: the data, pyspark's pickled batches, or a DataFrame's Arrow batches
    sizes: list[int]
    transport: str  # as FeedReport.transport
    batch_sizes: list[list[int]] | None = None  # records per pickled batch, per partition
    arrow_schema: object = None  # a pyarrow.Schema, for a DataFrame's batches
    #: DataFrames: each array column's one length, if every row has the same
    array_lengths: dict = field(default_factory=dict)
    #: DataFrames: the RDD of Arrow batches before its coalesce, kept while a call reads it
    arrow_batches: object = None
    #: Spark Connect: the DataFrame this call persisted (it was not), unpersisted at its end
    persisted: object = None


def _keep(rdd) -> None:
    """Have Spark keep ``rdd`` once computed (memory, spilling to disk), if not already."""
    from pyspark import StorageLevel

    if not rdd.is_cached:
        rdd.persist(StorageLevel.MEMORY_AND_DISK)


def is_dataframe(data) -> bool:
    return hasattr(data, "mapInArrow") and hasattr(data, "schema")


def _check_input(data, remote: bool) -> None:
    if remote and not is_dataframe(data):
        raise FeedError(f"over Spark Connect, cluster.train/inference take a DataFrame (a Spark Connect "
                        f"session has no RDDs); received: {type(data).__name__}. Make one with "
                        f"spark.createDataFrame(...) or spark.read")
    if not (is_dataframe(data) or hasattr(data, "mapPartitionsWithIndex")):
        raise FeedError(f"cluster.train/inference take an RDD or a DataFrame; received: {type(data).__name__}")


class SparkFeeder:
    """Feeds one run's consumer nodes. Used by :class:`tfos.Cluster`; not thread-safe."""

    def __init__(self, app, targets: list[FeedTarget], secret: bytes, run_job, check_nodes):
        self.app = app  # the run's SparkApp (tfos/spark/app.py)
        self.remote = app.remote
        self.targets = targets
        self._secret = secret
        self._run_job = run_job  # (description, thunk) -> result, under the run's job group
        self._check_nodes = check_nodes  # raises the run's node failure, if one comes within a moment
        self._controls: dict[tuple[int, str], ControlChannel] = {}
        self.reports: list[FeedReport] = []
        # id -> (the cached RDD or DataFrame, its counts), so unchanged data is counted once
        self._sizes: dict[int, tuple] = {}

    def _control(self, node: int, qname: str, feed_timeout: float) -> ControlChannel:
        """Node ``node``'s control channel, waiting ``feed_timeout`` for each answer (the
        current call's: ``train(feed_timeout=5)`` after a ``train()`` with the default must
        not wait 600 s)."""
        key = (node, qname)
        if key not in self._controls:
            self._controls[key] = ControlChannel(self.targets[node], self._secret, qname, feed_timeout)
        channel = self._controls[key]
        channel.settimeout(feed_timeout)
        return channel

    def _send_control(self, node: int, qname: str, feed_timeout: float, what: str, send) -> None:
        """``send(channel)`` on node ``node``'s control channel; any failure as :class:`ControlChannelError`.

        Raw socket errors (a reset, a broken pipe) included: each means the node's feed is
        gone, and the caller must see a feed error to raise the node's failure.
        """
        try:
            send(self._control(node, qname, feed_timeout))
        except (FeedError, OSError) as exc:
            channel = self._controls.pop((node, qname), None)
            if channel is not None:
                channel.close()
            name = self.targets[node].name
            closed = not isinstance(exc, TimeoutError)  # FeedTimeout, socket timeouts
            raise ControlChannelError(
                f"node {name}'s feed did not take {what} ({type(exc).__name__}: {exc})", name, closed) from exc

    def train(self, data, num_epochs: int, feed_timeout: float, qname: str) -> FeedReport:
        _check_input(data, self.remote)
        prepared = self._prepared(data, num_epochs)
        try:
            return self._train(data, prepared, num_epochs, feed_timeout, qname)
        finally:
            if prepared.arrow_batches is not None and prepared.arrow_batches.is_cached:
                prepared.arrow_batches.unpersist(blocking=False)
            if prepared.persisted is not None:
                prepared.persisted.unpersist(blocking=False)

    def _train(self, data, prepared: Prepared, num_epochs: int, feed_timeout: float, qname: str) -> FeedReport:
        sizes = prepared.sizes
        plan = plan_feed(sizes, len(self.targets))
        report = FeedReport(
            qname=qname, num_epochs=num_epochs, records_per_epoch=plan.total,
            nodes=[t.name for t in self.targets], records_per_node=list(plan.expected),
            quota_per_node=plan.quota, dropped_per_epoch=plan.dropped_per_epoch, partition_sizes=sizes,
            transport=prepared.transport,
        )
        self.reports.append(report)
        if plan.dropped_per_epoch:
            log.warning(
                "feed of %d records over %d nodes: ctx.dataset yields %d per node per epoch so every "
                "node runs the same steps; %d record(s) per epoch are dropped (DataFeed sees them all)",
                plan.total, len(self.targets), plan.quota, plan.dropped_per_epoch,
            )
        info = {"quota": plan.quota}
        if is_dataframe(data):
            info.update(columns=list(data.columns), schema=describe_schema(data.schema, prepared.array_lengths))
        for epoch in range(num_epochs):
            for i in range(len(self.targets)):
                order = dict(info, epoch=epoch, expected=plan.expected[i])
                self._send_control(i, qname, feed_timeout, f"epoch {epoch + 1}'s plan",
                                   lambda channel, order=order: channel.epoch(order))
            args = (plan, self.targets, self._secret, qname, epoch, feed_timeout)
            if self.remote:
                job = functools.partial(_run_frame_feeder, prepared.view, _frame_feeder(*args), len(sizes))
            else:
                feeder = _feeder(*args, batch_sizes=prepared.batch_sizes, arrow_schema=prepared.arrow_schema)
                job = functools.partial(_run_feeder, prepared.view, feeder)
            fed = self._run_job(f"tfos: feed epoch {epoch + 1}/{num_epochs}", job)
            report.epochs_fed = epoch + 1
            counted = [n for n, _ in fed]
            if counted != list(sizes) and not any(t for _, t in fed):
                raise FeedError(
                    f"epoch {epoch + 1} fed {sum(counted)} records but the count job saw {plan.total} "
                    f"(per partition: {counted} vs {sizes}); the data is not deterministic: cache() it"
                )
            if any(t for _, t in fed):
                self._check_nodes()  # a node that stopped taking data may have crashed
                report.terminated = True
                log.info("feed stopped after epoch %d of %d: a node ended its feed (terminate() or "
                         "main_fun returned)", epoch + 1, num_epochs)
                break
        return report

    def _slots(self) -> int:
        """Feeding tasks worth running at once: the application's task slots."""
        return max(len(self.targets), self.app.sc.defaultParallelism)

    def _prepared(self, data, num_epochs: int) -> Prepared:
        """The data as the feed jobs read it, counted: once per cached or checkpointed RDD or
        DataFrame; a Spark job each time otherwise (its data may change between calls).

        A DataFrame's Arrow batches are kept by Spark (memory, spilling to disk) while a
        ``train()`` call reads them more than once (the count and the first epoch, or
        several epochs), so the JVM converts its rows to Arrow once per call, not once per
        read: that conversion is most of a DataFrame feed's cost. ``train()`` releases them.
        """
        frame = is_dataframe(data)
        if frame:
            level = data.storageLevel
            stable = level.useMemory or level.useDisk
        else:
            stable = data.is_cached or data.isCheckpointed()
        key = id(data)
        if stable and key in self._sizes and self._sizes[key][0] is data:
            prepared = self._sizes[key][1]
            if prepared.arrow_batches is not None and num_epochs > 1:
                _keep(prepared.arrow_batches)
            return prepared
        if self.remote:
            prepared = self._prepared_frame(data, stable)
        elif frame:
            blobs, schema = arrow_batches(data)
            _keep(blobs)  # read by the count job, then by the epochs
            view = feed_view(blobs, self._slots())
            arrays = _array_columns(data)
            try:
                counts = self._run_job("tfos: count partitions",
                                       lambda: view.mapPartitions(count_batches(schema, arrays)).collect())
            except BaseException:
                blobs.unpersist(blocking=False)  # train() never got them to release
                raise
            prepared = Prepared(view, [rows for rows, _ in counts], "arrow", arrow_schema=schema,
                                array_lengths=one_length([lengths for _, lengths in counts], arrays),
                                arrow_batches=blobs)
        else:
            view = feed_view(data, self._slots())
            if (raw := raw_batches(view)) is not None:
                batch_sizes = self._run_job("tfos: count partitions",
                                            lambda: raw.mapPartitions(_count_batches).collect())
                prepared = Prepared(raw, [sum(b) for b in batch_sizes], "pickled batches", batch_sizes=batch_sizes)
            else:
                sizes = self._run_job("tfos: count partitions", lambda: view.mapPartitions(_count).collect())
                prepared = Prepared(view, sizes, "records")
        if stable:
            self._sizes[key] = (data, prepared)
        return prepared

    def _prepared_frame(self, data, stable: bool) -> Prepared:
        """A DataFrame over Spark Connect, counted with ``mapInArrow`` (no RDD to count).

        Fed in its own partitions, not coalesced to the task slots as the classic path is:
        every Connect query plans its coalesce anew, and once the count job has filled the
        cache, the feed's coalesce groups the partitions by the cached blocks' executors,
        not as the count's did (seen: a node expecting 400 records got 133). Persisted for
        the call unless already cached: the count and each epoch read the same partitions.
        """
        from pyspark import StorageLevel

        arrays = _array_columns(data)
        persisted = None
        if not stable:
            persisted = data.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            rows = self._run_job("tfos: count partitions",
                                 lambda: data.mapInArrow(count_partitions(arrays), PARTITION_COUNT_SCHEMA).collect())
            counts = partition_counts(rows, arrays)
        except BaseException:
            if persisted is not None:
                persisted.unpersist(blocking=False)
            raise
        return Prepared(data, [n for n, _ in counts], "arrow", arrow_schema=None,
                        array_lengths=one_length([lengths for _, lengths in counts], arrays), persisted=persisted)

    def inference(self, data, feed_timeout: float, qname: str, output_schema=None):
        _check_input(data, self.remote)
        targets, secret = self.targets, self._secret
        if not is_dataframe(data):
            if output_schema is not None:
                raise FeedError("output_schema needs a DataFrame input (it adds columns to its rows)")

            def infer(index, records):
                target = _local_target(targets, index)
                meta = {"qname": qname, "partition": index}
                yield from infer_partition(records, target, secret, meta, feed_timeout)

            return data.mapPartitionsWithIndex(infer, preservesPartitioning=True)
        if output_schema is None:
            if self.remote:
                raise FeedError("over Spark Connect, cluster.inference(df) needs output_schema (there is no "
                                "RDD to return the results in): the columns the results go in, added to the "
                                "input rows, e.g. cluster.inference(df, output_schema='prediction double')")
            blobs = data.mapInArrow(_arrow_inference(targets, secret, qname, feed_timeout, None), "results binary")
            return blobs.rdd.flatMap(_unpickle_results)
        out_fields = _as_struct(output_schema)
        clash = [f.name for f in out_fields.fields if f.name in data.columns]
        if clash:
            raise FeedError(f"output_schema columns {clash} already exist in the DataFrame; rename them")
        from pyspark.sql.types import StructType

        schema = StructType(list(data.schema.fields) + list(out_fields.fields))
        return data.mapInArrow(_arrow_inference(targets, secret, qname, feed_timeout, out_fields), schema)

    def end(self, feed_timeout: float = 60.0) -> list[ControlChannelError]:
        """Tell every fed queue the feed is over (``should_stop()`` turns true after the data).

        Blocks at most ``feed_timeout`` per node and queue. Returns the nodes that did not
        answer in time (their feed is stuck: they will not see the end); a feed that is
        closed already (``main_fun`` returned) is no error.
        """
        qnames = {q for _, q in self._controls} or {"input"}
        stuck = []
        for i in range(len(self.targets)):
            for qname in qnames:
                try:
                    self._send_control(i, qname, feed_timeout, "the end of the feed", ControlChannel.end)
                except ControlChannelError as exc:
                    if exc.closed:
                        # its main_fun returned and closed the feed: nothing left to end
                        log.debug("feed of node %s already closed: %s", self.targets[i].name, exc)
                    else:
                        log.warning("could not end the feed of node %s: %s", self.targets[i].name, exc)
                        stuck.append(exc)
        return stuck

    def close(self) -> None:
        for control in self._controls.values():
            control.close()
        self._controls.clear()


def feed_view(rdd, slots: int):
    """``rdd`` with at most ``slots`` partitions (``coalesce``: no shuffle, each task reads
    several partitions in turn, grouped by where their cached blocks are).

    Spark spends tens of milliseconds of scheduling on every task whatever its size; an
    epoch of 8 partitions on 2 task slots cost more to schedule than to stream. Left as it
    is when it has few partitions already, and for an uncached ``rdd.map(...)`` chain:
    coalescing would cut the chain off its pipelined Python function and send every
    record through the JVM an extra time. The groups are made once per RDD object, so the
    count job and every feed job of a ``train()`` call read the same ones.
    """
    if rdd.getNumPartitions() <= slots or getattr(rdd, "_is_pipelinable", lambda: False)():
        return rdd
    return rdd.coalesce(slots)


def raw_batches(rdd):
    """``rdd`` as the pickled batches pyspark stores (an RDD of ``bytes``, one pickled list of
    records each), or ``None`` when they cannot be forwarded as they are: another
    serializer, or an uncached ``map`` chain whose function must run first."""
    from pyspark.rdd import RDD
    from pyspark.serializers import (
        BatchedSerializer,
        CloudPickleSerializer,
        NoOpSerializer,
        PickleSerializer,
    )

    serializer = rdd._jrdd_deserializer
    if not (isinstance(serializer, BatchedSerializer)
            and isinstance(serializer.serializer, (PickleSerializer, CloudPickleSerializer))):
        return None
    if getattr(rdd, "_is_pipelinable", lambda: False)():
        return None
    return RDD(rdd._jrdd, rdd.ctx, NoOpSerializer())


def _count_batches(blobs):
    import pickle

    yield [len(pickle.loads(blob)) for blob in blobs]


def _count(records):
    yield sum(1 for _ in records)


def _feed_partition(records, index: int, plan: FeedPlan, targets, secret: bytes, qname: str, epoch: int,
                    feed_timeout: float) -> tuple[int, bool]:
    """Stream partition ``index`` as the plan says; (records counted, cut short)."""
    meta = {"qname": qname, "partition": index, "epoch": epoch}
    expected = plan.partition_sizes[index] if index < len(plan.partition_sizes) else 0
    count = feed_partition(records, expected, targets, secret, meta, feed_timeout)
    return count, count < expected


def _arrow_inference(targets, secret: bytes, qname: str, feed_timeout: float, out_fields):
    """A mapInArrow function: a partition's batches to the local node, results back per chunk
    (pickled, or as ``out_fields`` columns appended to the input rows)."""

    def infer(batches):
        import pickle

        import pyarrow as pa
        from pyspark import TaskContext

        index = TaskContext.get().partitionId()
        target = _local_target(targets, index)
        meta = {"qname": qname, "partition": index}
        pairs = infer_partition(ArrowChunks(batches), target, secret, meta, feed_timeout, by_chunk=True)
        for chunk, results in pairs:
            if out_fields is None:
                yield pa.RecordBatch.from_pydict({"results": [pickle.dumps(results, protocol=5)]},
                                                 schema=pa.schema([("results", pa.binary())]))
            else:
                yield _with_results(chunk, results, out_fields)

    return infer


def _unpickle_results(row):
    import pickle

    return pickle.loads(row[0])


def _as_struct(output_schema):
    from pyspark.sql.types import StructType, _parse_datatype_string

    schema = output_schema if isinstance(output_schema, StructType) else _parse_datatype_string(output_schema)
    if not isinstance(schema, StructType):
        raise FeedError(f"output_schema must name columns, like 'prediction double'; received: {output_schema!r}")
    return schema


def _with_results(chunk, results: list, out_fields):
    """``chunk``'s columns plus ``out_fields`` filled from one result per row."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_type

    names = [f.name for f in out_fields.fields]
    if len(names) == 1:
        columns = [results]
    else:
        columns = [[(r[name] if isinstance(r, dict) else r[i]) for r in results] for i, name in enumerate(names)]
    arrays = list(chunk.columns)
    for out, values in zip(out_fields.fields, columns, strict=True):
        try:
            arrays.append(pa.array([_plain(v) for v in values], type=to_arrow_type(out.dataType)))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            raise FeedError(f"inference results do not fit output column {out.name} "
                            f"{out.dataType.simpleString()}: {exc}") from None
    return pa.RecordBatch.from_arrays(arrays, names=list(chunk.schema.names) + names)


def _plain(value):
    """NumPy scalars and arrays as Python values Arrow takes for any declared type."""
    tolist = getattr(value, "tolist", None)
    return tolist() if tolist is not None else value


def _run_feeder(view, feeder) -> list[tuple[int, bool]]:
    """One epoch's Spark job: (records fed, cut short) per partition of ``view``."""
    return view.mapPartitionsWithIndex(feeder).collect()


def _feeder(plan: FeedPlan, targets, secret: bytes, qname: str, epoch: int, feed_timeout: float,
            batch_sizes=None, arrow_schema=None):
    """A partition's feeding task: records, pickled batches with ``batch_sizes``
    (:func:`raw_batches`), or serialized Arrow batches of ``arrow_schema`` (a DataFrame's)."""

    def feed(index, records):
        if batch_sizes is not None:
            records = PickledBatches(records, batch_sizes[index] if index < len(batch_sizes) else ())
        elif arrow_schema is not None:
            records = ArrowChunks(decode(blob, arrow_schema) for blob in records)
        yield _feed_partition(records, index, plan, targets, secret, qname, epoch, feed_timeout)

    return feed


def _frame_feeder(plan: FeedPlan, targets, secret: bytes, qname: str, epoch: int, feed_timeout: float):
    """A ``mapInArrow`` function (Spark Connect): feed the partition's batches, then one row
    ``(partition, fed, cut)``."""

    def feed(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        index = TaskContext.get().partitionId()
        fed, cut = _feed_partition(ArrowChunks(batches), index, plan, targets, secret, qname, epoch, feed_timeout)
        yield pa.RecordBatch.from_pydict({"partition": [index], "fed": [fed], "cut": [cut]},
                                         schema=pa.schema([("partition", pa.int32()), ("fed", pa.int64()),
                                                           ("cut", pa.bool_())]))

    return feed


def _run_frame_feeder(view, feeder, partitions: int) -> list[tuple[int, bool]]:
    """One epoch's job over Spark Connect: (records fed, cut short) per partition, in order (a
    partition that ran no function had no data)."""
    rows = view.mapInArrow(feeder, "partition int, fed long, cut boolean").collect()
    found = {row["partition"]: (row["fed"], row["cut"]) for row in rows}
    return [found.get(i, (0, False)) for i in range(max(partitions, max(found, default=-1) + 1))]


def _array_columns(data) -> list[str]:
    return [f.name for f in data.schema.fields if type(f.dataType).__name__ == "ArrayType"]


def _local_target(targets: list[FeedTarget], index: int) -> FeedTarget:
    """The consumer on this task's executor; by partition index when this executor has none."""
    from tfos.node.identity import current_executor

    me = current_executor()
    for target in targets:
        if target.executor_id == me.executor_id:
            return target
    return targets[index % len(targets)]
