"""Turning a chunk of fed records into columns (one NumPy array per field) for tf.data."""

from __future__ import annotations

import numpy as np


def to_columns(chunk: list, signature, columns: list[str] | None = None):
    """Columns of ``chunk`` shaped like ``signature`` (a TensorSpec, tuple of them, or dict).

    Tuple signatures index record fields by position; dict signatures by column name
    (DataFrame rows, whose column names travel with the epoch plan) or by key (dict records).
    """
    if isinstance(signature, dict):
        if chunk and isinstance(chunk[0], dict):
            return {k: _column([r[k] for r in chunk], spec) for k, spec in signature.items()}
        index = {c: i for i, c in enumerate(columns or [])}
        missing = [k for k in signature if k not in index]
        if missing:
            raise ValueError(f"output_signature names {missing}, but the fed rows have columns {columns}")
        return {k: _column([r[index[k]] for r in chunk], spec) for k, spec in signature.items()}
    if isinstance(signature, (tuple, list)):
        return tuple(_column([r[i] for r in chunk], spec) for i, spec in enumerate(signature))
    return _column(chunk, signature)


def _column(values: list, spec):
    dtype = spec.dtype
    if dtype.is_floating or dtype.is_integer or dtype.is_bool:
        return np.asarray(values, dtype=dtype.as_numpy_dtype)
    return np.asarray(values, dtype=object)  # strings/bytes
