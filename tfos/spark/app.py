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
from tfos.spark.jobs import JobOutcome, cancel_job_group, spark_thread

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

    def run_tasks(self, n: int, task: Callable[[int], Any], barrier: bool) -> list:
        """Run ``task(index)`` for index 0..n-1, one Spark task each (all at once in one
        barrier stage when ``barrier``); their return values (picklable) in index order."""
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

    def run_tasks(self, n: int, task: Callable[[int], Any], barrier: bool) -> list:
        def one(index, _iterator):
            yield task(index)

        def one_in_barrier(_iterator):
            from pyspark import BarrierTaskContext

            yield task(BarrierTaskContext.get().partitionId())

        rdd = self.sc.parallelize(range(n), n)
        if barrier:
            return rdd.barrier().mapPartitions(one_in_barrier).collect()
        return rdd.mapPartitionsWithIndex(one).collect()

    def set_group(self, group: str, description: str) -> None:
        self.sc.setJobGroup(group, description, interruptOnCancel=True)

    def cancel(self, group: str) -> None:
        cancel_job_group(self.sc, group)


class ConnectApp(SparkApp):
    remote = True

    def __init__(self, spark):
        self.spark = spark

    def get(self, key: str, default: str | None = None) -> str | None:
        """The session's value; for a ``spark.tfos.*`` key it has none of, ``TFOS_CONF``'s.

        A Connect client session cannot receive a command line's ``--conf`` values, so
        ``tfos submit --remote`` hands its settings over in ``TFOS_CONF``
        (:func:`tfos.spark.conf.conf_from_environment`); what the session has (the server's
        conf, the script's builder or ``spark.conf.set``) wins, as a script's own settings
        win over spark-submit's.
        """
        from tfos.spark.conf import KEY_PREFIX, conf_from_environment

        try:
            value = self.spark.conf.get(key, None)
        except Exception as exc:  # noqa: BLE001 - a key the server will not show
            log.debug("spark.conf.get(%s) over Spark Connect failed: %s", key, exc)
            value = None
        if key.startswith(KEY_PREFIX):
            submitted = conf_from_environment().get(key)
            if value is None:
                value = submitted
            elif submitted is not None and submitted != value:
                log.warning("%s: the Spark Connect session's value wins over the one in TFOS_CONF "
                            "(tfos submit); the session has it from the server's conf or the script", key)
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

    def run_tasks(self, n: int, task: Callable[[int], Any], barrier: bool) -> list:
        """Over ``spark.range(n)`` in n partitions; each value comes back cloudpickled in a
        binary column (from the executors, through Spark: never from a socket of tfos's)."""

        def one(batches):
            import cloudpickle
            import pandas as pd
            from pyspark import TaskContext

            for _ in batches:  # the partition's one row
                pass
            index = TaskContext.get().partitionId()
            yield pd.DataFrame({"index": [index], "value": [cloudpickle.dumps(task(index))]})

        import cloudpickle

        rows = (self.spark.range(0, n, 1, numPartitions=n)
                .mapInPandas(one, "index int, value binary", barrier=barrier).collect())
        by_index = {row["index"]: cloudpickle.loads(row["value"]) for row in rows}
        return [by_index[i] for i in range(n)]

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
        on the server's network, can reach it at (if any address can).

        Raises:
            ConfigError: the server's host cannot be read from the session or resolved; the
                message names ``TFOS_SERVER_HOST``, which skips this look-up.
        """
        host = connect_server_host(self.spark)
        try:
            family, _, _, _, address = socket.getaddrinfo(host, _ROUTE_PROBE_PORT, type=socket.SOCK_DGRAM)[0]
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect(address)  # UDP: picks the route, sends nothing
                return probe.getsockname()[0]
        except OSError as exc:
            raise ConfigError(f"cannot find this machine's address on the route to the Spark Connect server "
                              f"{host!r} ({exc}): set TFOS_SERVER_HOST to an address of this machine the "
                              f"executors can reach") from None


#: any port: a UDP socket's connect() only chooses the route, which depends on the host alone
_ROUTE_PROBE_PORT = 15002


def connect_server_host(spark) -> str:
    """The host of the Connect server ``spark`` talks to, from the client's public ``host``
    property (what pyspark shows in its REPL banner), else ``SPARK_REMOTE``.

    Raises:
        ConfigError: neither says; the message names ``TFOS_SERVER_HOST``.
    """
    import os
    import urllib.parse

    host = getattr(getattr(spark, "client", None), "host", None)
    if not isinstance(host, str) or not host:
        remote = os.environ.get("SPARK_REMOTE", "")
        host = urllib.parse.urlparse(remote.replace("sc://", "http://", 1)).hostname if remote else None
    if not host:
        raise ConfigError("cannot tell which Spark Connect server this session talks to (this pyspark's "
                          "client has no public host, and SPARK_REMOTE is unset): set TFOS_SERVER_HOST to an "
                          "address of this machine the executors can reach")
    return host.strip("[]")


__all__ = ["ClassicApp", "ConnectApp", "NodeTask", "SparkApp", "connect_server_host", "is_connect_session",
           "spark_app"]
