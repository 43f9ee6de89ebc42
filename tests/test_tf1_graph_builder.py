"""The project's own TF1 SSD MobileNet v2 graph is faithful to the released zoo graph.

At the released configuration its variables equal the real checkpoint index name for name and
shape for shape, its pipeline.config describes the same model, and with the same (synthetic)
weights its raw outputs, anchors and detections equal the real graph's on real COCO images.
A reduced configuration (the built-in model's kind) still converts exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.conversion.parity import compare_image
from pipeline.errors import PipelineError
from pipeline.tf1.graph_builder import (
    SSDGraphConfig,
    extra_layer_depth,
    feature_map_sizes,
    graph_variable_layout,
    v2_base_depth,
    write_zoo_dir,
)
from pipeline.tf1.graph_runner import TF1GraphRunner, iter_images
from pipeline.tf1.synthetic_checkpoint import make_synthetic_zoo_dir, read_checkpoint_layout

REAL = "ssd_mobilenet_v2_coco_2018_03_29"
NUM_IMAGES = 3
SMALL = SSDGraphConfig(
    num_classes=3, image_size=(160, 160), depth_multiplier=0.35, min_depth=8, use_depthwise=True
)


@pytest.fixture(scope="module")
def images(coco_tiny: Path) -> list[tuple[str, np.ndarray]]:
    return [(p.name, image) for p, image in iter_images(coco_tiny / "val2017", NUM_IMAGES)]


@pytest.fixture(scope="module")
def real_and_built(tf1_zoo_dir: Path, tmp_path_factory) -> tuple[Path, Path]:
    """The real graph with synthetic weights, and our graph written with those same weights."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("builder")
    real = make_synthetic_zoo_dir(tf1_zoo_dir / REAL, root / "real", seed=0)
    reader = tf.train.load_checkpoint(str(real / "model.ckpt"))
    weights = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    built = write_zoo_dir(root / "built", SSDGraphConfig(), weights=weights)
    return real, built


def test_variables_equal_the_released_checkpoint_index(tf1_zoo_dir: Path) -> None:
    assert graph_variable_layout(SSDGraphConfig()) == read_checkpoint_layout(tf1_zoo_dir / REAL)


def test_pipeline_config_describes_the_released_model(tf1_zoo_dir: Path, real_and_built) -> None:
    from pipeline.tf1.pipeline_config import ssd_spec_from_config

    _, built = real_and_built
    ours = ssd_spec_from_config(built / "pipeline.config")
    released = ssd_spec_from_config(tf1_zoo_dir / REAL / "pipeline.config")
    assert ours.to_dict() == released.to_dict()


def test_zoo_directory_is_complete(real_and_built) -> None:
    _, built = real_and_built
    for name in (
        "model.ckpt.data-00000-of-00001",
        "model.ckpt.index",
        "model.ckpt.meta",
        "checkpoint",
        "pipeline.config",
        "frozen_inference_graph.pb",
    ):
        assert (built / name).is_file(), name
    assert 'model_checkpoint_path: "model.ckpt"' in (built / "checkpoint").read_text()


@pytest.mark.parametrize("graph", ["meta", "frozen"])
def test_outputs_equal_the_released_graph(real_and_built, images, graph: str) -> None:
    real, built = real_and_built
    with TF1GraphRunner(real) as reference, TF1GraphRunner(built, graph=graph) as ours:
        np.testing.assert_array_equal(ours.anchors(), reference.anchors())
        for name, image in images:
            expected = reference.run(image, with_heads=True)
            got = ours.run(image, with_heads=True)
            assert sorted(got["heads"]) == sorted(expected["heads"])
            result = compare_image(name, expected, got)
            assert result.passed, result
            assert result.detections.checked == 50


def test_reduced_model_runs_and_converts_exactly(tmp_path: Path, images) -> None:
    """The built-in model's kind (small depth, small input, few classes): TF1 naming rules for
    the depths, anchors on the smaller maps, and the converter reproduces it."""
    from pipeline.conversion.convert import convert
    from pipeline.conversion.parity import verify_conversion

    zoo = write_zoo_dir(tmp_path / "small", SMALL, seed=1)
    layout = read_checkpoint_layout(zoo)
    assert layout == graph_variable_layout(SMALL)
    depth = extra_layer_depth(256, SMALL)  # int(256 * 0.35) = 89
    assert f"FeatureExtractor/MobilenetV2/layer_19_1_Conv2d_2_1x1_{depth}/weights" in layout
    assert layout["FeatureExtractor/MobilenetV2/Conv_1/weights"][0][-1] == v2_base_depth(
        1280, SMALL
    )
    assert layout["BoxPredictor_0/ClassPredictor/biases"][0] == (3 * 4,)

    sizes = feature_map_sizes(SMALL)
    expected_anchors = sizes[0][0] * sizes[0][1] * 3 + sum(h * w * 6 for h, w in sizes[1:])
    with TF1GraphRunner(zoo) as runner:
        assert runner.anchors().shape == (expected_anchors, 4)
        out = runner.run(images[0][1])
    assert out["class_logits"].shape == (expected_anchors, 4)
    assert np.isfinite(out["box_encodings"]).all()
    assert out["num_detections"] > 0

    converted = tmp_path / "small_tf2"
    report = convert(zoo, converted, progress=False)
    assert report["complete"]
    parity = verify_conversion(zoo, converted, images=images[:2])
    assert parity.passed, parity.summary()


def test_weights_must_match_the_graph(tmp_path: Path) -> None:
    layout = graph_variable_layout(SMALL)
    weights = {name: np.zeros(shape, dtype) for name, (shape, dtype) in layout.items()}
    weights.pop("BoxPredictor_0/ClassPredictor/biases")
    with pytest.raises(PipelineError, match="BoxPredictor_0/ClassPredictor/biases"):
        write_zoo_dir(tmp_path / "bad", SMALL, weights=weights)
    assert not (tmp_path / "bad").exists()
