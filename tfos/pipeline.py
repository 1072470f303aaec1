"""Spark ML pipeline stages: :class:`TFEstimator` trains on a tfos cluster fed from a
DataFrame, :class:`TFModel` runs the exported model on the executors.

Parameter names, setters and getters are TensorFlowOnSpark's (``setInputMapping``,
``setClusterSize``, ``setEpochs``, ``setExportDir``...), so a pipeline written for it
ports by changing imports::

    from tfos.pipeline import TFEstimator

    estimator = (TFEstimator(train_fn, {"learning_rate": 0.01})
                 .setInputMapping({"features": "x", "label": "y"})
                 .setOutputMapping({"output_0": "prediction"})
                 .setClusterSize(2).setEpochs(5).setBatchSize(64)
                 .setExportDir("/models/m1"))
    model = estimator.fit(train_df)          # train_fn(args, ctx) on a tfos cluster
    scored = model.transform(test_df)        # test_df's rows + a prediction column

``train_fn(args, ctx)`` receives ``args``: ``tf_args`` with every param merged in under
its TensorFlowOnSpark name (``args.epochs``, ``args.batch_size``, ``args.export_dir``,
``args.input_mapping``...); it reads the fed rows with ``ctx.dataset()`` or
``ctx.get_data_feed(input_mapping=args.input_mapping)`` and exports the model (the
chief, to ``args.export_dir``) for :class:`TFModel`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import numbers
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.ml.param.shared import Param, Params, TypeConverters
from pyspark.ml.pipeline import Estimator, Model
from pyspark.ml.util import (
    DefaultParamsReadable,
    DefaultParamsReader,
    DefaultParamsWritable,
    DefaultParamsWriter,
)

from tfos.errors import ConfigError, TfosError
from tfos.input_mode import InputMode

log = logging.getLogger(__name__)

#: params in ``args`` only: tfos itself does nothing with them (see docs/pipeline.md)
PASSED_TO_TRAIN_FN_ONLY = ("readers", "steps")


def _to_mapping(value) -> dict:
    """The mapping params' type converter. It raises ``TypeError``, not ``ConfigError``:
    pyspark turns only a converter's ``TypeError`` into its message naming the param."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise TypeError(f"expected a dict of str to str; received: {value!r}")
    return dict(value)


def _to_int(value) -> int:
    """pyspark's ``toInt`` takes only plain ints and floats: ``InputMode.SPARK`` (an IntEnum) and
    NumPy ints, which TensorFlowOnSpark scripts pass, are whole numbers too."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return TypeConverters.toInt(value)


def _to_float(value) -> float:
    """``toFloat``, also for NumPy floats and ints of every width (pyspark knows a few types)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return TypeConverters.toFloat(value)


def _to_bool(value) -> bool:
    """``toBoolean``, also for NumPy bools (``args.flag`` read from an array)."""
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"):  # NumPy 2, 1
        return bool(value)
    return TypeConverters.toBoolean(value)


def _to_optional_string(value) -> str | None:
    return None if value is None else TypeConverters.toString(value)


def _to_optional_int(value) -> int | None:
    return None if value is None else _to_int(value)


@dataclass(frozen=True)
class ParamSpec:
    """One TensorFlowOnSpark param, declared once: the mixins, accessors and defaults are made from it."""

    #: the Param's name, and the attribute of ``train_fn``'s ``args``
    name: str
    #: TensorFlowOnSpark's ``set<accessor>``/``get<accessor>`` suffix
    accessor: str
    doc: str
    converter: Callable
    #: the default of every stage that has the param
    default: object


#: every param of the ``Has*`` mixins, by name
PARAMS: dict[str, ParamSpec] = {}


def _param_mixin(*specs: ParamSpec) -> type[Params]:
    """The pyspark ``Params`` mixin ``Has<first accessor>``: one ``Param`` per spec, with its
    ``set<accessor>`` (returns the stage, for chaining) and ``get<accessor>`` (value or default).

    One factory, so the TensorFlowOnSpark mixins cannot drift apart. A mixin sets no
    default itself: the stages do (from :data:`PARAMS`), and a user's own ``Params``
    class that mixes one in gets none, as with TensorFlowOnSpark.
    """
    name = f"Has{specs[0].accessor}"
    namespace: dict = {"__module__": __name__, "__qualname__": name,
                       "__doc__": "Mixin for " + "; ".join(f"param {s.name}: {s.doc}" for s in specs) + "."}
    for spec in specs:
        if spec.name in PARAMS:
            raise TfosError(f"param {spec.name} is declared twice (tfos.pipeline)")
        PARAMS[spec.name] = spec
        namespace[spec.name] = Param(Params._dummy(), spec.name, spec.doc, typeConverter=spec.converter)
        namespace[f"set{spec.accessor}"] = _setter(name, spec)
        namespace[f"get{spec.accessor}"] = _getter(name, spec)
    return type(name, (Params,), namespace)


def _setter(owner: str, spec: ParamSpec):
    def setter(self, value):
        return self._set(**{spec.name: value})

    return _named(setter, owner, f"set{spec.accessor}", f"Set {spec.name} ({spec.doc}); returns this stage.")


def _getter(owner: str, spec: ParamSpec):
    def getter(self):
        return self.getOrDefault(getattr(self, spec.name))

    return _named(getter, owner, f"get{spec.accessor}", f"The value of {spec.name}, else its default.")


def _named(fn, owner: str, name: str, doc: str):
    fn.__name__, fn.__qualname__, fn.__doc__ = name, f"{owner}.{name}", doc
    return fn


def _stage_defaults(stage: Params) -> dict:
    """The defaults of the :data:`PARAMS` ``stage`` has."""
    return {name: spec.default for name, spec in PARAMS.items() if stage.hasParam(name)}


# ------------------------------------------------------------ TensorFlowOnSpark's params

HasBatchSize = _param_mixin(
    ParamSpec("batch_size", "BatchSize", "records per batch (model calls in transform)", _to_int, 100))
HasClusterSize = _param_mixin(
    ParamSpec("cluster_size", "ClusterSize", "number of TF nodes (executors); None: spark.executor.instances",
              _to_optional_int, None))
HasEpochs = _param_mixin(ParamSpec("epochs", "Epochs", "number of epochs to feed", _to_int, 1))
HasGraceSecs = _param_mixin(
    ParamSpec("grace_secs", "GraceSecs", "seconds the evaluator may take to finish after training", _to_int, 30))
HasInputMapping = _param_mixin(
    ParamSpec("input_mapping", "InputMapping", "DataFrame column -> input tensor", _to_mapping, {}))
HasInputMode = _param_mixin(
    ParamSpec("input_mode", "InputMode", "how the nodes get data (0=TENSORFLOW, 1=SPARK)", _to_int,
              int(InputMode.SPARK)))
HasMasterNode = _param_mixin(
    ParamSpec("master_node", "MasterNode", "job name of the coordinating node ('chief')", _to_optional_string,
              "chief"))
HasModelDir = _param_mixin(
    ParamSpec("model_dir", "ModelDir", "checkpoint directory for train_fn; the model transform loads "
              "when export_dir is unset", _to_optional_string, None))
HasNumPS = _param_mixin(
    ParamSpec("num_ps", "NumPS", "number of parameter server nodes", _to_int, 0),
    ParamSpec("driver_ps_nodes", "DriverPSNodes", "run the ps nodes on the driver (not supported)", _to_bool,
              False))
HasOutputMapping = _param_mixin(
    ParamSpec("output_mapping", "OutputMapping", "output tensor -> DataFrame column", _to_mapping, {}))
HasProtocol = _param_mixin(
    ParamSpec("protocol", "Protocol", "TF's network protocol (only 'grpc')", TypeConverters.toString, "grpc"))
HasReaders = _param_mixin(
    ParamSpec("readers", "Readers", "reader threads (passed to train_fn only)", _to_int, 1))
HasSteps = _param_mixin(
    ParamSpec("steps", "Steps", "maximum training steps (passed to train_fn only)", _to_int, 1000))
HasTensorboard = _param_mixin(
    ParamSpec("tensorboard", "Tensorboard", "start TensorBoard on the chief's executor", _to_bool, False))
HasTFRecordDir = _param_mixin(
    ParamSpec("tfrecord_dir", "TFRecordDir", "where fit writes the DataFrame as TFRecords for "
              "InputMode.TENSORFLOW", _to_optional_string, None))
HasExportDir = _param_mixin(
    ParamSpec("export_dir", "ExportDir", "the SavedModel directory (or .keras file) train_fn exports and "
              "transform loads", _to_optional_string, None))
HasSignatureDefKey = _param_mixin(
    ParamSpec("signature_def_key", "SignatureDefKey", "the SavedModel signature transform calls",
              _to_optional_string, "serving_default"))
HasTagSet = _param_mixin(
    ParamSpec("tag_set", "TagSet", "comma-separated tags of the SavedModel meta graph", _to_optional_string,
              "serve"))
HasFeedTimeout = _param_mixin(
    ParamSpec("feed_timeout", "FeedTimeout", "seconds a node or feeding task waits for the other side (tfos)",
              _to_float, 600.0))


# ----------------------------------------------------------------------- args


def merge_args(tf_args, params: dict) -> argparse.Namespace:
    """``tf_args`` with ``params`` merged in (params win), as the ``args`` of ``train_fn``.

    Args:
        tf_args: a dict, an ``argparse.Namespace`` (or any object with ``__dict__``), or None.
        params: param name -> value.

    Returns:
        A new Namespace; ``tf_args`` is not changed.

    Raises:
        ConfigError: ``tf_args`` of another kind (a list of argv strings, say).
    """
    return argparse.Namespace(**{**_args_dict(tf_args), **params})


def _args_dict(tf_args) -> dict:
    if tf_args is None:
        return {}
    if isinstance(tf_args, dict):
        return dict(tf_args)
    if hasattr(tf_args, "__dict__") and not isinstance(tf_args, type):
        return dict(vars(tf_args))
    raise ConfigError(f"tf_args must be a dict, an argparse.Namespace or None; received: "
                      f"{type(tf_args).__name__} {tf_args!r}")


class _TFParams(Params):
    """What both stages share: ``tf_args`` and the args merge."""

    tf_args = None

    def merged_args(self) -> argparse.Namespace:
        """``tf_args`` with every param (set or default) merged in under its name."""
        return merge_args(self.tf_args, {p.name: self.getOrDefault(p) for p in self.params if self.isDefined(p)})

    def _persisted_state(self) -> dict:
        return _persisted_args(self.tf_args)

    def _restore_state(self, metadata: dict) -> None:
        self.tf_args = _restored_args(metadata)


# ------------------------------------------------------------------ persistence


def _persisted_args(tf_args) -> dict:
    values = _args_dict(tf_args)
    kept, dropped = {}, []
    for key, value in values.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            dropped.append(key)
        else:
            kept[key] = value
    if dropped:
        log.warning("tf_args %s are not JSON values and are not saved; set them again after load", dropped)
    kind = "namespace" if isinstance(tf_args, argparse.Namespace) else "dict" if tf_args is not None else "none"
    return {"tfosTfArgs": kept, "tfosTfArgsKind": kind, "tfosTfArgsNotSaved": sorted(dropped)}


def _restored_args(metadata: dict):
    kind = metadata.get("tfosTfArgsKind", "none")
    values = metadata.get("tfosTfArgs") or {}
    if metadata.get("tfosTfArgsNotSaved"):
        log.warning("tf_args %s were not saved (not JSON values); set them again", metadata["tfosTfArgsNotSaved"])
    if kind == "namespace":
        return argparse.Namespace(**values)
    return values if kind == "dict" else None


def function_reference(fn) -> str | None:
    """``"module:qualname"`` when ``fn`` can be imported back by that name, else None."""
    if fn is None:
        return None
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return None
    try:
        return f"{module}:{qualname}" if _resolve(f"{module}:{qualname}") is fn else None
    except (ImportError, AttributeError):
        return None


def _resolve(reference: str):
    module, qualname = reference.split(":", 1)
    target = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def _spark_handle(session):
    """What tfos.run and pyspark's metadata helpers take: a Spark Connect session as it is (it
    has no SparkContext), else its SparkContext (pyspark 3.5's helpers take only a context)."""
    from tfos.spark.app import is_connect_session

    return session if is_connect_session(session) else session.sparkContext


class _Writer(DefaultParamsWriter):
    def saveImpl(self, path: str) -> None:  # noqa: N802 - Spark's name
        DefaultParamsWriter.saveMetadata(self.instance, path, _spark_handle(self.sparkSession),
                                         extraMetadata=self.instance._persisted_state())

    def _handleOverwrite(self, path: str) -> None:  # noqa: N802 - Spark's name
        """``write().overwrite()``: pyspark's own goes through the JVM session, which a Spark
        Connect client has not; its Connect writer asks the server instead."""
        from tfos.spark.app import is_connect_session

        if is_connect_session(self.sparkSession):
            from pyspark.ml.connect.readwrite import RemoteMLWriter

            RemoteMLWriter.handleOverwrite(path, True)
        else:
            super()._handleOverwrite(path)


class _Reader(DefaultParamsReader):
    def load(self, path: str):
        metadata = DefaultParamsReader.loadMetadata(path, _spark_handle(self.sparkSession))
        expected = f"{self.cls.__module__}.{self.cls.__name__}"
        if metadata["class"] != expected:
            raise ConfigError(f"{path} holds a saved {metadata['class']}, not a {expected}; load it with that class")
        instance = self.cls()
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata)
        instance._restore_state(metadata)
        return instance


class _Persistence(DefaultParamsWritable, DefaultParamsReadable):
    def write(self):
        return _Writer(self)

    @classmethod
    def read(cls):
        return _Reader(cls)


# ---------------------------------------------------------------------- stages


class TFModel(Model, _TFParams, _Persistence, HasInputMapping, HasOutputMapping, HasBatchSize, HasModelDir,
              HasExportDir, HasSignatureDefKey, HasTagSet):
    """Runs an exported model over a DataFrame on the executors, without a TF cluster.

    ``transform(df)`` returns ``df`` with one column per ``output_mapping`` entry; it is
    lazy. The model (``export_dir``, else ``model_dir``: a SavedModel directory or a
    ``.keras`` file every executor can read) is loaded once per executor Python worker
    and cached; ``batch_size`` rows go through it per call. See
    :func:`tfos.predict.predict_dataframe`, which does the work.

    ``save``/``load`` keep every param and the JSON values of ``tf_args``; the model
    files stay where ``export_dir`` points.
    """

    def __init__(self, tf_args=None):
        super().__init__()
        self.tf_args = tf_args
        self._setDefault(**_stage_defaults(self))

    def model_path(self) -> str:
        """``export_dir``, else ``model_dir``.

        Raises:
            ConfigError: when neither is set.
        """
        path = self.getExportDir() or self.getModelDir()
        if not path:
            raise ConfigError("TFModel has no model to load: setExportDir(<SavedModel dir or .keras file>) "
                              "(or setModelDir)")
        return path

    def _transform(self, dataset):
        from tfos.predict import predict_dataframe

        return predict_dataframe(
            dataset, self.model_path(), self.getInputMapping(), self.getOutputMapping(),
            batch_size=self.getBatchSize(), signature_def_key=self.getSignatureDefKey(), tag_set=self.getTagSet(),
        )


class TFEstimator(Estimator, _TFParams, _Persistence, HasInputMapping, HasOutputMapping, HasClusterSize,
                  HasNumPS, HasInputMode, HasMasterNode, HasProtocol, HasGraceSecs, HasTensorboard,
                  HasModelDir, HasExportDir, HasTFRecordDir, HasBatchSize, HasEpochs, HasReaders, HasSteps,
                  HasSignatureDefKey, HasTagSet, HasFeedTimeout):
    """Trains ``train_fn(args, ctx)`` on a tfos cluster fed from a DataFrame.

    ``fit(df)`` blocks: it starts ``cluster_size`` TF nodes (``tfos.run``), feeds the
    ``input_mapping`` columns of ``df`` (sorted by name; every column when the mapping
    is empty) for ``epochs`` epochs (``cluster.train``), waits for ``train_fn`` to return
    on every node (``cluster.shutdown``), runs ``export_fn(args)`` on one executor when
    given, and returns a :class:`TFModel` with this estimator's params and ``tf_args``.

    With ``input_mode=InputMode.TENSORFLOW`` nothing is fed: ``df`` (its input columns)
    is written as TFRecords to ``tfrecord_dir`` (unless it came from
    ``tfos.dfutil.load_tfrecords``, whose directory is used) and ``args.tfrecord_dir``
    tells ``train_fn`` where to read.

    ``save``/``load`` keep every param, the JSON values of ``tf_args``, and ``train_fn``
    and ``export_fn`` as import references when they are importable module-level
    functions (not ones defined in ``__main__``; set those again with ``setTrainFn``).

    Raises (from ``fit``):
        ConfigError: no ``train_fn``, an input column ``df`` lacks, a protocol other than
            grpc, ``driver_ps_nodes``, or a Spark setting under which no cluster can form.
        ClusterFailedError: a node failed (its traceback).
        FeedError: feeding failed.
    """

    def __init__(self, train_fn=None, tf_args=None, export_fn=None):
        super().__init__()
        self.train_fn = train_fn
        self.export_fn = export_fn
        self.tf_args = tf_args
        self._setDefault(**_stage_defaults(self))

    def setTrainFn(self, train_fn):  # noqa: N802 - in the style of the params' setters
        """Set ``train_fn`` (after ``load``, when it could not be saved as an import reference)."""
        self.train_fn = train_fn
        return self

    def setExportFn(self, export_fn):  # noqa: N802
        self.export_fn = export_fn
        return self

    def input_columns(self, schema) -> list[str]:
        """The columns ``fit`` feeds: ``input_mapping``'s, sorted by name (all when it is empty).

        Raises:
            ConfigError: for a column the schema lacks.
        """
        names = [f.name for f in schema.fields]
        mapping = self.getInputMapping()
        if not mapping:
            return names
        missing = [c for c in mapping if c not in names]
        if missing:
            raise ConfigError(f"input_mapping names column(s) {missing}, which the DataFrame does not have; "
                              f"its columns: {names}")
        return sorted(mapping)

    def _run_options(self, sc) -> dict:
        """Extra :func:`tfos.run` options of ``fit``'s cluster (``tfos.compat.pipeline`` picks Keras)."""
        return {}

    def _fit(self, dataset):
        from tfos.cluster import run

        if self.train_fn is None:
            raise ConfigError("TFEstimator has no train_fn: TFEstimator(train_fn, tf_args), or setTrainFn(fn) "
                              "on a loaded estimator")
        args = self.merged_args()
        if args.protocol != "grpc":
            raise ConfigError(f"protocol must be 'grpc' (TF's only wire in tfos); received: {args.protocol!r}")
        mode = InputMode(args.input_mode)
        columns = self.input_columns(dataset.schema)
        data = dataset.select(*columns)
        if mode == InputMode.TENSORFLOW:
            args.tfrecord_dir = self._tfrecords_for(dataset, data, args.tfrecord_dir)
        log.info("TFEstimator: training on %s with args %s", columns, args)
        spark = _spark_handle(dataset.sparkSession)
        cluster = run(spark, self.train_fn, args, num_executors=args.cluster_size,
                      num_ps=args.num_ps, tensorboard=args.tensorboard, input_mode=mode,
                      master_node=args.master_node, driver_ps_nodes=args.driver_ps_nodes,
                      **self._run_options(spark))
        try:
            if mode == InputMode.SPARK:
                cluster.train(data, num_epochs=args.epochs, feed_timeout=args.feed_timeout)
        except BaseException:
            _shutdown_quietly(cluster)
            raise
        cluster.shutdown(grace_secs=args.grace_secs)
        if self.export_fn is not None:
            self._export(spark, args)
        return self._copyValues(TFModel(self.tf_args))

    @staticmethod
    def _tfrecords_for(dataset, data, tfrecord_dir: str | None) -> str:
        from tfos.dfutil import is_loaded_df, loadedDF, save_as_tfrecords

        if is_loaded_df(dataset):
            return loadedDF[dataset]
        if not tfrecord_dir:
            raise ConfigError("input_mode=InputMode.TENSORFLOW needs setTFRecordDir(dir): fit writes the "
                              "DataFrame there as TFRecords for train_fn to read (args.tfrecord_dir)")
        return save_as_tfrecords(data, tfrecord_dir, overwrite=True).output_dir

    def _export(self, spark, args) -> None:
        """``export_fn(args)`` in one Spark task, on an executor (a SparkContext or a Connect session)."""
        from tfos.spark.app import spark_app

        if not args.export_dir:
            raise ConfigError("export_fn needs setExportDir(dir): the directory it exports to")
        export_fn = self.export_fn

        def export(_index: int) -> None:
            export_fn(args)

        spark_app(spark).run_tasks(1, export, barrier=False)

    def _persisted_state(self) -> dict:
        state = super()._persisted_state()
        for key, fn in (("tfosTrainFn", self.train_fn), ("tfosExportFn", self.export_fn)):
            state[key] = function_reference(fn)
            if fn is not None and state[key] is None:
                log.warning("%s %r is not an importable module-level function and is not saved; "
                            "set it again after load (setTrainFn/setExportFn)", key[4:], fn)
        return state

    def _restore_state(self, metadata: dict) -> None:
        super()._restore_state(metadata)
        for key, attr in (("tfosTrainFn", "train_fn"), ("tfosExportFn", "export_fn")):
            reference = metadata.get(key)
            if reference:
                try:
                    setattr(self, attr, _resolve(reference))
                except (ImportError, AttributeError) as exc:
                    log.warning("cannot import %s %s saved with the estimator (%s); set it with set%s",
                                attr, reference, exc, "TrainFn" if attr == "train_fn" else "ExportFn")


def _shutdown_quietly(cluster) -> None:
    """Stop a cluster whose feed failed; the feed's error is the one to raise."""
    try:
        cluster.shutdown(timeout=60)
    except TfosError as exc:
        log.info("shutdown after a failed fit: %s", exc)
