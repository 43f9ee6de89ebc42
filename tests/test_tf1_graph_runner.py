"""The real TF1 zoo graphs run under tf.compat.v1 with synthetic weights of the exact layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.conversion.parity import compare_image
from pipeline.tf1.graph_runner import (
    TF1GraphRunner,
    iter_images,
    tf1_graph_anchors,
    write_frozen_graph,
)
from pipeline.tf1.synthetic_checkpoint import (
    make_synthetic_zoo_dir,
    read_checkpoint_layout,
    synthetic_weights,
)

MODELS = ["ssd_mobilenet_v2_coco_2018_03_29", "ssd_mobilenet_v1_coco_2018_01_28"]
NUM_IMAGES = 2


@pytest.fixture(scope="module", params=MODELS)
def synthetic_zoo(request, tf1_zoo_dir: Path, tmp_path_factory) -> tuple[Path, Path]:
    src = tf1_zoo_dir / request.param
    out = make_synthetic_zoo_dir(src, tmp_path_factory.mktemp("zoo") / request.param, seed=0)
    return src, out


@pytest.fixture(scope="module")
def images(coco_tiny: Path) -> list[np.ndarray]:
    return [image for _, image in iter_images(coco_tiny / "val2017", NUM_IMAGES)]


@pytest.fixture(scope="module")
def outputs(synthetic_zoo, images) -> list[dict]:
    with TF1GraphRunner(synthetic_zoo[1]) as runner:
        assert runner.kind == "meta"
        return [runner.run(image, with_heads=True, with_anchors=True) for image in images]


def test_synthetic_checkpoint_has_the_exact_layout(synthetic_zoo) -> None:
    src, out = synthetic_zoo
    assert read_checkpoint_layout(out) == read_checkpoint_layout(src)
    for name in ("model.ckpt.meta", "pipeline.config", "checkpoint"):
        assert (out / name).is_file()


def test_synthetic_weights_are_deterministic_per_seed(tf1_zoo_dir: Path) -> None:
    layout = read_checkpoint_layout(tf1_zoo_dir / MODELS[0])
    a, b, c = (synthetic_weights(layout, seed) for seed in (0, 0, 1))
    name = "FeatureExtractor/MobilenetV2/Conv/weights"
    np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a[name], c[name])
    # A variable's value does not depend on which others exist.
    alone = synthetic_weights({name: layout[name]}, 0)
    np.testing.assert_array_equal(alone[name], a[name])
    assert a["global_step"].dtype == np.int64


def test_raw_outputs_have_tf1_layout_and_are_alive(outputs) -> None:
    for out in outputs:
        assert out["box_encodings"].shape == (1917, 4)
        assert out["class_logits"].shape == (1917, 91)
        assert out["anchors"].shape == (1917, 4)
        for key in ("box_encodings", "class_logits", "detection_boxes", "detection_scores"):
            assert np.isfinite(out[key]).all(), key
        scores = out["detection_scores"][: out["num_detections"]]
        assert out["num_detections"] >= 50
        assert np.unique(scores).size > 40
        assert np.unique(out["detection_classes"][:50]).size > 1
        classes = out["detection_classes"][: out["num_detections"]]
        assert classes.min() >= 1 and classes.max() <= 90
        assert out["class_logits"].std() > 0.5
    # The image matters: logits differ between images far beyond float noise.
    assert np.abs(outputs[0]["class_logits"] - outputs[1]["class_logits"]).max() > 0.1


def test_concat_is_heads_flattened_level_then_row_then_column_then_anchor(outputs) -> None:
    out = outputs[0]
    heads = out["heads"]
    levels = sorted({name.split("/")[0] for name in heads}, key=lambda s: int(s.split("_")[-1]))
    boxes = [heads[f"{lvl}/BoxEncodingPredictor"].reshape(-1, 4) for lvl in levels]
    logits = [heads[f"{lvl}/ClassPredictor"].reshape(-1, 91) for lvl in levels]
    np.testing.assert_array_equal(np.concatenate(boxes), out["box_encodings"])
    np.testing.assert_array_equal(np.concatenate(logits), out["class_logits"])
    # 3 anchors per location on the 19x19 map, 6 on the others.
    assert heads[f"{levels[0]}/BoxEncodingPredictor"].shape == (19, 19, 12)
    assert heads[f"{levels[1]}/BoxEncodingPredictor"].shape == (10, 10, 24)


def test_anchors_are_image_independent_and_exposed(synthetic_zoo, outputs) -> None:
    anchors = tf1_graph_anchors(synthetic_zoo[1])
    assert anchors.shape == (1917, 4)
    np.testing.assert_array_equal(anchors, outputs[0]["anchors"])
    np.testing.assert_array_equal(anchors, outputs[1]["anchors"])
    # Centres of the first map lie on a 19x19 grid at (i + 0.5) / 19.
    centres = (anchors[:1083:3, :2] + anchors[:1083:3, 2:]) / 2
    np.testing.assert_allclose(centres[0], [0.5 / 19, 0.5 / 19], atol=1e-6)
    np.testing.assert_allclose(centres[-1], [18.5 / 19, 18.5 / 19], atol=1e-6)


def test_tf1_graph_and_tf2_eager_coexist(synthetic_zoo, images, outputs) -> None:
    import tensorflow as tf

    with TF1GraphRunner(synthetic_zoo[1]) as runner:
        # Eager TF2 work between two graph runs, in the same process.
        dense = tf.keras.layers.Dense(3)
        assert dense(tf.ones([1, 2])).shape == (1, 3)
        assert tf.executing_eagerly()
        again = runner.run(images[0])
    np.testing.assert_array_equal(again["class_logits"], outputs[0]["class_logits"])
    assert tf.executing_eagerly()


def test_frozen_graph_gives_the_checkpoint_graphs_outputs(
    synthetic_zoo, images, outputs, tmp_path: Path
) -> None:
    import shutil

    zoo = tmp_path / "frozen_only"
    zoo.mkdir()
    write_frozen_graph(synthetic_zoo[1], zoo / "frozen_inference_graph.pb")
    shutil.copyfile(synthetic_zoo[1] / "pipeline.config", zoo / "pipeline.config")
    with TF1GraphRunner(zoo) as runner:
        assert runner.kind == "frozen"
        frozen = runner.run(images[0], with_anchors=True)
    # Folding the variables into constants lets grappler reorder float32 arithmetic (e.g. fold
    # BatchNorm into the convolutions): equal up to the parity criterion, not bit for bit.
    np.testing.assert_array_equal(frozen["anchors"], outputs[0]["anchors"])
    result = compare_image("frozen", outputs[0], frozen)
    assert result.passed, result
