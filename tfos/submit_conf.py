"""The Spark conf keys ``tfos submit`` sets for the script it starts, and their reader.

``tfos submit --cluster-size N --keras tf_keras train.py`` puts ``spark.tfos.clusterSize=N``
and ``spark.tfos.keras=tf_keras`` into the application's Spark conf. ``tfos.run`` reads
them through :func:`defaults_from_conf` and uses them where the caller gave no value, so a
script started by ``tfos submit`` calls ``tfos.run(sc, main_fun, args)`` with only the
TensorFlowOnSpark arguments. Explicit arguments always win.
"""

from __future__ import annotations

from typing import Any

from tfos.config import KERAS_CHOICES
from tfos.errors import ConfigError

#: number of TF nodes (one per executor): ``tfos.run``'s ``num_executors`` default
CLUSTER_SIZE_KEY = "spark.tfos.clusterSize"
#: the Keras flavour ``tfos submit --keras`` chose: ``tfos.run``'s ``keras`` default
KERAS_KEY = "spark.tfos.keras"


def defaults_from_conf(conf: Any) -> dict[str, Any]:
    """``tfos.run`` keyword defaults found in a Spark conf; empty when ``tfos submit`` set none.

    Never blocks; reads ``conf.get(key)`` only (a ``SparkConf`` or anything with that method).

    Returns:
        A dict with ``num_executors`` (int, from :data:`CLUSTER_SIZE_KEY`) and ``keras``
        (str, from :data:`KERAS_KEY`), each only when its key is set.

    Raises:
        ConfigError: a key holds a value ``tfos.run`` cannot use; the message names the key.
    """
    defaults: dict[str, Any] = {}
    size = conf.get(CLUSTER_SIZE_KEY)
    if size not in (None, ""):
        try:
            defaults["num_executors"] = int(size)
        except ValueError:
            defaults["num_executors"] = 0
        if defaults["num_executors"] < 1:
            raise ConfigError(
                f"{CLUSTER_SIZE_KEY} must be a whole number >= 1 (tfos submit --cluster-size); "
                f"received: {CLUSTER_SIZE_KEY}={size!r}"
            )
    keras = conf.get(KERAS_KEY)
    if keras not in (None, ""):
        if keras not in KERAS_CHOICES:
            raise ConfigError(
                f"{KERAS_KEY} must be one of {', '.join(KERAS_CHOICES)} (tfos submit --keras); "
                f"received: {KERAS_KEY}={keras!r}"
            )
        defaults["keras"] = keras
    return defaults


__all__ = ["CLUSTER_SIZE_KEY", "KERAS_KEY", "defaults_from_conf"]
