"""`evaluate --model`: a fake detector (the TF1 detection interface) run on built TFRecords."""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.datasets import BuildConfig, build_tfrecords
from pipeline.errors import PipelineError
from pipeline.evaluation import METRIC_NAMES, check_detections, evaluate, evaluate_model

MAX_DETECTIONS = 100


def _key(image: np.ndarray) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


class OracleDetector:
    """Returns each image's ground-truth boxes (non-crowd) as detections, recognising images by
    their decoded pixels, padded to MAX_DETECTIONS like the TF1 graph; `extra_class` adds one
    detection of a class the label map lacks; `blind` images get no detections."""

    def __init__(self, tfrecords: list[Path], extra_class: int | None = None) -> None:
        import tensorflow as tf
        from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder

        decoder = TfExampleDecoder()
        self.truth: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.ids: dict[str, int] = {}
        for record in tf.data.TFRecordDataset([str(f) for f in tfrecords]):
            decoded = decoder.decode(record)
            keep = ~decoded["groundtruth_is_crowd"].numpy()
            key = _key(decoded["image"].numpy())
            self.truth[key] = (
                decoded["groundtruth_boxes"].numpy()[keep],
                decoded["groundtruth_classes"].numpy()[keep],
            )
            self.ids[key] = int(decoded["source_id"].numpy())
        self.extra_class = extra_class
        self.blind: set[int] = set()
        self.batch_sizes: list[int] = []

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        assert images.dtype == np.uint8 and images.ndim == 4
        self.batch_sizes.append(len(images))
        n = len(images)
        out = {
            "detection_boxes": np.zeros((n, MAX_DETECTIONS, 4), np.float32),
            "detection_scores": np.zeros((n, MAX_DETECTIONS), np.float32),
            "detection_classes": np.zeros((n, MAX_DETECTIONS), np.float32),
            "num_detections": np.zeros((n,), np.float32),
        }
        for i, image in enumerate(images):
            key = _key(image)
            if self.ids[key] in self.blind:
                continue
            boxes, classes = self.truth[key]
            if self.extra_class is not None:
                boxes = np.concatenate([boxes, [[0.1, 0.1, 0.2, 0.2]]])
                classes = np.concatenate([classes, [self.extra_class]])
            k = len(boxes)
            out["detection_boxes"][i, :k] = boxes
            out["detection_scores"][i, :k] = np.linspace(1.0, 0.5, k)
            out["detection_classes"][i, :k] = classes
            out["num_detections"][i] = k
        return out


@pytest.fixture(scope="module")
def remapped(tmp_path_factory: pytest.TempPathFactory, coco_tiny: Path) -> Path:
    """coco_tiny val with model class ids != COCO ids: person 1, car 2, dog 3, cup 4."""
    root = tmp_path_factory.mktemp("remapped")
    label_map = root / "classes.json"
    label_map.write_text(json.dumps(["person", "car", "dog", "cup"]))
    out = root / "tfrecords"
    build_tfrecords(
        BuildConfig(
            coco_tiny / "annotations" / "instances_val2017.json",
            coco_tiny / "val2017",
            out,
            shards=2,
            label_map=label_map,
            progress=False,
        )
    )
    return out


@pytest.fixture(scope="module")
def oracle(remapped: Path) -> OracleDetector:
    return OracleDetector(sorted(remapped.glob("coco-*.tfrecord")))


def test_model_path_maps_classes_boxes_and_ids_back_to_coco(
    remapped: Path, oracle: OracleDetector, tmp_path: Path
) -> None:
    oracle.blind = set()
    out = tmp_path / "eval"
    result = evaluate_model(oracle, str(remapped / "coco-*.tfrecord"), out, progress=False)
    ground_truth = json.loads((remapped / "annotations.json").read_text())
    assert result.num_images == 80
    assert result.metrics["AP"] == pytest.approx(1.0, abs=1e-12)
    assert set(result.per_category_ap) == {"person", "car", "dog", "cup"}
    # Detections went back to COCO category ids and pixel boxes on the original image.
    detections = json.loads((out / "detections.json").read_text())
    truth = sorted(
        (a["image_id"], a["category_id"], *np.round(a["bbox"], 2))
        for a in ground_truth["annotations"]
        if not a["iscrowd"]
    )
    got = sorted((d["image_id"], d["category_id"], *np.round(d["bbox"], 2)) for d in detections)
    assert got == truth
    metrics = json.loads((out / "metrics.json").read_text())
    direct = evaluate(ground_truth, check_detections(detections, ground_truth, "d"))
    assert [metrics[n] for n in METRIC_NAMES] == [direct.metrics[n] for n in METRIC_NAMES]


def test_images_without_detections_and_unmapped_classes(
    remapped: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    detector = OracleDetector(sorted(remapped.glob("coco-*.tfrecord")), extra_class=77)
    ground_truth = json.loads((remapped / "annotations.json").read_text())
    with_boxes = [a["image_id"] for a in ground_truth["annotations"] if not a["iscrowd"]]
    detector.blind = set(with_boxes[:5])
    result = evaluate_model(
        detector, str(remapped / "coco-*.tfrecord"), tmp_path / "e", progress=False
    )
    assert "absent from the label map" in caplog.text  # class 77 dropped, and said so
    assert result.num_images == 80
    assert 0.5 < result.metrics["AR100"] < 1.0  # the blind images' objects are missed
    detections = json.loads((tmp_path / "e" / "detections.json").read_text())
    assert not {d["image_id"] for d in detections} & detector.blind


def test_batches_group_equal_sizes_and_give_the_same_result(
    remapped: Path, oracle: OracleDetector, tmp_path: Path
) -> None:
    oracle.blind = set()
    oracle.batch_sizes.clear()
    pattern = str(remapped / "coco-*.tfrecord")
    one = evaluate_model(oracle, pattern, tmp_path / "a", progress=False, max_images=30)
    assert oracle.batch_sizes == [1] * 30
    oracle.batch_sizes.clear()
    four = evaluate_model(
        oracle, pattern, tmp_path / "b", progress=False, max_images=30, batch_size=4
    )
    assert max(oracle.batch_sizes) > 1 and sum(oracle.batch_sizes) == 30
    assert one.num_images == four.num_images == 30
    assert one.metrics == four.metrics


def test_cli_model_path_uses_load_detector(
    remapped: Path, oracle: OracleDetector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    oracle.blind = set()
    loaded: list[str] = []

    def load_detector(path: str) -> Any:
        loaded.append(path)
        return oracle

    fake = types.ModuleType("pipeline.inference")
    fake.load_detector = load_detector  # type: ignore[attr-defined]
    fake.model_num_classes = lambda path: None  # type: ignore[attr-defined]  (no class check)
    monkeypatch.setitem(sys.modules, "pipeline.inference", fake)
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            "--model",
            str(tmp_path / "model"),
            "--tfrecords",
            str(remapped / "coco-*.tfrecord"),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    assert loaded == [str(tmp_path / "model")]
    assert json.loads((out / "metrics.json").read_text())["AP"] == pytest.approx(1.0)


def test_tfrecords_from_another_dataset_are_refused(
    remapped: Path, oracle: OracleDetector, tmp_path: Path, coco_tiny: Path
) -> None:
    train = coco_tiny / "annotations" / "instances_train2017.json"
    with pytest.raises(PipelineError, match="is not an image of"):
        evaluate_model(
            oracle,
            str(remapped / "coco-*.tfrecord"),
            tmp_path / "x",
            annotations=train,
            progress=False,
            max_images=2,
        )
    with pytest.raises(PipelineError, match="no TFRecord files match"):
        evaluate_model(
            oracle,
            str(tmp_path / "none-*.tfrecord"),
            tmp_path / "y",
            annotations=train,
            label_map=remapped / "label_map.json",
        )
