"""The driver's half of InputMode.SPARK: plan the feed, run the feeding Spark jobs, end the feed."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tfos.errors import FeedError
from tfos.feed.client import ControlChannel, FeedTarget, feed_segments, infer_partition
from tfos.feed.plan import FeedPlan, plan_feed

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
    partition_sizes: list[int] = field(default_factory=list, repr=False)

    def __str__(self) -> str:
        per_node = ", ".join(f"{n} {c}" for n, c in zip(self.nodes, self.records_per_node, strict=True))
        text = (f"fed {self.epochs_fed} of {self.num_epochs} epoch(s) of {self.records_per_epoch} records "
                f"on queue {self.qname!r} ({per_node}); ctx.dataset yields {self.quota_per_node} per node "
                f"per epoch, dropping {self.dropped_per_epoch}")
        return text + (" (stopped early by a node)" if self.terminated else "")


def as_rdd(data):
    """(rdd, columns) for an RDD or a DataFrame (rows become tuples in column order)."""
    if hasattr(data, "rdd") and hasattr(data, "columns"):
        return data.rdd.map(tuple), list(data.columns)
    if hasattr(data, "mapPartitionsWithIndex"):
        return data, None
    raise FeedError(f"cluster.train/inference take an RDD or a DataFrame; received: {type(data).__name__}")


class SparkFeeder:
    """Feeds one run's consumer nodes. Used by :class:`tfos.Cluster`; not thread-safe."""

    def __init__(self, sc, targets: list[FeedTarget], secret: bytes, run_job, check_nodes):
        self.sc = sc
        self.targets = targets
        self._secret = secret
        self._run_job = run_job  # (description, thunk) -> result, under the run's job group
        self._check_nodes = check_nodes  # raises the run's node failure, if one comes within a moment
        self._controls: dict[tuple[int, str], ControlChannel] = {}
        self.reports: list[FeedReport] = []
        self._sizes: dict[int, list[int]] = {}  # rdd id -> partition sizes, for cached RDDs

    def _control(self, node: int, qname: str, feed_timeout: float) -> ControlChannel:
        key = (node, qname)
        if key not in self._controls:
            self._controls[key] = ControlChannel(self.targets[node], self._secret, qname, feed_timeout)
        return self._controls[key]

    def train(self, data, num_epochs: int, feed_timeout: float, qname: str) -> FeedReport:
        rdd, columns = as_rdd(data)
        sizes = self._partition_sizes(rdd, reusable=columns is None)
        plan = plan_feed(sizes, len(self.targets))
        report = FeedReport(
            qname=qname, num_epochs=num_epochs, records_per_epoch=plan.total,
            nodes=[t.name for t in self.targets], records_per_node=list(plan.expected),
            quota_per_node=plan.quota, dropped_per_epoch=plan.dropped_per_epoch, partition_sizes=sizes,
        )
        self.reports.append(report)
        if plan.dropped_per_epoch:
            log.warning(
                "feed of %d records over %d nodes: ctx.dataset yields %d per node per epoch so every "
                "node runs the same steps; %d record(s) per epoch are dropped (DataFeed sees them all)",
                plan.total, len(self.targets), plan.quota, plan.dropped_per_epoch,
            )
        for epoch in range(num_epochs):
            for i in range(len(self.targets)):
                self._control(i, qname, feed_timeout).epoch({
                    "epoch": epoch, "quota": plan.quota, "expected": plan.expected[i], "columns": columns,
                })
            feeder = _feeder(plan, self.targets, self._secret, qname, epoch, feed_timeout)
            fed = self._run_job(
                f"tfos: feed epoch {epoch + 1}/{num_epochs}",
                lambda feeder=feeder: rdd.mapPartitionsWithIndex(feeder).collect(),
            )
            report.epochs_fed = epoch + 1
            counted = [n for n, _ in fed]
            if sum(counted) != plan.total and not any(t for _, t in fed):
                raise FeedError(
                    f"epoch {epoch + 1} fed {sum(counted)} records but the count job saw {plan.total} "
                    f"(per partition: {counted} vs {sizes}); the RDD is not deterministic: cache() it"
                )
            if any(t for _, t in fed):
                self._check_nodes()  # a node that stopped taking data may have crashed
                report.terminated = True
                log.info("feed stopped after epoch %d of %d: a node ended its feed (terminate() or "
                         "main_fun returned)", epoch + 1, num_epochs)
                break
        return report

    def _partition_sizes(self, rdd, reusable: bool) -> list[int]:
        """Records per partition; counted once per cached or checkpointed RDD (a Spark job each
        time otherwise: its data may change between calls)."""
        stable = reusable and (rdd.is_cached or rdd.isCheckpointed())
        if stable and rdd.id() in self._sizes:
            return self._sizes[rdd.id()]
        sizes = self._run_job("tfos: count partitions", lambda: rdd.mapPartitions(_count).collect())
        if stable:
            self._sizes[rdd.id()] = sizes
        return sizes

    def inference(self, data, feed_timeout: float, qname: str):
        rdd, _columns = as_rdd(data)
        targets, secret = self.targets, self._secret

        def infer(index, records):
            target = _local_target(targets, index)
            meta = {"qname": qname, "partition": index}
            yield from infer_partition(records, target, secret, meta, feed_timeout)

        return rdd.mapPartitionsWithIndex(infer, preservesPartitioning=True)

    def end(self, feed_timeout: float = 60.0) -> None:
        """Tell every fed queue the feed is over (``should_stop()`` turns true after the data)."""
        qnames = {q for _, q in self._controls} or {"input"}
        for i in range(len(self.targets)):
            for qname in qnames:
                try:
                    self._control(i, qname, feed_timeout).end()
                except (FeedError, OSError) as exc:
                    log.warning("could not end the feed of node %s: %s", self.targets[i].name, exc)

    def close(self) -> None:
        for control in self._controls.values():
            try:
                control.close()
            except OSError:
                pass
        self._controls.clear()


def _count(records):
    yield sum(1 for _ in records)


def _feeder(plan: FeedPlan, targets, secret: bytes, qname: str, epoch: int, feed_timeout: float):
    def feed(index, records):
        meta = {"qname": qname, "partition": index, "epoch": epoch}
        segments = plan.segments[index] if index < len(plan.segments) else ()
        count = feed_segments(records, segments, targets, secret, meta, feed_timeout)
        expected = plan.partition_sizes[index] if index < len(plan.partition_sizes) else 0
        yield (count, count < expected)

    return feed


def _local_target(targets: list[FeedTarget], index: int) -> FeedTarget:
    """The consumer on this task's executor; by partition index when this executor has none."""
    from tfos.node.identity import current_executor

    me = current_executor()
    for target in targets:
        if target.executor_id == me.executor_id:
            return target
    return targets[index % len(targets)]
