"""Issue 12: the fine-tune task's training losses are the TF1 OD API's, term by term.

The same weights (the real ssd_mobilenet_v2_coco_2018_03_29 layout with synthetic values,
converted by the project) and the same batch of real COCO images go through
- TF1: the OD API's own training graph (../shared/tf1_reference; model_builder with is_training,
  provide_groundtruth, predict, loss, slim regularization losses; tf1_scripts/initial_losses.py)
- TF2: the fine-tune task's model (BatchNorm in training mode, nothing frozen), TF1 target
  assignment and `build_losses`.
Localization, classification (with hard example mining) and L2 terms, and their total, must agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_training_support import tf1_batch, tf1_losses

MODEL = "ssd_mobilenet_v2_coco_2018_03_29"
BATCH = 2


@pytest.fixture(scope="module")
def batch(tf1_reference_python, tf1_reference_dir, coco_tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("batch") / "batch.npz"
    return tf1_batch(tf1_reference_python, tf1_reference_dir, coco_tiny, out, BATCH, 300)


def _tf2_losses(converted: Path, batch: Path) -> dict[str, float]:
    import tensorflow as tf

    from pipeline.modeling.preprocessing import preprocess
    from pipeline.training.config import FreezeConfig, SSDFinetuneTaskConfig
    from pipeline.training.settings import matcher_settings
    from pipeline.training.targets import TF1TargetAssigner
    from pipeline.training.task import SSDFinetuneTask

    task = SSDFinetuneTask(
        SSDFinetuneTaskConfig(
            converted_dir=str(converted),
            freeze=FreezeConfig(name="none", freeze_batch_norm=False),
        )
    )
    model = task.build_model()
    task.initialize(model)
    data = np.load(batch)
    assigner = TF1TargetAssigner(task.anchors, matcher_settings(task.spec), task.box_coder_scales)
    per_image = [
        assigner(
            data["boxes"][i, : data["num_boxes"][i]], data["classes"][i, : data["num_boxes"][i]]
        )
        for i in range(len(data["images"]))
    ]
    labels = {key: tf.stack([image[key] for image in per_image]) for key in per_image[0]}
    outputs = model(preprocess(tf.constant(data["images"]), task.spec), training=True)
    return {key: float(value) for key, value in task.build_losses(outputs, labels).items()}


def test_training_losses_equal_the_tf1_od_apis(
    tf1_reference_python, tf1_reference_dir, tf1_zoo_dir, batch, tmp_path
):
    from pipeline.conversion.convert import convert
    from pipeline.tf1.synthetic_checkpoint import make_synthetic_zoo_dir

    zoo = make_synthetic_zoo_dir(tf1_zoo_dir / MODEL, tmp_path / "tf1", seed=0)
    convert(zoo, tmp_path / "tf2", progress=False)
    tf1 = tf1_losses(tf1_reference_python, tf1_reference_dir, zoo, batch)
    tf2 = _tf2_losses(tmp_path / "tf2", batch)
    check_losses_equal(tf1, tf2)


def check_losses_equal(tf1: dict[str, float], tf2: dict[str, float]) -> None:
    """Each loss term of the fine-tune task equals the TF1 training graph's (rel 1e-4)."""
    print(json.dumps({"tf1": tf1, "tf2": tf2}, indent=1))
    assert tf2["box_loss"] == pytest.approx(tf1["Loss/localization_loss"], rel=1e-4)
    assert tf2["cls_loss"] == pytest.approx(tf1["Loss/classification_loss"], rel=1e-4)
    assert tf2["l2_loss"] == pytest.approx(tf1["regularization"], rel=1e-4)
    assert tf2["total_loss"] == pytest.approx(tf1["total"], rel=1e-4)
    assert tf1["Loss/classification_loss"] > 0.1 and tf1["regularization"] > 0.0
