"""Batch inference of a SavedModel or a Keras file over a DataFrame, on the executors,
without a TF cluster.

The driver reads the model's signature (names, dtypes and shapes of its inputs and
outputs), checks the column <-> tensor mappings against it and the DataFrame's schema,
and derives the Spark types of the result columns. The executors run the model over
``mapInArrow`` record batches: Arrow columns become NumPy arrays without a Python object
per value (arrays of one length as 2-D arrays), ``batch_size`` rows at a time go through
the model, and the outputs go back as Arrow arrays appended to the input batch. The
model is loaded once per executor Python worker and kept in a module-level cache, so
later tasks and later transforms on the same worker reuse it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from tfos.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
DEFAULT_TAG_SET = "serve"
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a model signature.

    Attributes:
        name: the signature's key for it (a SavedModel signature's argument or output name).
        dtype: TensorFlow dtype name ("float32", "int64", "string"...).
        shape: dimensions with the batch first, ``None`` where unknown; ``None`` for an
            unknown rank.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None

    @property
    def row_shape(self) -> tuple[int | None, ...] | None:
        """The shape of one row (the batch dimension dropped)."""
        return None if self.shape is None else self.shape[1:]

    def describe(self) -> str:
        dims = "?" if self.shape is None else "[" + ", ".join("None" if d is None else str(d) for d in self.shape) + "]"
        return f"{self.name} ({self.dtype} {dims})"


@dataclass(frozen=True)
class ModelInfo:
    """What the driver knows of a model before any executor loads it.

    Attributes:
        path: the SavedModel directory or the Keras file.
        kind: "saved_model" or "keras".
        tags: the SavedModel meta graph's tag set (empty for Keras files).
        signature: the SavedModel signature's key ("" for Keras files).
        inputs / outputs: by name.
        version: modification time (ns) of the model file, so that a model re-exported to
            the same path is loaded afresh by the executors' cache.
    """

    path: str
    kind: str
    tags: tuple[str, ...]
    signature: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    version: int

    @property
    def cache_key(self) -> tuple:
        return (self.path, self.kind, self.tags, self.signature, self.version)

    def where(self) -> str:
        if self.kind == "keras":
            return f"Keras model {self.path}"
        return f"signature {self.signature!r} of SavedModel {self.path} (tags {','.join(self.tags)})"


# ------------------------------------------------------------------ driver: describe


def describe_model(path: str, signature_def_key: str | None = None, tag_set: str | None = None) -> ModelInfo:
    """Read the inputs and outputs of a SavedModel signature or a Keras file (driver side).

    A SavedModel's ``saved_model.pb`` is parsed without restoring variables; a Keras file
    (``.keras``, ``.h5``) is loaded. Imports TensorFlow. Blocks while reading.

    Raises:
        ConfigError: no model at ``path``, or no meta graph with ``tag_set``, or no
            signature ``signature_def_key`` (the message lists what there is).
    """
    import tensorflow as tf

    signature_def_key = signature_def_key or DEFAULT_SIGNATURE
    tags = tuple(t.strip() for t in (tag_set or DEFAULT_TAG_SET).split(",") if t.strip())
    if path.endswith(KERAS_SUFFIXES):
        if not tf.io.gfile.exists(path):
            raise ConfigError(f"no Keras model file at {path}; set the export dir (or model dir) to a "
                              f"SavedModel directory or a .keras file")
        return _describe_keras(path, tf.io.gfile.stat(path).mtime_nsec)
    pb = _join(path, "saved_model.pb")
    if not tf.io.gfile.exists(pb):
        raise ConfigError(f"no SavedModel at {path} (no saved_model.pb in it); export one with "
                          f"tf.saved_model.save or model.export(path), or point to a .keras file")
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(pb, "rb") as f:
        saved.ParseFromString(f.read())
    graphs = [g for g in saved.meta_graphs if set(g.meta_info_def.tags) == set(tags)]
    if not graphs:
        found = [",".join(g.meta_info_def.tags) for g in saved.meta_graphs]
        raise ConfigError(f"SavedModel {path} has no meta graph tagged {','.join(tags)!r}; its tag sets: "
                          f"{found}; set tag_set to one of them")
    signatures = graphs[0].signature_def
    if signature_def_key not in signatures:
        available = sorted(k for k in signatures if not k.startswith("__"))
        raise ConfigError(f"SavedModel {path} has no signature {signature_def_key!r}; its signatures: "
                          f"{available}; set signature_def_key to one of them")
    signature = signatures[signature_def_key]

    def info(name, proto) -> TensorInfo:
        shape = None if proto.tensor_shape.unknown_rank else tuple(
            None if d.size < 0 else int(d.size) for d in proto.tensor_shape.dim)
        return TensorInfo(name, tf.as_dtype(proto.dtype).name, shape)

    return ModelInfo(
        path=path, kind="saved_model", tags=tags, signature=signature_def_key,
        inputs={k: info(k, v) for k, v in sorted(signature.inputs.items())},
        outputs={k: info(k, v) for k, v in sorted(signature.outputs.items())},
        version=tf.io.gfile.stat(pb).mtime_nsec,
    )


def _describe_keras(path: str, version: int) -> ModelInfo:
    model = _load_keras(path)

    def info(name, tensor) -> TensorInfo:
        return TensorInfo(name, _dtype_name(tensor.dtype), tuple(tensor.shape))

    return ModelInfo(
        path=path, kind="keras", tags=(), signature="",
        inputs={name: info(name, t) for name, t in zip(_keras_input_names(model), model.inputs, strict=True)},
        outputs={name: info(name, t) for name, t in zip(_keras_output_names(model), model.outputs, strict=True)},
        version=version,
    )


def _load_keras(path: str):
    import tensorflow as tf

    return tf.keras.models.load_model(path, compile=False)


def _keras_input_names(model) -> list[str]:
    return [t.name for t in model.inputs]


def _keras_output_names(model) -> list[str]:
    """A functional model's output layer names; ``output_0``... otherwise (as ``model.export`` names them)."""
    names = getattr(model, "output_names", None)
    if names and len(names) == len(model.outputs):
        return list(names)
    return [f"output_{i}" for i in range(len(model.outputs))]


def _dtype_name(dtype) -> str:
    import tensorflow as tf

    return tf.as_dtype(dtype).name


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


# ---------------------------------------------------------- driver: check and plan


_NUMERIC_SPARK = {"ByteType", "ShortType", "IntegerType", "LongType", "FloatType", "DoubleType", "BooleanType"}

#: tensor dtype -> Spark type name of a result column holding it
_TF_TO_SPARK = {
    "float16": "FloatType", "bfloat16": "FloatType", "float32": "FloatType", "float64": "DoubleType",
    "int8": "ByteType", "uint8": "ShortType", "int16": "ShortType", "uint16": "IntegerType",
    "int32": "IntegerType", "uint32": "LongType", "int64": "LongType", "bool": "BooleanType",
    "string": "StringType",
}


@dataclass(frozen=True)
class Plan:
    """The checked mappings: which column feeds which input, which output fills which column.

    Attributes:
        inputs: ``(column, TensorInfo)`` per model input.
        outputs: ``(TensorInfo, column)`` per result column, in the order they are appended.
        schema: the result's Spark schema (the input columns, then the result columns).
    """

    inputs: tuple[tuple[str, TensorInfo], ...]
    outputs: tuple[tuple[TensorInfo, str], ...]
    schema: object


def plan(schema, info: ModelInfo, input_mapping: dict, output_mapping: dict) -> Plan:
    """Check ``{column: input}`` and ``{output: column}`` against ``schema`` and ``info``.

    Raises:
        ConfigError: an empty mapping, a column the DataFrame lacks, a tensor the model
            lacks, a model input left unmapped, a result column that exists already, or a
            column whose type cannot feed its tensor (all named in the message).
    """
    from pyspark.sql.types import StructField, StructType

    columns = {f.name: f.dataType for f in schema.fields}
    if not input_mapping:
        raise ConfigError(f"input_mapping is empty; map DataFrame columns to the model's inputs with "
                          f"setInputMapping({{column: input}}); the {info.where()} takes "
                          f"{_listing(info.inputs)}")
    if not output_mapping:
        raise ConfigError(f"output_mapping is empty; map the model's outputs to new columns with "
                          f"setOutputMapping({{output: column}}); the {info.where()} gives "
                          f"{_listing(info.outputs)}")
    inputs = []
    for column, tensor in input_mapping.items():
        if column not in columns:
            raise ConfigError(f"input_mapping names column {column!r}, which the DataFrame does not have; "
                              f"its columns: {list(columns)}")
        if tensor not in info.inputs:
            raise ConfigError(f"input_mapping maps column {column!r} to {tensor!r}, which the {info.where()} "
                              f"does not take; its inputs: {_listing(info.inputs)}")
        _check_feedable(column, columns[column], info.inputs[tensor])
        inputs.append((column, info.inputs[tensor]))
    fed = {t.name for _c, t in inputs}
    if len(fed) != len(inputs):
        raise ConfigError(f"input_mapping feeds one input from two columns: {input_mapping}")
    unfed = [t for name, t in info.inputs.items() if name not in fed]
    if unfed:
        raise ConfigError(f"the {info.where()} also needs {_listing({t.name: t for t in unfed})}; "
                          f"add them to input_mapping ({{column: input}})")
    outputs, fields = [], []
    for tensor, column in output_mapping.items():
        if tensor not in info.outputs:
            raise ConfigError(f"output_mapping names output {tensor!r}, which the {info.where()} does not "
                              f"give; its outputs: {_listing(info.outputs)}")
        if column in columns or column in (f.name for f in fields):
            raise ConfigError(f"output_mapping writes output {tensor!r} to column {column!r}, which "
                              f"already exists; choose a new column name")
        out = info.outputs[tensor]
        outputs.append((out, column))
        fields.append(StructField(column, spark_type(out)))
    return Plan(tuple(inputs), tuple(outputs), StructType(list(schema.fields) + fields))


def spark_type(tensor: TensorInfo):
    """The Spark type of a result column: a scalar for ``[batch]``, an array for more dims.

    Raises:
        ConfigError: for an unknown rank, a rank-0 output, or a dtype Spark cannot hold.
    """
    from pyspark.sql import types as T

    if tensor.shape is None or len(tensor.shape) == 0:
        raise ConfigError(f"output {tensor.describe()} has no batch dimension"
                          f"{'' if tensor.shape is not None else ' it declares (unknown rank)'}; "
                          f"only outputs with one row per input row can become a column")
    kind = _TF_TO_SPARK.get(tensor.dtype)
    if kind is None:
        raise ConfigError(f"output {tensor.describe()}: a {tensor.dtype} tensor has no Spark column type; "
                          f"cast it in the model's serving function")
    element = getattr(T, kind)()
    return element if len(tensor.shape) == 1 else T.ArrayType(element)


def _check_feedable(column: str, data_type, tensor: TensorInfo) -> None:
    kind = type(data_type).__name__
    row = tensor.row_shape
    problem = None
    if kind == "ArrayType":
        element = type(data_type.elementType).__name__
        if element not in _NUMERIC_SPARK | {"StringType"}:
            problem = f"arrays of {data_type.elementType.simpleString()}"
        elif (element == "StringType") != (tensor.dtype == "string"):
            problem = "arrays of strings" if element == "StringType" else "arrays of numbers"
        elif row is not None and len(row) == 0:
            problem = "an array per row"
    elif kind in _NUMERIC_SPARK:
        if tensor.dtype == "string":
            problem = "numbers"
        elif row is not None and any(d is not None and d != 1 for d in row):
            problem = "one number per row"
    elif kind == "StringType":
        if tensor.dtype != "string":
            problem = "strings"
    elif kind == "BinaryType":
        pass  # bytes as a string tensor, or raw bytes reinterpreted as a fixed-size numeric tensor
    else:
        problem = f"{data_type.simpleString()} values"
    if problem:
        raise ConfigError(f"column {column!r} ({data_type.simpleString()}) holds {problem}, which cannot feed "
                          f"input {tensor.describe()}; map it to another input or convert the column")


def _listing(tensors: dict) -> str:
    return ", ".join(t.describe() for t in tensors.values()) or "nothing"


# ----------------------------------------------------------------- executor: models


_MODELS: dict[tuple, LoadedModel] = {}


class LoadedModel:
    """A model loaded in this process, called on dicts of NumPy arrays."""

    def __init__(self, info: ModelInfo):
        import tensorflow as tf

        self.info = info
        if info.kind == "saved_model":
            # the loaded object owns the variables the signature function reads: keep it
            self._owner = tf.saved_model.load(info.path, tags=list(info.tags))
            signature = self._owner.signatures[info.signature]
            self._call = lambda feed: signature(**{k: tf.convert_to_tensor(v) for k, v in feed.items()})
        else:
            model = _load_keras(info.path)
            self._owner = model
            in_names = _keras_input_names(model)
            out_names = _keras_output_names(model)

            @tf.function(reduce_retracing=True)
            def forward(inputs):
                return model(inputs, training=False)

            def call(feed):
                args = [tf.convert_to_tensor(feed[n]) for n in in_names]
                result = forward(args if len(args) > 1 else args[0])
                if isinstance(result, dict):
                    return result
                result = tf.nest.flatten(result)
                return dict(zip(out_names, result, strict=True))

            self._call = call

    def predict(self, feed: dict[str, np.ndarray], rows: int, batch_size: int, wanted: list[str]) -> dict:
        """``{output: array of rows}``: ``feed`` cut into ``batch_size`` slices through the model."""
        pieces: dict[str, list] = {name: [] for name in wanted}
        for start in range(0, rows, batch_size):
            part = {k: v[start:start + batch_size] for k, v in feed.items()}
            result = self._call(part)
            for name in wanted:
                pieces[name].append(result[name].numpy())
        return {name: arrays[0] if len(arrays) == 1 else np.concatenate(arrays) for name, arrays in pieces.items()}


def cached_model(info: ModelInfo) -> LoadedModel:
    """This process's copy of the model, loaded on first use (executor side)."""
    model = _MODELS.get(info.cache_key)
    if model is None:
        log.info("loading %s in process %d", info.where(), os.getpid())
        model = _MODELS[info.cache_key] = LoadedModel(info)
    return model


class PartitionPredictor:
    """The ``mapInArrow`` function: each record batch plus the model's outputs as columns.

    A module-level class, so that Spark pickles it by reference and every task on an
    executor Python worker reaches the same model cache.
    """

    def __init__(self, info: ModelInfo, model_plan: Plan, batch_size: int):
        from pyspark.sql.pandas.types import to_arrow_type

        self.info = info
        self.inputs = [(column, tensor) for column, tensor in model_plan.inputs]
        self.outputs = [(tensor, column) for tensor, column in model_plan.outputs]
        self.arrow_types = [to_arrow_type(model_plan.schema[column].dataType) for _t, column in self.outputs]
        self.batch_size = batch_size

    def __call__(self, batches):
        import pyarrow as pa

        model = cached_model(self.info)
        specs = {column: _spec(tensor) for column, tensor in self.inputs}
        wanted = [tensor.name for tensor, _c in self.outputs]
        names = [column for _t, column in self.outputs]
        for batch in batches:
            rows = batch.num_rows
            if rows == 0:
                arrays = [pa.array([], type=kind) for kind in self.arrow_types]
            else:
                feed = {tensor.name: _column(batch, column, specs[column]) for column, tensor in self.inputs}
                result = model.predict(feed, rows, self.batch_size, wanted)
                arrays = [to_arrow(result[tensor.name], kind, rows, tensor)
                          for (tensor, _c), kind in zip(self.outputs, self.arrow_types, strict=True)]
            yield pa.RecordBatch.from_arrays([*batch.columns, *arrays], names=[*batch.schema.names, *names])


def _spec(tensor: TensorInfo):
    import tensorflow as tf

    return tf.TensorSpec(tensor.row_shape, tf.as_dtype(tensor.dtype), tensor.name)


def _column(batch, column: str, spec) -> np.ndarray:
    from tfos.feed.records import arrow_to_numpy

    try:
        return arrow_to_numpy(batch.column(column), spec, column)
    except ValueError as exc:
        raise DataError(f"cannot feed input {spec.name!r} from column {column!r}: {exc}") from None


def to_arrow(values: np.ndarray, arrow_type, rows: int, tensor: TensorInfo):
    """A model output (``rows`` first) as an Arrow array of ``arrow_type``: scalars, or a list per row."""
    import pyarrow as pa

    if values.ndim == 0 or values.shape[0] != rows:
        raise DataError(f"output {tensor.describe()} gave {values.shape[0] if values.ndim else 'no'} rows for "
                        f"{rows} input rows; only outputs with one row per input row can become a column")
    if pa.types.is_list(arrow_type):
        flat = values.reshape(rows, -1)
        width = flat.shape[1]
        offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, _flat_values(flat.reshape(-1), arrow_type.value_type),
                                        type=arrow_type)
    return _flat_values(values.reshape(rows), arrow_type)


def _flat_values(values: np.ndarray, arrow_type):
    import pyarrow as pa

    if pa.types.is_string(arrow_type):
        return pa.array([v.decode("utf-8") if isinstance(v, bytes) else v for v in values], type=arrow_type)
    return pa.array(values.astype(arrow_type.to_pandas_dtype(), copy=False), type=arrow_type)


# ------------------------------------------------------------------------ public


def predict_dataframe(df, model_path: str, input_mapping: dict, output_mapping: dict, batch_size: int = 100,
                      signature_def_key: str | None = None, tag_set: str | None = None):
    """``df`` with the model's outputs appended as columns, computed on the executors.

    Lazy, like any DataFrame transformation: the model runs when the result is computed,
    one copy per executor Python worker (loaded on first use, then cached). Rows keep
    their order and partitions.

    Args:
        df: the input DataFrame.
        model_path: a SavedModel directory or a Keras file (``.keras``, ``.h5``) that every
            executor can read.
        input_mapping: ``{column: input}``: the column feeding each of the model's inputs.
            An array column feeds a ``[batch, n]`` input (or any shape of ``n`` values per
            row); a binary column may feed a fixed-size numeric input (its bytes reinterpreted).
        output_mapping: ``{output: column}``: the new column each wanted output fills. A
            ``[batch]`` output gives a scalar column, a ``[batch, ...]`` one an array column
            (flattened per row).
        batch_size: rows per model call.
        signature_def_key: the SavedModel signature (default ``serving_default``).
        tag_set: comma-separated tags of the SavedModel meta graph (default ``serve``).

    Returns:
        A DataFrame: ``df``'s columns, then the result columns.

    Raises:
        ConfigError: at once, on the driver, for a bad mapping or model (see :func:`plan`).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int; received: batch_size={batch_size!r}")
    info = describe_model(model_path, signature_def_key, tag_set)
    model_plan = plan(df.schema, info, dict(input_mapping or {}), dict(output_mapping or {}))
    return df.mapInArrow(PartitionPredictor(info, model_plan, batch_size), model_plan.schema)
