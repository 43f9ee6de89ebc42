"""build-tfrecords on the real COCO subset: Model Garden's decoder reads back exactly the JSON."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.datasets import BuildConfig, build_tfrecords, resolve_label_map, shard_names
from pipeline.datasets.tfrecord import TFRecordWriter, serialize_example
from pipeline.errors import PipelineError

SHARDS = 3


def _val(coco_tiny: Path) -> tuple[Path, Path]:
    return coco_tiny / "annotations" / "instances_val2017.json", coco_tiny / "val2017"


@pytest.fixture(scope="module")
def val_build(tmp_path_factory: pytest.TempPathFactory, coco_tiny: Path) -> Path:
    annotations, images = _val(coco_tiny)
    out = tmp_path_factory.mktemp("tfrecords") / "val"
    code = main(
        [
            "build-tfrecords",
            "--annotations",
            str(annotations),
            "--images",
            str(images),
            "--out",
            str(out),
            "--shards",
            str(SHARDS),
            "--prefix",
            "val",
            "--workers",
            "2",
        ]
    )
    assert code == 0
    return out


def _decode_all(files: list[Path]) -> list[dict]:
    """Every example through Model Garden's TfExampleDecoder, plus the raw features it skips."""
    import tensorflow as tf
    from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder

    decoder = TfExampleDecoder()
    examples = []
    for serialized in tf.data.TFRecordDataset([str(f) for f in files]):
        decoded = {k: v.numpy() for k, v in decoder.decode(serialized).items()}
        raw = tf.train.Example.FromString(serialized.numpy()).features.feature
        decoded["raw"] = raw
        examples.append(decoded)
    return examples


@pytest.fixture(scope="module")
def decoded(val_build: Path) -> list[dict]:
    return _decode_all(sorted(val_build.glob("val-*.tfrecord")))


def test_model_garden_decoder_reads_back_the_json(decoded: list[dict], coco_tiny: Path) -> None:
    annotations, images_dir = _val(coco_tiny)
    data = json.loads(annotations.read_text())
    images = {image["id"]: image for image in data["images"]}
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    names = {c["id"]: c["name"] for c in data["categories"]}

    seen = [int(example["source_id"]) for example in decoded]
    assert sorted(seen) == sorted(images)  # every image exactly once

    for example in decoded:
        image = images[int(example["source_id"])]
        raw = example["raw"]
        file_bytes = (images_dir / image["file_name"]).read_bytes()
        # JPEG bytes passed through untouched, with the metadata the OD API writes.
        assert raw["image/encoded"].bytes_list.value[0] == file_bytes
        assert raw["image/format"].bytes_list.value[0] == b"jpeg"
        assert raw["image/filename"].bytes_list.value[0].decode() == image["file_name"]
        sha = hashlib.sha256(file_bytes).hexdigest().encode()
        assert raw["image/key/sha256"].bytes_list.value[0] == sha
        assert (example["height"], example["width"]) == (image["height"], image["width"])
        assert example["image"].shape == (image["height"], image["width"], 3)

        anns = by_image.get(image["id"], [])
        h, w = image["height"], image["width"]
        expected = np.array(
            [
                [
                    a["bbox"][1] / h,
                    a["bbox"][0] / w,
                    (a["bbox"][1] + a["bbox"][3]) / h,
                    (a["bbox"][0] + a["bbox"][2]) / w,
                ]
                for a in anns
            ]
        ).reshape(-1, 4)
        np.testing.assert_allclose(example["groundtruth_boxes"], expected, rtol=0, atol=1e-6)
        assert example["groundtruth_classes"].tolist() == [a["category_id"] for a in anns]
        assert example["groundtruth_is_crowd"].tolist() == [bool(a["iscrowd"]) for a in anns]
        np.testing.assert_allclose(
            example["groundtruth_area"], [a["area"] for a in anns], rtol=1e-6
        )
        texts = [t.decode() for t in raw["image/object/class/text"].bytes_list.value]
        assert texts == [names[a["category_id"]] for a in anns]


def test_shards_are_named_like_model_garden_and_balanced(val_build: Path) -> None:
    import tensorflow as tf

    stats = json.loads((val_build / "stats.json").read_text())
    names = shard_names("val", SHARDS)
    assert names[0] == "val-00000-of-00003.tfrecord"
    counts = [sum(1 for _ in tf.data.TFRecordDataset(str(val_build / n))) for n in names]
    assert counts == stats["examples_per_shard"]
    assert sum(counts) == stats["images"] == 80
    assert max(counts) - min(counts) <= 1


def test_stats_count_images_boxes_and_crowds(val_build: Path, coco_tiny: Path) -> None:
    data = json.loads(_val(coco_tiny)[0].read_text())
    stats = json.loads((val_build / "stats.json").read_text())
    assert stats["images"] == len(data["images"])
    assert stats["annotations"] == len(data["annotations"])
    assert stats["crowd_boxes"] == sum(a["iscrowd"] for a in data["annotations"])
    assert stats["skipped_images"]["total"] == stats["skipped_annotations"]["total"] == 0
    per_category = stats["per_category"]
    assert sum(c["boxes"] for c in per_category.values()) == stats["annotations"]
    person = per_category["person"]
    assert person["boxes"] == sum(a["category_id"] == 1 for a in data["annotations"])
    assert (val_build / "class_balance.md").read_text().count("\n| ") == len(per_category) + 1


def test_label_map_and_annotations_copy_match_the_source(val_build: Path, coco_tiny: Path) -> None:
    data = json.loads(_val(coco_tiny)[0].read_text())
    label_map = json.loads((val_build / "label_map.json").read_text())
    assert [(e["id"], e["name"], e["source_id"]) for e in label_map] == [
        (c["id"], c["name"], c["id"]) for c in sorted(data["categories"], key=lambda c: c["id"])
    ]
    copy = json.loads((val_build / "annotations.json").read_text())
    assert [i["id"] for i in copy["images"]] == [i["id"] for i in data["images"]]
    assert [(a["id"], a["bbox"], a["category_id"], a["iscrowd"]) for a in copy["annotations"]] == [
        (a["id"], a["bbox"], a["category_id"], a["iscrowd"]) for a in data["annotations"]
    ]


def test_output_is_deterministic_whatever_the_thread_count(
    val_build: Path, coco_tiny: Path, tmp_path: Path
) -> None:
    annotations, images = _val(coco_tiny)
    config = BuildConfig(
        annotations,
        images,
        tmp_path / "again",
        shards=SHARDS,
        prefix="val",
        workers=1,
        progress=False,
    )
    build_tfrecords(config)
    for name in shard_names("val", SHARDS):
        assert (tmp_path / "again" / name).read_bytes() == (val_build / name).read_bytes()


def test_od_api_pbtxt_label_map_keeps_coco_ids(shared_fixtures: Path, coco_tiny: Path) -> None:
    categories = json.loads(_val(coco_tiny)[0].read_text())["categories"]
    entries = resolve_label_map(shared_fixtures / "od_api" / "mscoco_label_map.pbtxt", categories)
    assert [(e.id, e.name, e.source_id) for e in entries] == [
        (c["id"], c["name"], c["id"]) for c in sorted(categories, key=lambda c: c["id"])
    ]


def test_remapping_to_a_user_label_map(coco_tiny: Path, tmp_path: Path) -> None:
    annotations, images = _val(coco_tiny)
    label_map = tmp_path / "classes.yaml"
    label_map.write_text("- person\n- {id: 2, name: automobile, source_id: 3}\n- dog\n")
    out = tmp_path / "remapped"
    stats = build_tfrecords(
        BuildConfig(annotations, images, out, shards=2, label_map=label_map, progress=False)
    )
    data = json.loads(annotations.read_text())
    source = {1: 1, 3: 2, 18: 3}  # person, car, dog -> 1, 2, 3
    kept = [a for a in data["annotations"] if a["category_id"] in source]
    assert stats["annotations"] == len(kept)
    assert stats["annotations_not_in_label_map"] == len(data["annotations"]) - len(kept)
    assert stats["num_classes"] == 3
    assert json.loads((out / "label_map.json").read_text()) == [
        {"id": 1, "name": "person", "source_id": 1},
        {"id": 2, "name": "automobile", "source_id": 3},
        {"id": 3, "name": "dog", "source_id": 18},
    ]
    examples = _decode_all(sorted(out.glob("coco-*.tfrecord")))
    labels = {int(e["source_id"]): e["groundtruth_classes"].tolist() for e in examples}
    expected: dict[int, list[int]] = {image["id"]: [] for image in data["images"]}
    for ann in kept:
        expected[ann["image_id"]].append(source[ann["category_id"]])
    assert labels == expected
    copy = json.loads((out / "annotations.json").read_text())
    assert sorted(c["id"] for c in copy["categories"]) == [1, 3, 18]
    assert len(copy["images"]) == 80  # images with no kept class stay, as negatives


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- giraffe-ish\n", "matches no category"),
        ("- {id: 1, name: person}\n- {id: 1, name: dog}\n", "id 1 appears twice"),
        ("- {id: 0, name: person}\n", "must be an integer >= 1"),
        ("- {id: 1, name: x, source_id: 999}\n", "source_id 999"),
    ],
)
def test_bad_label_maps_are_refused(
    coco_tiny: Path, tmp_path: Path, text: str, message: str
) -> None:
    categories = json.loads(_val(coco_tiny)[0].read_text())["categories"]
    path = tmp_path / "labels.yaml"
    path.write_text(text)
    with pytest.raises(PipelineError, match=message) as error:
        resolve_label_map(path, categories)
    assert str(path) in str(error.value)


def test_writer_matches_tensorflow_byte_for_byte(tmp_path: Path) -> None:
    import tensorflow as tf

    features = {
        "image/encoded": [b"\xff\xd8bytes"],
        "image/height": [3],
        "image/object/bbox/xmin": [0.25, 0.5],
        "image/object/class/label": [1, 90],
        "image/object/class/text": [],
        "image/object/area": [],
    }
    record = serialize_example(features)
    example = tf.train.Example.FromString(record).features.feature
    assert example["image/object/bbox/xmin"].float_list.value == pytest.approx([0.25, 0.5])
    assert list(example["image/object/class/label"].int64_list.value) == [1, 90]
    assert example["image/object/area"].WhichOneof("kind") == "float_list"

    ours, theirs = tmp_path / "ours.tfrecord", tmp_path / "tf.tfrecord"
    with TFRecordWriter(ours) as writer:
        writer.write(record)
        writer.write(b"")
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        writer.write(record)
        writer.write(b"")
    assert ours.read_bytes() == theirs.read_bytes()
