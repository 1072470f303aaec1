"""TensorFlowOnSpark's ``TFCluster`` module over :func:`tfos.run`.

``run`` keeps TensorFlowOnSpark's parameters, their order and their defaults
(``master_node=None``: every training node is a worker, ``worker:0`` acts as chief).
The returned :class:`TFCluster` keeps its methods' positional order, notably
``shutdown(ssc=None, grace_secs=0, timeout=259200)``, and gives ``cluster_info`` as the
list of dicts TensorFlowOnSpark returned. Everything else of :class:`tfos.Cluster`
(``feed_reports``, ``failures``, ``cluster_spec``...) is reachable on it too.

Unlike TensorFlowOnSpark, a failed node makes ``shutdown`` (or ``train``) raise
:class:`tfos.ClusterFailedError` instead of stopping Spark and calling ``sys.exit(1)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from tfos.cluster import Cluster
from tfos.cluster import run as _tfos_run
from tfos.compat.keras_default import keras_option, prefer_tf_keras_on_the_driver
from tfos.config import DEFAULT_SHUTDOWN_TIMEOUT_S
from tfos.input_mode import InputMode
from tfos.net import split_host_port

#: what ``train(num_epochs=0)`` feeds: TensorFlowOnSpark's "arbitrarily large number"
UNSPECIFIED_EPOCHS = 10

_TFOS_QUEUES = ("input", "output", "error")

prefer_tf_keras_on_the_driver()


class TFCluster:
    """A running cluster, with TensorFlowOnSpark's ``TFCluster`` methods. Made by :func:`run`.

    Attributes:
        cluster: the underlying :class:`tfos.Cluster`.
        sc, num_executors, input_mode, defaultFS, working_dir, queues: as TensorFlowOnSpark
            set them.
    """

    def __init__(self, cluster: Cluster, sc, num_executors: int, input_mode: InputMode,
                 queues, release_port: bool):
        self.cluster = cluster
        self.sc = sc
        self.num_executors = num_executors
        self.input_mode = input_mode
        self.queues = list(queues) if queues is not None else list(_TFOS_QUEUES)
        self.defaultFS = cluster.facts.default_fs  # noqa: N815 - TensorFlowOnSpark's name
        self.working_dir = os.getcwd()
        self._release_port = release_port

    def train(self, dataRDD, num_epochs: int = 0, feed_timeout: float = 600, qname: str = "input"):  # noqa: N803
        """Feed ``dataRDD`` (an RDD or DataFrame) ``num_epochs`` times; see :meth:`tfos.Cluster.train`.

        ``num_epochs=0`` (TensorFlowOnSpark's default) feeds :data:`UNSPECIFIED_EPOCHS`
        epochs, as TensorFlowOnSpark did; nodes that need fewer call ``DataFeed.terminate()``.
        Blocks until the data is fed; returns the :class:`~tfos.feed.driver.FeedReport`.
        """
        if num_epochs == 0:
            num_epochs = UNSPECIFIED_EPOCHS
        return self.cluster.train(dataRDD, num_epochs=num_epochs, feed_timeout=feed_timeout, qname=qname)

    def inference(self, dataRDD, feed_timeout: float = 600, qname: str = "input"):  # noqa: N803
        """A lazy RDD with one result per record of ``dataRDD``, in input order."""
        return self.cluster.inference(dataRDD, feed_timeout=feed_timeout, qname=qname)

    def shutdown(self, ssc=None, grace_secs: float = 0, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_S) -> None:
        """Wait for the training nodes, then stop everything; TensorFlowOnSpark's argument order.

        ``timeout=-1`` waits without limit, as in TensorFlowOnSpark. A Spark Streaming
        ``ssc`` is refused (``ConfigError``); tfos does not feed from DStreams.

        Raises:
            ClusterFailedError: a node failed.
            ClusterTimeout: the training nodes still ran after ``timeout`` seconds.
        """
        self.cluster.shutdown(grace_secs=grace_secs, timeout=timeout, ssc=ssc)

    def tensorboard_url(self) -> str | None:
        """``http://host:port`` of the run's TensorBoard, or ``None``."""
        return self.cluster.tensorboard_url()

    @property
    def cluster_info(self) -> list[dict]:
        """One dict per node, in slot order, with TensorFlowOnSpark's keys.

        ``executor_id`` is the slot number (0..N-1), as in TensorFlowOnSpark; Spark's own
        executor id is under ``spark_executor_id``. Keys with no tfos counterpart
        (``addr``, ``authkey``, ``tb_pid``) are absent.
        """
        return [
            {"executor_id": slot, "host": n.host, "job_name": n.job_name, "task_index": n.task_index,
             "port": n.port, "tb_port": n.tensorboard_port, "spark_executor_id": n.executor_id}
            for slot, n in enumerate(self.cluster.cluster_info)
        ]

    @property
    def cluster_meta(self) -> dict:
        """TensorFlowOnSpark's ``cluster_meta`` dict, from what tfos knows of the run."""
        template: dict[str, list[int]] = {}
        for slot, node in enumerate(self.cluster.cluster_info):
            template.setdefault(node.job_name, []).append(slot)
        return {
            "id": self.cluster.run_id, "cluster_template": template, "num_executors": self.num_executors,
            "default_fs": self.defaultFS, "working_dir": self.working_dir,
            "server_addr": _address(self.cluster), "release_port": self._release_port,
        }

    def __getattr__(self, name: str):
        # tfos-only views (feed_reports, failures, cluster_spec, run_id...) stay reachable
        if name == "cluster":
            raise AttributeError(name)
        return getattr(self.cluster, name)

    def __repr__(self) -> str:
        return f"TFCluster({self.cluster!r})"


def run(sc, map_fun: Callable[[Any, Any], Any], tf_args: Any, num_executors: int | None,
        num_ps: int = 0, tensorboard: bool = False, input_mode: InputMode = InputMode.TENSORFLOW,
        log_dir: str | None = None, driver_ps_nodes: bool = False, master_node: str | None = None,
        reservation_timeout: float = 600, queues=("input", "output", "error"), eval_node: bool = False,
        release_port: bool = True, **options: Any) -> TFCluster:
    """TensorFlowOnSpark's ``TFCluster.run``: :func:`tfos.run` with its defaults.

    Blocks until the cluster is up. The nodes run under tf-keras unless the script chose
    (``keras=``, ``TF_USE_LEGACY_KERAS``; see :mod:`tfos.compat.keras_default`). ``queues``
    is accepted and has no effect; ``release_port=False`` keeps each node's TF port held
    into ``map_fun`` as ``ctx.tmp_socket``, until ``ctx.release_port()``;
    ``driver_ps_nodes=True`` is refused (``ConfigError``). Extra keyword ``options``
    go to :func:`tfos.run` (``keras=``, ``env=``, ``max_restarts=``...).

    Returns:
        A :class:`TFCluster`.

    Raises:
        ConfigError, ReservationTimeout, ClusterFailedError: as :func:`tfos.run`.
    """
    options["keras"] = keras_option(sc, options)  # tf-keras unless the script chose (keras_default.py)
    cluster = _tfos_run(
        sc, map_fun, tf_args, num_executors, num_ps, tensorboard, input_mode, log_dir,
        driver_ps_nodes, master_node, reservation_timeout, queues, eval_node, release_port, **options,
    )
    return TFCluster(cluster, sc, cluster.config.num_executors, InputMode(input_mode), queues, release_port)


def _address(cluster) -> tuple[str, int] | None:
    server = getattr(cluster, "server", None)
    address = getattr(server, "address", None)
    if not address:
        return None
    host, port = split_host_port(str(address))
    return (host, port) if port is not None else None


__all__ = ["InputMode", "TFCluster", "UNSPECIFIED_EPOCHS", "run"]
