"""COCO mAP: the 12 COCO numbers, per-category AP and PR-curve data for DVC.

`evaluate(ground_truth, detections, backend)` scores a COCO results list (faster-coco-eval by
default, pycocotools on request); `evaluate_detections_file` and `evaluate_model` are the
`python -m pipeline evaluate` paths and write metrics.json, per_category_ap.json and
plots/pr_curve.json.
"""

from __future__ import annotations

from pipeline.evaluation.coco_eval import (
    BACKENDS,
    DEFAULT_BACKEND,
    METRIC_NAMES,
    CocoEvaluation,
    check_detections,
    check_ground_truth,
    evaluate,
)
from pipeline.evaluation.stage import evaluate_detections_file, evaluate_model

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "METRIC_NAMES",
    "CocoEvaluation",
    "check_detections",
    "check_ground_truth",
    "evaluate",
    "evaluate_detections_file",
    "evaluate_model",
]
