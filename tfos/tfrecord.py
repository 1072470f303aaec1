"""TFRecord files of ``tf.train.Example`` without importing TensorFlow.

Importing ``tensorflow.core.example`` imports all of TensorFlow (3.5 s or more per
process), too slow for every Spark Python worker that converts a partition. This
module builds the same ``tensorflow.Example`` messages from its own descriptor, in a
private descriptor pool (so it never clashes with TensorFlow's when both are loaded),
and frames them as TFRecords itself: little-endian uint64 length, masked CRC-32C of
the length, data, masked CRC-32C of the data. The bytes are the ones
``tf.io.TFRecordWriter`` writes; ``tf.data.TFRecordDataset`` and ``tf.io.parse_example``
read them.

Compression: ``None`` (or ``""``), ``"GZIP"`` and ``"ZLIB"``, the values of TF's
``compression_type``. Readers detect it from the bytes (see :func:`detect_compression`).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import google_crc32c

from tfos.errors import DataError

# the feature kinds of tf.train.Feature, named as its oneof fields
INT64 = "int64_list"
FLOAT = "float_list"
BYTES = "bytes_list"
KINDS = (INT64, FLOAT, BYTES)

# what a feature's values become in Python (and, in tfos.dfutil, which Spark type)
PY_INT, PY_BOOL, PY_FLOAT, PY_STR, PY_BYTES, PY_VECTOR = "int", "bool", "float", "str", "bytes", "vector"
_KIND_OF = {PY_INT: INT64, PY_BOOL: INT64, PY_FLOAT: FLOAT, PY_STR: BYTES, PY_BYTES: BYTES, PY_VECTOR: FLOAT}

COMPRESSIONS = ("", "GZIP", "ZLIB")
SUFFIX = {"": ".tfrecord", "GZIP": ".tfrecord.gz", "ZLIB": ".tfrecord.zlib"}

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


@dataclass(frozen=True)
class Field:
    """One column of a record: its feature name, the feature kind, and its Python form.

    Attributes:
        name: the feature name (the DataFrame column).
        py: "int", "bool", "float", "str", "bytes" or "vector" (a Spark ML vector, written
            as a float list and read back as a list of floats).
        array: a list of values (``True``) or a single value (``False``).
    """

    name: str
    py: str
    array: bool = False

    @property
    def kind(self) -> str:
        return _KIND_OF[self.py]

    @property
    def is_list(self) -> bool:
        """Whether the feature holds a list of values (arrays, and vectors)."""
        return self.array or self.py == PY_VECTOR

    def describe(self) -> str:
        return f"{'array<' + self.py + '>' if self.array else self.py} ({self.kind})"


# ------------------------------------------------------------------ messages


def _example_class():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(
        name="tfos/tensorflow_example.proto", package="tensorflow", syntax="proto3"
    )
    t = descriptor_pb2.FieldDescriptorProto
    repeated, optional = t.LABEL_REPEATED, t.LABEL_OPTIONAL
    for name, scalar in (("BytesList", t.TYPE_BYTES), ("FloatList", t.TYPE_FLOAT), ("Int64List", t.TYPE_INT64)):
        fdp.message_type.add(name=name).field.add(name="value", number=1, type=scalar, label=repeated)
    feature = fdp.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (name, type_name) in enumerate(
        (("bytes_list", "BytesList"), ("float_list", "FloatList"), ("int64_list", "Int64List")), start=1
    ):
        feature.field.add(name=name, number=number, type=t.TYPE_MESSAGE, label=optional,
                          type_name=f".tensorflow.{type_name}", oneof_index=0)
    features = fdp.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=t.TYPE_STRING, label=optional)
    entry.field.add(name="value", number=2, type=t.TYPE_MESSAGE, label=optional, type_name=".tensorflow.Feature")
    features.field.add(name="feature", number=1, type=t.TYPE_MESSAGE, label=repeated,
                       type_name=".tensorflow.Features.FeatureEntry")
    fdp.message_type.add(name="Example").field.add(
        name="features", number=1, type=t.TYPE_MESSAGE, label=optional, type_name=".tensorflow.Features"
    )
    pool = descriptor_pool.DescriptorPool()  # private: TF's own pool may hold tensorflow.Example too
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


#: ``tensorflow.Example`` (same wire format as ``tf.train.Example``)
Example = _example_class()


# ------------------------------------------------------------------ encoding


def _setter(f: Field):
    """``set(feature_map, value)`` for one field; ``None`` values are left out of the record."""
    name, kind, py = f.name, f.kind, f.py

    def values(feature_map):
        return getattr(feature_map[name], kind).value

    if f.array:
        convert = {PY_INT: int, PY_BOOL: int, PY_FLOAT: float, PY_VECTOR: float,
                   PY_STR: lambda s: s.encode("utf-8"), PY_BYTES: bytes}[py]

        def set_array(feature_map, value):
            if any(v is None for v in value):
                raise DataError(f"column {name!r} ({f.describe()}) holds an array with a null element: "
                                f"{list(value)!r}; a tf.train.Example feature cannot store nulls inside "
                                "a list (drop or fill them first, e.g. with F.filter or F.coalesce)")
            if py in (PY_INT, PY_FLOAT):
                values(feature_map).extend(value)
            else:
                values(feature_map).extend([convert(v) for v in value])
        return set_array
    if py == PY_VECTOR:
        return lambda feature_map, value: values(feature_map).extend(value.toArray().tolist())
    if py == PY_STR:
        return lambda feature_map, value: values(feature_map).append(value.encode("utf-8"))
    if py == PY_BYTES:
        return lambda feature_map, value: values(feature_map).append(bytes(value))
    if py == PY_BOOL:
        return lambda feature_map, value: values(feature_map).append(int(value))
    return lambda feature_map, value: values(feature_map).append(value)


class ExampleEncoder:
    """Encodes rows (sequences of values in ``fields`` order) as serialized Examples.

    Rule for nulls: a ``None`` value leaves its feature out of the record, and an empty
    array is a feature with an empty list, so readers tell the two apart
    (``tf.io.parse_example`` gives a ``FixedLenFeature``'s ``default_value`` for a missing
    feature; :class:`ExampleDecoder` gives ``None`` back).
    """

    def __init__(self, fields: Sequence[Field]):
        self.fields = list(fields)
        self._setters = [_setter(f) for f in self.fields]

    def encode(self, row: Sequence) -> bytes:
        example = Example()
        feature_map = example.features.feature
        for setter, value in zip(self._setters, row, strict=True):
            if value is not None:
                setter(feature_map, value)
        return example.SerializeToString()


# ------------------------------------------------------------------ decoding


class ExampleDecoder:
    """Decodes serialized Examples into tuples in ``fields`` order.

    A feature missing from a record gives ``None``; so does an empty list for a scalar
    field. Features not in ``fields`` are ignored unless ``strict``: then they raise,
    so that a schema inferred from a sample never drops a column silently.
    """

    def __init__(self, fields: Sequence[Field], strict: bool = False):
        self.fields = list(fields)
        self.strict = strict
        self._names = {f.name for f in self.fields}
        self._getters = [(f.name, f.kind, _converter(f) if f.is_list else _scalar_converter(f), f.is_list, f)
                         for f in self.fields]

    def decode(self, data: bytes, where: str = "") -> tuple:
        feature_map = Example.FromString(data).features.feature
        if self.strict and len(feature_map) > len(self._names):
            extra = sorted(set(feature_map) - self._names)
            raise DataError(
                f"feature(s) {', '.join(map(repr, extra))} of a record{where} are not in the schema "
                f"(columns: {', '.join(sorted(self._names))}); the schema was inferred from a sample "
                "of the records: pass schema=... to load_tfrecords"
            )
        out = []
        for name, kind, convert, array, f in self._getters:
            feature = feature_map.get(name)
            if feature is None:
                out.append(None)
                continue
            actual = feature.WhichOneof("kind")
            if actual != kind and actual is not None:
                raise DataError(f"feature {name!r} of a record{where} is a {actual}, but the schema "
                                f"says {f.describe()}; pass a schema that matches the files")
            values = getattr(feature, kind).value
            try:
                if array:
                    out.append(convert(values))
                elif len(values) == 1:
                    out.append(convert(values[0]))
                elif not values:
                    out.append(None)
            except UnicodeDecodeError as exc:
                raise DataError(f"feature {name!r} of a record{where} is not UTF-8 text ({exc.reason} at byte "
                                f"{exc.start}); read it as binary (binary_features=[{name!r}], or "
                                "BinaryType in the schema)") from None
            if len(values) > 1 and not array:
                raise DataError(
                    f"feature {name!r} of a record{where} has {len(values)} values, but the schema says "
                    f"a single {f.describe()}; pass a schema with an array type for {name!r}"
                )
        return tuple(out)


def _converter(f: Field):
    """values (a protobuf repeated field) -> list of Python values."""
    if f.py == PY_STR:
        return lambda values: [v.decode("utf-8") for v in values]
    if f.py == PY_BOOL:
        return lambda values: [bool(v) for v in values]
    return list  # ints, floats and bytes come out of protobuf as such


def _scalar_converter(f: Field):
    if f.py == PY_STR:
        return lambda v: v.decode("utf-8")
    if f.py == PY_BOOL:
        return bool
    return lambda v: v


# ------------------------------------------------------------------ inference


@dataclass
class FeatureStats:
    """What a sample of records says about one feature."""

    kind: str | None = None  # None: only seen as a feature with no kind set
    max_len: int = 0
    records: int = 0
    #: bytes features: every sampled value is valid UTF-8 text
    utf8: bool = True

    def merge(self, other: FeatureStats, name: str) -> FeatureStats:
        if self.kind and other.kind and self.kind != other.kind:
            raise DataError(f"feature {name!r} is a {self.kind} in some records and a {other.kind} in "
                            "others; pass schema=... to say which to read")
        return FeatureStats(self.kind or other.kind, max(self.max_len, other.max_len),
                            self.records + other.records, self.utf8 and other.utf8)


def feature_stats(records: Iterable[bytes]) -> dict[str, FeatureStats]:
    """Kind and longest list of every feature seen in ``records`` (serialized Examples)."""
    stats: dict[str, FeatureStats] = {}
    for data in records:
        for name, feature in Example.FromString(data).features.feature.items():
            kind = feature.WhichOneof("kind")
            values = getattr(feature, kind).value if kind else ()
            seen = FeatureStats(kind, len(values), 1, kind != BYTES or _all_utf8(values))
            stats[name] = stats[name].merge(seen, name) if name in stats else seen
    return stats


def _all_utf8(values) -> bool:
    try:
        for v in values:
            v.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def merge_stats(a: dict[str, FeatureStats], b: dict[str, FeatureStats]) -> dict[str, FeatureStats]:
    out = dict(a)
    for name, s in b.items():
        out[name] = out[name].merge(s, name) if name in out else s
    return out


def infer_fields(stats: dict[str, FeatureStats], binary_features: Iterable[str] = ()) -> list[Field]:
    """Fields from feature stats, sorted by name.

    int64 lists become ints, float lists floats, bytes lists strings (UTF-8) unless the
    feature is in ``binary_features`` or a sampled value is not UTF-8 text. A feature with at most one value in every sampled
    record is a scalar; otherwise an array. A feature that never had a kind set (only
    empty features of unknown kind) is read as an array of strings/bytes.
    """
    binary = set(binary_features)
    fields = []
    for name in sorted(stats):
        s = stats[name]
        kind = s.kind or BYTES
        text = name not in binary and s.utf8
        py = {INT64: PY_INT, FLOAT: PY_FLOAT, BYTES: PY_STR if text else PY_BYTES}[kind]
        fields.append(Field(name, py, array=s.max_len > 1 or s.kind is None))
    return fields


# ------------------------------------------------------------------ framing


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the data, its masked CRC."""
    head = _U64.pack(len(data))
    return b"".join((head, _U32.pack(masked_crc32c(head)), data, _U32.pack(masked_crc32c(data))))


def check_compression(compression: str | None) -> str:
    """``None``/``""``/``"GZIP"``/``"ZLIB"`` (any case) -> the canonical value; raise otherwise."""
    value = (compression or "").upper()
    if value not in COMPRESSIONS:
        raise DataError(f"compression must be None, 'GZIP' or 'ZLIB' (TF's compression_type); "
                        f"received: compression={compression!r}")
    return value


class RecordWriter:
    """Writes TFRecords to a binary stream, compressing as TF does. Use as a context manager.

    Closing the writer flushes the compressor; the underlying stream is the caller's.
    """

    def __init__(self, stream, compression: str | None = None, level: int = 6):
        self.compression = check_compression(compression)
        self._raw = stream
        self._zlib = None
        if self.compression == "GZIP":
            self._out = gzip.GzipFile(fileobj=stream, mode="wb", compresslevel=level, mtime=0)
        else:
            self._out = stream
            if self.compression == "ZLIB":
                self._zlib = zlib.compressobj(level)
        self.records = 0

    def write(self, data: bytes) -> None:
        framed = frame(data)
        if self._zlib is not None:
            framed = self._zlib.compress(framed)
        self._out.write(framed)
        self.records += 1

    def close(self) -> None:
        if self._zlib is not None:
            self._out.write(self._zlib.flush())
            self._zlib = None
        elif self._out is not self._raw:
            self._out.close()  # GzipFile: writes the trailer, leaves the raw stream open

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def detect_compression(data: bytes) -> str:
    """The compression of a TFRecord file's bytes: "", "GZIP" or "ZLIB".

    A file starting with gzip's magic bytes (or a valid zlib header) is taken as compressed
    unless its first 12 bytes are also a valid TFRecord header (length + matching CRC).
    """
    if len(data) < 2:
        return ""
    if len(data) >= 12 and _U32.unpack_from(data, 8)[0] == masked_crc32c(data[:8]):
        return ""
    if data[:2] == b"\x1f\x8b":
        return "GZIP"
    if data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0:
        return "ZLIB"
    return ""


def decompress(data: bytes, compression: str) -> bytes:
    if compression == "GZIP":
        return gzip.decompress(data)
    if compression == "ZLIB":
        return zlib.decompress(data)
    return data


def read_records(data: bytes, where: str = "", verify: bool = True) -> Iterator[bytes]:
    """The records of a whole (uncompressed) TFRecord file's bytes, CRCs checked.

    Raises:
        DataError: a truncated file or a CRC mismatch, naming ``where`` and the offset.
    """
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 12:
            raise DataError(f"truncated TFRecord header at byte {pos} of {where or 'the data'}")
        (length,) = _U64.unpack_from(data, pos)
        if verify and _U32.unpack_from(data, pos + 8)[0] != masked_crc32c(data[pos:pos + 8]):
            raise DataError(f"corrupt TFRecord length at byte {pos} of {where or 'the data'} (CRC mismatch); "
                            "is this a TFRecord file, and is its compression detected right?")
        start = pos + 12
        stop = start + length
        if stop + 4 > end:
            raise DataError(f"truncated TFRecord at byte {pos} of {where or 'the data'}: "
                            f"{length} bytes announced, {end - start} left")
        record = data[start:stop]
        if verify and _U32.unpack_from(data, stop)[0] != masked_crc32c(record):
            raise DataError(f"corrupt TFRecord data at byte {pos} of {where or 'the data'} (CRC mismatch)")
        yield record
        pos = stop + 4


def read_file_bytes(data: bytes, where: str = "") -> Iterator[bytes]:
    """The records of a TFRecord file's raw bytes, whatever its compression."""
    return read_records(decompress(data, detect_compression(data)), where)
