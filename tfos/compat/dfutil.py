"""TensorFlowOnSpark's ``dfutil`` module: :mod:`tfos.dfutil` under its names.

``loadTFRecords`` takes TensorFlowOnSpark's ``SparkContext`` as well as a ``SparkSession``.
"""

from __future__ import annotations

from tfos.dfutil import (  # noqa: F401 - re-exported
    SCHEMA_FILE,
    SavedTFRecords,
    fields_from_schema,
    is_loaded_df,
    isLoadedDF,
    loadedDF,
    save_as_tfrecords,
    saveAsTFRecords,
    spark_schema,
)
from tfos.dfutil import load_tfrecords as _load_tfrecords


def load_tfrecords(spark_or_sc, input_dir: str, binary_features=(), **options):
    """:func:`tfos.dfutil.load_tfrecords`, given a ``SparkSession`` or a ``SparkContext``."""
    if not hasattr(spark_or_sc, "sparkContext"):
        from pyspark.sql import SparkSession

        spark_or_sc = SparkSession(spark_or_sc)
    return _load_tfrecords(spark_or_sc, input_dir, binary_features, **options)


loadTFRecords = load_tfrecords  # noqa: N816 - TensorFlowOnSpark's name

__all__ = [
    "SCHEMA_FILE", "SavedTFRecords", "fields_from_schema", "isLoadedDF", "is_loaded_df", "loadTFRecords",
    "load_tfrecords", "loadedDF", "saveAsTFRecords", "save_as_tfrecords", "spark_schema",
]
