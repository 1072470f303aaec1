"""tfos.dfutil from a Spark Connect client session, against a real Connect server
(tests/connect_server.py): the executors write and read the files; the client has no
SparkContext, no RDDs, no py4j."""

from __future__ import annotations

import os

import pytest

import tfos
from tests.integration.test_dfutil import (
    _every_type_frame,
    check_an_existing_directory_is_kept_unless_overwrite,
)
from tfos import dfutil

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_a_round_trip_over_connect_returns_equal_rows_and_types(remote, tmp_path):
    df = _every_type_frame(remote).drop("vec")
    out = str(tmp_path / "every")
    saved = dfutil.save_as_tfrecords(df, out, compression="GZIP")
    assert saved.files == ("part-00000.tfrecord.gz", "part-00001.tfrecord.gz", "part-00002.tfrecord.gz")
    assert saved.total_records == 41 and saved.output_dir == "file:" + out
    assert sorted(os.listdir(out)) == ["_SUCCESS", "_tfos_schema.json", *saved.files]

    back = dfutil.load_tfrecords(remote, out)
    assert back.schema == df.schema  # from the saved schema, read on an executor
    assert sorted(back.collect()) == sorted(df.collect())
    assert dfutil.is_loaded_df(back) and dfutil.loadedDF[back] == out


@pytest.mark.slow  # CI time; covered in the default run by vectors: test_dfutil's classic round trip; the Connect write path: the round-trip test
def test_vectors_are_written_over_connect_and_read_back_as_float_arrays(remote, tmp_path):
    df = _every_type_frame(remote).select("id", "vec")
    out = str(tmp_path / "vectors")
    dfutil.save_as_tfrecords(df, out)
    with pytest.raises(tfos.DataError, match=r"cannot make Spark ML vector columns \(vec\)"):
        dfutil.load_tfrecords(remote, out)
    back = dfutil.load_tfrecords(remote, out, schema="id long, vec array<float>")
    rows = {r.id: r.vec for r in back.collect()}
    assert rows[3] == [3.0, 0.5] and rows[99] is None and len(rows) == 41


def test_load_over_connect_infers_the_schema_of_files_plain_tensorflow_wrote(remote, tmp_path):
    import tensorflow as tf
    from pyspark.sql import types as T

    with tf.io.TFRecordWriter(str(tmp_path / "shard-0.tfrecord")) as writer:
        for i in range(6):
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
                "pixels": tf.train.Feature(float_list=tf.train.FloatList(value=[i, 0.5])),
                "raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[bytes([i, 200])])),
            })).SerializeToString())
    df = dfutil.load_tfrecords(remote, str(tmp_path))
    assert df.schema == T.StructType([T.StructField("label", T.LongType()),
                                      T.StructField("pixels", T.ArrayType(T.FloatType())),
                                      T.StructField("raw", T.BinaryType())])
    assert [r.asDict() for r in sorted(df.collect())][4] == {"label": 4, "pixels": [4.0, 0.5], "raw": bytes([4, 200])}


def test_bad_paths_and_bad_data_over_connect_get_the_classic_errors(remote, tmp_path):
    df = remote.range(5).repartition(2)
    with pytest.raises(tfos.DataError, match="over Spark Connect, give an absolute path or a URI"):
        dfutil.save_as_tfrecords(df, "relative/dir")
    check_an_existing_directory_is_kept_unless_overwrite(remote, str(tmp_path / "twice"))

    nulls = remote.createDataFrame([([1, None],)], "xs array<long>")
    with pytest.raises(tfos.DataError) as err:
        dfutil.save_as_tfrecords(nulls, str(tmp_path / "nulls"))
    assert str(err.value).startswith("column 'xs' (array<int> (int64_list)) holds an array with a null element")
