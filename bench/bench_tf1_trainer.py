"""Fine-tune step throughput against the TF1 OD API's own training step, alternated in one run.

    .venv/bin/python bench/bench_tf1_trainer.py [--rounds 3] [--steps 20] [--batch-size 8]
        [--tf1-python ~/.cache/tf1-reference/venv/bin/python]

The same model on both sides: the real ssd_mobilenet_v2_coco_2018_03_29 layout (300x300, 90
classes) from `../shared/fixtures/tf1_zoo`, filled with synthetic weights
(`pipeline.tf1.synthetic_checkpoint`), converted by the project. The same batch: the first
`--batch-size` coco_tiny train images with boxes, resized to 300x300 (`make_batch.py`), held in
memory on both sides (input cost excluded).

- TF1: `../shared/tf1_reference/train_step.py`, the OD API's graph-mode training step as its
  legacy trainer builds it (model_builder with is_training, the config's losses with hard example
  mining, slim L2, RMSProp with momentum, the moving-average update, BN update ops), restored
  from the same checkpoint. It times its own steps after a warm-up (graph build excluded).
- Ours: Model Garden's Orbit trainer on the fine-tune task with the same work: every variable
  trained, BN statistics updated (freeze `none`, freeze_batch_norm false), TF1's losses and L2
  set, RMSProp (rho 0.9, momentum 0.9, epsilon 1.0), EMA 0.9999, no gradient clipping (the
  config has none), on the batch cached after the input pipeline.

Rounds alternate (TF1, ours, TF1, ours, ...) so that background load affects both alike; the
medians' ratio is printed (goal >= 2x, never below 1x).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SHARED = ROOT.parent / "shared"
MODEL = SHARED / "fixtures" / "tf1_zoo" / "ssd_mobilenet_v2_coco_2018_03_29"
COCO = SHARED / "fixtures" / "coco" / "coco_tiny"
REFERENCE = SHARED / "tf1_reference"


def _batch_tfrecord(batch: Path, out: Path) -> None:
    """The in-memory batch as TFRecords for our input pipeline (PNG: lossless, same pixels)."""
    from bench_training import feature

    data = np.load(batch)
    with tf.io.TFRecordWriter(str(out)) as writer:
        for index, image in enumerate(data["images"]):
            count = int(data["num_boxes"][index])
            boxes = data["boxes"][index, :count]
            height, width = image.shape[:2]
            features = {
                "image/encoded": feature("bytes_list", [tf.io.encode_png(image).numpy()]),
                "image/format": feature("bytes_list", [b"png"]),
                "image/source_id": feature("bytes_list", [str(index + 1).encode()]),
                "image/height": feature("int64_list", [height]),
                "image/width": feature("int64_list", [width]),
                "image/object/bbox/ymin": feature("float_list", boxes[:, 0]),
                "image/object/bbox/xmin": feature("float_list", boxes[:, 1]),
                "image/object/bbox/ymax": feature("float_list", boxes[:, 2]),
                "image/object/bbox/xmax": feature("float_list", boxes[:, 3]),
                "image/object/class/label": feature(
                    "int64_list", data["classes"][index, :count].tolist()
                ),
                "image/object/is_crowd": feature("int64_list", [0] * count),
                "image/object/area": feature(
                    "float_list",
                    ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).tolist(),
                ),
            }
            example = tf.train.Example(features=tf.train.Features(feature=features))
            writer.write(example.SerializeToString())


def _tf1_round(python: str, zoo: Path, batch: Path, steps: int, out: Path) -> dict:
    command = [
        python, str(REFERENCE / "train_step.py"), "--pipeline-config", str(zoo / "pipeline.config"),
        "--batch", str(batch), "--ckpt", str(zoo / "model.ckpt"), "--steps", str(steps),
        "--frozen-steps", "0", "--noema-steps", "0", "--json", str(out),
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    from bench_training import build_trainer, images_per_second

    from pipeline.conversion.convert import convert
    from pipeline.tf1.synthetic_checkpoint import make_synthetic_zoo_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--tf1-python",
        default=os.environ.get("TF1_REFERENCE_VENV", str(Path.home() / ".cache/tf1-reference/venv"))
        + "/bin/python",
    )
    args = parser.parse_args(argv)
    for needed in (MODEL, COCO, REFERENCE, Path(args.tf1_python)):
        if not needed.exists():
            print(f"needs {needed} (../shared and `bash ../shared/tf1_reference/setup.sh`)")
            return 2

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        zoo = make_synthetic_zoo_dir(MODEL, scratch / "zoo", seed=0)
        convert(zoo, scratch / "converted", progress=False)
        batch = scratch / "batch.npz"
        subprocess.run(
            [args.tf1_python, str(REFERENCE / "make_batch.py"), str(COCO), "train2017",
             str(batch), "--batch", str(args.batch_size), "--size", "300"],
            check=True, capture_output=True,
        )  # fmt: skip
        _batch_tfrecord(batch, scratch / "batch.tfrecord")
        trainer = build_trainer(
            scratch / "converted",
            scratch / "batch.tfrecord",
            args.batch_size,
            freeze="none",
            cached=True,
            optimizer="rmsprop",
            overrides={
                "ema_decay": 0.9999,
                "gradient_clip_norm": None,
                "freeze.freeze_batch_norm": False,
                "augmentation.from_pipeline_config": False,
            },
        )
        images_per_second(trainer, 5, args.batch_size)  # trace and warm up
        ours, theirs, info = [], [], {}
        for round_index in range(args.rounds):
            tf1 = _tf1_round(
                args.tf1_python, zoo, batch, args.steps, scratch / f"tf1_{round_index}.json"
            )
            info = tf1["info"]
            theirs.append(tf1["results"][0]["images_per_s"])
            ours.append(images_per_second(trainer, args.steps, args.batch_size))
            print(f"round {round_index + 1}: TF1 {theirs[-1]:.2f} images/s, ours {ours[-1]:.2f}")
    ratio = statistics.median(ours) / statistics.median(theirs)
    result = {
        "model": MODEL.name,
        "batch_size": args.batch_size,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "tf1": {
            "images_per_second": theirs,
            "optimizer": info.get("optimizer"),
            "ema_decay": info.get("ema_decay"),
            "trainable_variables": info.get("trainable_variables"),
            "regularization_losses": info.get("regularization_losses"),
            "update_ops(BN)": info.get("update_ops(BN)"),
            "restored": info.get("restored"),
        },
        "ours": {"images_per_second": [round(v, 3) for v in ours]},
        "ratio_ours_vs_tf1": round(ratio, 3),
        "cpu_count": os.cpu_count(),
        "measured": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=2))
    print(
        f"fine-tune step: {ratio:.2f}x the TF1 OD API trainer's images/s (goal >= 2x, never < 1x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
