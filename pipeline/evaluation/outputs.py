"""Write an evaluation as DVC metrics and plots.

<out>/metrics.json           flat: the 12 COCO numbers + num_images, num_detections
<out>/per_category_ap.json   flat: category name -> AP@[.50:.95] (-1: no ground truth)
<out>/plots/pr_curve.json    rows {recall, precision_iou50, precision_iou75, precision_iou50_95}
                             for `dvc plots` (template `linear`, x: recall, y: the three series)
<out>/summary.md             the table printed by the command
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_file, write_json
from pipeline.evaluation.coco_eval import METRIC_NAMES, CocoEvaluation

_LABELS = {
    "AP": "AP @[IoU=.50:.95]",
    "AP50": "AP @[IoU=.50]",
    "AP75": "AP @[IoU=.75]",
    "APs": "AP small",
    "APm": "AP medium",
    "APl": "AP large",
    "AR1": "AR maxDets=1",
    "AR10": "AR maxDets=10",
    "AR100": "AR maxDets=100",
    "ARs": "AR small",
    "ARm": "AR medium",
    "ARl": "AR large",
}


def metrics_dict(evaluation: CocoEvaluation) -> dict[str, Any]:
    return {
        **{name: evaluation.metrics[name] for name in METRIC_NAMES},
        "num_images": evaluation.num_images,
        "num_detections": evaluation.num_detections,
    }


def summary_markdown(evaluation: CocoEvaluation, title: str) -> str:
    lines = [f"# {title}", "", "| metric | value |", "|---|---:|"]
    lines += [f"| {_LABELS[n]} ({n}) | {evaluation.metrics[n]:.4f} |" for n in METRIC_NAMES]
    lines += [
        "",
        f"{evaluation.num_images} images, {evaluation.num_detections} detections.",
    ]
    return "\n".join(lines) + "\n"


def write_evaluation(out: Path, evaluation: CocoEvaluation, title: str) -> None:
    write_json(out / "metrics.json", metrics_dict(evaluation))
    write_json(
        out / "per_category_ap.json",
        dict(evaluation.per_category_ap),
    )
    write_json(out / "plots" / "pr_curve.json", evaluation.pr_curve())
    with atomic_file(out / "summary.md") as handle:
        handle.write(summary_markdown(evaluation, title))
