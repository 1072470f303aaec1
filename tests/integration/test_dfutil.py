"""DataFrame <-> TFRecord on a real Spark application, checked against plain TensorFlow."""

from __future__ import annotations

import glob
import os

import pytest

import tfos
from tests.s3_server import serve_bucket
from tfos import dfutil

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SPARK_EXECUTORS = 2


def _every_type_frame(spark):
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import types as T

    schema = T.StructType([
        T.StructField("id", T.LongType()),
        T.StructField("flag", T.BooleanType()),
        T.StructField("tiny", T.ByteType()),
        T.StructField("small", T.ShortType()),
        T.StructField("int", T.IntegerType()),
        T.StructField("f32", T.FloatType()),
        T.StructField("f64", T.DoubleType()),
        T.StructField("text", T.StringType()),
        T.StructField("blob", T.BinaryType()),
        T.StructField("longs", T.ArrayType(T.LongType())),
        T.StructField("ints", T.ArrayType(T.IntegerType())),
        T.StructField("bools", T.ArrayType(T.BooleanType())),
        T.StructField("doubles", T.ArrayType(T.DoubleType())),
        T.StructField("texts", T.ArrayType(T.StringType())),
        T.StructField("blobs", T.ArrayType(T.BinaryType())),
        T.StructField("vec", __import__("pyspark.ml.linalg", fromlist=["VectorUDT"]).VectorUDT()),
    ])
    rows = []
    for i in range(40):
        rows.append((
            i, i % 2 == 0, i - 20, i * 100, -(2**31) + i, i / 4, i * 0.5 - 3, f"row-{i}-é", bytes([i, 0, 255]),
            [i, 2**62, -i], [i] if i % 3 else [], [True, False][: i % 3], [0.25 * i, -1.5],
            ["a" * i, ""], [bytes([i]) * 3], Vectors.dense([i, 0.5]),
        ))
    rows.append((99,) + (None,) * 15)  # every column null but the id
    return spark.createDataFrame(rows, schema).repartition(3)


def test_round_trip_of_every_supported_type_returns_equal_rows_and_types(spark, tmp_path):
    df = _every_type_frame(spark)
    out = str(tmp_path / "every")
    saved = dfutil.save_as_tfrecords(df, out)
    assert saved.files == ("part-00000.tfrecord", "part-00001.tfrecord", "part-00002.tfrecord")
    assert saved.total_records == 41 and saved.output_dir == "file:" + out
    assert sorted(os.listdir(out)) == ["_SUCCESS", "_tfos_schema.json", *saved.files]

    back = dfutil.load_tfrecords(spark, out)
    assert back.schema == df.schema
    assert sorted(back.collect()) == sorted(df.collect())
    assert dfutil.isLoadedDF(back) and dfutil.loadedDF[back] == out
    assert not dfutil.is_loaded_df(df)


def test_files_are_read_by_plain_tensorflow_with_parse_example(spark, tmp_path):
    import tensorflow as tf

    df = _every_type_frame(spark).where("id < 99")
    out = str(tmp_path / "plain")
    dfutil.save_as_tfrecords(df, out, compression="GZIP")
    files = sorted(glob.glob(os.path.join(out, "part-*.tfrecord.gz")))
    assert len(files) == 3
    spec = {
        "id": tf.io.FixedLenFeature([], tf.int64),
        "flag": tf.io.FixedLenFeature([], tf.int64),
        "f64": tf.io.FixedLenFeature([], tf.float32),
        "text": tf.io.FixedLenFeature([], tf.string),
        "blob": tf.io.FixedLenFeature([], tf.string),
        "longs": tf.io.FixedLenFeature([3], tf.int64),
        "texts": tf.io.VarLenFeature(tf.string),
        "vec": tf.io.FixedLenFeature([2], tf.float32),
    }
    got = {}
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(16):
        parsed = tf.io.parse_example(batch, spec)
        texts = tf.sparse.to_dense(parsed["texts"], default_value=b"").numpy()
        for j, i in enumerate(parsed["id"].numpy().tolist()):
            got[i] = (parsed["flag"][j].numpy(), float(parsed["f64"][j]), parsed["text"][j].numpy().decode(),
                      parsed["blob"][j].numpy(), parsed["longs"][j].numpy().tolist(),
                      [t for t in texts[j].tolist()], parsed["vec"][j].numpy().tolist())
    assert sorted(got) == list(range(40))
    assert got[7] == (0, 0.5, "row-7-é", bytes([7, 0, 255]), [7, 2**62, -7], [b"a" * 7, b""], [7.0, 0.5])


def test_load_infers_the_schema_of_files_written_by_plain_tensorflow(spark, tmp_path):
    import tensorflow as tf
    from pyspark.sql import types as T

    def feature(kind, values):
        cls = {"int": (tf.train.Int64List, "int64_list"), "float": (tf.train.FloatList, "float_list"),
               "bytes": (tf.train.BytesList, "bytes_list")}[kind]
        return tf.train.Feature(**{cls[1]: cls[0](value=values)})

    for shard, options in enumerate([None, tf.io.TFRecordOptions(compression_type="GZIP")]):
        with tf.io.TFRecordWriter(str(tmp_path / f"shard-{shard}.tfrecord"), options) as writer:
            for i in range(shard * 5, shard * 5 + 5):
                example = tf.train.Example(features=tf.train.Features(feature={
                    "label": feature("int", [i]),
                    "pixels": feature("float", [i, 0.5, 0.25]),
                    "name": feature("bytes", [f"n{i}".encode()]),
                    "raw": feature("bytes", [bytes([i, 200])]),
                    "tags": feature("bytes", [b"x"] * (i % 3)),
                }))
                writer.write(example.SerializeToString())

    df = dfutil.loadTFRecords(spark.sparkContext, str(tmp_path), binary_features=["raw"])  # TFoS took sc
    assert df.schema == T.StructType([
        T.StructField("label", T.LongType()), T.StructField("name", T.StringType()),
        T.StructField("pixels", T.ArrayType(T.FloatType())), T.StructField("raw", T.BinaryType()),
        T.StructField("tags", T.ArrayType(T.StringType())),
    ])
    rows = sorted(df.collect())
    assert [r.label for r in rows] == list(range(10))
    assert rows[3].asDict() == {"label": 3, "name": "n3", "pixels": [3.0, 0.5, 0.25], "raw": bytes([3, 200]),
                                "tags": []}
    assert rows[5].tags == ["x", "x"]

    # told otherwise: a schema picks features and their types
    picked = dfutil.load_tfrecords(spark, str(tmp_path), schema="label int, name string, tags array<string>")
    assert sorted(picked.collect())[2].asDict() == {"label": 2, "name": "n2", "tags": ["x", "x"]}


def test_unsupported_column_types_are_refused_naming_the_column(spark, tmp_path):
    from pyspark.sql import functions as F

    base = spark.range(3)
    cases = [
        (base.select(F.create_map(F.lit("k"), F.col("id")).alias("m")), "'m' has type map<string,bigint>"),
        (base.select(F.struct("id").alias("s")), "'s' has type struct<id:bigint>"),
        (base.select(F.array(F.array("id")).alias("nested")), "'nested' has type array<array<bigint>>"),
        (base.select(F.col("id").cast("decimal(10,2)").alias("d")), "'d' has type decimal(10,2)"),
    ]
    for df, expected in cases:
        with pytest.raises(tfos.DataError) as err:
            dfutil.save_as_tfrecords(df, str(tmp_path / "never"))
        assert str(err.value).startswith(f"column {expected}, which a tf.train.Example feature cannot hold")
    assert not (tmp_path / "never").exists()


def test_a_null_inside_an_array_fails_the_write_with_the_column(spark, tmp_path):
    df = spark.createDataFrame([([1, None],)], "xs array<long>")
    with pytest.raises(tfos.DataError) as err:
        dfutil.save_as_tfrecords(df, str(tmp_path / "nulls"))
    assert str(err.value).startswith("column 'xs' (array<int> (int64_list)) holds an array with a null element")


def check_an_existing_directory_is_kept_unless_overwrite(spark, out: str) -> None:
    """On a classic or a Spark Connect session: a second save is refused, overwrite replaces."""
    df = spark.range(5).repartition(2)
    dfutil.save_as_tfrecords(df, out)
    with pytest.raises(tfos.DataError, match="already exists and is not empty; pass overwrite=True"):
        dfutil.save_as_tfrecords(df, out)
    dfutil.save_as_tfrecords(spark.range(7).repartition(1), out, overwrite=True, compression="ZLIB")
    assert sorted(os.listdir(out)) == ["_SUCCESS", "_tfos_schema.json", "part-00000.tfrecord.zlib"]
    assert sorted(r.id for r in dfutil.load_tfrecords(spark, out).collect()) == list(range(7))


def test_an_existing_directory_is_kept_unless_overwrite(spark, tmp_path):
    check_an_existing_directory_is_kept_unless_overwrite(spark, str(tmp_path / "twice"))


@pytest.fixture(scope="module")
def s3():
    yield from serve_bucket("tfos-dfutil")


def test_s3_settings_in_the_spark_conf_alone_reach_the_driver_and_the_executors(spark, s3, monkeypatch):
    # a new user's set-up: the session's conf has the endpoint and keys, the environment none
    for name in (*s3.env(), "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata to ask on this machine
    conf = s3.s3a_conf()
    for key, value in conf.items():
        spark.conf.set(key, value)
    try:
        df = spark.createDataFrame([(i, float(i) / 2) for i in range(30)], "id long, x double").repartition(3)
        saved = dfutil.save_as_tfrecords(df, "s3://tfos-dfutil/from-conf")  # driver: the directory; executors: parts
        assert saved.total_records == 30
        # tfos.storage on the driver, with no session passed: the active session's conf
        from tfos.storage import glob as storage_glob

        assert len(storage_glob("s3://tfos-dfutil/from-conf/part-*")) == 3
        back = dfutil.load_tfrecords(spark, "s3://tfos-dfutil/from-conf")  # read by the executors
        assert sorted((r.id, r.x) for r in back.collect()) == [(i, i / 2) for i in range(30)]
    finally:
        for key in conf:
            spark.conf.unset(key)
