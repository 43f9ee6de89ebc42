"""`python -m pipeline build-tfrecords`: COCO JSON + images -> sharded TFRecords + stats."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "build-tfrecords"
HELP = "convert a COCO instances JSON and its images to sharded TFRecords (+ stats.json)"
DESCRIPTION = (
    "Write <out>/<prefix>-NNNNN-of-NNNNN.tfrecord (the keys Model Garden's TfExampleDecoder "
    "reads), stats.json, label_map.json, annotations.json (the ground truth to evaluate "
    "against: exactly the written images and boxes) and class_balance.{md,json}."
)


NULLS = ("", "none", "null")  # how DVC templating renders a YAML null: `${data.label_map}`


def optional_path(text: str) -> Path | None:
    return None if text.strip().lower() in NULLS else Path(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", type=Path, required=True, help="COCO instances JSON")
    parser.add_argument("--images", type=Path, required=True, help="directory of the images")
    parser.add_argument("--out", type=Path, required=True, help="output directory (replaced)")
    parser.add_argument("--shards", type=int, default=4, help="number of TFRecord files")
    parser.add_argument("--prefix", default="coco", help="shard file name prefix")
    parser.add_argument(
        "--on-bad-input",
        choices=("skip", "fail"),
        default="skip",
        help="skip and count bad records (default), or stop at the first one",
    )
    parser.add_argument(
        "--label-map",
        type=optional_path,
        default=None,
        help="remap categories to model class ids: label_map.pbtxt (OD API), or a JSON/YAML "
        "list of {id, name[, source_id]} or of names; default keeps the COCO ids",
    )
    parser.add_argument("--workers", type=int, default=None, help="threads (default: CPUs)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from pipeline.datasets import BuildConfig, build_tfrecords

    stats = build_tfrecords(
        BuildConfig(
            annotations=args.annotations,
            images=args.images,
            out=args.out,
            shards=args.shards,
            prefix=args.prefix,
            on_bad_input=args.on_bad_input,
            label_map=args.label_map,
            workers=args.workers,
            progress=not args.no_progress,
        )
    )
    skipped_images = stats["skipped_images"]
    skipped_annotations = stats["skipped_annotations"]
    print(
        f"wrote {stats['images']} images ({stats['empty_images']} empty), "
        f"{stats['annotations']} boxes ({stats['crowd_boxes']} crowd, "
        f"{stats['clipped_boxes']} clipped) in {stats['shards']} shards to {args.out}"
    )
    for title, counts in (("images", skipped_images), ("annotations", skipped_annotations)):
        if counts["total"]:
            reasons = ", ".join(f"{k} {v}" for k, v in counts.items() if v and k != "total")
            print(f"skipped {counts['total']} {title}: {reasons} (see {args.out}/stats.json)")
    if stats["annotations_not_in_label_map"]:
        print(f"left out {stats['annotations_not_in_label_map']} annotations of unmapped classes")
    return 0
