"""Example encoding/decoding, TFRecord framing and schema inference, without Spark or TensorFlow."""

from __future__ import annotations

import io
import struct

import pytest
from pyspark.sql import types as T

from tfos import dfutil
from tfos.errors import DataError
from tfos.tfrecord import (
    BYTES,
    FLOAT,
    INT64,
    Example,
    ExampleDecoder,
    ExampleEncoder,
    FeatureStats,
    Field,
    RecordWriter,
    detect_compression,
    feature_stats,
    frame,
    infer_fields,
    masked_crc32c,
    read_file_bytes,
    read_records,
)

FIELDS = [
    Field("i", "int"), Field("b", "bool"), Field("f", "float"), Field("s", "str"), Field("raw", "bytes"),
    Field("ai", "int", True), Field("ab", "bool", True), Field("af", "float", True), Field("as", "str", True),
    Field("araw", "bytes", True),
]
ROWS = [
    (1, True, 1.5, "héllo", b"\x00\xff", [1, -2, 2**63 - 1, -(2**63)], [True, False], [0.5, -0.25],
     ["a", ""], [b"x", b""]),
    (-7, False, -0.0, "", b"", [], [], [], [], []),
    (None, None, None, None, None, None, None, None, None, None),
]


@pytest.mark.parametrize("row", ROWS)
def test_encode_then_decode_gives_the_row_back(row):
    data = ExampleEncoder(FIELDS).encode(row)
    assert ExampleDecoder(FIELDS).decode(data) == row


def test_nulls_leave_the_feature_out_and_empty_arrays_keep_an_empty_list():
    features = Example.FromString(ExampleEncoder(FIELDS).encode(ROWS[2])).features.feature
    assert len(features) == 0
    features = Example.FromString(ExampleEncoder(FIELDS).encode(ROWS[1])).features.feature
    assert features["ai"].WhichOneof("kind") == INT64 and list(features["ai"].int64_list.value) == []
    assert features["b"].int64_list.value == [0] and features["s"].bytes_list.value == [b""]


def test_features_have_the_kinds_tensorflow_expects():
    features = Example.FromString(ExampleEncoder(FIELDS).encode(ROWS[0])).features.feature
    kinds = {name: features[name].WhichOneof("kind") for name in features}
    assert kinds == {"i": INT64, "b": INT64, "f": FLOAT, "s": BYTES, "raw": BYTES, "ai": INT64, "ab": INT64,
                     "af": FLOAT, "as": BYTES, "araw": BYTES}
    assert features["s"].bytes_list.value == ["héllo".encode()]


def test_a_null_inside_an_array_is_refused_with_the_column():
    with pytest.raises(DataError) as err:
        ExampleEncoder([Field("xs", "float", True)]).encode(([1.0, None],))
    assert str(err.value) == (
        "column 'xs' (array<float> (float_list)) holds an array with a null element: [1.0, None]; a "
        "tf.train.Example feature cannot store nulls inside a list (drop or fill them first, e.g. with "
        "F.filter or F.coalesce)"
    )


@pytest.mark.parametrize("fields, data_row, message", [
    ([Field("x", "int")], ([1, 2],),
     "feature 'x' of a record (record 3 of f) has 2 values, but the schema says a single int (int64_list); "
     "pass a schema with an array type for 'x'"),
    ([Field("x", "str")], ([1],),
     "feature 'x' of a record (record 3 of f) is a int64_list, but the schema says str (bytes_list); "
     "pass a schema that matches the files"),
])
def test_a_record_that_does_not_fit_the_schema_is_refused(fields, data_row, message):
    data = ExampleEncoder([Field("x", "int", True)]).encode(data_row)
    with pytest.raises(DataError) as err:
        ExampleDecoder(fields).decode(data, " (record 3 of f)")
    assert str(err.value) == message


def test_strict_decoding_refuses_features_missing_from_an_inferred_schema_and_lax_ignores_them():
    data = ExampleEncoder([Field("a", "int"), Field("z", "str")]).encode((1, "late"))
    assert ExampleDecoder([Field("a", "int")]).decode(data) == (1,)
    with pytest.raises(DataError, match=r"^feature\(s\) 'z' of a record \(record 0 of f\) are not in the schema "
                                         r"\(columns: a\); the schema was inferred from a sample"):
        ExampleDecoder([Field("a", "int")], strict=True).decode(data, " (record 0 of f)")


def test_schema_inference_scalars_arrays_binary_and_name_order():
    enc = ExampleEncoder([Field("n", "int", True), Field("p", "float", True), Field("s", "str", True),
                          Field("raw", "bytes", True), Field("e", "int", True)])
    records = [enc.encode(([1], [0.5, 1.5], ["a"], [b"r"], [])), enc.encode(([2], [1.0], [], [b"q"], [])),
               enc.encode((None, None, None, None, None))]
    stats = feature_stats(records)
    assert stats["n"] == FeatureStats(INT64, 1, 2) and stats["p"] == FeatureStats(FLOAT, 2, 2)
    assert infer_fields(stats, binary_features=["raw"]) == [
        Field("e", "int", False), Field("n", "int", False), Field("p", "float", True), Field("raw", "bytes", False),
        Field("s", "str", False),
    ]


def test_bytes_that_are_not_utf8_text_are_inferred_binary_and_refused_as_text():
    enc = ExampleEncoder([Field("t", "bytes"), Field("raw", "bytes")])
    records = [enc.encode((b"text", b"\x00ok")), enc.encode((b"more", b"\xff\xfe"))]
    assert infer_fields(feature_stats(records)) == [Field("raw", "bytes"), Field("t", "str")]
    with pytest.raises(DataError) as err:
        ExampleDecoder([Field("raw", "str")]).decode(records[1], " (record 1 of f)")
    assert str(err.value) == ("feature 'raw' of a record (record 1 of f) is not UTF-8 text (invalid start byte at "
                              "byte 0); read it as binary (binary_features=['raw'], or BinaryType in the schema)")


def test_a_feature_of_two_kinds_cannot_be_inferred():
    records = [ExampleEncoder([Field("x", "int")]).encode((1,)), ExampleEncoder([Field("x", "str")]).encode(("a",))]
    with pytest.raises(DataError, match="^feature 'x' is a int64_list in some records and a bytes_list in others"):
        feature_stats(records)


def test_masked_crc32c_matches_tensorflow():
    # values from TensorFlow's crc32c tests and a record written by tf.io.TFRecordWriter
    assert masked_crc32c(b"123456789") == ((((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xA282EAD8) & 0xFFFFFFFF)
    assert frame(b"ab") == bytes.fromhex("0200000000000000") + struct.pack("<I", masked_crc32c(
        bytes.fromhex("0200000000000000"))) + b"ab" + struct.pack("<I", masked_crc32c(b"ab"))


@pytest.mark.parametrize("compression", ["", "GZIP", "ZLIB", None, "gzip"])
def test_written_records_read_back_whatever_the_compression(compression):
    buf = io.BytesIO()
    records = [b"", b"x" * 70000, b"\x1f\x8b" * 3]
    with RecordWriter(buf, compression) as writer:
        for r in records:
            writer.write(r)
    assert writer.records == 3
    data = buf.getvalue()
    assert detect_compression(data) == (compression or "").upper()
    assert list(read_file_bytes(data, "f")) == records


def test_an_uncompressed_file_that_starts_like_gzip_is_not_taken_for_gzip():
    record = b"r" * 0x8B1F  # its length's first two bytes are gzip's magic 1f 8b
    data = frame(record)
    assert data[:2] == b"\x1f\x8b"
    assert detect_compression(data) == ""
    assert list(read_file_bytes(data)) == [record]


def test_corrupt_and_truncated_files_are_reported_with_the_offset():
    data = frame(b"abc") + frame(b"def")
    broken = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(DataError, match=r"^corrupt TFRecord data at byte 19 of part-0 \(CRC mismatch\)$"):
        list(read_records(broken, "part-0"))
    with pytest.raises(DataError, match=r"^truncated TFRecord at byte 19 of part-0: 3 bytes announced, 2 left$"):
        list(read_records(data[:-5], "part-0"))
    with pytest.raises(DataError, match="^corrupt TFRecord length at byte 0 of f"):
        list(read_records(b"\x00" * 16, "f"))


def test_unknown_compression_is_refused():
    with pytest.raises(DataError, match=r"^compression must be None, 'GZIP' or 'ZLIB' \(TF's compression_type\); "
                                         r"received: compression='SNAPPY'$"):
        RecordWriter(io.BytesIO(), "SNAPPY")


# ------------------------------------------------------------------ Spark types (no Spark application)


def test_spark_types_map_to_fields():
    from pyspark.ml.linalg import VectorUDT

    schema = T.StructType([
        T.StructField("b", T.BooleanType()), T.StructField("y", T.ByteType()), T.StructField("h", T.ShortType()),
        T.StructField("i", T.IntegerType()), T.StructField("l", T.LongType()), T.StructField("f", T.FloatType()),
        T.StructField("d", T.DoubleType()), T.StructField("s", T.StringType()), T.StructField("raw", T.BinaryType()),
        T.StructField("v", VectorUDT()), T.StructField("as", T.ArrayType(T.StringType())),
    ])
    assert [(f.py, f.array) for f in dfutil.fields_from_schema(schema)] == [
        ("bool", False), ("int", False), ("int", False), ("int", False), ("int", False), ("float", False),
        ("float", False), ("str", False), ("bytes", False), ("vector", False), ("str", True),
    ]


@pytest.mark.parametrize("data_type, shown", [
    (T.MapType(T.StringType(), T.LongType()), "map<string,bigint>"),
    (T.StructType([T.StructField("a", T.LongType())]), "struct<a:bigint>"),
    (T.ArrayType(T.ArrayType(T.LongType())), "array<array<bigint>>"),
    (T.TimestampType(), "timestamp"),
])
def test_unsupported_spark_types_are_refused_naming_column_and_type(data_type, shown):
    with pytest.raises(DataError) as err:
        dfutil.fields_from_schema(T.StructType([T.StructField("col", data_type)]))
    assert str(err.value).startswith(f"column 'col' has type {shown}, which a tf.train.Example feature cannot "
                                     "hold; supported: boolean, byte, short, int, long (int64 list);")


def test_inferred_fields_become_spark_types():
    fields = [Field("n", "int"), Field("p", "float", True), Field("s", "str"), Field("raw", "bytes")]
    assert dfutil.spark_schema(fields) == T.StructType([
        T.StructField("n", T.LongType()), T.StructField("p", T.ArrayType(T.FloatType())),
        T.StructField("s", T.StringType()), T.StructField("raw", T.BinaryType()),
    ])
