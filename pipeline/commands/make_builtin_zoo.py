"""`python -m pipeline make-builtin-zoo`: rebuild the built-in TF1 zoo model tarball."""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

NAME = "make-builtin-zoo"
HELP = "rebuild the built-in TF1-format zoo model (pre-trained on plain shapes), offline"
DESCRIPTION = (
    "Pre-train the small SSD MobileNet v2 of builtin://ssd_mobilenet_v2_tiny_builtin on the plain "
    "shapes domain with the project's own stages (make-shapes data, build-tfrecords, convert, "
    "fine-tune with every layer trained), export the weights back to TF1 variable names, write a "
    "TF1 zoo directory (name-based checkpoint, meta and frozen inference graphs, pipeline.config), "
    "check parity and COCO AP, and pack <out>/<name>.tar.gz deterministically. About 10-15 "
    "minutes on 2 CPU cores with the defaults. See docs/builtin_model.md."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.builtin.zoo_model import PretrainSettings

    defaults = PretrainSettings()
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for the tarball (pipeline/builtin/assets)"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="keep intermediate outputs here (default: temp)"
    )
    parser.add_argument("--steps", type=int, default=defaults.steps, help="pre-training steps")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--train-images", type=int, default=defaults.train_images)
    parser.add_argument("--val-images", type=int, default=defaults.val_images)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="training seed")
    parser.add_argument(
        "--pin",
        type=Path,
        default=None,
        help="write the tarball's sha256 into this conf/zoo/*.yaml (its `sha256:` line)",
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.builtin.zoo_model import (
        BuiltinZooSettings,
        PretrainSettings,
        build_builtin_zoo,
        pin_sha256,
    )

    pretrain = dataclasses.replace(
        PretrainSettings(),
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        train_images=args.train_images,
        val_images=args.val_images,
        seed=args.seed,
        warmup_steps=min(PretrainSettings().warmup_steps, max(args.steps // 10, 1)),
    )
    settings = BuiltinZooSettings(pretrain=pretrain)
    if args.work is not None:
        result = build_builtin_zoo(args.out, args.work, settings)
    else:
        with tempfile.TemporaryDirectory(prefix="builtin-zoo-") as work:
            result = build_builtin_zoo(args.out, work, settings)
    report = result.report
    if args.pin is not None:
        pin_sha256(args.pin, result.sha256)
    evaluation = report["evaluation"]
    print(
        json.dumps(
            {
                "pretrain_seconds": report["pretrain"]["wall_seconds"],
                "parity_passed": report["parity"]["passed"],
                "ap_plain_val": evaluation["plain_val"]["metrics"]["AP"],
                "ap_textured_val": evaluation["textured_val"]["metrics"]["AP"],
            }
        )
    )
    print(f"wrote {result.tarball} ({result.size_bytes} bytes) sha256 {result.sha256}")
    if args.pin is not None:
        print(f"pinned it in {args.pin}")
    return 0
