"""Which Keras a ported TensorFlowOnSpark script runs under: tf-keras, unless it asks otherwise.

TensorFlowOnSpark scripts are Keras 2 scripts (``ModelCheckpoint(".../weights-{epoch:04d}",
save_weights_only=True)``, ``model.save(dir, save_format="tf")``...), which Keras 3 refuses.
So ``tfos.compat`` makes ``tf.keras`` tf-keras on the driver (``TF_USE_LEGACY_KERAS=1`` when
``tfos.compat.TFCluster`` or ``tfos.compat.pipeline`` is imported, unless the variable is
already set) and on the nodes (``keras="tf_keras"``). A script asks otherwise with
``keras=...`` or by setting ``TF_USE_LEGACY_KERAS`` itself (driver environment, ``env=``,
``spark.executorEnv.TF_USE_LEGACY_KERAS``, ``tfos submit --keras``). Plain ``tfos.run`` keeps its own default.
"""

from __future__ import annotations

import os

from tfos.keras_compat import legacy_keras_requested
from tfos.spark.conf import KERAS_KEY

_VARIABLE = "TF_USE_LEGACY_KERAS"


def prefer_tf_keras_on_the_driver() -> None:
    """Make the driver's ``tf.keras`` tf-keras unless the script chose (TF reads this lazily,
    when ``tf.keras`` is first used, so importing TensorFlow before tfos.compat is fine)."""
    os.environ.setdefault(_VARIABLE, "1")


def _conf_reader(sc):
    """``get(key, default)`` over a SparkContext's conf or a Spark Connect session's, else None."""
    if hasattr(sc, "getConf"):
        return sc.getConf().get
    from tfos.spark.app import ConnectApp, is_connect_session

    return ConnectApp(sc).get if is_connect_session(sc) else None


def keras_option(sc, options: dict) -> str:
    """The ``keras=`` a compat run passes to :func:`tfos.run`."""
    if "keras" in options:
        return options["keras"]
    if _VARIABLE in (options.get("env") or {}):
        return "auto"  # the script's own env= decides on the nodes
    get = _conf_reader(sc)
    if get is not None:
        if get(KERAS_KEY, None):
            return get(KERAS_KEY, None)  # tfos submit --keras (over Spark Connect, --remote's TFOS_CONF too)
        if get(f"spark.executorEnv.{_VARIABLE}", None) is not None:
            return "auto"
    return "tf_keras" if legacy_keras_requested() else "keras3"
