"""The Spark application tfos runs in, whichever way the user reached it.

``tfos.run`` takes a ``SparkContext``, a classic ``SparkSession`` or a Spark Connect
session (``SparkSession.builder.remote("sc://...")``). Everything the driver side asks of
Spark goes through one :class:`SparkApp`: the conf, the application's facts, the barrier
job that runs the nodes, a job run in a thread under a group, and its cancellation.

- :class:`ClassicApp`: this process owns the ``SparkContext`` (py4j to the driver JVM).
- :class:`ConnectApp`: the driver is a Spark Connect server elsewhere; there is no
  ``SparkContext`` here, no RDDs, no py4j. Jobs are DataFrame plans: the node job is a
  barrier ``mapInPandas`` over ``spark.range(n)``, a job group is an operation tag
  (``addTag``/``interruptTag``, per thread), the conf is ``spark.conf``.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from typing import Any

from tfos.errors import ConfigError
from tfos.spark_jobs import JobOutcome, cancel_job_group, spark_thread

log = logging.getLogger(__name__)

#: a node task: (slot, the task's address, Spark's attempt number) -> its small result dict
NodeTask = Callable[[int, "str | None", int], dict]


def is_connect_session(spark: object) -> bool:
    """A Spark Connect ``SparkSession`` (pyspark.sql.connect), without importing its client."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def spark_app(spark: object) -> SparkApp:
    """The :class:`SparkApp` for ``tfos.run``'s first argument.

    Raises:
        ConfigError: anything that is neither a SparkContext nor a SparkSession.
    """
    if isinstance(spark, SparkApp):
        return spark
    if is_connect_session(spark):
        return ConnectApp(spark)
    if hasattr(spark, "parallelize") and hasattr(spark, "getConf"):
        return ClassicApp(spark)
    context = getattr(spark, "sparkContext", None)
    if context is not None and hasattr(context, "parallelize"):
        return ClassicApp(context)
    raise ConfigError(f"tfos.run takes a SparkContext or a SparkSession (classic or Spark Connect); "
                      f"received: {type(spark).__name__}")


class SparkApp:
    """What tfos's driver side needs from Spark (see the module docstring)."""

    #: a Spark Connect session: no SparkContext, no RDDs in this process
    remote = False

    def get(self, key: str, default: str | None = None) -> str | None:
        """A Spark conf value (``default`` when unset or unreadable)."""
        raise NotImplementedError

    def run_barrier(self, n: int, task: NodeTask, description: str) -> list[dict]:
        """Run ``task`` on ``n`` executors at once (one barrier stage); their results in slot order."""
        raise NotImplementedError

    def set_group(self, group: str, description: str) -> None:
        """Put every job this thread starts from now on in ``group`` (to cancel them together)."""
        raise NotImplementedError

    def clear_group(self, group: str) -> None:
        """Undo :meth:`set_group` in this thread (a thread of a pool runs other work after)."""

    def start_job(self, group: str, description: str, thunk: Callable[[], Any], name: str,
                  on_end: Callable[[], None] | None = None) -> JobOutcome:
        """``thunk()`` in a thread of its own, every job it starts in ``group``;
        ``on_end()`` when it ended, whatever the end (to wake waiters)."""
        outcome = JobOutcome()

        def target() -> None:
            try:
                self.set_group(group, description)
                outcome.value = thunk()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller in the outcome
                outcome.error = exc
            finally:
                self.clear_group(group)
                outcome.done.set()
                if on_end is not None:
                    on_end()

        self.thread(target, name).start()
        return outcome

    def cancel(self, group: str) -> None:
        """Cancel every job of ``group``; quiet when the application is stopping."""
        raise NotImplementedError

    def thread(self, target: Callable[[], None], name: str):
        """A daemon thread whose Spark jobs this application can group (not started)."""
        return spark_thread(target, name)


class ClassicApp(SparkApp):
    def __init__(self, sc):
        self.sc = sc

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.sc.getConf().get(key, default)

    def run_barrier(self, n: int, task: NodeTask, description: str) -> list[dict]:
        def node(_iterator):
            from pyspark import BarrierTaskContext

            ctx = BarrierTaskContext.get()
            slot = ctx.partitionId()
            infos = ctx.getTaskInfos()
            yield task(slot, infos[slot].address if slot < len(infos) else None, ctx.attemptNumber())

        return self.sc.parallelize(range(n), n).barrier().mapPartitions(node).collect()

    def set_group(self, group: str, description: str) -> None:
        self.sc.setJobGroup(group, description, interruptOnCancel=True)

    def cancel(self, group: str) -> None:
        cancel_job_group(self.sc, group)


class ConnectApp(SparkApp):
    remote = True

    def __init__(self, spark):
        self.spark = spark

    def get(self, key: str, default: str | None = None) -> str | None:
        try:
            value = self.spark.conf.get(key, None)
        except Exception as exc:  # noqa: BLE001 - a key the server will not show
            log.debug("spark.conf.get(%s) over Spark Connect failed: %s", key, exc)
            return default
        return default if value is None else value

    def run_barrier(self, n: int, task: NodeTask, description: str) -> list[dict]:
        def node(batches):
            import pandas as pd
            from pyspark import BarrierTaskContext

            for _ in batches:  # the slot's one row of spark.range(n)
                pass
            ctx = BarrierTaskContext.get()
            slot = ctx.partitionId()
            infos = ctx.getTaskInfos()
            result = task(slot, infos[slot].address if slot < len(infos) else None, ctx.attemptNumber())
            yield pd.DataFrame({"result": [json.dumps(result)]})

        rows = (self.spark.range(0, n, 1, numPartitions=n)
                .mapInPandas(node, "result string", barrier=True).collect())
        return [json.loads(row.result) for row in rows]

    def set_group(self, group: str, description: str) -> None:
        self.spark.addTag(group)  # this thread's operations of this session only

    def clear_group(self, group: str) -> None:
        try:
            self.spark.removeTag(group)
        except Exception as exc:  # noqa: BLE001 - a closed session
            log.debug("removeTag(%s) failed: %s", group, exc)

    def cancel(self, group: str) -> None:
        try:
            self.spark.interruptTag(group)
        except Exception as exc:  # noqa: BLE001 - the session or the server is gone
            log.debug("interruptTag(%s) failed: %s", group, exc)

    def thread(self, target: Callable[[], None], name: str):
        return spark_thread(target, name, session=self.spark)

    def client_host(self) -> str:
        """This process's address on the route to the Connect server: the one the executors,
        on the server's network, can reach it at (if any address can)."""
        host, port = _connect_endpoint(self.spark)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, port))  # UDP: picks the route, sends nothing
            return probe.getsockname()[0]


def _connect_endpoint(spark) -> tuple[str, int]:
    """(host, port) of the Connect server this session talks to (its channel builder's endpoint)."""
    endpoint = spark.client._builder.endpoint  # "host:port", an IPv6 host in brackets
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


__all__ = ["ClassicApp", "ConnectApp", "NodeTask", "SparkApp", "is_connect_session", "spark_app"]
