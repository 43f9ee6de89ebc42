"""Detectors from converted directories and SavedModels; `predict` COCO results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.inference.detector import OUTPUT_KEYS, export_saved_model, load_detector
from pipeline.inference.predict import coco_results, image_id, read_image

V1 = "ssd_mobilenet_v1_coco_2018_01_28"


@pytest.fixture(scope="module")
def zoo_and_converted(
    tmp_path_factory: pytest.TempPathFactory, tf1_zoo_dir: Path
) -> tuple[Path, Path]:
    from pipeline.conversion.convert import convert
    from pipeline.tf1.synthetic_checkpoint import make_synthetic_zoo_dir

    root = tmp_path_factory.mktemp("inference")
    zoo = make_synthetic_zoo_dir(tf1_zoo_dir / V1, root / "zoo")
    convert(zoo, root / "converted", progress=False)
    return zoo, root / "converted"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, coco_tiny: Path) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for path in sorted((coco_tiny / "val2017").glob("*.jpg"))[:2]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def saved_model(
    tmp_path_factory: pytest.TempPathFactory, zoo_and_converted: tuple[Path, Path]
) -> Path:
    from pipeline.modeling.builder import load_converted

    model, spec = load_converted(zoo_and_converted[1])
    out = tmp_path_factory.mktemp("export") / "saved_model"
    export_saved_model(model, spec, out)
    return out


def test_converted_detector_matches_the_tf1_graph(
    zoo_and_converted: tuple[Path, Path], images: Path
) -> None:
    from pipeline.conversion.parity import compare_detections
    from pipeline.tf1.graph_runner import TF1GraphRunner

    image = read_image(sorted(images.iterdir())[0])
    detector = load_detector(zoo_and_converted[1])
    ours = detector(image[None])
    assert set(ours) == set(OUTPUT_KEYS)
    assert ours["detection_boxes"].shape == (1, 100, 4)
    assert ours["detection_classes"].dtype == np.float32
    assert ours["num_detections"].dtype == np.float32
    with TF1GraphRunner(zoo_and_converted[0]) as runner:
        tf1 = runner.run(image)
    comparison = compare_detections(tf1, {k: v[0] for k, v in ours.items()})
    assert comparison.passed, comparison


def test_saved_model_round_trip(
    saved_model: Path, zoo_and_converted: tuple[Path, Path], images: Path
) -> None:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model))
    signature = loaded.signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == {"image_tensor"}
    assert signature.structured_input_signature[1]["image_tensor"].dtype == tf.uint8
    assert set(signature.structured_outputs) == set(OUTPUT_KEYS)
    assert (saved_model / "model_spec.json").is_file()

    from_saved = load_detector(saved_model)
    from_checkpoint = load_detector(zoo_and_converted[1])
    image = read_image(sorted(images.iterdir())[0])
    batch = np.stack([image, image[:, ::-1]])
    a, b = from_saved(batch), from_checkpoint(batch)
    for key in OUTPUT_KEYS:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5)
    assert not np.allclose(a["detection_boxes"][0], a["detection_boxes"][1])


def test_export_refuses_a_non_empty_directory(
    tmp_path: Path, zoo_and_converted: tuple[Path, Path]
) -> None:
    from pipeline.modeling.builder import load_converted

    (tmp_path / "keep.txt").write_text("x")
    model, spec = load_converted(zoo_and_converted[1])
    with pytest.raises(PipelineError, match="not empty"):
        export_saved_model(model, spec, tmp_path)


def test_predict_command_writes_coco_results(
    tmp_path: Path, saved_model: Path, images: Path
) -> None:
    out = tmp_path / "results.json"
    code = main(
        ["predict", "--model", str(saved_model), "--images", str(images), "--out", str(out),
         "--no-progress"]
    )  # fmt: skip
    assert code == 0
    results = json.loads(out.read_text())
    paths = sorted(images.iterdir())
    detector = load_detector(saved_model)
    for path in paths:
        image = read_image(path)
        height, width = image.shape[:2]
        mine = [r for r in results if r["image_id"] == int(path.stem)]
        outputs = detector(image[None])
        count = int(outputs["num_detections"][0])
        assert len(mine) == count > 0
        for result, box, score, cls in zip(
            mine,
            outputs["detection_boxes"][0],
            outputs["detection_scores"][0],
            outputs["detection_classes"][0],
            strict=False,
        ):
            assert set(result) == {"image_id", "category_id", "bbox", "score"}
            assert isinstance(result["image_id"], int) and isinstance(result["category_id"], int)
            assert result["category_id"] == int(cls) and 1 <= result["category_id"] <= 90
            ymin, xmin, ymax, xmax = box
            np.testing.assert_allclose(
                result["bbox"],
                [xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height],
                rtol=1e-5,
                atol=1e-3,
            )
            x, y, w, h = result["bbox"]
            assert x >= 0 and y >= 0 and x + w <= width + 1e-3 and y + h <= height + 1e-3
            assert result["score"] == pytest.approx(float(score))
        scores = [r["score"] for r in mine]
        assert scores == sorted(scores, reverse=True)


def test_label_map_and_min_score() -> None:
    outputs = {
        "num_detections": np.array([3.0]),
        "detection_boxes": np.array([[[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1], [0.2, 0.2, 0.3, 0.3]]]),
        "detection_scores": np.array([[0.9, 0.5, 0.1]]),
        "detection_classes": np.array([[1.0, 2.0, 1.0]]),
    }
    results = coco_results(outputs, 7, 100, 200, label_map={1: 18}, min_score=0.2)
    assert results == [
        {"image_id": 7, "category_id": 18, "bbox": pytest.approx([40.0, 10.0, 80.0, 40.0]),
         "score": 0.9},
    ]  # fmt: skip


def test_image_ids_and_bad_paths(tmp_path: Path) -> None:
    assert image_id(Path("000000005001.jpg")) == 5001
    with pytest.raises(PipelineError, match="not an integer image id"):
        image_id(Path("dog.jpg"))
    with pytest.raises(PipelineError, match="neither a converted model directory"):
        load_detector(tmp_path)
