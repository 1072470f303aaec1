"""TensorFlowOnSpark's ``compat`` helpers, for TensorFlow 2.21 with Keras 3 (or tf-keras)."""

from __future__ import annotations

import logging
import shutil
import tempfile

log = logging.getLogger(__name__)


def export_saved_model(model, export_dir: str, is_chief: bool = False) -> str | None:
    """Write ``model`` as a SavedModel to ``export_dir`` on the chief; elsewhere to a temp dir.

    Every node of a MultiWorkerMirroredStrategy cluster must run the same saving code
    (saving may take part in collectives), so call this on all of them; only the chief's
    copy lands in ``export_dir``, the others write to a temporary directory that is then
    removed. A Keras 3 model is written with ``model.export`` (an inference SavedModel:
    ``tf.saved_model.load(export_dir).serve(x)``; Keras 3 cannot ``model.save`` a
    SavedModel); a tf-keras model with ``model.save(export_dir, save_format="tf")``, as
    TensorFlowOnSpark did. Any other trackable goes through ``tf.saved_model.save``.

    ``export_dir`` may be on cluster storage (``hdfs://``, ``s3://``, ``abfss://``...,
    which TensorFlow 2.21 cannot write: TensorFlowOnSpark's examples default to HDFS): the
    chief then writes a local copy and uploads it through :mod:`tfos.storage`.

    Blocks until written. Returns ``export_dir`` on the chief, ``None`` elsewhere.

    Raises:
        StorageError: the upload failed (the files not saved are named).
    """
    from tfos.storage.filesystems import is_remote

    remote = is_chief and is_remote(export_dir)
    if is_chief and not remote:
        target = export_dir
    else:  # a worker's throw-away copy, or the chief's copy on its way to storage
        target = tempfile.mkdtemp(prefix="tfos-export-" if is_chief else "tfos-worker-model-")
    try:
        _save(model, target)
        if remote:
            from tfos.storage.mirror import Mirror

            Mirror(target, export_dir).finish()
    finally:
        if target != export_dir:
            shutil.rmtree(target, ignore_errors=True)
    return export_dir if is_chief else None


def _save(model, target: str) -> None:
    flavour = keras_flavour(model)
    if flavour == "keras3":
        model.export(target, verbose=False)
    elif flavour == "tf_keras":
        model.save(target, save_format="tf")
    else:
        import tensorflow as tf

        tf.saved_model.save(model, target)


def keras_flavour(model) -> str | None:
    """"keras3", "tf_keras" (Keras 2) or ``None`` (not a Keras model), from the class's origin."""
    for cls in type(model).__mro__:
        if cls.__name__ != "Model":
            continue
        module = cls.__module__
        if module.startswith(("keras.src.models", "keras.models")):
            return "keras3"
        if module.startswith(("tf_keras", "keras.src.engine", "keras.engine", "tensorflow.python.keras")):
            return "tf_keras"
    return None


def disable_auto_shard(options):
    """Turn tf.data auto-sharding off in ``options`` (a ``tf.data.Options``); returns it.

    Use it when each node already reads only its own data (a Spark feed, or files
    sharded by hand), so the strategy must not shard again.
    """
    import tensorflow as tf

    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def is_gpu_available() -> bool:
    """True when TensorFlow sees at least one GPU in this process."""
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU")) > 0


__all__ = ["disable_auto_shard", "export_saved_model", "is_gpu_available"]
