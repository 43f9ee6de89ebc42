"""The COCO detection metrics, computed by pycocotools or by faster-coco-eval.

faster-coco-eval (C++ evaluateImg/accumulate) is the default because it is several times faster;
tests/test_evaluation.py proves its 12 numbers, per-category AP and precision arrays equal
pycocotools' on the same detections. `backend="pycocotools"` switches back to the reference.

Both libraries need help at the edges, handled here: an empty results list (pycocotools'
`loadRes([])` raises IndexError), detections for images or categories the ground truth does not
have (pycocotools asserts, or silently ignores unknown categories), and results dicts that the
libraries mutate in place (fresh copies are passed).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

BACKENDS = ("faster_coco_eval", "pycocotools")
DEFAULT_BACKEND = "faster_coco_eval"
# COCOeval.stats order (pycocotools' summarize; faster-coco-eval appends AR50/AR75 after these).
METRIC_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)


@dataclass
class CocoEvaluation:
    metrics: dict[str, float]  # the 12 COCO numbers (-1 where undefined, as COCOeval reports)
    per_category_ap: dict[str, float]  # category name -> AP@[.50:.95] (-1: no ground truth)
    precision: np.ndarray = field(repr=False)  # COCOeval.eval["precision"] [T, R, K, A, M]
    recall_thresholds: np.ndarray = field(repr=False)
    num_images: int = 0
    num_detections: int = 0

    def pr_curve(self) -> list[dict[str, float]]:
        """Precision at each of COCO's 101 recall thresholds, averaged over the categories that
        have ground truth (area all, 100 detections): at IoU .50, .75 and averaged over
        .50:.95 (the curve whose area is AP)."""
        rows = []
        precision = self.precision[:, :, :, 0, -1]  # [T, R, K]
        for r, recall in enumerate(self.recall_thresholds):
            row = {"recall": round(float(recall), 4)}
            for key, values in (
                ("precision_iou50", precision[0, r]),
                ("precision_iou75", precision[5, r]),
                ("precision_iou50_95", precision[:, r]),
            ):
                defined = values[values > -1]
                row[key] = float(defined.mean()) if defined.size else -1.0
            rows.append(row)
        if all(row["precision_iou50"] == -1.0 for row in rows):
            return []
        return rows


def load_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise PipelineError(f"{path}: {what} not found")
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except (ValueError, UnicodeDecodeError) as error:
        raise PipelineError(f"{path}: {what} is not valid JSON ({error})") from None


def check_ground_truth(data: Any, where: str) -> dict[str, Any]:
    """Return a COCO ground-truth dict the evaluators accept, or raise naming the bad field.

    `area` and `iscrowd`, which both evaluators need, default to the box area and 0 (logged)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("images"), list):
        raise PipelineError(f"{where}: `images` list missing; expected COCO instances JSON")
    if not isinstance(data.get("categories"), list) or not data["categories"]:
        raise PipelineError(f"{where}: `categories` list missing or empty")
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise PipelineError(f"{where}: `annotations` must be a list")
    filled = 0
    for index, ann in enumerate(annotations):
        for key in ("id", "image_id", "category_id", "bbox"):
            if key not in ann:
                raise PipelineError(f"{where}: annotations[#{index}].{key} is missing")
        if "area" not in ann or "iscrowd" not in ann:
            filled += 1
            ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
            ann.setdefault("iscrowd", 0)
    if filled:
        log.warning("%s: %d annotations lacked area/iscrowd; used box area and 0", where, filled)
    return dict(data)


def check_detections(
    detections: Any, ground_truth: Mapping[str, Any], where: str
) -> list[dict[str, Any]]:
    """Validate a COCO results list against the ground truth; return fresh minimal dicts."""
    if not isinstance(detections, list):
        raise PipelineError(f"{where}: expected a COCO results list [{{image_id, ...}}, ...]")
    image_ids = {image["id"] for image in ground_truth["images"]}
    category_ids = {category["id"] for category in ground_truth["categories"]}
    checked = []
    for index, det in enumerate(detections):
        try:
            image_id, category_id = det["image_id"], det["category_id"]
            x, y, w, h = (float(v) for v in det["bbox"])
            score = float(det["score"])
        except (KeyError, TypeError, ValueError):
            raise PipelineError(
                f"{where}: detections[{index}]: needs image_id, category_id, bbox [x, y, w, h] "
                f"and score; got {det!r}"
            ) from None
        if image_id not in image_ids:
            raise PipelineError(
                f"{where}: detections[{index}].image_id: {image_id!r} is not an image of the "
                "annotations; evaluate against the annotations the detections were made for"
            )
        if category_id not in category_ids:
            raise PipelineError(
                f"{where}: detections[{index}].category_id: {category_id!r} is not a category of "
                "the annotations; map model class ids to the dataset's category ids"
            )
        if not all(map(math.isfinite, (x, y, w, h, score))):
            raise PipelineError(f"{where}: detections[{index}]: bbox/score must be finite")
        checked.append(
            {"image_id": image_id, "category_id": category_id, "bbox": [x, y, w, h], "score": score}
        )
    return checked


def evaluate(
    ground_truth: Mapping[str, Any],
    detections: Sequence[Mapping[str, Any]],
    backend: str = DEFAULT_BACKEND,
    image_ids: Iterable[int] | None = None,
) -> CocoEvaluation:
    """COCO bbox evaluation of `detections` (COCO results list, already checked) against
    `ground_truth` (a COCO dict), optionally on a subset of `image_ids`."""
    if backend not in BACKENDS:
        raise PipelineError(f"eval.backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    # Both libraries write into the dicts they are given (ids, areas, segmentation).
    results = [dict(d, bbox=list(d["bbox"])) for d in detections]
    gt_dict = {
        **ground_truth,
        "annotations": [dict(a) for a in ground_truth.get("annotations", [])],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and tables
        if backend == "pycocotools":
            cocoeval = _pycocotools(gt_dict, results)
        else:
            cocoeval = _faster_coco_eval(gt_dict, results)
        if image_ids is not None:
            cocoeval.params.imgIds = sorted(set(image_ids))
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    stats = [float(value) for value in cocoeval.stats[: len(METRIC_NAMES)]]
    metrics = dict(zip(METRIC_NAMES, stats, strict=True))

    precision = np.asarray(cocoeval.eval["precision"])
    names = {c["id"]: c["name"] for c in ground_truth["categories"]}
    per_category = {}
    for k, category_id in enumerate(cocoeval.params.catIds):
        values = precision[:, :, k, 0, -1]
        defined = values[values > -1]
        key = names[category_id]
        if key in per_category:  # duplicate names in user datasets
            key = f"{key} ({category_id})"
        per_category[key] = float(defined.mean()) if defined.size else -1.0
    return CocoEvaluation(
        metrics=metrics,
        per_category_ap=per_category,
        precision=precision,
        recall_thresholds=np.asarray(cocoeval.params.recThrs),
        num_images=len(cocoeval.params.imgIds),
        num_detections=len(results),
    )


def _pycocotools(gt_dict: dict[str, Any], results: list[dict[str, Any]]) -> Any:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = gt_dict
    gt.createIndex()
    if results:
        dt = gt.loadRes(results)
    else:  # loadRes([]) indexes results[0]; an empty result set is still a valid evaluation
        dt = COCO()
        dt.dataset = {
            "images": list(gt_dict["images"]),
            "categories": gt_dict["categories"],
            "annotations": [],
        }
        dt.createIndex()
    return COCOeval(gt, dt, "bbox")


def _faster_coco_eval(gt_dict: dict[str, Any], results: list[dict[str, Any]]) -> Any:
    from faster_coco_eval import COCO, COCOeval_faster

    gt = COCO(gt_dict, print_function=log.debug)
    dt = gt.loadRes(results)
    return COCOeval_faster(gt, dt, "bbox", print_function=log.debug)
