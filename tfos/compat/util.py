"""TensorFlowOnSpark's ``util`` helpers that its examples call from node code."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def single_node_env(num_gpus: int = 1, worker_index: int = -1, nodes=()) -> None:
    """No-op kept for ``TFParallel`` map functions: tfos already set this process up.

    TensorFlowOnSpark picked GPUs here and extended ``CLASSPATH`` for HDFS. Under tfos,
    ``CUDA_VISIBLE_DEVICES`` already holds the GPUs Spark assigned to the task, and the
    Hadoop ``CLASSPATH`` comes from ``tfos submit --hdfs`` or ``spark.executorEnv.CLASSPATH``.
    """
    log.debug("single_node_env: CUDA_VISIBLE_DEVICES=%r (set by tfos)", os.environ.get("CUDA_VISIBLE_DEVICES"))


def get_ip_address() -> str:
    """This host's address as Spark would advertise it: ``SPARK_LOCAL_IP``, else the host name's."""
    return os.environ.get("SPARK_LOCAL_IP") or socket.gethostbyname(socket.gethostname())


__all__ = ["get_ip_address", "single_node_env"]
