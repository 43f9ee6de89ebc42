"""`python -m pipeline evaluate`: COCO mAP of a detections file, or of a model on TFRecords."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "evaluate"
HELP = "COCO mAP (12 numbers, per-category AP, PR curve) of detections or of a model"
DESCRIPTION = (
    "Either `--annotations A --detections results.json`, or `--model DIR --tfrecords GLOB` "
    "(annotations and label map default to annotations.json and label_map.json beside the "
    "TFRecords). Writes <out>/metrics.json, per_category_ap.json, plots/pr_curve.json, "
    "summary.md (+ detections.json for a model)."
)


def optional_int(text: str) -> int | None:
    """An int, or None for the way DVC templating renders a YAML null (`${eval.max_images}`)."""
    return None if text.strip().lower() in ("", "none", "null") else int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--detections", type=Path, help="COCO results JSON to score")
    source.add_argument(
        "--model",
        type=Path,
        help="converted model dir, SavedModel dir, or the original TF1 model: export/zoo dir "
        "(model.ckpt.meta + model.ckpt, or frozen_inference_graph.pb), frozen graph .pb file, "
        "TF1 SavedModel dir",
    )
    parser.add_argument("--annotations", type=Path, help="COCO ground-truth JSON")
    parser.add_argument("--tfrecords", help="glob of eval TFRecords (with --model)")
    parser.add_argument("--label-map", type=Path, help="label_map.json (with --model)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (replaced)")
    parser.add_argument(
        "--backend",
        choices=("faster_coco_eval", "pycocotools"),
        default="faster_coco_eval",
        help="COCOeval implementation (same numbers; faster_coco_eval is faster)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="images per detector call")
    parser.add_argument(
        "--max-images", type=optional_int, default=None, help="evaluate the first N (None: all)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--allow-class-mismatch",
        action="store_true",
        help="score a model whose class count disagrees with the label map (an error otherwise)",
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.errors import PipelineError
    from pipeline.evaluation import evaluate_detections_file, evaluate_model
    from pipeline.evaluation.outputs import summary_markdown

    if args.detections is not None:
        if args.annotations is None:
            raise PipelineError("evaluate: --annotations is required with --detections")
        evaluation = evaluate_detections_file(
            args.annotations, args.detections, args.out, args.backend
        )
    else:
        if not args.tfrecords:
            raise PipelineError("evaluate: --tfrecords is required with --model")
        evaluation = evaluate_model(
            args.model,
            args.tfrecords,
            args.out,
            annotations=args.annotations,
            label_map=args.label_map,
            backend=args.backend,
            batch_size=args.batch_size,
            max_images=args.max_images,
            progress=not args.no_progress,
            allow_class_mismatch=args.allow_class_mismatch,
        )
    print(summary_markdown(evaluation, f"COCO mAP ({args.backend})"), end="")
    print(f"wrote {args.out}/metrics.json")
    return 0
