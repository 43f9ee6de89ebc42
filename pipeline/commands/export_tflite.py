"""`python -m pipeline export-tflite`: a converted or fine-tuned SSD -> a TFLite model of its raw
outputs."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "export-tflite"
HELP = (
    "export a converted SSD's raw outputs to TFLite (float, or uint8 from a quantized model's "
    "ranges) and compare its detections with the TF model's"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        "--converted",
        dest="model",
        type=Path,
        required=True,
        help="converted model directory, or a fine-tuned model's saved_model/ (e.g. "
        "data/finetuned/saved_model after quantization-aware fine-tuning)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the .tflite file to write")
    parser.add_argument(
        "--kind",
        choices=("float", "uint8"),
        default="float",
        help="uint8: fully quantized from the learned fake-quant ranges (quantized models)",
    )
    parser.add_argument(
        "--compare-images",
        type=Path,
        default=None,
        help="folder of images: compare the TFLite model's detections with the TF model's "
        "(written next to --out as <name>.comparison.json)",
    )
    parser.add_argument("--max-compare-images", type=int, default=5)


def run(args: argparse.Namespace) -> int:
    from pipeline.atomic import write_json
    from pipeline.inference.tflite import compare_tflite, export_tflite

    out = export_tflite(args.model, args.out, args.kind)
    print(f"wrote {out} ({args.kind}, {out.stat().st_size} bytes)")
    if args.compare_images is not None:
        comparison = compare_tflite(out, args.model, args.compare_images, args.max_compare_images)
        write_json(out.with_suffix(".comparison.json"), comparison)
        for key in ("box_encodings", "class_logits"):
            raw = comparison[key]
            print(
                f"{key}: max |TF-TFLite| {raw['max_abs_diff']:.3g}, mean "
                f"{raw['mean_abs_diff']:.3g}, {raw['num_differing']}/{raw['num_elements']} "
                "elements beyond the conversion tolerance"
            )
        for row in comparison["detections"]:
            print(
                f"detections (IoU >= {row['iou_threshold']}, |score diff| <= "
                f"{row['score_tolerance']}): {row['matched']}/{row['checked']} of the TF model's "
                "top 50"
            )
    return 0
