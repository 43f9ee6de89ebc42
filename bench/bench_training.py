"""Fine-tune throughput: real TFRecord input vs an in-memory cached batch, frozen vs full step.

    .venv/bin/python bench/bench_training.py [--steps 40] [--repeats 3] [--image-size 128]

Builds the default-sized model (SSD MobileNet v2, depth 0.35, 3 classes) the way the training
tests do (`tests/test_training_support.write_converted`: a TF1 zoo directory from the graph builder
with synthetic weights, converted by `pipeline.conversion`), writes JPEG TFRecords (640x480, like
COCO) and times Model Garden's Orbit train loop
(`Trainer.train(n)`, the exact training step) on:
  A. the real input pipeline (decode, flip, legacy resize, TF1 target assignment) from TFRecords,
  B. one preprocessed batch cached in memory and repeated (input cost ~ 0),
  C. B with the backbone frozen.
Reports images/s and the ratios A/B (target >= 0.95: the input pipeline is never the bottleneck)
and C/B step time (frozen step cheaper than the full step). Runs alternate (ABC ABC ...) and the
medians are compared, so background load affects all three alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # test_training_support: the converted model


def feature(kind: str, values) -> tf.train.Feature:
    """A tf.train.Feature of `kind` (bytes_list, float_list, int64_list)."""
    lists = {
        "bytes_list": tf.train.BytesList,
        "float_list": tf.train.FloatList,
        "int64_list": tf.train.Int64List,
    }
    return tf.train.Feature(**{kind: lists[kind](value=values)})


def _write_tfrecords(path: Path, count: int) -> None:
    rng = np.random.default_rng(1)

    with tf.io.TFRecordWriter(str(path)) as writer:
        for index in range(count):
            # Smooth random images (noise would make JPEG decoding unrealistically slow).
            small = rng.integers(0, 255, size=(30, 40, 3), dtype=np.uint8)
            image = tf.image.resize(small, (480, 640)).numpy().astype(np.uint8)
            encoded = tf.io.encode_jpeg(image, quality=90).numpy()
            n = int(rng.integers(1, 6))
            y0, x0 = rng.uniform(0, 0.6, n), rng.uniform(0, 0.6, n)
            h, w = rng.uniform(0.1, 0.4, n), rng.uniform(0.1, 0.4, n)
            features = {
                "image/encoded": feature("bytes_list", [encoded]),
                "image/source_id": feature("bytes_list", [str(index + 1).encode()]),
                "image/height": feature("int64_list", [480]),
                "image/width": feature("int64_list", [640]),
                "image/object/bbox/ymin": feature("float_list", y0),
                "image/object/bbox/xmin": feature("float_list", x0),
                "image/object/bbox/ymax": feature("float_list", y0 + h),
                "image/object/bbox/xmax": feature("float_list", x0 + w),
                "image/object/class/label": feature("int64_list", rng.integers(1, 4, n)),
                "image/object/is_crowd": feature("int64_list", [0] * n),
                "image/object/area": feature("float_list", (h * w * 480 * 640).tolist()),
            }
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()
            )


def build_trainer(
    converted: Path,
    records: Path,
    batch: int,
    freeze: str,
    cached: bool,
    optimizer: str = "sgd_momentum",
    overrides: dict | None = None,
):
    """Model Garden's Orbit trainer on the fine-tune task, from conf/train (constant schedule,
    `overrides` as dotted train.* keys); `cached`: one input batch, cached and repeated."""
    from official.core import base_trainer
    from omegaconf import OmegaConf

    import pipeline.training.task  # noqa: F401  (registers the task)
    from pipeline.training.config import experiment_from_params
    from pipeline.training.task import SSDFinetuneTask

    conf = OmegaConf.load(ROOT / "conf" / "train" / "finetune.yaml")
    conf.pop("defaults")
    conf.optimizer = OmegaConf.load(ROOT / "conf" / "train" / "optimizer" / f"{optimizer}.yaml")
    conf.schedule = OmegaConf.load(ROOT / "conf" / "train" / "schedule" / "constant.yaml")
    conf.freeze = OmegaConf.load(ROOT / "conf" / "train" / "freeze" / f"{freeze}.yaml")
    conf.batch_size = batch
    for key, value in (overrides or {}).items():
        OmegaConf.update(conf, key, value, force_add=True)
    experiment = experiment_from_params(conf, str(converted), str(records))
    task = SSDFinetuneTask(experiment.task)
    model = task.build_model()
    task.initialize(model)
    optimizer = task.create_optimizer(experiment.trainer.optimizer_config, experiment.runtime)
    dataset = task.build_inputs(experiment.task.train_data)
    if cached:
        dataset = dataset.take(1).cache().repeat()
    return base_trainer.Trainer(
        experiment,
        task,
        model=model,
        optimizer=optimizer,
        train=True,
        evaluate=False,
        train_dataset=dataset,
    )


def images_per_second(trainer, steps: int, batch: int) -> float:
    start = time.perf_counter()
    trainer.train(tf.constant(steps, tf.int32))
    trainer.global_step.numpy()  # wait for the loop
    return steps * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    from test_training_support import write_converted

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        write_converted(scratch / "converted", image_size=args.image_size)
        _write_tfrecords(scratch / "train.tfrecord", 64)
        setups = {
            "tfrecord_full": ("none", False),
            "cached_full": ("none", True),
            "cached_frozen_backbone": ("backbone", True),
        }
        trainers = {
            name: build_trainer(
                scratch / "converted", scratch / "train.tfrecord", args.batch_size, *cfg
            )
            for name, cfg in setups.items()
        }
        for trainer in trainers.values():  # trace + warm the input pipeline
            images_per_second(trainer, 5, args.batch_size)
        rates: dict[str, list[float]] = {name: [] for name in trainers}
        for _ in range(args.repeats):
            for name, trainer in trainers.items():
                rates[name].append(images_per_second(trainer, args.steps, args.batch_size))
    median = {name: statistics.median(values) for name, values in rates.items()}
    result = {
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "steps_per_run": args.steps,
        "repeats": args.repeats,
        "images_per_second": {k: round(v, 2) for k, v in median.items()},
        "input_ratio_tfrecord_vs_cached": round(median["tfrecord_full"] / median["cached_full"], 3),
        "frozen_backbone_step_time_vs_full": round(
            median["cached_full"] / median["cached_frozen_backbone"], 3
        ),
    }
    print(json.dumps(result, indent=2))
    print(
        f"input pipeline: {result['input_ratio_tfrecord_vs_cached']:.3f}x cached throughput "
        f"(target >= 0.95); frozen-backbone step takes "
        f"{result['frozen_backbone_step_time_vs_full']:.3f}x the full step (target < 1)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
