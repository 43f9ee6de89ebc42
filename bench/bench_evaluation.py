"""Benchmark: pipeline.evaluation (faster-coco-eval) against plain pycocotools, same detections.

Ground truth: coco_tiny val replicated `--scale` times under new image ids; detections: jittered
true boxes (some with a wrong class) plus random false positives, ~100 per image, like a detector
with a low score threshold. Each side does the full job from a results list (loadRes, evaluate,
accumulate, summarize); the 12 numbers must agree to 1e-9.

    .venv/bin/python bench/bench_evaluation.py [--scale 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
COCO_TINY = Path(os.environ.get("SHARED_FIXTURES", ROOT.parent / "shared" / "fixtures")) / (
    "coco/coco_tiny"
)

from pipeline.evaluation import METRIC_NAMES, check_detections, evaluate  # noqa: E402


def make_data(scale: int, seed: int = 0) -> tuple[dict, list[dict]]:
    source = json.loads((COCO_TINY / "annotations" / "instances_val2017.json").read_text())
    rng = np.random.default_rng(seed)
    categories = [c["id"] for c in source["categories"]]
    images, annotations, detections = [], [], []
    for r in range(scale):
        for image in source["images"]:
            images.append({**image, "id": image["id"] * 1000 + r})
            for _ in range(rng.integers(60, 100)):
                detections.append(
                    {
                        "image_id": image["id"] * 1000 + r,
                        "category_id": int(rng.choice(categories)),
                        "bbox": [
                            rng.uniform(0, image["width"] - 10),
                            rng.uniform(0, image["height"] - 10),
                            rng.uniform(2, 250),
                            rng.uniform(2, 250),
                        ],
                        "score": float(rng.uniform(0, 0.6)),
                    }
                )
        for ann in source["annotations"]:
            image_id = ann["image_id"] * 1000 + r
            annotations.append({**ann, "id": ann["id"] * 1000 + r, "image_id": image_id})
            x, y, w, h = ann["bbox"]
            for _ in range(rng.integers(0, 3)):
                category = ann["category_id"] if rng.random() > 0.1 else int(rng.choice(categories))
                detections.append(
                    {
                        "image_id": image_id,
                        "category_id": category,
                        "bbox": [
                            x + rng.normal(0, 0.1 * w),
                            y + rng.normal(0, 0.1 * h),
                            w * np.exp(rng.normal(0, 0.15)),
                            h * np.exp(rng.normal(0, 0.15)),
                        ],
                        "score": float(rng.uniform(0.3, 1.0)),
                    }
                )
    ground_truth = {
        "images": images,
        "annotations": annotations,
        "categories": source["categories"],
    }
    return ground_truth, detections


def pycocotools_reference(ground_truth: dict, detections: list[dict]) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        dt = gt.loadRes(detections)
        cocoeval = COCOeval(gt, dt, "bbox")
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    return [float(v) for v in cocoeval.stats[:12]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not COCO_TINY.is_dir():
        print(f"skipped: {COCO_TINY} not available")
        return 0
    ground_truth, detections = make_data(args.scale)
    ours_times, reference_times = [], []
    for _ in range(args.repeats):  # interleaved, so machine load hits both alike
        gt_copy, dt_copy = copy.deepcopy(ground_truth), copy.deepcopy(detections)
        start = time.perf_counter()
        reference = pycocotools_reference(gt_copy, dt_copy)
        reference_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        checked = check_detections(detections, ground_truth, "bench")  # validation included
        ours = evaluate(ground_truth, checked, "faster_coco_eval")
        ours_times.append(time.perf_counter() - start)
    worst = max(abs(ours.metrics[n] - r) for n, r in zip(METRIC_NAMES, reference, strict=True))
    assert worst <= 1e-9, worst
    ours_s, reference_s = min(ours_times), min(reference_times)
    print(
        f"COCO bbox evaluation, {len(ground_truth['images'])} images, "
        f"{len(ground_truth['annotations'])} boxes, {len(detections)} detections "
        f"(best of {args.repeats}, {os.cpu_count()} CPUs)"
    )
    print("| evaluator | seconds | speed-up |")
    print("|---|---:|---:|")
    print(f"| pycocotools | {reference_s:.2f} | 1.0x |")
    print(
        f"| pipeline.evaluation (faster_coco_eval) | {ours_s:.2f} | {reference_s / ours_s:.1f}x |"
    )
    print(
        f"12 numbers identical to pycocotools (max |diff| {worst:.1e}); AP {ours.metrics['AP']:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
