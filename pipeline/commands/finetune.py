"""`python -m pipeline fine-tune`: fine-tune a converted model on TFRecords (Model Garden)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.params import DEFAULT_PARAMS, load_params

NAME = "fine-tune"
HELP = "fine-tune a converted model on TFRecords with Model Garden's trainer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params.yaml (train)")
    parser.add_argument("--converted", type=Path, required=True, help="`pipeline convert` output")
    parser.add_argument("--train-tfrecords", required=True, help="glob of training TFRecords")
    parser.add_argument("--val-tfrecords", default=None, help="glob of validation TFRecords")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--restart", action="store_true", help="discard checkpoints in --out instead of resuming"
    )
    parser.add_argument(
        "--restart-if-changed",
        action="store_true",
        help="when --out holds a checkpoint from other settings or inputs, start over instead of "
        "failing (the DVC stage uses this: its checkpoint persists so that an interrupted "
        "`dvc repro` resumes)",
    )
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")


def run(args: argparse.Namespace) -> int:
    from pipeline.training.finetune import finetune

    train = load_params(args.params, "train")
    result = finetune(
        train,
        args.converted,
        args.train_tfrecords,
        args.out,
        args.val_tfrecords,
        restart=args.restart,
        restart_if_changed=args.restart_if_changed,
        source=str(args.params),
        export=not args.no_export,
    )
    summary = result.summary
    final = summary.get("final", {}).get("train", {})
    print(
        f"fine-tuned {summary['steps']} steps ({summary['freeze']['name']} frozen, "
        f"{summary['freeze']['trained_variables']} variables trained) at "
        f"{summary['images_per_second'] or 0:.1f} images/s -> {result.out_dir}"
    )
    print(json.dumps({k: round(v, 5) for k, v in final.items() if k != "num_matches"}))
    return 0
