"""Shared helpers for the training tests (no tests here).

- `small_graph_config()` / `small_spec()`: a small SSD MobileNet v2 (depth 0.35, 96x96, 3 classes)
  so runs stay fast: the TF1 graph builder's config and the spec converted from its pipeline.config.
- `write_converted(dir)`: that model as a TF1 zoo directory (graph builder) run through the real
  conversion (`pipeline.conversion.convert`): model_spec.json + checkpoint/ + report. Also used by
  bench/bench_training.py.
- `write_tfrecords(path, coco_dir, ...)`: TFRecords with Model Garden's tf_example_decoder keys from
  the real COCO subset, classes folded onto 1..3.
- `check_freezing_and_finetune(converted, ...)`: every conf/train/freeze choice resolves on a
  converted model and a short fine-tune runs from it (for each architecture's tests).
- `checkpoint_values(prefix)`: every variable of a TF2 checkpoint by object path.
- `interrupted_run(...)` / `assert_same_weights(a, b)`: a fine-tune run stopped right after a
  step (KeyboardInterrupt), and two runs' final checkpoints compared.
- `dataset_loss(params, converted, records, checkpoint, terms)`: a fine-tune task's mean loss over
  TFRecords in a fixed order, for the converted weights or a run's checkpoint.
- `tf1_batch(...)` / `tf1_losses(...)`: a batch of real COCO images and the TF1 OD API's own
  training losses on it (tf1_scripts/initial_losses.py), through ../shared/tf1_reference.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import tensorflow as tf

SCRIPTS = Path(__file__).parent / "tf1_scripts"


def small_graph_config(num_classes: int = 3, image_size: int = 96):
    """The TF1 zoo model the training tests fine-tune: ssd_mobilenet_v2 at depth 0.35."""
    from pipeline.tf1.graph_builder import SSDGraphConfig

    return SSDGraphConfig(
        num_classes=num_classes,
        image_size=(image_size, image_size),
        depth_multiplier=0.35,
        min_depth=8,
    )


def small_spec(num_classes: int = 3, image_size: int = 96):
    """The spec `pipeline convert` reads from the small zoo model's pipeline.config."""
    from google.protobuf import text_format

    from pipeline.tf1.graph_builder import pipeline_config_text
    from pipeline.tf1.pipeline_config import ssd_spec_from_config
    from pipeline.tf1.protos.pipeline_subset import message_class

    config = message_class("TrainEvalPipelineConfig")()
    text = pipeline_config_text(small_graph_config(num_classes, image_size))
    # As `read_pipeline_config` parses it: the project's proto subset skips unused fields.
    text_format.Parse(text, config, allow_unknown_field=True)
    return ssd_spec_from_config(config)


def build_model(spec):
    from pipeline.modeling.builder import build_ssd_model

    model = build_ssd_model(spec)
    model(tf.zeros([1, *spec.image_size, 3]), training=False)
    return model


def write_converted(directory: Path, num_classes: int = 3, seed: int = 0, image_size: int = 96):
    """A genuine TF1 zoo directory of the small model (synthetic weights from the graph builder)
    converted by `pipeline.conversion.convert` into `directory`; returns (directory, model)."""
    from pipeline.conversion.convert import convert
    from pipeline.modeling import load_converted
    from pipeline.tf1.graph_builder import write_zoo_dir

    tf1_dir = directory.with_name(f"{directory.name}_tf1")
    write_zoo_dir(tf1_dir, small_graph_config(num_classes, image_size), seed=seed, frozen=False)
    convert(tf1_dir, directory, progress=False)
    model, _ = load_converted(directory)
    return directory, model


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def write_tfrecords(
    path: Path, coco_dir: Path, split: str = "train2017", limit: int = 24, num_classes: int = 3
) -> Path:
    annotations = json.loads((coco_dir / "annotations" / f"instances_{split}.json").read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in annotations["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    images = sorted(annotations["images"], key=lambda im: im["id"])[:limit]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image in images:
            anns = by_image.get(image["id"], [])
            w, h = image["width"], image["height"]
            feature = {
                "image/encoded": _bytes([(coco_dir / split / image["file_name"]).read_bytes()]),
                "image/source_id": _bytes([str(image["id"]).encode()]),
                "image/height": _ints([h]),
                "image/width": _ints([w]),
                "image/format": _bytes([b"jpeg"]),
                "image/object/bbox/xmin": _floats([a["bbox"][0] / w for a in anns]),
                "image/object/bbox/xmax": _floats(
                    [(a["bbox"][0] + a["bbox"][2]) / w for a in anns]
                ),
                "image/object/bbox/ymin": _floats([a["bbox"][1] / h for a in anns]),
                "image/object/bbox/ymax": _floats(
                    [(a["bbox"][1] + a["bbox"][3]) / h for a in anns]
                ),
                "image/object/class/label": _ints(
                    [a["category_id"] % num_classes + 1 for a in anns]
                ),
                "image/object/is_crowd": _ints([a["iscrowd"] for a in anns]),
                "image/object/area": _floats([a["area"] for a in anns]),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
    return path


def train_params(**overrides):
    """A `train` section as params.yaml holds it (composed conf/train/finetune.yaml)."""
    from omegaconf import OmegaConf

    base = {
        "optimizer": {"type": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": False},
        "schedule": {"type": "constant", "warmup_steps": 0, "warmup_learning_rate": 0.0},
        "freeze": {
            "name": "backbone",
            "modules": ["backbone"],
            "patterns": [],
            "trainable_patterns": [],
            "freeze_batch_norm": True,
        },
        "steps": 6,
        "batch_size": 4,
        "seed": 0,
        "gradient_clip_norm": 10.0,
        "l2_weight_decay": None,
        "ema_decay": None,
        "num_classes": None,
        "augmentation": {"from_pipeline_config": True, "options": [], "skip": []},
        "shuffle_buffer_size": 64,
        "cache_decoded_max_mb": 64,
        "skip_crowd": False,
        "log_every_steps": 1,
        "checkpoint_every_steps": 3,
        "validation_every_steps": 0,
        "runtime": {"distribution_strategy": "one_device", "num_gpus": 0},
    }
    config = OmegaConf.create(base)
    for key, value in overrides.items():
        OmegaConf.update(config, key, value, merge=False)
    return config


def check_freezing_and_finetune(converted: Path, coco_dir: Path, out: Path, num_classes: int):
    """Each conf/train/freeze/*.yaml splits the converted model's variables (something trained,
    something frozen unless `none`), then 2 fine-tune steps restore every weight and give finite
    losses. Returns the fine-tune summary."""
    import math

    from omegaconf import OmegaConf

    from pipeline.modeling import load_converted
    from pipeline.training.config import freeze_selection
    from pipeline.training.finetune import finetune
    from pipeline.training.freezing import FreezeSettings, plan_freezing

    model, spec = load_converted(converted)
    family = getattr(spec, "family", "ssd")
    for path in sorted(Path("conf/train/freeze").glob("*.yaml")):
        conf = OmegaConf.load(path)
        if family not in conf.get("families", [family]):
            continue  # refused in one line (tests/test_faster_rcnn_finetune.py)
        selection = freeze_selection(conf, family)
        settings = FreezeSettings(
            conf.name,
            tuple(selection["modules"]),
            tuple(selection["patterns"]),
            tuple(selection["trainable_patterns"]),
        )
        plan = plan_freezing(model, settings)
        assert plan.trained_paths, path.name
        assert bool(plan.frozen_paths) == (conf.name != "none"), path.name
    records = write_tfrecords(out / "train.tfrecord", coco_dir, limit=4, num_classes=num_classes)
    params = train_params(steps=2, batch_size=2, checkpoint_every_steps=2, **{
        "optimizer.learning_rate": 1e-3
    })  # fmt: skip
    result = finetune(params, converted, str(records), out / "finetuned", export=False)
    assert result.summary["steps"] == 2
    assert not result.summary["restore"]["reinitialized"]
    lines = (result.out_dir / "dvclive/plots/metrics/train/loss.tsv").read_text().splitlines()
    losses = [float(line.split("\t")[1]) for line in lines[1:]]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    return result.summary


def checkpoint_values(checkpoint: str) -> dict[str, np.ndarray]:
    from pipeline.training.variables import checkpoint_shapes

    reader = tf.train.load_checkpoint(checkpoint)
    return {
        path: reader.get_tensor(path + "/.ATTRIBUTES/VARIABLE_VALUE")
        for path in checkpoint_shapes(checkpoint)
    }


def tf1_batch(python: Path, reference: Path, coco: Path, out: Path, batch: int, size: int) -> Path:
    """The first `batch` train2017 images with boxes, resized to size x size (make_batch.py)."""
    subprocess.run(
        [str(python), str(reference / "make_batch.py"), str(coco), "train2017", str(out),
         "--batch", str(batch), "--size", str(size)],
        check=True, capture_output=True,
    )  # fmt: skip
    return out


def tf1_losses(python: Path, reference: Path, zoo: Path, batch: Path) -> dict[str, float]:
    """The TF1 OD API's training losses of zoo/model.ckpt on `batch` (initial_losses.py)."""
    result = subprocess.run(
        [str(python), str(SCRIPTS / "initial_losses.py"), str(reference),
         str(zoo / "pipeline.config"), str(zoo / "model.ckpt"), str(batch)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def dataset_loss(
    params, converted: Path, records: str, checkpoint: str | None, terms: tuple[str, ...]
) -> float:
    """Mean of the loss `terms` of the model family's fine-tune task over `records` (validation
    input: fixed order, no augmentation, fixed sampling), with the converted weights or those of
    `checkpoint`."""
    from official.core import task_factory

    from pipeline.training import finetune  # noqa: F401  (registers the tasks)
    from pipeline.training.config import experiment_from_params

    experiment = experiment_from_params(params, str(converted), records, records)
    task = task_factory.get_task(experiment.task)
    model = task.build_model()
    task.initialize(model)
    if checkpoint:
        tf.train.Checkpoint(**model.checkpoint_items).read(checkpoint).expect_partial()
    totals = []
    for inputs in task.build_inputs(experiment.task.validation_data):
        losses = task.compute_losses(model, inputs, False, tf.constant(0, tf.int64))
        totals.append(float(sum(losses[term] for term in terms)))
    return float(np.mean(totals))


def interrupted_run(
    params, converted: Path, records: str, out: Path, step: int, monkeypatch
) -> int:
    """Fine-tune into `out` and interrupt it (KeyboardInterrupt) right after `step` is logged;
    returns the step of the newest checkpoint it left."""
    import pytest

    from pipeline.training.actions import DVCLiveAction
    from pipeline.training.finetune import finetune

    original = DVCLiveAction.__call__

    def interrupt(self, output):
        original(self, output)
        if int(self._global_step.numpy()) == step:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(DVCLiveAction, "__call__", interrupt)
        with pytest.raises(KeyboardInterrupt):
            finetune(params, converted, records, out, export=False)
    return int(tf.train.latest_checkpoint(str(out / "checkpoint")).rsplit("-", 1)[1])


def assert_same_weights(expected_run: Path, actual_run: Path) -> None:
    """The final checkpoints of two fine-tune outputs hold the same variables (rtol 1e-6)."""
    expected = checkpoint_values(tf.train.latest_checkpoint(str(expected_run / "checkpoint")))
    actual = checkpoint_values(tf.train.latest_checkpoint(str(actual_run / "checkpoint")))
    assert expected.keys() == actual.keys()
    for path in expected:
        np.testing.assert_allclose(actual[path], expected[path], rtol=1e-6, atol=1e-7, err_msg=path)
