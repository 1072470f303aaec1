"""The environment tfos hands its executor-side processes, built by one function for all.

:func:`child_environment` makes the environment of the node supervisor, the TF process,
TensorBoard and ``parallel_run``'s instances. Its layers, later ones winning:

1. the parent's environment (the executor's, as the Python worker got it) minus Spark's
   secrets (:func:`without_spark_secrets`);
2. ``OMP_NUM_THREADS`` removed unless the user set it in the Spark conf: pyspark sets it
   to ``spark.task.cpus`` for its Python workers, and a TF process that owns the executor
   would run its thread pools at that width;
3. the user's ``env=`` (of :func:`tfos.run` or :func:`tfos.parallel_run`), every name
   as given, a secret's included: naming a variable is asking for it; ``OMP_NUM_THREADS``
   there is kept whatever layer 2 said;
4. ``CUDA_VISIBLE_DEVICES``, when Spark assigned the task GPUs: exactly those, mapped
   through the ``CUDA_VISIBLE_DEVICES`` that layers 1-3 left (:func:`tfos.node.gpus.cuda_visible_devices`).
   So ``env={"CUDA_VISIBLE_DEVICES": ...}`` says how the executor numbers its GPUs, as
   ``spark.executorEnv`` would; it never hands a node a GPU Spark gave another task.
   Without GPU scheduling the value of layers 1-3 stands. A child that must see no GPU
   (TensorBoard: ``no_gpu=True``) gets ``-1``, whatever layers 1-3 say: otherwise it
   would see every GPU of the executor, a node's included;
5. tfos's own: ``PYTHONPATH`` is the user's entries (from ``env=``) first, then the
   parent's ``sys.path``, so the child imports tfos and the user's modules as the Spark
   task did; ``PYTHONUNBUFFERED=1`` (the output tail needs lines as they are printed);
   ``TF_CONFIG`` is removed (a cluster's TF process sets its own; an instance has none).

Spark puts its own credentials in the environment of every executor and Python worker
(``_SPARK_AUTH_SECRET`` for ``spark.authenticate``, ``_SPARK_SSL_RPC_*_PASSWORD``, the
worker factory's and gateway's handshake secrets). None of tfos's processes needs one,
and the TF process runs user code next to TensorFlow's unauthenticated gRPC servers.

The secret rule (:func:`is_spark_secret`): a variable is dropped when

- its name starts with ``_SPARK_`` or ``_PYSPARK_``: Spark's private variables
  (the auth secret, the RPC TLS passwords, the launcher's secret, the driver's
  connection-info path); nothing of a user's is named so;
- it is one of Spark's named secrets without that prefix
  (:data:`SPARK_NAMED_SECRETS`); or
- its name is in Spark's namespace (starts with ``SPARK_`` or ``PYSPARK_``) and
  contains ``SECRET``, ``PASSWORD`` or ``TOKEN``: Spark's future secrets.

Everything else stays, secrets of the user's included (``AWS_SECRET_ACCESS_KEY``,
``HADOOP_TOKEN_FILE_LOCATION``): storage and Kerberos need them. A variable the user
passes with ``env=`` is applied after the filter (layer 3), so it always reaches the
child, whatever its name; one set with ``spark.executorEnv.*`` under a name the rule
matches is dropped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from tfos.node.gpus import cuda_visible_devices

#: Spark's secrets whose names carry no underscore prefix: pyspark's worker-daemon and
#: gateway handshakes, Spark Connect's token
SPARK_NAMED_SECRETS = frozenset({
    "PYTHON_WORKER_FACTORY_SECRET", "PYSPARK_GATEWAY_SECRET", "SPARK_CONNECT_AUTHENTICATE_TOKEN",
})
_PRIVATE_PREFIXES = ("_SPARK_", "_PYSPARK_")
_SPARK_PREFIXES = ("SPARK_", "PYSPARK_")
_SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN")


def is_spark_secret(name: str) -> bool:
    """Whether ``name`` is one of Spark's credential variables (the rule in the module doc)."""
    upper = name.upper()
    if upper.startswith(_PRIVATE_PREFIXES) or upper in SPARK_NAMED_SECRETS:
        return True
    return upper.startswith(_SPARK_PREFIXES) and any(word in upper for word in _SECRET_WORDS)


def without_spark_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``env`` with every Spark secret removed; the base of every child's environment."""
    return {name: value for name, value in env.items() if not is_spark_secret(name)}


def child_environment(
    parent: Mapping[str, str],
    *,
    keep_omp_num_threads: bool,
    user_env: Mapping[str, str] | None = None,
    gpus: Sequence[str] = (),
    no_gpu: bool = False,
    python_path: Sequence[str] | None = None,
) -> dict[str, str]:
    """The environment of a child tfos starts on an executor, by the layers in the module doc.

    Args:
        parent: the environment to start from (``os.environ``); not changed.
        keep_omp_num_threads: keep the parent's ``OMP_NUM_THREADS`` (the user set it with
            ``spark.executorEnv.OMP_NUM_THREADS``); otherwise it is pyspark's, and dropped.
        user_env: the run's ``env=``.
        gpus: the GPU addresses Spark assigned to the task (empty: no GPU scheduling).
        no_gpu: the child sees no GPU at all (``CUDA_VISIBLE_DEVICES=-1``).
        python_path: where the child finds Python modules; by default this process's ``sys.path``.

    Returns:
        A new dict. Raises ``ConfigError`` when Spark's GPU addresses do not fit the
        executor's ``CUDA_VISIBLE_DEVICES`` (the message says which and why).
    """
    user_env = dict(user_env or {})
    env = without_spark_secrets(parent)
    if not keep_omp_num_threads:
        env.pop("OMP_NUM_THREADS", None)
    env.update(user_env)
    devices = "-1" if no_gpu else cuda_visible_devices(list(gpus), env.get("CUDA_VISIBLE_DEVICES"))
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = devices
    paths = [*user_env.get("PYTHONPATH", "").split(os.pathsep), *(sys.path if python_path is None else python_path)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("TF_CONFIG", None)
    return env
