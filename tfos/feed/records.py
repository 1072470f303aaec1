"""Fed chunks as user code sees them: rows for ``DataFeed``, columns (one NumPy array per
field) for ``tf.data``.

A chunk is a list of records (an RDD's, pickled on the wire) or a ``pyarrow.RecordBatch``
(a DataFrame's). Arrow columns become NumPy arrays without a Python object per value where
the declared spec allows: numbers directly, arrays of numbers of one length as a 2-D
array, and fixed-width binary values (raw image bytes) as ``uint8`` (or any numeric dtype)
arrays when the spec asks for that shape.
"""

from __future__ import annotations

import numpy as np

from tfos.errors import DataError


def head(chunk, n: int):
    """The first ``n`` records of a chunk."""
    return chunk[:n] if isinstance(chunk, list) else chunk.slice(0, n)


def rows_of(pieces: list) -> list:
    """Records of several chunks, in order; DataFrame rows as tuples in column order."""
    out: list = []
    for piece in pieces:
        if isinstance(piece, list):
            out.extend(piece)
        else:
            out.extend(zip(*(column.to_pylist() for column in piece.columns), strict=True))
    return out


def mapped_arrow_columns(batches: list, input_mapping: dict) -> dict:
    """``{tensor_name: values}`` for Arrow chunks: NumPy arrays for numbers, lists otherwise."""
    import pyarrow as pa

    table = pa.Table.from_batches(batches)
    out = {}
    for column, name in input_mapping.items():
        if column not in table.column_names:
            from tfos.errors import FeedError

            raise FeedError(f"input_mapping names column {column!r}, but the DataFrame has {table.column_names}")
        values = table.column(column)
        kind = values.type
        if (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)) \
                and values.null_count == 0:
            out[name] = values.to_numpy()
        else:
            out[name] = values.to_pylist()
    return out


def to_columns(chunk, signature, columns: list[str] | None = None):
    """Columns of ``chunk`` shaped like ``signature`` (a TensorSpec, tuple of them, or dict).

    Tuple signatures index record fields by position; dict signatures by column name
    (DataFrame rows, whose column names travel with the epoch plan) or by key (dict records).
    """
    if not isinstance(chunk, list):
        return _arrow_columns(chunk, signature)
    if isinstance(signature, dict):
        if chunk and isinstance(chunk[0], dict):
            return {k: _column([r[k] for r in chunk], spec, k) for k, spec in signature.items()}
        index = {c: i for i, c in enumerate(columns or [])}
        missing = [k for k in signature if k not in index]
        if missing:
            raise DataError(f"output_signature names {missing}, but the fed rows have columns {columns}")
        return {k: _column([r[index[k]] for r in chunk], spec, k) for k, spec in signature.items()}
    if isinstance(signature, (tuple, list)):
        return tuple(_column([r[i] for r in chunk], spec, str(i)) for i, spec in enumerate(signature))
    return _column(chunk, signature)


def _column(values: list, spec, name: str = "?"):
    dtype = spec.dtype
    if dtype.is_floating or dtype.is_integer or dtype.is_bool:
        if values and isinstance(values[0], (bytes, bytearray, memoryview)):
            return _raw_bytes(values, spec, name)
        return np.asarray(values, dtype=dtype.as_numpy_dtype)
    return np.asarray(values, dtype=object)  # strings/bytes


def _raw_bytes(values: list, spec, name: str) -> np.ndarray:
    """Records' raw bytes (an image's pixels) as a ``(rows, *spec.shape)`` array of
    ``spec.dtype``: one join, no per-value parsing; every value must have the same size."""
    numpy_dtype = np.dtype(spec.dtype.as_numpy_dtype)
    size = len(values[0])
    if any(len(v) != size for v in values) or size % numpy_dtype.itemsize:
        sizes = {len(v) for v in values}
        raise DataError(f"field {name} holds byte strings of {min(sizes)}..{max(sizes)} bytes; to read them as "
                         f"{spec.dtype.name} of shape {spec.shape} every value needs the same size")
    flat = np.frombuffer(b"".join(values), dtype=numpy_dtype)
    shape = tuple(spec.shape.as_list()) if spec.shape.rank is not None else None
    return _reshape(flat, len(values), shape, name)


# ------------------------------------------------------------------ Arrow


def _arrow_columns(batch, signature):
    names = batch.schema.names
    if isinstance(signature, dict):
        missing = [k for k in signature if k not in names]
        if missing:
            raise DataError(f"output_signature names {missing}, but the fed DataFrame has columns {names}")
        return {k: arrow_to_numpy(batch.column(k), spec, k) for k, spec in signature.items()}
    if isinstance(signature, (tuple, list)):
        if len(signature) > len(names):
            raise DataError(f"output_signature has {len(signature)} fields, the DataFrame {len(names)}: {names}")
        return tuple(arrow_to_numpy(batch.column(i), spec, names[i]) for i, spec in enumerate(signature))
    return arrow_to_numpy(batch.column(0), signature, names[0])


def arrow_to_numpy(column, spec, name: str = "?"):
    """One Arrow column as a NumPy array of ``(rows, *spec.shape)`` with ``spec.dtype``."""
    import pyarrow as pa

    rows = len(column)
    if column.null_count:
        raise DataError(f"column {name!r} has {column.null_count} null value(s) in a fed chunk; "
                         f"fill or drop them before feeding (tf.data has no nulls)")
    kind = column.type
    dtype = spec.dtype
    shape = tuple(spec.shape.as_list()) if spec.shape.rank is not None else None
    is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    if dtype == _tf_string() and not is_list:
        return column.to_numpy(zero_copy_only=False)
    numpy_dtype = np.dtype(object if dtype == _tf_string() else dtype.as_numpy_dtype)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        # raw bytes of a fixed-size tensor (an image's pixels): reinterpret, no per-row objects
        offsets = np.frombuffer(column.buffers()[1], dtype=np.int64 if pa.types.is_large_binary(kind) else np.int32)
        offsets = offsets[column.offset:column.offset + rows + 1]
        widths = np.diff(offsets)
        if rows and (widths.min() != widths.max() or widths[0] % numpy_dtype.itemsize):
            raise DataError(f"column {name!r} holds binary values of {widths.min()}..{widths.max()} bytes; "
                             f"to read them as {dtype.name} of shape {shape} every value needs the same size")
        data = np.frombuffer(column.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]] if rows else \
            np.empty(0, np.uint8)
        return _reshape(data.view(numpy_dtype), rows, shape, name)
    if is_list:
        lengths = np.asarray(column.value_lengths()) if not pa.types.is_fixed_size_list(kind) else None
        if lengths is not None and rows and lengths.min() != lengths.max():
            raise DataError(f"column {name!r} holds arrays of {lengths.min()}..{lengths.max()} values; "
                             f"a dataset needs one length per column (pad them, or read with next_batch)")
        values = column.flatten()
        if values.null_count:
            raise DataError(f"column {name!r} has null elements inside its arrays")
        return _reshape(values.to_numpy(zero_copy_only=False).astype(numpy_dtype, copy=False), rows, shape, name)
    return _reshape(column.to_numpy(zero_copy_only=False).astype(numpy_dtype, copy=False), rows, shape, name)


def _reshape(flat: np.ndarray, rows: int, shape, name: str) -> np.ndarray:
    if shape is None:
        return flat.reshape(rows, -1) if rows and flat.size != rows else flat
    target = [rows, *[-1 if d is None else d for d in shape]]
    try:
        return flat.reshape(target)
    except ValueError:
        per_row = flat.size // rows if rows else 0
        raise DataError(f"column {name!r}: {per_row} value(s) per row cannot take the declared shape "
                         f"{list(shape)}") from None


def _tf_string():
    import tensorflow as tf

    return tf.string


# ------------------------------------------------------------- schemas


_SPARK_TO_TF = {
    "ByteType": "int8", "ShortType": "int16", "IntegerType": "int32", "LongType": "int64",
    "FloatType": "float32", "DoubleType": "float64", "BooleanType": "bool",
    "StringType": "string", "BinaryType": "string",
}


def describe_schema(schema, array_lengths: dict[str, int | None]) -> list[dict]:
    """A Spark schema as the element spec ``ctx.dataset`` infers: ``[{name, dtype, shape}]``.

    ``array_lengths`` gives, per array column, its one length when every row has the same,
    else ``None`` (shape ``[None]``). Columns tf.data cannot hold get ``dtype: None`` and the
    reason, reported only if the user asks for an inferred spec.
    """
    out = []
    for field in schema.fields:
        kind = type(field.dataType).__name__
        entry = {"name": field.name, "dtype": _SPARK_TO_TF.get(kind), "shape": []}
        if kind == "ArrayType":
            entry["dtype"] = _SPARK_TO_TF.get(type(field.dataType.elementType).__name__)
            entry["shape"] = [array_lengths.get(field.name)]
        if entry["dtype"] is None:
            entry["reason"] = f"{field.dataType.simpleString()} has no tf.data equivalent"
        out.append(entry)
    return out


def signature_of(described: list[dict]):
    """The ``{column: tf.TensorSpec}`` of a :func:`describe_schema` result."""
    import tensorflow as tf

    bad = [f"{c['name']} ({c['reason']})" for c in described if c["dtype"] is None]
    if bad:
        raise DataError(f"cannot infer a tf.data spec for column(s) {', '.join(bad)}: select the columns "
                         f"to feed, or pass output_signature for the ones you need")
    return {c["name"]: tf.TensorSpec(c["shape"], getattr(tf, c["dtype"]), name=c["name"]) for c in described}
