"""COCO evaluation: faster-coco-eval gives pycocotools' numbers; GT as detections scores 1.0."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.evaluation import (
    BACKENDS,
    METRIC_NAMES,
    check_detections,
    check_ground_truth,
    evaluate,
)

AP_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@pytest.fixture(scope="module")
def ground_truth(coco_tiny: Path) -> dict[str, Any]:
    path = coco_tiny / "annotations" / "instances_val2017.json"
    return check_ground_truth(json.loads(path.read_text()), str(path))


def _gt_as_detections(ground_truth: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 1.0,
        }
        for a in ground_truth["annotations"]
        if not a["iscrowd"]
    ]


def _perturbed(ground_truth: dict[str, Any], seed: int, quantise: bool) -> list[dict[str, Any]]:
    """Realistic detector output: jittered true boxes (some with the wrong class, some missing,
    some duplicated) plus up to ~130 random false positives per image (exercising the maxDets
    cut), scores optionally quantised to produce ties."""
    rng = np.random.default_rng(seed)
    categories = [c["id"] for c in ground_truth["categories"]]
    detections = []
    for ann in ground_truth["annotations"]:
        x, y, w, h = ann["bbox"]
        for _ in range(rng.integers(0, 3)):
            category = ann["category_id"] if rng.random() > 0.1 else int(rng.choice(categories))
            detections.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": category,
                    "bbox": [
                        x + rng.normal(0, 0.15 * w),
                        y + rng.normal(0, 0.15 * h),
                        w * np.exp(rng.normal(0, 0.2)),
                        h * np.exp(rng.normal(0, 0.2)),
                    ],
                    "score": float(rng.uniform(0.3, 1.0)),
                }
            )
    for image in ground_truth["images"]:
        for _ in range(rng.integers(0, 130)):
            detections.append(
                {
                    "image_id": image["id"],
                    "category_id": int(rng.choice(categories)),
                    "bbox": [
                        rng.uniform(0, image["width"] - 10),
                        rng.uniform(0, image["height"] - 10),
                        rng.uniform(1, 200),
                        rng.uniform(1, 200),
                    ],
                    "score": float(rng.uniform(0, 0.6)),
                }
            )
    if quantise:
        for detection in detections:
            detection["score"] = round(detection["score"], 1)
    return detections


@pytest.mark.parametrize("backend", BACKENDS)
def test_ground_truth_as_detections_scores_one(ground_truth: dict[str, Any], backend: str) -> None:
    detections = check_detections(_gt_as_detections(ground_truth), ground_truth, "gt")
    result = evaluate(ground_truth, detections, backend)
    for name in (*AP_NAMES, "AR100", "ARs", "ARm", "ARl"):
        value = result.metrics[name]
        assert value == -1 or value == pytest.approx(1.0, abs=1e-12), name
    assert result.metrics["AP"] == pytest.approx(1.0, abs=1e-12)
    assert len(result.per_category_ap) == 80
    assert all(ap == pytest.approx(1.0, abs=1e-12) for ap in result.per_category_ap.values())
    curve = result.pr_curve()
    assert len(curve) == 101
    assert all(row["precision_iou50_95"] == pytest.approx(1.0) for row in curve)


@pytest.mark.parametrize(("seed", "quantise"), [(0, False), (1, False), (2, True)])
def test_faster_coco_eval_equals_pycocotools(
    ground_truth: dict[str, Any], seed: int, quantise: bool
) -> None:
    detections = check_detections(_perturbed(ground_truth, seed, quantise), ground_truth, "dets")
    reference = evaluate(ground_truth, detections, "pycocotools")
    fast = evaluate(ground_truth, detections, "faster_coco_eval")
    assert 0.02 < reference.metrics["AP"] < 0.9  # a realistic, non-trivial score
    for name in METRIC_NAMES:
        assert fast.metrics[name] == pytest.approx(reference.metrics[name], abs=1e-9), name
    assert fast.per_category_ap.keys() == reference.per_category_ap.keys()
    for name, ap in reference.per_category_ap.items():
        assert fast.per_category_ap[name] == pytest.approx(ap, abs=1e-9), name
    np.testing.assert_allclose(fast.precision, reference.precision, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_detections_score_zero_not_crash(ground_truth: dict[str, Any], backend: str) -> None:
    result = evaluate(ground_truth, [], backend)
    assert all(result.metrics[name] == 0.0 for name in METRIC_NAMES)
    assert result.pr_curve()[0]["precision_iou50"] == 0.0
    negatives_only = {**ground_truth, "annotations": []}
    result = evaluate(negatives_only, [], backend)
    assert all(result.metrics[name] == -1.0 for name in METRIC_NAMES)
    assert result.pr_curve() == []


def test_detections_must_match_the_ground_truth(ground_truth: dict[str, Any]) -> None:
    detection = {
        "image_id": ground_truth["images"][0]["id"],
        "category_id": 1,
        "bbox": [1, 2, 3, 4],
        "score": 0.5,
    }
    with pytest.raises(PipelineError, match=r"detections\[0\].image_id: 123"):
        check_detections([dict(detection, image_id=123)], ground_truth, "r.json")
    with pytest.raises(PipelineError, match=r"detections\[1\].category_id: 12"):
        check_detections([detection, dict(detection, category_id=12)], ground_truth, "r.json")
    with pytest.raises(PipelineError, match="needs image_id, category_id, bbox"):
        check_detections([{"image_id": 1}], ground_truth, "r.json")


def test_cli_writes_flat_metrics_and_dvc_plot_data(
    ground_truth: dict[str, Any], coco_tiny: Path, tmp_path: Path
) -> None:
    detections = tmp_path / "results.json"
    detections.write_text(json.dumps(_perturbed(ground_truth, 3, False)))
    annotations = coco_tiny / "annotations" / "instances_val2017.json"
    out = tmp_path / "eval"
    args = ["evaluate", "--annotations", str(annotations), "--detections", str(detections)]
    assert main([*args, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics)[:12] == list(METRIC_NAMES)
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    assert metrics["num_images"] == 80
    per_category = json.loads((out / "per_category_ap.json").read_text())
    assert len(per_category) == 80 and "person" in per_category
    rows = json.loads((out / "plots" / "pr_curve.json").read_text())
    assert len(rows) == 101
    assert set(rows[0]) == {"recall", "precision_iou50", "precision_iou75", "precision_iou50_95"}
    # The pycocotools switch gives the same numbers.
    assert main([*args, "--out", str(tmp_path / "ref"), "--backend", "pycocotools"]) == 0
    reference = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    for name in METRIC_NAMES:
        assert metrics[name] == pytest.approx(reference[name], abs=1e-9)


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_dvc_renders_the_pr_curve(tmp_path: Path, ground_truth: dict[str, Any]) -> None:
    from pipeline.evaluation.outputs import write_evaluation

    result = evaluate(ground_truth, _perturbed(ground_truth, 4, False))
    repo = tmp_path / "repo"
    write_evaluation(repo / "eval", result, "test")
    (repo / "dvc.yaml").write_text(
        "plots:\n  - eval/plots/pr_curve.json:\n      x: recall\n"
        "      y: [precision_iou50, precision_iou75, precision_iou50_95]\n"
        "      template: linear\n"
    )
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc = str(Path(__import__("sys").executable).parent / "dvc")
    subprocess.run([dvc, "init", "-q"], cwd=repo, check=True)
    shown = subprocess.run(
        [dvc, "plots", "show", "--json"], cwd=repo, check=True, capture_output=True, text=True
    )
    plot = json.loads(shown.stdout)["data"]["eval/plots/pr_curve.json"][0]
    values = plot["content"]["data"]["values"]
    assert {v["field"] for v in values} == {
        "precision_iou50",
        "precision_iou75",
        "precision_iou50_95",
    }
    assert len(values) == 3 * 101
