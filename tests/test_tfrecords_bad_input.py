"""Every kind of bad input is skipped and counted, or fails naming the file, record and field."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.datasets import BuildConfig, build_tfrecords
from pipeline.errors import PipelineError

H, W = 48, 64


def _jpeg(color: tuple[int, int, int], mode: str = "RGB", size: tuple[int, int] = (W, H)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else color[0]).save(buffer, "JPEG")
    return buffer.getvalue()


def _dataset() -> dict[str, Any]:
    images = [{"id": i, "file_name": f"img{i}.jpg", "height": H, "width": W} for i in range(1, 5)]
    annotations = []
    for image in images:
        for k, category in enumerate((1, 2)):
            annotations.append(
                {
                    "id": 10 * image["id"] + k,
                    "image_id": image["id"],
                    "category_id": category,
                    "bbox": [4.0 + 8 * k, 5.0, 20.0, 30.0],
                    "area": 600.0,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    return {"images": images, "annotations": annotations, "categories": categories}


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(1, 5):
        (images / f"img{i}.jpg").write_bytes(_jpeg((40 * i, 90, 200)))
    return _dataset(), images


def _build(
    tmp_path: Path, data: dict[str, Any], images: Path, policy: str, **kwargs: Any
) -> dict[str, Any]:
    annotations = tmp_path / "instances.json"
    annotations.write_text(json.dumps(data))
    config = BuildConfig(
        annotations,
        images,
        tmp_path / "out",
        shards=2,
        on_bad_input=policy,
        progress=False,
        **kwargs,
    )
    return build_tfrecords(config)


def _ann(data: dict[str, Any], ident: int) -> dict[str, Any]:
    return next(a for a in data["annotations"] if a["id"] == ident)


def _img(data: dict[str, Any], ident: int) -> dict[str, Any]:
    return next(i for i in data["images"] if i["id"] == ident)


# Each case breaks one thing; expected: section, reason, count, fragments of the fail message.
Case = Callable[[dict[str, Any], Path], tuple[str, str, int, list[str]]]


def missing_file(data: dict[str, Any], images: Path) -> tuple[str, str, int, list[str]]:
    (images / "img2.jpg").unlink()
    return "images", "missing_image_file", 1, ["img2.jpg", "images[id=2]", "file_name"]


def unreadable_file(data: dict[str, Any], images: Path) -> tuple[str, str, int, list[str]]:
    (images / "img2.jpg").unlink()
    (images / "img2.jpg").mkdir()  # reading a directory fails even as root
    return "images", "unreadable_image_file", 1, ["img2.jpg", "images[id=2]", "file_name"]


def truncated_jpeg(data: dict[str, Any], images: Path) -> tuple[str, str, int, list[str]]:
    path = images / "img3.jpg"
    path.write_bytes(path.read_bytes()[:-200])
    return "images", "corrupt_image", 1, ["img3.jpg", "images[id=3]", "file_name"]


def not_an_image(data: dict[str, Any], images: Path) -> tuple[str, str, int, list[str]]:
    (images / "img3.jpg").write_text("this is not a JPEG")
    return "images", "corrupt_image", 1, ["img3.jpg", "images[id=3]", "file_name"]


def size_disagrees(data: dict[str, Any], images: Path) -> tuple[str, str, int, list[str]]:
    _img(data, 4)["height"] = H + 10
    return "images", "image_size_mismatch", 1, ["img4.jpg", "images[id=4]", "height/width"]


def duplicate_image_id(data: dict[str, Any], images: Path) -> tuple[str, str, int, list[str]]:
    data["images"].append(dict(_img(data, 1), file_name="img2.jpg"))
    return "images", "duplicate_image_id", 1, ["instances.json", "images[id=1]", ".id"]


def invalid_image_record(data: dict[str, Any], images: Path) -> tuple[str, str, int, list[str]]:
    _img(data, 2)["file_name"] = "../outside.jpg"
    return "images", "invalid_image_record", 1, ["instances.json", "images[id=2]", "file_name"]


def zero_width_box(data: dict[str, Any], images: Path) -> tuple[str, str, int, list[str]]:
    _ann(data, 10)["bbox"][2] = 0.0
    return "annotations", "degenerate_box", 1, ["instances.json", "annotations[id=10]", "bbox"]


def negative_height_box(data: dict[str, Any], images: Path) -> tuple[str, str, int, list[str]]:
    _ann(data, 21)["bbox"][3] = -3.0
    return "annotations", "degenerate_box", 1, ["annotations[id=21]", "bbox"]


def box_outside(data: dict[str, Any], images: Path) -> tuple[str, str, int, list[str]]:
    _ann(data, 30)["bbox"] = [W + 5.0, 2.0, 10.0, 10.0]
    return "annotations", "box_outside_image", 1, ["annotations[id=30]", "bbox"]


def malformed_bbox(data: dict[str, Any], images: Path) -> tuple[str, str, int, list[str]]:
    _ann(data, 31)["bbox"] = [1.0, 2.0, "wide"]
    return "annotations", "invalid_bbox", 1, ["annotations[id=31]", "bbox"]


def unknown_image(data: dict[str, Any], images: Path) -> tuple[str, str, int, list[str]]:
    _ann(data, 40)["image_id"] = 99
    return "annotations", "unknown_image_id", 1, ["annotations[id=40]", "image_id"]


def unknown_category(data: dict[str, Any], images: Path) -> tuple[str, str, int, list[str]]:
    _ann(data, 41)["category_id"] = 7
    return "annotations", "unknown_category_id", 1, ["annotations[id=41]", "category_id"]


def duplicate_annotation_id(data: dict[str, Any], images: Path) -> tuple[str, str, int, list[str]]:
    data["annotations"].append(copy.deepcopy(_ann(data, 10)))
    return "annotations", "duplicate_annotation_id", 1, ["annotations[id=10]", ".id"]


def bad_iscrowd(data: dict[str, Any], images: Path) -> tuple[str, str, int, list[str]]:
    _ann(data, 11)["iscrowd"] = 5
    return "annotations", "invalid_annotation_record", 1, ["annotations[id=11]", "iscrowd"]


def duplicate_category(data: dict[str, Any], images: Path) -> tuple[str, str, int, list[str]]:
    data["categories"].append({"id": 2, "name": "wolf"})
    return "categories", "duplicate_category_id", 1, ["categories[id=2]", ".id"]


CASES = [
    missing_file,
    unreadable_file,
    truncated_jpeg,
    not_an_image,
    size_disagrees,
    duplicate_image_id,
    invalid_image_record,
    zero_width_box,
    negative_height_box,
    box_outside,
    malformed_bbox,
    unknown_image,
    unknown_category,
    duplicate_annotation_id,
    bad_iscrowd,
    duplicate_category,
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_bad_input_is_skipped_and_counted(
    case: Case,
    dataset: tuple[dict[str, Any], Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data, images = dataset
    section, reason, count, _ = case(data, images)
    stats = _build(tmp_path, data, images, "skip")
    skipped = stats[f"skipped_{section}"]
    assert skipped[reason] == count
    assert skipped["total"] == count + (skipped["image_skipped"] if section == "annotations" else 0)
    assert reason in caplog.text  # logged, never silent
    assert any(p["reason"] == reason for p in stats["problems"])
    if reason == "duplicate_image_id":  # the first record is kept, the copy dropped
        assert (stats["images"], stats["annotations"]) == (4, 8)
    elif section == "images":
        assert stats["images"] == 4 - count
        assert stats["skipped_annotations"]["image_skipped"] == 2 * count
        assert stats["annotations"] == 8 - 2 * count
    elif section == "annotations":
        assert stats["images"] == 4
        expected = 8 - (count if reason != "duplicate_annotation_id" else 0)
        assert stats["annotations"] == expected
    copy_json = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert len(copy_json["images"]) == stats["images"]
    assert len(copy_json["annotations"]) == stats["annotations"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_bad_input_fails_naming_file_record_and_field(
    case: Case, dataset: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    data, images = dataset
    _, _, _, fragments = case(data, images)
    with pytest.raises(PipelineError) as error:
        _build(tmp_path, data, images, "fail")
    for fragment in fragments:
        assert fragment in str(error.value)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_empty_images_are_kept_as_negatives(
    dataset: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    data, images = dataset
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 2]
    stats = _build(tmp_path, data, images, "fail")
    assert stats["images"] == 4
    assert stats["empty_images"] == 1
    assert stats["annotations"] == 6


def test_boxes_overhanging_the_border_are_clipped_and_counted(
    dataset: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    import tensorflow as tf
    from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder

    data, images = dataset
    _ann(data, 10)["bbox"] = [-2.0, 40.0, 30.0, 20.0]  # 2 px left of and 12 px below the image
    stats = _build(tmp_path, data, images, "fail")
    assert stats["clipped_boxes"] == 1
    copy_json = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert _ann(copy_json, 10)["bbox"] == [0.0, 40.0, 28.0, 8.0]
    decoder = TfExampleDecoder()
    records = tf.data.TFRecordDataset(
        [str(p) for p in sorted((tmp_path / "out").glob("*.tfrecord"))]
    )
    for record in records:
        decoded = decoder.decode(record)
        if decoded["source_id"].numpy() == b"1":
            first = decoded["groundtruth_boxes"].numpy()[0].tolist()
            assert first == pytest.approx([40 / H, 0.0, 1.0, 28 / W], abs=1e-6)
            break
    else:
        pytest.fail("image 1 not written")


def test_other_formats_are_passed_or_reencoded_so_tensorflow_reads_them(
    dataset: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    import tensorflow as tf

    data, images = dataset
    Image.new("RGB", (W, H), (10, 20, 30)).save(images / "img1.png")
    Image.new("RGB", (W, H), (10, 20, 30)).save(images / "img2.gif")
    (images / "img3.jpg").write_bytes(_jpeg((50, 60, 70), mode="CMYK"))
    Image.new("L", (W, H), 128).save(images / "img4.jpg", "JPEG")
    _img(data, 1)["file_name"] = "img1.png"
    _img(data, 2)["file_name"] = "img2.gif"
    stats = _build(tmp_path, data, images, "fail")
    assert stats["images"] == 4
    assert stats["reencoded_from"] == {"GIF": 1, "JPEG": 1}  # GIF and CMYK JPEG
    formats = {}
    for record in tf.data.TFRecordDataset([str(p) for p in (tmp_path / "out").glob("*.tfrecord")]):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        name = feature["image/filename"].bytes_list.value[0].decode()
        encoded = feature["image/encoded"].bytes_list.value[0]
        formats[name] = feature["image/format"].bytes_list.value[0].decode()
        assert tf.io.decode_image(encoded, channels=3).shape == (H, W, 3)
        if name in ("img1.png", "img4.jpg"):  # passed through untouched
            assert encoded == (images / name).read_bytes()
    assert formats == {"img1.png": "png", "img2.gif": "png", "img3.jpg": "png", "img4.jpg": "jpeg"}


def test_invalid_top_level_json_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    bad = tmp_path / "instances.json"
    bad.write_text('{"images": [], "annotations": []')
    with pytest.raises(PipelineError, match="not valid JSON"):
        build_tfrecords(BuildConfig(bad, tmp_path / "images", tmp_path / "out"))
    bad.write_text('{"annotations": []}')
    with pytest.raises(PipelineError, match="`images` list is missing"):
        build_tfrecords(BuildConfig(bad, tmp_path / "images", tmp_path / "out"))
