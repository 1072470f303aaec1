"""DataFrames to TFRecord files of ``tf.train.Example`` and back, without a JVM jar.

>>> tfos.dfutil.save_as_tfrecords(df, "/data/train", compression="GZIP")
>>> df2 = tfos.dfutil.load_tfrecords(spark, "/data/train")

Writing runs one Spark task per partition, each writing one file
(``part-00000.tfrecord``, ``.tfrecord.gz`` for GZIP) with tfos's own Example encoder
(:mod:`tfos.tfrecord`, no TensorFlow import in the Spark workers). Reading lists and
reads the files through Spark (``binaryFile``/``binaryFiles``, so any file system the
Spark application can read: ``file:``, ``hdfs:``, ``viewfs:``, ``s3a:``...) and decodes
them in the Python workers into Arrow batches.

TensorFlowOnSpark's names are kept as aliases: ``saveAsTFRecords``, ``loadTFRecords``,
``isLoadedDF`` (and its ``loadedDF`` record of where each loaded DataFrame came from).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
import weakref
from dataclasses import dataclass
from itertools import islice

from tfos.errors import DataError
from tfos.storage.credentials import session_storage_env, task_storage_settings
from tfos.tfrecord import (
    PY_BOOL,
    PY_BYTES,
    PY_FLOAT,
    PY_INT,
    PY_STR,
    PY_VECTOR,
    SUFFIX,
    ExampleDecoder,
    ExampleEncoder,
    Field,
    RecordWriter,
    check_compression,
    feature_stats,
    infer_fields,
    merge_stats,
    read_file_bytes,
)

log = logging.getLogger(__name__)

#: the DataFrame's Spark schema, written next to the part files by save_as_tfrecords
SCHEMA_FILE = "_tfos_schema.json"
SUCCESS_FILE = "_SUCCESS"

#: DataFrames made by load_tfrecords -> the directory they were read from (TensorFlowOnSpark's ``loadedDF``)
loadedDF: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # noqa: N816 - TensorFlowOnSpark's name

_SUPPORTED = ("boolean, byte, short, int, long (int64 list); float, double (float list); string "
              "(UTF-8 bytes list); binary (bytes list); a Spark ML vector (float list); and arrays of these")


@dataclass(frozen=True)
class SavedTFRecords:
    """What :func:`save_as_tfrecords` wrote.

    Attributes:
        output_dir: the directory, fully qualified (``file:/...``, ``hdfs://...``).
        files: the part files' names, one per partition, in partition order.
        records: records written to each file, in the same order.
        compression: "", "GZIP" or "ZLIB".
    """

    output_dir: str
    files: tuple[str, ...]
    records: tuple[int, ...]
    compression: str

    @property
    def total_records(self) -> int:
        return sum(self.records)


# ------------------------------------------------------------------ schema


def fields_from_schema(schema) -> list[Field]:
    """The :class:`~tfos.tfrecord.Field` of each column of a Spark ``StructType``.

    Raises:
        DataError: for a column type an Example cannot hold (map, struct, nested arrays,
            decimal, date, timestamp...), naming the column and its type.
    """
    return [_field(f.name, f.dataType) for f in schema.fields]


def _field(name: str, data_type) -> Field:
    from pyspark.sql.types import ArrayType

    py = _scalar_py(data_type)
    if py is not None:
        return Field(name, py)
    if isinstance(data_type, ArrayType):
        element = _scalar_py(data_type.elementType)
        if element is not None and element != PY_VECTOR:
            return Field(name, element, array=True)
    raise DataError(
        f"column {name!r} has type {data_type.simpleString()}, which a tf.train.Example feature cannot "
        f"hold; supported: {_SUPPORTED}. Convert or drop it first (e.g. F.to_json for a struct or map, "
        "F.flatten for a nested array, .cast('double') for a decimal, .cast('long') for a timestamp)"
    )


def _scalar_py(data_type) -> str | None:
    from pyspark.sql import types as T

    if isinstance(data_type, T.BooleanType):
        return PY_BOOL
    if isinstance(data_type, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)):
        return PY_INT
    if isinstance(data_type, (T.FloatType, T.DoubleType)):
        return PY_FLOAT
    if isinstance(data_type, T.StringType):
        return PY_STR
    if isinstance(data_type, T.BinaryType):
        return PY_BYTES
    if type(data_type).__name__ == "VectorUDT":
        return PY_VECTOR
    return None


def spark_schema(fields: list[Field]):
    """The Spark ``StructType`` :func:`load_tfrecords` gives inferred fields."""
    from pyspark.sql import types as T

    scalar = {PY_INT: T.LongType(), PY_BOOL: T.BooleanType(), PY_FLOAT: T.FloatType(),
              PY_STR: T.StringType(), PY_BYTES: T.BinaryType(), PY_VECTOR: T.FloatType()}
    return T.StructType([
        T.StructField(f.name, T.ArrayType(scalar[f.py]) if f.array or f.py == PY_VECTOR else scalar[f.py])
        for f in fields
    ])


# ------------------------------------------------------------------ save


def save_as_tfrecords(df, output_dir: str, compression: str | None = None,
                      overwrite: bool = False) -> SavedTFRecords:
    """Write ``df`` as TFRecord files of ``tf.train.Example``, one file per partition.

    Blocks until the Spark job ends. Each row becomes one Example with one feature per
    column: boolean and integer columns an int64 list, float and double a float list
    (float32, as Example stores it), string a bytes list (UTF-8), binary a bytes list,
    a Spark ML vector a float list, and arrays of these a list of their values. A null
    leaves its feature out of that record; an empty array is an empty list. The files
    are ``part-NNNNN.tfrecord`` (``.tfrecord.gz`` with GZIP, ``.tfrecord.zlib`` with
    ZLIB), next to ``_SUCCESS`` and ``_tfos_schema.json`` (the DataFrame's schema, which
    :func:`load_tfrecords` uses to give the same column types back).

    ``output_dir`` is resolved as Spark resolves paths (a path without a scheme is on
    ``fs.defaultFS``). The executors write ``file:`` paths themselves (on a cluster: a
    file system mounted on every host), and ``hdfs://``, ``s3a://``, ``gs://``,
    ``abfss://`` through tfos's storage layer (:mod:`tfos.storage`, ``pyarrow.fs``:
    TensorFlow 2.21 has no ``hdfs``/``s3``), with the credentials of the executors'
    environment (docs/data.md#cluster-storage).

    Args:
        df: the DataFrame.
        output_dir: the directory to create.
        compression: None, "GZIP" or "ZLIB".
        overwrite: replace an existing ``output_dir``; otherwise an existing non-empty
            directory is an error.

    Returns:
        A :class:`SavedTFRecords` (file names and record counts per partition).

    Over Spark Connect (``df`` of a remote session) the directory is made, checked and
    finished (``_SUCCESS``, the schema) by a one-task job on an executor, not here: the
    client may not see the cluster's file systems. ``output_dir`` must then be absolute
    (``/data/train``, on ``spark.hadoop.fs.defaultFS`` when the session's conf sets one)
    or a URI: a relative one would resolve in each executor's working directory.

    Raises:
        DataError: a column type that an Example cannot hold (before any Spark job runs),
            a null inside an array, or ``output_dir`` not empty without ``overwrite``.
    """
    compression = check_compression(compression)
    fields = fields_from_schema(df.schema)
    if _is_connect(df.sparkSession):
        return _save_over_connect(df, output_dir, compression, overwrite, fields)
    sc = df.sparkSession.sparkContext
    target = _qualify(sc, output_dir)
    _prepare_dir(sc, target, overwrite)
    suffix = SUFFIX[compression]
    storage_env = session_storage_env(df.sparkSession)

    def write_partition(index, rows):
        from pyspark import TaskContext

        task = TaskContext.get()
        name = f"part-{index:05d}{suffix}"
        try:
            with task_storage_settings(storage_env):
                count = _write_part(target, name, rows, fields, compression,
                                    attempt=task.attemptNumber() if task else 0)
        except DataError as exc:  # bad data: the same on every retry, so report it instead of raising
            yield name, -1, str(exc)
            return
        yield name, count, ""

    try:
        written = df.rdd.mapPartitionsWithIndex(write_partition).collect()
    except Exception as exc:  # noqa: BLE001 - Spark wraps the executor's error; give the cause
        raise _data_error(exc, f"writing TFRecords to {target}") from exc
    errors = [error for _, _, error in sorted(written) if error]
    if errors:
        raise DataError(errors[0])
    _write_small_file(sc, _join(target, SCHEMA_FILE), df.schema.json())
    _write_small_file(sc, _join(target, SUCCESS_FILE), "")
    written.sort()
    result = SavedTFRecords(target, tuple(n for n, _, _ in written), tuple(c for _, c, _ in written), compression)
    log.info("wrote %d records in %d TFRecord files to %s", result.total_records, len(result.files), target)
    return result


def _write_part(target: str, name: str, rows, fields: list[Field], compression: str, attempt: int) -> int:
    """Executor side: encode the partition's rows into ``target/name`` (atomically renamed)."""
    encoder = ExampleEncoder(fields)
    temp = _join(target, f".{name}.{attempt}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with _open_write(temp) as raw, RecordWriter(raw, compression) as writer:
            for row in rows:
                writer.write(encoder.encode(row))
    except BaseException:
        _remove(temp)
        raise
    _rename(temp, _join(target, name))
    return writer.records


# ------------------------------------------------------------------ load


def load_tfrecords(spark, input_dir: str, binary_features=(), schema=None,
                   sample_records: int = 100):
    """A DataFrame of the ``tf.train.Example`` records in ``input_dir``'s TFRecord files.

    Lazy like any DataFrame, except for the schema: given ``schema`` or the
    ``_tfos_schema.json`` that :func:`save_as_tfrecords` wrote, no data is read here;
    otherwise one Spark job reads the first ``sample_records`` records of every file to
    infer it. Inference: int64 lists become ``long``, float lists ``float``, bytes lists
    ``string`` (UTF-8), or ``binary`` for the features named in ``binary_features`` and
    those with a sampled value that is not UTF-8 text; a
    feature with at most one value in every sampled record is a scalar, otherwise an
    array; columns are sorted by name. A record whose features do not fit the inferred
    schema fails the read with the fix (pass ``schema``). A missing feature is a null.

    Files are found and read through Spark (the ``binaryFile`` source: any file system the
    Spark application reads; files whose names start with ``_`` or ``.`` are skipped) and
    decoded into Arrow batches in the Python workers (``mapInArrow``). Each
    file is read whole by one task, so keep files to a few hundred MB. The compression
    (none, GZIP or ZLIB) is detected per file.

    Args:
        spark: the ``SparkSession`` (or the ``SparkContext``, as TensorFlowOnSpark took).
        input_dir: a directory, a file, or a glob pattern (``/data/part-*``).
        binary_features: bytes features to keep as ``binary`` (inference only).
        schema: a ``StructType`` (or DDL string) to read: its columns are the features to
            read, with their types; other features are ignored.
        sample_records: records per file used to infer the schema.

    Over Spark Connect everything is read by the executors (the files through Spark's
    ``binaryFile``; the saved schema by a one-task job, as Spark's sources skip ``_``
    files), so ``input_dir`` must be absolute or a URI, on a file system Spark can read; Spark ML vector columns cannot be loaded there (Arrow has no vector type, and
    there is no RDD to build them in): pass ``schema`` with ``array<float>`` instead.

    Raises:
        DataError: no records to infer a schema from, a schema type an Example cannot
            hold, or (when the DataFrame is computed) a record that does not fit.
    """
    if not hasattr(spark, "read"):  # a SparkContext, as TensorFlowOnSpark's loadTFRecords took
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession() or SparkSession(spark)
    if _is_connect(spark):
        return _load_over_connect(spark, input_dir, binary_features, schema, sample_records)
    sc = spark.sparkContext
    through_storage = _spark_cannot_read(sc, input_dir)
    if through_storage:  # e.g. s3a:// without hadoop-aws: list and read with tfos's storage layer
        files = _storage_files(sc, input_dir, session_storage_env(spark))
    else:
        files = sc.binaryFiles(input_dir, minPartitions=max(sc.defaultParallelism, 2))  # lazy: read if used
    fields, schema, strict = _fields_to_read(
        schema, lambda: _saved_schema(sc, input_dir), lambda: _infer(files, binary_features, sample_records, input_dir))

    if any(f.py == PY_VECTOR for f in fields):  # Arrow has no Spark ML vectors: rows through pickling
        vector = [i for i, f in enumerate(fields) if f.py == PY_VECTOR]

        def decode_file(item):
            for row in _decode_file(item[0], item[1], fields, strict):
                yield _vectors(row, vector)

        df = spark.createDataFrame(files.flatMap(decode_file), schema, verifySchema=False)
    else:
        df = _load_through_arrow(spark, input_dir, fields, schema, strict,
                                 files=files if through_storage else None)
    loadedDF[df] = input_dir
    return df


def _fields_to_read(schema, saved, infer) -> tuple[list[Field], object, bool]:
    """``(fields, StructType, strict)`` to read: ``schema`` (a StructType or a DDL string), else
    ``saved()`` (save_as_tfrecords's), else ``infer()``'s fields, strict (an unexpected
    feature then fails the read rather than being dropped)."""
    from pyspark.sql.types import StructType, _parse_datatype_string

    if schema is None:
        schema = saved()
    if isinstance(schema, str):
        schema = _parse_datatype_string(schema)
        if not isinstance(schema, StructType):
            raise DataError(f"schema must describe a struct of columns; received: {schema!r}")
    if schema is None:
        fields = infer()
        return fields, spark_schema(fields), True
    return fields_from_schema(schema), schema, False


def _decode_file(path: str, data: bytes, fields: list[Field], strict: bool):
    decoder = ExampleDecoder(fields, strict=strict)
    for n, record in enumerate(read_file_bytes(data, path)):
        yield decoder.decode(record, f" (record {n} of {path})")


def _load_through_arrow(spark, input_dir: str, fields: list[Field], schema, strict: bool, files=None):
    """Files read by Spark's ``binaryFile`` source, decoded into Arrow batches (``mapInArrow``):
    no Row pickling on either side, ~1.5x the rate of ``createDataFrame`` over an RDD."""
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow_schema = to_arrow_schema(schema)

    def decode(batches):
        import pyarrow as pa

        def to_batch(rows):
            columns = list(zip(*rows, strict=True))
            return pa.RecordBatch.from_arrays(
                [pa.array(list(c), type=f.type) for c, f in zip(columns, arrow_schema, strict=True)],
                schema=arrow_schema,
            )

        for batch in batches:
            paths, contents = batch.column(0), batch.column(1)
            for i in range(batch.num_rows):
                rows = []
                for row in _decode_file(paths[i].as_py(), contents[i].as_py(), fields, strict):
                    rows.append(row)
                    if len(rows) == _ARROW_BATCH_ROWS:
                        yield to_batch(rows)
                        rows = []
                if rows:
                    yield to_batch(rows)

    if files is None:
        frame = spark.read.format("binaryFile").load(input_dir).select("path", "content")
    else:
        frame = spark.createDataFrame(files, "path string, content binary")
    return frame.mapInArrow(decode, schema)


def _spark_cannot_read(sc, path: str) -> bool:
    """True for a remote URI whose scheme Spark's Hadoop has no file system for."""
    from tfos.storage.filesystems import is_remote

    if not is_remote(path):
        return False
    try:
        _hadoop_fs(sc, path)
        return False
    except Exception as exc:  # noqa: BLE001 - py4j's wrapping of UnsupportedFileSystemException
        text = str(exc)
        if any(sign in text for sign in ("UnsupportedFileSystem", "No FileSystem for scheme",
                                          "ClassNotFoundException: Class org.apache.hadoop.fs")):
            return True  # no such file system, or its jar (hadoop-aws, gcs-connector) is missing
        raise


def _storage_files(sc, input_dir: str, storage_env: dict):
    """``(path, bytes)`` of the TFRecord files under ``input_dir`` (a directory, file or glob),
    as ``binaryFiles`` gives them, read by the storage layer in the executors."""
    from tfos.storage.filesystems import glob as storage_glob

    pattern = input_dir if any(c in input_dir for c in "*?[") else input_dir.rstrip("/") + "/*"
    paths = [p for p in storage_glob(pattern) if not p.rsplit("/", 1)[-1].startswith(("_", "."))]
    if not paths and not any(c in input_dir for c in "*?["):
        paths = storage_glob(input_dir)  # a single file
    if not paths:
        raise DataError(f"no TFRecord files in {input_dir}")

    def read(path):
        from tfos.storage.filesystems import read_bytes

        with task_storage_settings(storage_env):
            return path, read_bytes(path)

    return sc.parallelize(paths, min(len(paths), max(sc.defaultParallelism, 2))).map(read)


_ARROW_BATCH_ROWS = 10_000


def _infer(files, binary_features, sample_records: int, input_dir: str) -> list[Field]:
    def sample(item):
        path, data = item
        try:
            return feature_stats(islice(read_file_bytes(data, path), sample_records)), ""
        except DataError as exc:  # a corrupt file: the same on every retry
            return {}, str(exc)

    try:
        per_file = files.map(sample).collect()
    except Exception as exc:  # noqa: BLE001 - Spark wraps the executor's error; give the cause
        raise _data_error(exc, f"inferring the schema of the TFRecords in {input_dir}") from exc
    errors = [error for _, error in per_file if error]
    if errors:
        raise DataError(errors[0])
    stats: dict = {}
    for s, _ in per_file:
        stats = merge_stats(stats, s)
    if not stats:
        raise DataError(f"found no records in {input_dir} ({len(per_file)} files) to infer a schema from; "
                        "pass schema=... to read an empty directory")
    return infer_fields(stats, binary_features)


def _vectors(row: tuple, positions: list[int]) -> tuple:
    from pyspark.ml.linalg import Vectors

    row = list(row)
    for i in positions:
        if row[i] is not None:
            row[i] = Vectors.dense(row[i])
    return tuple(row)


def is_loaded_df(df) -> bool:
    """True when ``df`` was made by :func:`load_tfrecords` (its origin is ``loadedDF[df]``)."""
    return df in loadedDF


# TensorFlowOnSpark's names
saveAsTFRecords = save_as_tfrecords  # noqa: N816
loadTFRecords = load_tfrecords  # noqa: N816
isLoadedDF = is_loaded_df  # noqa: N816


# ------------------------------------------------------------------ files


def _qualify(sc, path: str) -> str:
    """``path`` as Spark's Hadoop file system resolves it (``file:/abs``, ``hdfs://nn/...``)."""
    try:
        jvm = sc._jvm
        hpath = jvm.org.apache.hadoop.fs.Path(path)
        fs = hpath.getFileSystem(sc._jsc.hadoopConfiguration())
        return str(fs.makeQualified(hpath))
    except Exception as exc:  # noqa: BLE001 - no JVM (Spark Connect): local paths only
        if "://" in path or path.startswith("file:"):
            return path
        log.debug("no Hadoop file system to qualify %s (%s); taking it as local", path, exc)
        return "file:" + os.path.abspath(path)


def _local(path: str) -> str | None:
    """The local path of a ``file:`` URI (``None`` for other schemes)."""
    from tfos.storage.filesystems import local_path

    return local_path(path)


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


def _open_write(path: str):
    local = _local(path)
    if local is not None:
        return open(local, "wb", buffering=1 << 20)
    # hdfs://, s3a://, gs://, abfss://...: tfos's storage layer (TF 2.21 has no hdfs/s3)
    from tfos.storage.filesystems import resolve, storage_error

    location = resolve(path)
    try:
        return location.fs.open_output_stream(location.path)
    except (OSError, ValueError) as exc:
        raise storage_error("write", path, exc) from None


def _rename(src: str, dst: str) -> None:
    local_src, local_dst = _local(src), _local(dst)
    if local_src is not None and local_dst is not None:
        os.replace(local_src, local_dst)
        return
    from tfos.storage.filesystems import resolve, storage_error

    source, target = resolve(src), resolve(dst)
    try:
        source.fs.move(source.path, target.path)
    except (OSError, ValueError) as exc:
        raise storage_error("rename", f"{src} to {dst}", exc) from None


def _remove(path: str) -> None:
    local = _local(path)
    try:
        if local is not None:
            os.remove(local)
        else:
            from tfos.storage.filesystems import resolve

            location = resolve(path)
            location.fs.delete_file(location.path)
    except Exception as exc:  # noqa: BLE001 - cleaning up after the real error, which is raised
        from tfos.storage.filesystems import redact

        log.debug("could not remove %s: %s", redact(path), exc)


def _hadoop_fs(sc, path: str):
    hpath = sc._jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(sc._jsc.hadoopConfiguration()), hpath


def _prepare_dir(sc, target: str, overwrite: bool) -> None:
    """Driver: make ``target``, refusing (or clearing, with ``overwrite``) an existing one."""
    local = _local(target)
    if local is not None:
        if os.path.isdir(local) and os.listdir(local):
            if not overwrite:
                raise DataError(f"{target} already exists and is not empty; pass overwrite=True "
                                "to replace it, or choose another output_dir")
            shutil.rmtree(local)
        elif os.path.exists(local) and not os.path.isdir(local):
            raise DataError(f"{target} exists and is a file; output_dir must be a directory")
        os.makedirs(local, exist_ok=True)
        return
    import pyarrow.fs as pafs

    from tfos.storage.filesystems import resolve, storage_error

    location = resolve(target)  # the executors write through the same layer
    try:
        info = location.fs.get_file_info(location.path)
        if info.type == pafs.FileType.File:
            raise DataError(f"{target} exists and is a file; output_dir must be a directory")
        if info.type == pafs.FileType.Directory and location.fs.get_file_info(
                pafs.FileSelector(location.path, allow_not_found=True)):
            if not overwrite:
                raise DataError(f"{target} already exists and is not empty; pass overwrite=True "
                                "to replace it, or choose another output_dir")
            location.fs.delete_dir_contents(location.path, missing_dir_ok=True)
        location.fs.create_dir(location.path, recursive=True)
    except DataError:
        raise
    except (OSError, ValueError) as exc:
        raise storage_error("write to", target, exc) from None


def _write_small_file(sc, path: str, text: str) -> None:
    with _open_write(path) as out:
        out.write(text.encode("utf-8"))


def _saved_schema(sc, input_dir: str):
    """The schema save_as_tfrecords left in ``input_dir``, or ``None``."""
    from pyspark.sql.types import StructType

    path = _join(_qualify(sc, input_dir), SCHEMA_FILE)
    local = _local(path)
    try:
        if local is not None:
            if not os.path.isfile(local):
                return None
            with open(local, encoding="utf-8") as f:
                text = f.read()
        elif _spark_cannot_read(sc, path):
            from tfos.storage.filesystems import read_bytes

            try:
                text = read_bytes(path).decode("utf-8")
            except FileNotFoundError:
                return None
        else:
            fs, hpath = _hadoop_fs(sc, path)
            if not fs.isFile(hpath):
                return None
            stream = fs.open(hpath)
            try:
                text = sc._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
            finally:
                stream.close()
        return StructType.fromJson(json.loads(text))
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None


# ------------------------------------------------------------- Spark Connect


def _is_connect(spark) -> bool:
    from tfos.spark.app import is_connect_session

    return is_connect_session(spark)


def _qualify_remote(spark, path: str) -> str:
    """``path`` for the executors of a Spark Connect session: a URI as it is, an absolute path
    on ``spark.hadoop.fs.defaultFS`` (``file:`` when unset)."""
    if "://" in path or path.startswith("file:"):
        return path
    if not os.path.isabs(path):
        raise DataError(f"over Spark Connect, give an absolute path or a URI (file:/..., hdfs://..., s3a://...); "
                        f"received the relative path {path!r}, which would resolve in each executor's working "
                        f"directory")
    try:
        default_fs = spark.conf.get("spark.hadoop.fs.defaultFS", None) or ""
    except Exception:  # noqa: BLE001 - a key the server will not show: Hadoop's default
        default_fs = ""
    if default_fs and not default_fs.startswith("file:"):
        return default_fs.rstrip("/") + path
    return "file:" + path


def _on_an_executor(spark, action, what: str) -> str | None:
    """``action()`` in a one-task Spark job (:meth:`tfos.spark.app.SparkApp.run_tasks`), and
    the text it returns: the file operations a classic driver does itself, done where the
    writers are (a Connect client may not see the cluster's file systems). A DataError or
    StorageError it raises comes back as a value (the same on a retry: no task failure) and
    is raised here with its own message."""
    from tfos.errors import StorageError
    from tfos.spark.app import spark_app

    storage_env = session_storage_env(spark)

    def run(_index: int):
        try:
            with task_storage_settings(storage_env):
                return None, action()
        except (DataError, StorageError) as exc:
            return exc, None

    try:
        ((error, value),) = spark_app(spark).run_tasks(1, run, barrier=False)
    except Exception as exc:  # noqa: BLE001 - Spark wraps the executor's error; give the cause
        raise _data_error(exc, what) from exc
    if error is not None:
        raise error
    return value


def _read_text(path: str) -> str | None:
    """The UTF-8 text of the file at ``path`` (local or through the storage layer), ``None`` when missing."""
    local = _local(path)
    try:
        if local is not None:
            with open(local, encoding="utf-8") as f:
                return f.read()
        from tfos.storage.filesystems import read_bytes

        return read_bytes(path).decode("utf-8")
    except FileNotFoundError:
        return None


def _save_over_connect(df, output_dir: str, compression: str, overwrite: bool,
                       fields: list[Field]) -> SavedTFRecords:
    spark = df.sparkSession
    target = _qualify_remote(spark, output_dir)
    _on_an_executor(spark, lambda: _prepare_dir(None, target, overwrite), f"preparing {target}")
    suffix = SUFFIX[compression]
    vectors = [i for i, f in enumerate(fields) if f.py == PY_VECTOR]
    schema_json = df.schema.json()
    storage_env = session_storage_env(spark)

    def write(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        task = TaskContext.get()
        index = task.partitionId()
        name = f"part-{index:05d}{suffix}"

        def rows():
            for batch in batches:
                for row in zip(*(column.to_pylist() for column in batch.columns), strict=True):
                    yield _arrow_vectors(row, vectors) if vectors else row

        try:
            with task_storage_settings(storage_env):
                count, error = _write_part(target, name, rows(), fields, compression,
                                           attempt=task.attemptNumber()), ""
        except DataError as exc:  # bad data: the same on every retry, so report it instead of raising
            count, error = -1, str(exc)
        yield pa.RecordBatch.from_pydict({"name": [name], "records": [count], "error": [error]})

    try:
        written = [(r["name"], r["records"], r["error"]) for r in
                   df.mapInArrow(write, "name string, records long, error string").collect()]
    except Exception as exc:  # noqa: BLE001 - Spark wraps the executor's error; give the cause
        raise _data_error(exc, f"writing TFRecords to {target}") from exc
    errors = [error for _, _, error in sorted(written) if error]
    if errors:
        raise DataError(errors[0])

    def finish():
        _write_small_file(None, _join(target, SCHEMA_FILE), schema_json)
        _write_small_file(None, _join(target, SUCCESS_FILE), "")

    _on_an_executor(spark, finish, f"finishing {target}")
    written.sort()
    result = SavedTFRecords(target, tuple(n for n, _, _ in written), tuple(c for _, c, _ in written), compression)
    log.info("wrote %d records in %d TFRecord files to %s", result.total_records, len(result.files), target)
    return result


def _arrow_vectors(row: tuple, positions: list[int]) -> tuple:
    """Spark ML vectors as Arrow gives them (their UDT's struct, as a dict) back as vectors."""
    from pyspark.ml.linalg import VectorUDT

    udt = VectorUDT()
    row = list(row)
    for i in positions:
        value = row[i]
        if isinstance(value, dict):
            row[i] = udt.deserialize((value["type"], value["size"], value["indices"], value["values"]))
    return tuple(row)


def _load_over_connect(spark, input_dir: str, binary_features, schema, sample_records: int):
    fields, schema, strict = _fields_to_read(
        schema, lambda: _saved_schema_over_connect(spark, input_dir),
        lambda: _infer_over_connect(spark, input_dir, binary_features, sample_records))
    vectors = [f.name for f in fields if f.py == PY_VECTOR]
    if vectors:
        raise DataError(f"over Spark Connect, load_tfrecords cannot make Spark ML vector columns ({', '.join(vectors)}): "
                        f"Arrow has no vector type and a Connect session no RDD to build them in; pass schema= with "
                        f"array<float> for them, then pyspark.ml.functions.array_to_vector")
    df = _load_through_arrow(spark, input_dir, fields, schema, strict)
    loadedDF[df] = input_dir
    return df


def _saved_schema_over_connect(spark, input_dir: str):
    """The schema save_as_tfrecords left in ``input_dir``, or ``None``: read on an executor
    (Spark's own sources skip files whose names start with ``_``)."""
    from pyspark.sql.types import StructType

    path = _join(_qualify_remote(spark, input_dir), SCHEMA_FILE)
    if any(c in input_dir for c in "*?["):
        return None  # a glob of files, as in the classic path: no directory to hold a schema
    try:
        text = _on_an_executor(spark, lambda: _read_text(path), f"reading {path}")
    except (DataError, OSError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None
    if text is None:
        return None
    try:
        return StructType.fromJson(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None


def _infer_over_connect(spark, input_dir: str, binary_features, sample_records: int) -> list[Field]:
    """:func:`_infer` over Spark's ``binaryFile`` source: each file's feature statistics
    come back pickled (from the executors, through Spark) in a binary column."""

    def sample(batches):
        import cloudpickle
        import pyarrow as pa

        for batch in batches:
            stats, errors = [], []
            paths, contents = batch.column(0), batch.column(1)
            for i in range(batch.num_rows):
                path = paths[i].as_py()
                try:
                    stats.append(cloudpickle.dumps(
                        feature_stats(islice(read_file_bytes(contents[i].as_py(), path), sample_records))))
                    errors.append("")
                except DataError as exc:  # a corrupt file: the same on every retry
                    stats.append(b"")
                    errors.append(str(exc))
            yield pa.RecordBatch.from_pydict({"stats": stats, "error": errors})

    import cloudpickle

    frame = spark.read.format("binaryFile").load(input_dir).select("path", "content")
    try:
        per_file = frame.mapInArrow(sample, "stats binary, error string").collect()
    except Exception as exc:  # noqa: BLE001 - Spark wraps the executor's error; give the cause
        raise _data_error(exc, f"inferring the schema of the TFRecords in {input_dir}") from exc
    errors = [row["error"] for row in per_file if row["error"]]
    if errors:
        raise DataError(errors[0])
    stats: dict = {}
    for row in per_file:
        stats = merge_stats(stats, cloudpickle.loads(row["stats"]))
    if not stats:
        raise DataError(f"found no records in {input_dir} ({len(per_file)} files) to infer a schema from; "
                        "pass schema=... to read an empty directory")
    return infer_fields(stats, binary_features)


def _data_error(exc: BaseException, what: str) -> DataError:
    """The executor's DataError message out of Spark's wrapping, or a DataError saying what failed."""
    from tfos.spark.jobs import first_line, task_error

    raised = task_error(exc)
    if raised is not None and raised[0] == "DataError":
        return DataError(raised[1])
    return DataError(f"{what} failed: {first_line(exc)[:1000]}")


__all__ = [
    "SCHEMA_FILE", "SavedTFRecords", "fields_from_schema", "isLoadedDF", "is_loaded_df", "loadTFRecords",
    "load_tfrecords", "loadedDF", "saveAsTFRecords", "save_as_tfrecords", "spark_schema",
]
