"""Keras 3 compatibility helpers for multi-worker training on tfos nodes.

Why this module exists
----------------------
Since TensorFlow 2.16, ``tf.keras`` is Keras 3 unless ``TF_USE_LEGACY_KERAS=1``
selects the ``tf-keras`` package (Keras 2). Keras 3's ``Model.fit`` does not work
under ``tf.distribute.MultiWorkerMirroredStrategy`` (MWMS) when more than one
worker takes part: the first ``fit``/``evaluate`` call fails with::

    ValueError: Attempt to convert a value (PerReplica:{ 0: <tf.Tensor ...> })
    with an unsupported type (<class '...values.PerReplica'>) to a Tensor.

Upstream issue: https://github.com/keras-team/keras/issues/20585

The cause is in ``keras/src/backend/tensorflow/trainer.py`` (read in Keras 3.15.1):

1. ``TensorFlowTrainer._maybe_symbolic_build`` takes the first distributed batch
   and reduces it with ``strategy.reduce("MEAN", batch, axis=None)`` only to get
   tensors with the right shapes for building the model. Eagerly, on ``PerReplica``
   inputs, ``CollectiveAllReduceStrategy`` cannot do that reduction (this is
   where the ``ValueError`` above is raised).
2. The module-level ``reduce_per_replica`` (called by name from the train/test
   step functions), for reduction ``"mean"`` (``"auto"`` resolves to it)
   under multi-worker MWMS, calls ``strategy.reduce("MEAN", v, axis=0)`` on every
   output, including the scalar per-replica losses and metrics, which have no
   axis 0.

What :func:`apply_keras3_mwms_fix` changes (in the calling process only)
------------------------------------------------------------------------
Both changes wrap the original Keras functions and only take a new path when
the strategy is a multi-worker collective strategy (Keras's own predicate
``_collective_all_reduce_multi_worker``: an MWMS instance in multi-worker
mode). Everything else, including single-worker MWMS, ``MirroredStrategy``,
the default strategy, TPU and ``ParameterServerStrategy``, goes straight to
the original Keras code.

1. ``TensorFlowTrainer._maybe_symbolic_build``: when an iterator is given and
   every element of its first batch is a ``tf.distribute.DistributedValues``,
   take the first *local* replica's values
   (``strategy.experimental_local_results(x)[0]``) instead of the cross-replica
   mean, then call the original method with that ``data_batch``. Only shapes
   and dtypes matter for the symbolic build; the values are never used for
   training.
2. ``keras.src.backend.tensorflow.trainer.reduce_per_replica`` (the module
   attribute, so the callers in that module pick it up): for reduction
   ``"mean"``/``"auto"`` (non-TPU) and a leaf whose rank is statically known
   to be 0, return ``strategy.reduce("MEAN", v, axis=None)``, the mean across
   replicas. Every other leaf and reduction goes to the original function.

With both changes, ``fit`` then ``evaluate`` ran on 2 MWMS processes (one CPU
replica each) and both ended with the same weights. ``predict`` needed no change.

Versions
--------
Run on 2 MWMS CPU processes (fit, evaluate, predict) with TensorFlow 2.21.0 and
Keras 3.12.4, 3.13.2, 3.14.0 and 3.15.1; unpatched, all four fail with the error above.
The patched functions are the same in every release from 3.12.0 to 3.15.1, so the gate
accepts Keras 3.12 to 3.15 (``_TESTED_KERAS_MINORS``). Keras 3.12 matters: it is the
newest Keras on Python 3.10 (3.13 needs Python 3.11). Other Keras versions are refused:
:func:`apply_keras3_mwms_fix` logs a warning and returns ``False`` without
patching, because the patched private functions can change in any release.

Alternative: tf-keras
---------------------
Setting ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported makes
``tf.keras`` resolve to ``tf-keras`` (Keras 2), which supports MWMS ``fit``
without any patch (see :func:`configure_keras_backend`). ``ParameterServerStrategy``
``fit`` *requires* tf-keras: it needs ``tf.keras.utils.experimental.DatasetCreator``,
which Keras 3 does not have.
"""

from __future__ import annotations

import functools
import importlib.abc
import logging
import os
import sys
import threading

from tfos.errors import ConfigError

logger = logging.getLogger(__name__)

#: (major, minor) Keras versions the patch is allowed on. Run against 3.12.4 (Python
#: 3.10), 3.13.2, 3.14.0 and 3.15.1 (2 MWMS processes, fit + evaluate + predict,
#: identical final weights); _maybe_symbolic_build, reduce_per_replica and
#: _collective_all_reduce_multi_worker are the same in every release from 3.12.0 to
#: 3.15.1. Before widening this set, read keras/src/backend/tensorflow/trainer.py of the
#: new version and rerun tests/unit/test_keras_compat.py with it.
_TESTED_KERAS_MINORS: frozenset[tuple[int, int]] = frozenset({(3, 12), (3, 13), (3, 14), (3, 15)})

#: Allowed values of ``configure_keras_backend(choice)``.
KERAS_BACKEND_CHOICES: tuple[str, ...] = ("keras3", "tf_keras")
#: what ``tfos.run(keras=...)`` and ``spark.tfos.keras`` take: a backend, or "auto" (what TF picks)
KERAS_CHOICES: tuple[str, ...] = ("auto", *KERAS_BACKEND_CHOICES)


def check_keras_choice(value: object, name: str, hint: str = "", auto: bool = True,
                       error: type[ConfigError] = ConfigError) -> None:
    """The one check of a Keras choice (``tfos.run``, the Spark conf, ``tfos submit``):
    ``error`` naming ``name`` (and ``hint``, where the value came from) unless valid."""
    choices = KERAS_CHOICES if auto else KERAS_BACKEND_CHOICES
    if value not in choices:
        received = f"{name} {value}" if name.startswith("--") else f"{name}={value!r}"  # a CLI flag as typed
        raise error(f"{name} must be one of {', '.join(choices)}{f' ({hint})' if hint else ''}; received: {received}")

# Marker set on the wrapper functions so a second call sees the patch in place.
_PATCH_MARKER = "_tfos_keras3_mwms_fix"

_lock = threading.Lock()


def configure_keras_backend(choice: str) -> dict[str, str]:
    """Return the environment variables that select the Keras flavour for ``tf.keras``.

    Pure function: it only builds the mapping. The caller must put the variables
    into the node process environment *before* TensorFlow is imported, because
    TensorFlow reads ``TF_USE_LEGACY_KERAS`` when ``tf.keras`` is first resolved.

    Args:
        choice: ``"keras3"`` (``tf.keras`` is Keras 3; pair it with
            :func:`apply_keras3_mwms_fix` for MultiWorkerMirroredStrategy) or
            ``"tf_keras"`` (``tf.keras`` is the ``tf-keras`` package, Keras 2;
            needed for ParameterServerStrategy ``fit``).

    Returns:
        ``{"TF_USE_LEGACY_KERAS": "0"}`` for ``"keras3"`` and
        ``{"TF_USE_LEGACY_KERAS": "1"}`` for ``"tf_keras"``. ``"0"`` is set explicitly
        so an inherited ``TF_USE_LEGACY_KERAS=1`` does not silently win.

    Raises:
        ValueError: if ``choice`` is not one of :data:`KERAS_BACKEND_CHOICES`.
    """
    if choice == "keras3":
        return {"TF_USE_LEGACY_KERAS": "0"}
    if choice == "tf_keras":
        return {"TF_USE_LEGACY_KERAS": "1"}
    raise ConfigError(
        f"Unknown Keras backend choice {choice!r}; expected one of "
        + ", ".join(repr(c) for c in KERAS_BACKEND_CHOICES)
    )


def legacy_keras_requested() -> bool:
    """True when ``tf.keras`` resolves to tf-keras: exactly the test TensorFlow applies to
    ``TF_USE_LEGACY_KERAS`` when it resolves ``tf.keras`` (the one home of that test)."""
    return os.environ.get("TF_USE_LEGACY_KERAS", None) in ("true", "True", "1")


_KERAS_MODULE = "keras"


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Applies the fix right after ``import keras`` completes, wherever it happens.

    A node process does not know whether user code will use Keras 3 (``import keras``,
    or ``tf.keras`` without TF_USE_LEGACY_KERAS); importing Keras 3 up front would cost
    seconds for scripts that never touch it. With tf-keras selected, a script that still
    imports Keras 3 directly gets the fix too.
    """

    def find_spec(self, name, path, target=None):
        if name != _KERAS_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        with _lock:
            _apply_locked(respect_legacy=False)

    def __getattr__(self, name):  # is_package, get_code, get_source... of the real loader
        return getattr(self._loader, name)


def apply_keras3_mwms_fix_on_import() -> None:
    """Apply :func:`apply_keras3_mwms_fix` as soon as Keras 3 is imported (now, if it already is)."""
    if _KERAS_MODULE in sys.modules:
        with _lock:
            _apply_locked(respect_legacy=False)
        return
    if not any(isinstance(f, _PatchAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchAfterImport())


def _parse_major_minor(version: str) -> tuple[int, int] | None:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def apply_keras3_mwms_fix() -> bool:
    """Patch Keras 3's TensorFlow trainer so ``fit``/``evaluate`` work under multi-worker MWMS.

    Call it in each worker process before ``model.fit``. It imports TensorFlow and
    Keras. The patch is process-local and changes behaviour only for a
    MultiWorkerMirroredStrategy in multi-worker mode (see the module docstring).

    Returns:
        ``True`` if the patch is in place (including when an earlier call already
        applied it); ``False``, with a warning logged and nothing changed, when
        Keras 3 with the TensorFlow backend is not what ``tf.keras`` resolves
        to, or the Keras version is outside the tested range.
    """
    with _lock:
        return _apply_locked()


def _apply_locked(respect_legacy: bool = True) -> bool:
    if respect_legacy and legacy_keras_requested():
        logger.warning(
            "TF_USE_LEGACY_KERAS=%s: tf.keras is tf-keras, which does not need the "
            "Keras 3 MultiWorkerMirroredStrategy fix; not patching",
            os.environ.get("TF_USE_LEGACY_KERAS"),
        )
        return False
    try:
        import keras
    except ImportError as exc:
        logger.warning("keras is not importable (%s); not applying the Keras 3 MWMS fix", exc)
        return False

    version = getattr(keras, "__version__", "")
    major_minor = _parse_major_minor(version)
    if major_minor is None or major_minor[0] != 3:
        logger.warning(
            "keras %r is not Keras 3 (tf-keras / Keras 2?); not applying the Keras 3 MWMS fix",
            version,
        )
        return False
    if major_minor not in _TESTED_KERAS_MINORS:
        tested = ", ".join(f"{a}.{b}.x" for a, b in sorted(_TESTED_KERAS_MINORS))
        logger.warning(
            "Keras %s is outside the versions the MWMS fix was tested with (%s); not patching. "
            "Use TF_USE_LEGACY_KERAS=1 (tf-keras) or verify the patch for this version.",
            version,
            tested,
        )
        return False

    backend = keras.backend.backend()
    if backend != "tensorflow":
        logger.warning(
            "Keras backend is %r, not 'tensorflow'; the MWMS fix does not apply", backend
        )
        return False

    try:
        from keras.src.backend.tensorflow import trainer as tf_trainer
    except ImportError as exc:
        logger.warning("cannot import Keras's TensorFlow trainer (%s); not patching", exc)
        return False

    required = ("reduce_per_replica", "_collective_all_reduce_multi_worker", "TensorFlowTrainer")
    missing = [name for name in required if not hasattr(tf_trainer, name)]
    if missing or not hasattr(tf_trainer.TensorFlowTrainer, "_maybe_symbolic_build"):
        logger.warning(
            "Keras %s trainer lacks %s; not applying the MWMS fix",
            version,
            missing or ["TensorFlowTrainer._maybe_symbolic_build"],
        )
        return False

    build_done = getattr(tf_trainer.TensorFlowTrainer._maybe_symbolic_build, _PATCH_MARKER, False)
    reduce_done = getattr(tf_trainer.reduce_per_replica, _PATCH_MARKER, False)
    if build_done and reduce_done:
        logger.debug("Keras 3 MWMS fix already applied")
        return True

    if not build_done:
        tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _wrap_maybe_symbolic_build(
            tf_trainer.TensorFlowTrainer._maybe_symbolic_build, tf_trainer
        )
    if not reduce_done:
        tf_trainer.reduce_per_replica = _wrap_reduce_per_replica(
            tf_trainer.reduce_per_replica, tf_trainer
        )
    logger.info(
        "Applied Keras %s MultiWorkerMirroredStrategy fix (keras-team/keras#20585): patched "
        "TensorFlowTrainer._maybe_symbolic_build and trainer.reduce_per_replica",
        version,
    )
    return True


def _wrap_maybe_symbolic_build(original, tf_trainer):
    """Build from one local replica's batch instead of a cross-replica MEAN under multi-worker MWMS."""
    import tensorflow as tf
    from keras.src import tree

    @functools.wraps(original)
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is not None and strategy is not None:
            # Build from the dataset's element spec instead of reading a batch: the
            # original reads one batch from a pass of its own, which costs a whole epoch
            # of a one-shot stream such as a tfos Spark feed (ctx.dataset).
            placeholder = _placeholder_batch(iterator, tf, tree)
            if placeholder is not None:
                return original(self, iterator=None, data_batch=placeholder)
        if (
            iterator is None
            or strategy is None
            or not tf_trainer._collective_all_reduce_multi_worker(strategy)
        ):
            return original(self, iterator=iterator, data_batch=data_batch)

        # Same consumption of the iterator as the original: one batch of the
        # first step, then stop.
        for _, _, it in iterator:
            batch = next(it)
            is_distributed = tree.map_structure(
                lambda x: isinstance(x, tf.distribute.DistributedValues), batch
            )
            if all(tree.flatten(is_distributed)):
                data_batch = tree.map_structure(
                    lambda x: strategy.experimental_local_results(x)[0], batch
                )
            else:
                data_batch = batch
            break
        return original(self, iterator=None, data_batch=data_batch)

    setattr(_maybe_symbolic_build, _PATCH_MARKER, True)
    return _maybe_symbolic_build


def _placeholder_batch(iterator, tf, tree):
    """Zeros shaped like one batch of ``iterator``'s dataset (batch size 1), or ``None``.

    Only when every leaf is a tensor whose dims other than the batch dim are known;
    anything else keeps Keras's own way (reading a batch).
    """
    dataset = getattr(iterator, "_distributed_dataset", None)
    spec = getattr(dataset, "element_spec", None)
    if spec is None:
        return None
    leaves = tree.flatten(spec)

    def local(leaf):
        values = getattr(leaf, "_value_specs", None)  # PerReplicaSpec: one spec per local replica
        return values[0] if values else leaf

    leaves = [local(leaf) for leaf in leaves]
    if not leaves or not all(isinstance(leaf, tf.TensorSpec) for leaf in leaves):
        return None
    if any(leaf.shape.rank is None or None in leaf.shape.as_list()[1:] for leaf in leaves):
        return None

    def zeros(leaf):
        shape = [1 if d is None else d for d in leaf.shape.as_list()]
        if leaf.dtype == tf.string:
            return tf.fill(shape, "")
        return tf.zeros(shape, leaf.dtype)

    try:
        return tree.pack_sequence_as(spec, [zeros(leaf) for leaf in leaves])
    except (TypeError, ValueError):
        return None


def _wrap_reduce_per_replica(original, tf_trainer):
    """Reduce scalar leaves with ``axis=None`` for "mean" under multi-worker MWMS."""
    import tensorflow as tf
    from keras.src import tree

    def _static_rank(v, strategy):
        # A leaf is a PerReplica (several local replicas) or a plain tensor (one
        # local replica); either way its per-replica rank is what matters.
        if isinstance(v, tf.distribute.DistributedValues):
            v = strategy.experimental_local_results(v)[0]
        shape = getattr(v, "shape", None)
        return getattr(shape, "rank", None)

    @functools.wraps(original)
    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("mean", "auto") or not tf_trainer._collective_all_reduce_multi_worker(
            strategy
        ):
            return original(values, strategy, reduction)
        # "auto" means "first" under TPUStrategy; MWMS is never a TPUStrategy,
        # so under multi-worker MWMS "auto" is "mean".

        def _reduce(v):
            if _static_rank(v, strategy) == 0:
                return strategy.reduce("MEAN", v, axis=None)
            return original(v, strategy, reduction)

        return tree.map_structure(_reduce, values)

    setattr(reduce_per_replica, _PATCH_MARKER, True)
    return reduce_per_replica
