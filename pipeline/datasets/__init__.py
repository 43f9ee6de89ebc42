"""COCO-format datasets -> sharded TFRecords that Model Garden's TfExampleDecoder reads.

`build_tfrecords(BuildConfig(...))` is the entry point (`python -m pipeline build-tfrecords`);
`label_map` reads user label maps and the `label_map.json` written beside the TFRecords.
"""

from __future__ import annotations

from pipeline.datasets.build import BuildConfig, build_tfrecords, shard_names
from pipeline.datasets.coco import FAIL, POLICIES, SKIP
from pipeline.datasets.label_map import LabelMapEntry, load_label_map_json, resolve_label_map

__all__ = [
    "FAIL",
    "POLICIES",
    "SKIP",
    "BuildConfig",
    "LabelMapEntry",
    "build_tfrecords",
    "load_label_map_json",
    "resolve_label_map",
    "shard_names",
]
