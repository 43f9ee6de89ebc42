"""`python -m pipeline convert`: a TF1 SSD or Faster R-CNN model (any form) -> Model Garden TF2
model + report."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.modeling.spec import BOX_CLIPPING_CHOICES
from pipeline.tf1.weights import WEIGHTS_CHOICES

NAME = "convert"
HELP = (
    "convert a TF1 SSD MobileNet or Faster R-CNN (Inception v2, ResNet50/101) checkpoint to a "
    "Model Garden model"
)
DESCRIPTION = (
    "Read a TF1 Object Detection model directory (a checkpoint, frozen graph or SavedModel + "
    "its pipeline config), build the equivalent Model Garden RetinaNetModel (SSD) or "
    "MaskRCNNModel without masks (Faster R-CNN), map every TF1 variable onto it and write "
    "<out>/checkpoint/, model_spec.json, pipeline.config and conversion_report.{json,md}. "
    "With --verify-images, run the TF1 graph and the converted model on those images and record "
    "the parity figures (fails if they disagree; a directory with no inference graph, such as a "
    "training dir, gets a note instead)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tf1-dir",
        type=Path,
        required=True,
        help="the TF1 model directory: an export or zoo tarball, a training dir (model.ckpt-N), "
        "frozen_inference_graph.pb or saved_model/, with its pipeline config",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint prefix to convert, e.g. model.ckpt-5000 (default: the newest, from the "
        "`checkpoint` file, else the highest model.ckpt-N)",
    )
    parser.add_argument(
        "--pipeline-config",
        type=Path,
        default=None,
        help="the model's pipeline config (default: <tf1-dir>/pipeline.config, else the "
        "directory's only *.config)",
    )
    parser.add_argument(
        "--weights",
        choices=WEIGHTS_CHOICES,
        default="auto",
        help="checkpoint values to convert: the moving averages (ExponentialMovingAverage "
        "shadows) or the raw weights; auto (default) does what the TF1 exporter does, following "
        "eval_config.use_moving_averages",
    )
    parser.add_argument("--out", type=Path, required=True, help="converted model directory")
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="class count of the TF2 model (default: the checkpoint's); a different count "
        "leaves the class predictors freshly initialised",
    )
    parser.add_argument(
        "--box-clipping",
        choices=("auto", *BOX_CLIPPING_CHOICES),
        default=None,
        help="when TF1's NMS clips boxes to the image: before NMS (OD API of TF <= 1.8, the "
        "2018_01..07_03 zoo graphs) or after it (TF 1.9-1.15 exports); default auto: read from "
        "the model's graph (frozen graph, SavedModel or .meta), else TF 1.9+ behaviour",
    )
    parser.add_argument(
        "--verify-images", type=Path, default=None, help="folder of JPEG/PNG images for parity"
    )
    parser.add_argument(
        "--max-verify-images", type=int, default=None, help="use at most this many images"
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=None,
        help="read num_classes / verify_images / verify_max_images from this params.yaml's "
        "`model` section (command-line options win)",
    )
    parser.add_argument(
        "--metrics",
        type=Path,
        default=None,
        help="also write the report's headline numbers (coverage, parity) as a flat JSON file, "
        "for DVC metrics",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _settings(args: argparse.Namespace) -> tuple[int | None, Path | None, int | None, str]:
    num_classes, verify_images, max_images, box_clipping = (
        args.num_classes,
        args.verify_images,
        args.max_verify_images,
        args.box_clipping,
    )
    if args.params is not None:
        from pipeline.params import load_params

        model = load_params(args.params, "model")
        if num_classes is None and model.get("num_classes") is not None:
            num_classes = int(model.num_classes)
        if verify_images is None and model.get("verify_images"):
            verify_images = Path(model.verify_images)
        if max_images is None and model.get("verify_max_images") is not None:
            max_images = int(model.verify_max_images)
        if box_clipping is None and model.get("box_clipping") is not None:
            box_clipping = str(model.box_clipping)
    return num_classes, verify_images, max_images, box_clipping or "auto"


def _pruned_note(report: dict) -> str:
    """The summary's clause for layers a frozen graph pruned (TF1 builds them; its detections
    never read them)."""
    layers = report.get("pruned_layers") or []
    if not layers:
        return ""
    names = ", ".join(layer.rsplit("/", 1)[-1] for layer in layers)
    zeroed = len(report["tf2"]["zeroed_pruned_from_graph"])
    return (
        f"; {zeroed} zeroed: {names}, which TF1 builds but its detections never read, "
        f"so the {report['source']['form'].replace('_', ' ')} does not hold them"
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.conversion.convert import convert

    num_classes, verify_images, max_images, box_clipping = _settings(args)
    report = convert(
        args.tf1_dir,
        args.out,
        num_classes=num_classes,
        verify_images=verify_images,
        max_verify_images=max_images,
        progress=not args.no_progress,
        checkpoint=args.checkpoint,
        pipeline_config=args.pipeline_config,
        weights=args.weights,
        box_clipping=box_clipping,
    )
    if args.metrics is not None:
        from pipeline.atomic import write_json
        from pipeline.conversion.report import flat_metrics

        write_json(args.metrics, flat_metrics(report))
    tf1, tf2, weights = report["tf1"], report["tf2"], report["weights"]
    print(
        f"read {report['source']['form'].replace('_', ' ')} {report['source']['weights_file']}: "
        f"{weights['weights'].replace('_', ' ')} weights ({weights['reason']})"
    )
    print(
        f"wrote {args.out}: {report['source']['architecture']}, "
        f"{tf1['mapped']}/{tf1['total']} TF1 variables mapped "
        f"({len(tf1['ignored_bookkeeping'])} bookkeeping ignored), "
        f"{tf2['initialised_from_tf1']}/{tf2['total']} TF2 variables initialised"
        + _implied_note(len(tf2["initialised_implied_constants"]))
        + f", {len(report['fresh_layers'])} fresh layers"
        + _pruned_note(report)
    )
    parity = report.get("parity")
    if parity:
        print(f"parity with the TF1 graph: {'passed' if parity.get('passed') else 'FAILED'}")
    elif report.get("parity_note"):
        print(f"parity with the TF1 graph: {report['parity_note']}")
    timings = report.get("timings_s") or {}
    print("seconds: " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    return 0


def _implied_note(count: int) -> str:
    """TF2 variables set to what TF1 means by their absence (a BatchNorm without scale has
    gamma 1; an exported quantized checkpoint has no moving-average debias state: 0)."""
    return f" (+{count} to TF1's values for variables the file lacks)" if count else ""
