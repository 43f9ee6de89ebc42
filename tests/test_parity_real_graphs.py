"""Issue 3's proof: the real TF1 zoo graphs and the converted TF2 models compute the same thing.

For both fixture models: synthetic weights of the exact checkpoint layout, converted with the
converter's API, then the real TF1 inference graph (`model.ckpt.meta`, under tf.compat.v1) and the
converted model (restored from the written directory) run on real COCO val images:
- full coverage both ways (every TF1 variable mapped, every TF2 variable initialised);
- raw box encodings and class logits: max |TF1 - TF2| <= 1e-4 * max(1, max |TF1|);
- each of TF1's top-50 detections has a same-class TF2 detection, IoU >= 0.999, score +- 1e-4.
A deliberately wrong TF2 preprocessing (TF2's half-pixel resize) must fail the same check, so the
check is known to be able to fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.conversion.parity import tf1_layout_outputs, verify_conversion
from pipeline.tf1.graph_runner import iter_images
from pipeline.tf1.synthetic_checkpoint import make_synthetic_zoo_dir

MODELS = ["ssd_mobilenet_v2_coco_2018_03_29", "ssd_mobilenet_v1_coco_2018_01_28"]
NUM_IMAGES = 4


@pytest.fixture(scope="module")
def images(coco_tiny: Path) -> list[tuple[str, np.ndarray]]:
    return [(path.name, image) for path, image in iter_images(coco_tiny / "val2017", NUM_IMAGES)]


@pytest.fixture(scope="module", params=MODELS)
def converted(request, tf1_zoo_dir: Path, tmp_path_factory) -> tuple[Path, Path, dict]:
    from pipeline.conversion.convert import convert

    root = tmp_path_factory.mktemp(request.param)
    zoo = make_synthetic_zoo_dir(tf1_zoo_dir / request.param, root / "tf1", seed=0)
    report = convert(zoo, root / "tf2", progress=False)
    return zoo, root / "tf2", report


def test_conversion_covers_every_variable_both_ways(converted) -> None:
    _, _, report = converted
    assert report["complete"]
    assert report["tf1"]["unmapped"] == []
    assert report["tf2"]["uninitialised"] == []
    assert (
        report["tf1"]["mapped"] + len(report["tf1"]["ignored_bookkeeping"])
        == report["tf1"]["total"]
    )


def test_converted_model_matches_the_real_tf1_graph(converted, images) -> None:
    zoo, out, _ = converted
    # The converted directory as users get it: rebuilt and restored from its checkpoint.
    report = verify_conversion(zoo, out, images=images)
    assert report.num_images == NUM_IMAGES
    assert report.box_encodings_passed, report.summary()
    assert report.class_logits_passed, report.summary()
    assert report.detections_passed, report.summary()
    assert report.detections_checked == 50 * NUM_IMAGES
    for image in report.images:
        # Not vacuous: the synthetic weights give large, varied outputs.
        assert image.class_logits.max_abs_tf1 > 1.0
        assert image.detections.tf1_num_detections >= 50


def test_half_pixel_resize_is_caught(converted, images) -> None:
    """TF2's default resize samples other pixels than TF1's legacy ResizeBilinear: the check must
    fail on every level and say so."""
    import tensorflow as tf

    from pipeline.modeling import load_converted

    zoo, out, _ = converted
    model, spec = load_converted(out)

    def half_pixel(image: np.ndarray) -> dict:
        resized = tf.image.resize(tf.cast(image[None], tf.float32), spec.image_size)
        output = model((2.0 / 255.0) * resized - 1.0, training=False)
        return tf1_layout_outputs(output, spec.num_class_slots)

    report = verify_conversion(zoo, half_pixel, images=images[:1])
    assert not report.passed
    assert not report.class_logits_passed and not report.box_encodings_passed
    assert any("resize sampling" in line for line in report.diagnosis), report.diagnosis
