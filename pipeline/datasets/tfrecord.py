"""tf.Example serialisation and TFRecord files without importing TensorFlow.

Importing TensorFlow costs ~5 s per process, which is most of the time build-tfrecords needs for a
small or medium dataset. The two formats involved are small and stable, so they are written here:
- `tf.train.Example` is declared as a protobuf message with TensorFlow's own package, names and
  field numbers (tensorflow/core/example/{example,feature}.proto) and serialised by protobuf itself;
- a TFRecord is `uint64 length, uint32 masked_crc32c(length), data, uint32 masked_crc32c(data)`
  (tensorflow/core/lib/io/record_writer.cc), with CRC32C from the google-crc32c C extension.
Tests check that TensorFlow's `tf.train.Example` and `TFRecordDataset` read both back unchanged.
When google-crc32c's C extension is missing, TensorFlow's own writer is used instead.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

_CRC_MASK_DELTA = 0xA282EAD8


@cache
def example_class() -> type:
    """A message class wire-compatible with `tf.train.Example` (same full names and numbers)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="pipeline/tf_example.proto", package="tensorflow", syntax="proto3"
    )
    for name, kind in (
        ("BytesList", field.TYPE_BYTES),
        ("FloatList", field.TYPE_FLOAT),
        ("Int64List", field.TYPE_INT64),
    ):
        message = proto.message_type.add(name=name)
        message.field.add(name="value", number=1, type=kind, label=field.LABEL_REPEATED)

    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, name, type_name in (
        (1, "bytes_list", ".tensorflow.BytesList"),
        (2, "float_list", ".tensorflow.FloatList"),
        (3, "int64_list", ".tensorflow.Int64List"),
    ):
        feature.field.add(
            name=name,
            number=number,
            type=field.TYPE_MESSAGE,
            label=field.LABEL_OPTIONAL,
            type_name=type_name,
            oneof_index=0,
        )

    features = proto.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    entry.field.add(
        name="value",
        number=2,
        type=field.TYPE_MESSAGE,
        label=field.LABEL_OPTIONAL,
        type_name=".tensorflow.Feature",
    )
    features.field.add(
        name="feature",
        number=1,
        type=field.TYPE_MESSAGE,
        label=field.LABEL_REPEATED,
        type_name=".tensorflow.Features.FeatureEntry",
    )

    example = proto.message_type.add(name="Example")
    example.field.add(
        name="features",
        number=1,
        type=field.TYPE_MESSAGE,
        label=field.LABEL_OPTIONAL,
        type_name=".tensorflow.Features",
    )
    # A private pool, so that TensorFlow's own registration of these names never collides.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


def serialize_example(features: dict[str, Sequence[Any]]) -> bytes:
    """Serialise {key: list of bytes | float | int} as a tf.train.Example.

    The list type picks the feature kind: bytes -> bytes_list, float -> float_list (float32),
    int -> int64_list. Empty lists need a kind too, so keys ending in the names below are typed by
    `FEATURE_KINDS` rather than by their values.
    """
    example = example_class()()
    feature_map = example.features.feature
    for key, values in features.items():
        kind = FEATURE_KINDS[key]
        getattr(feature_map[key], kind).value.extend(values)
    return example.SerializeToString(deterministic=True)


# Every key build-tfrecords writes and its kind (the keys Model Garden's TfExampleDecoder and the
# TF1 OD API decoder read).
FEATURE_KINDS: dict[str, str] = {
    "image/encoded": "bytes_list",
    "image/format": "bytes_list",
    "image/filename": "bytes_list",
    "image/source_id": "bytes_list",
    "image/key/sha256": "bytes_list",
    "image/height": "int64_list",
    "image/width": "int64_list",
    "image/object/bbox/xmin": "float_list",
    "image/object/bbox/xmax": "float_list",
    "image/object/bbox/ymin": "float_list",
    "image/object/bbox/ymax": "float_list",
    "image/object/class/label": "int64_list",
    "image/object/class/text": "bytes_list",
    "image/object/area": "float_list",
    "image/object/is_crowd": "int64_list",
}


@cache
def _crc32c() -> Any | None:
    try:
        import google_crc32c
    except ImportError:
        return None
    # The package silently falls back to pure Python (~1000x slower) when its C build is missing.
    return google_crc32c.value if google_crc32c.implementation == "c" else None


def _masked_crc(data: bytes) -> bytes:
    crc = _crc32c()(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF)


def frame_record(record: bytes) -> bytes:
    """One TFRecord frame: length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(record))
    return b"".join((length, _masked_crc(length), record, _masked_crc(record)))


class TFRecordWriter:
    """Append framed records to a file (uncompressed TFRecord)."""

    def __init__(self, path: str | Path, *, use_tensorflow: bool | None = None) -> None:
        if use_tensorflow is None:
            use_tensorflow = _crc32c() is None
        self._tf_writer = None
        self._file = None
        if use_tensorflow:
            import tensorflow as tf

            self._tf_writer = tf.io.TFRecordWriter(str(path))
        else:
            self._file = open(path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, record: bytes) -> None:
        if self._tf_writer is not None:
            self._tf_writer.write(record)
        else:
            self._file.write(frame_record(record))

    def close(self) -> None:
        if self._tf_writer is not None:
            self._tf_writer.close()
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
