"""Fine-tune runs on a small converted Faster R-CNN Inception v2 (the TF 1.8 user export's layout
with synthetic weights, images resized to 128..192, few proposals) and real COCO images: loss
decreases, frozen weights stay bit-identical, an interrupted run resumes to the same weights, the
exported SavedModel equals the model, every freeze choice applies or is refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from test_training_support import (
    assert_same_weights,
    checkpoint_values,
    dataset_loss,
    interrupted_run,
    train_params,
    write_tfrecords,
)

from pipeline.errors import PipelineError
from pipeline.training.finetune import finetune

USER = "faster_rcnn_inception_v2_cards_export_tf1.8"
NUM_CLASSES = 6
STEPS = 6
SMALL = (
    ("min_dimension: 600", "min_dimension: 128"),
    ("max_dimension: 1024", "max_dimension: 192"),
    ("first_stage_max_proposals: 300", "first_stage_max_proposals: 32\n"
     "    second_stage_batch_size: 16"),
)  # fmt: skip
BACKBONE = {
    "name": "backbone",
    "modules": ["backbone"],
    "patterns": [],
    "trainable_patterns": [],
    "faster_rcnn": {"patterns": ["^detection_head/0/extractor/"]},
    "freeze_batch_norm": True,
}


def _params(**overrides):
    base = {
        "steps": STEPS,
        "batch_size": 2,
        "checkpoint_every_steps": 2,
        "freeze": BACKBONE,
        "optimizer.learning_rate": 0.01,
    }
    base.update(overrides)
    return train_params(**base)


@pytest.fixture(scope="module")
def workspace(shared_fixtures: Path, coco_tiny: Path, tmp_path_factory) -> dict:
    from pipeline.conversion.convert import convert
    from pipeline.tf1.synthetic_checkpoint import make_synthetic_zoo_dir

    export = shared_fixtures / "tf1_user_models" / USER
    if not export.is_dir():
        pytest.skip(f"shared fixture not available: {export}")
    root = tmp_path_factory.mktemp("frcnn_finetune")
    tf1 = make_synthetic_zoo_dir(export, root / "tf1", calibrate=False)
    config = tf1 / "pipeline.config"
    text = config.read_text()
    for old, new in SMALL:
        assert old in text, old
        text = text.replace(old, new)
    config.write_text(text)
    convert(tf1, root / "converted", progress=False)
    records = write_tfrecords(root / "train.tfrecord", coco_tiny, limit=8, num_classes=NUM_CLASSES)
    return {"root": root, "converted": root / "converted", "records": str(records)}


@pytest.fixture(scope="module")
def baseline(workspace):
    out = workspace["root"] / "baseline"
    result = finetune(_params(), workspace["converted"], workspace["records"], out)
    return out, result.summary


def _paths(path: Path) -> list[str]:
    return [line.split("\t")[0] for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_frozen_weights_bit_identical_and_trained_moved(baseline, workspace):
    out, summary = baseline
    before = checkpoint_values(
        tf.train.latest_checkpoint(str(workspace["converted"] / "checkpoint"))
    )
    after = checkpoint_values(tf.train.latest_checkpoint(str(out / "checkpoint")))
    frozen = _paths(out / "frozen_variables.txt")
    trained = _paths(out / "trained_variables.txt")
    extractor = ("backbone/", "detection_head/0/extractor/")
    assert frozen and all(p.startswith(extractor) for p in frozen)
    assert any(p.startswith("detection_head/0/extractor/") for p in frozen)
    assert trained and not any(p.startswith(extractor) for p in trained)
    assert {p.split("/")[0] for p in trained} == {"rpn_head", "detection_head"}
    for path in frozen:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    moving = [p for p in before if "moving_" in p]
    assert moving and all(np.array_equal(after[p], before[p]) for p in moving)
    moved = [p for p in trained if not np.array_equal(after[p], before[p])]
    assert len(moved) == len(trained), set(trained) - set(moved)
    assert summary["steps"] == STEPS


def _loss(workspace, checkpoint: str | None) -> float:
    return dataset_loss(
        _params(), workspace["converted"], workspace["records"], checkpoint, ("total_loss",)
    )


@pytest.mark.slow
def test_loss_decreases(baseline, workspace):
    out, _ = baseline
    before = _loss(workspace, None)
    after = _loss(workspace, tf.train.latest_checkpoint(str(out / "checkpoint")))
    print(f"two-stage loss on the training images: before {before:.4f}, after {after:.4f}")
    assert after < 0.9 * before, (before, after)


@pytest.mark.slow
def test_resume_equals_uninterrupted(baseline, workspace, monkeypatch):
    out = workspace["root"] / "resumed"
    saved_step = interrupted_run(
        _params(), workspace["converted"], workspace["records"], out, 3, monkeypatch
    )
    assert 0 < saved_step < 3
    result = finetune(_params(), workspace["converted"], workspace["records"], out, export=False)
    assert result.summary["resumed"] and result.summary["steps"] == STEPS
    assert_same_weights(baseline[0], out)


@pytest.mark.slow
def test_exported_saved_model_matches_trained_model(baseline, workspace, coco_tiny):
    from PIL import Image

    from pipeline.inference import load_detector
    from pipeline.inference.detector import detection_outputs
    from pipeline.modeling.builder import load_converted

    out, _ = baseline
    model, spec = load_converted(workspace["converted"])
    tf.train.Checkpoint(**model.checkpoint_items).read(
        tf.train.latest_checkpoint(str(out / "checkpoint"))
    ).expect_partial()
    saved = load_detector(str(out / "saved_model"))
    path = sorted((coco_tiny / "val2017").glob("*.jpg"))[0]
    image = np.asarray(Image.open(path).convert("RGB"))[None]
    expected = detection_outputs(model, spec, tf.constant(image))
    actual = saved(image)
    assert float(expected["num_detections"][0]) > 0
    for key, value in expected.items():
        np.testing.assert_allclose(actual[key], np.asarray(value), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_every_freeze_choice_applies_or_is_refused(workspace):
    from omegaconf import OmegaConf

    from pipeline.modeling.builder import load_converted
    from pipeline.training.config import freeze_selection
    from pipeline.training.freezing import FreezeSettings, plan_freezing

    model, _ = load_converted(workspace["converted"])
    applied = []
    for path in sorted(Path("conf/train/freeze").glob("*.yaml")):
        conf = OmegaConf.load(path)
        if "faster_rcnn" not in conf.get("families", ["faster_rcnn"]):
            with pytest.raises(PipelineError, match=f"{conf.name!r} does not apply to faster_rcnn"):
                freeze_selection(conf, "faster_rcnn")
            continue
        selection = freeze_selection(conf, "faster_rcnn")
        plan = plan_freezing(
            model,
            FreezeSettings(
                selection["name"], tuple(selection["modules"]), tuple(selection["patterns"]),
                tuple(selection["trainable_patterns"]),
            ),
        )  # fmt: skip
        assert plan.trained_paths, path.name
        assert bool(plan.frozen_paths) == (conf.name != "none"), path.name
        applied.append(conf.name)
    assert {"backbone", "first_stage", "all_but_heads", "none"} <= set(applied)


@pytest.mark.slow
def test_fine_tuned_model_evaluates(baseline, coco_tiny, tmp_path):
    """The evaluate stage scores the exported fine-tuned model (COCO metrics on 4 val images)."""
    import json

    from pipeline.datasets import BuildConfig, build_tfrecords
    from pipeline.evaluation import evaluate_model

    out, _ = baseline
    label_map = tmp_path / "classes.json"
    label_map.write_text(json.dumps(["person", "car", "dog", "cup", "chair", "bottle"]))
    records = tmp_path / "tfrecords"
    build_tfrecords(
        BuildConfig(
            coco_tiny / "annotations" / "instances_val2017.json",
            coco_tiny / "val2017",
            records,
            shards=1,
            label_map=label_map,
            progress=False,
        )
    )
    result = evaluate_model(
        out / "saved_model",
        str(records / "coco-*.tfrecord"),
        tmp_path / "eval",
        max_images=4,
        progress=False,
    )
    assert result.num_images == 4 and result.num_detections > 0
    assert 0.0 <= result.metrics["AP"] <= 1.0
    assert (tmp_path / "eval" / "metrics.json").is_file()
