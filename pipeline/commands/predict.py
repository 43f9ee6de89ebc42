"""`python -m pipeline predict`: run a converted model or SavedModel on images -> COCO results."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.atomic import atomic_file

NAME = "predict"
HELP = "detect objects in a folder of images; write COCO-format results json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", type=Path, required=True, help="converted model directory or SavedModel"
    )
    parser.add_argument("--images", type=Path, required=True, help="folder of JPEG/PNG images")
    parser.add_argument("--out", type=Path, required=True, help="results json to write")
    parser.add_argument(
        "--label-map",
        type=Path,
        default=None,
        help="label_map.json from build-tfrecords: map model class ids to dataset category ids",
    )
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--min-score", type=float, default=0.0, help="drop lower-scoring boxes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pipeline.inference.detector import load_detector
    from pipeline.inference.predict import predict_images, read_label_map

    label_map = read_label_map(args.label_map) if args.label_map else None
    detector = load_detector(args.model)
    results = []
    images = 0
    for _, image_results in predict_images(
        detector,
        args.images,
        label_map=label_map,
        max_images=args.max_images,
        min_score=args.min_score,
        progress=not args.no_progress,
    ):
        images += 1
        results.extend(image_results)
    with atomic_file(args.out) as handle:
        json.dump(results, handle)
    print(f"wrote {args.out}: {len(results)} detections on {images} images")
    return 0
