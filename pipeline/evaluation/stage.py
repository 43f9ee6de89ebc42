"""The evaluate-coco-map stage: ground truth + detections (a file, or a model run on TFRecords)
-> metrics.json, per_category_ap.json, plots/pr_curve.json (and detections.json for a model)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline.atomic import atomic_directory
from pipeline.datasets.label_map import LabelMapEntry, class_mismatch, load_label_map_json
from pipeline.errors import PipelineError
from pipeline.evaluation.coco_eval import (
    DEFAULT_BACKEND,
    CocoEvaluation,
    check_detections,
    check_ground_truth,
    evaluate,
    load_json,
)
from pipeline.evaluation.model_eval import Detector, detect, expected_image_count
from pipeline.evaluation.outputs import write_evaluation

log = logging.getLogger(__name__)


def evaluate_detections_file(
    annotations: Path, detections: Path, out: Path, backend: str = DEFAULT_BACKEND
) -> CocoEvaluation:
    """Score a COCO results file against a COCO annotations file."""
    ground_truth = check_ground_truth(load_json(annotations, "annotations"), str(annotations))
    results = check_detections(load_json(detections, "detections"), ground_truth, str(detections))
    evaluation = evaluate(ground_truth, results, backend)
    with atomic_directory(out) as staging:
        write_evaluation(staging, evaluation, f"COCO evaluation of {detections.name}")
    return evaluation


def _check_classes(
    model: Path | str,
    num_classes: int | None,
    entries: list[LabelMapEntry],
    label_map: Path,
    allow: bool,
) -> None:
    problem = class_mismatch(entries, num_classes) if num_classes is not None else None
    if problem is None:
        return
    message = f"{label_map}: {problem}, evaluating {model} ({num_classes} classes)"
    if not allow:
        raise PipelineError(
            f"{message}; evaluate on TFRecords built with the model's label map "
            "(build-tfrecords --label-map), or pass --allow-class-mismatch to score it anyway"
        )
    log.warning("%s; scoring it anyway (--allow-class-mismatch)", message)


def evaluate_model(
    model: Path | Detector,
    tfrecords: str,
    out: Path,
    *,
    annotations: Path | None = None,
    label_map: Path | None = None,
    backend: str = DEFAULT_BACKEND,
    batch_size: int = 1,
    max_images: int | None = None,
    progress: bool = True,
    allow_class_mismatch: bool = False,
) -> CocoEvaluation:
    """Run a model (converted dir / SavedModel / TF1 model, or a detector callable) on the
    TFRecords and score it. `annotations` and `label_map` default to the files build-tfrecords
    wrote beside the TFRecords. A model whose class count disagrees with the label map
    (`class_mismatch`) is refused before it runs, unless `allow_class_mismatch`."""
    records_dir = Path(tfrecords).parent
    annotations = annotations or records_dir / "annotations.json"
    label_map = label_map or records_dir / "label_map.json"
    ground_truth = check_ground_truth(load_json(annotations, "annotations"), str(annotations))
    entries = load_label_map_json(label_map)
    if isinstance(model, (str, Path)):
        # TensorFlow + model code: import late
        from pipeline.inference import load_detector, model_num_classes

        _check_classes(model, model_num_classes(model), entries, label_map, allow_class_mismatch)
        detector, title = load_detector(str(model)), f"COCO evaluation of {model}"
    else:
        detector, title = model, "COCO evaluation"

    run = detect(
        detector,
        tfrecords,
        entries,
        batch_size=batch_size,
        max_images=max_images,
        progress=progress,
        expected_images=expected_image_count(tfrecords),
    )
    known = {image["id"] for image in ground_truth["images"]}
    unknown = [image_id for image_id in run.image_ids if image_id not in known]
    if unknown:
        raise PipelineError(
            f"{tfrecords}: image/source_id {unknown[0]} (and {len(unknown) - 1} more) is not an "
            f"image of {annotations}; pass the annotations.json written with these TFRecords"
        )
    if len(set(run.image_ids)) != len(run.image_ids):
        raise PipelineError(
            f"{tfrecords}: some image/source_id values repeat; does the glob match two splits?"
        )
    if len(run.image_ids) < len(known):
        log.warning(
            "evaluating %d of the %d annotated images (those the detector saw)",
            len(run.image_ids),
            len(known),
        )
    results = check_detections(run.results, ground_truth, f"{model} detections")
    evaluation = evaluate(ground_truth, results, backend, image_ids=run.image_ids)
    with atomic_directory(out) as staging:
        write_evaluation(staging, evaluation, title)
        with open(staging / "detections.json", "w", encoding="utf-8") as handle:
            handle.write(json.dumps(run.results, separators=(",", ":")))
    return evaluation
