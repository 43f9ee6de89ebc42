"""The parity criteria themselves, on hand-made outputs (no graphs): they pass what they should
and fail, with a useful diagnosis, what they should."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.conversion.parity import (
    box_iou,
    compare_detections,
    compare_image,
    compare_raw,
    diagnose,
    flatten_levels,
    summarize,
)

LEVEL_SIZES = [12, 6]  # e.g. a 2x2 map with 3 anchors, then a 1x1 map with 6


def _outputs(seed: int = 0, num_detections: int = 60) -> dict:
    rng = np.random.default_rng(seed)
    n = sum(LEVEL_SIZES)
    ymin = rng.uniform(0, 0.5, num_detections)
    xmin = rng.uniform(0, 0.5, num_detections)
    boxes = np.stack([ymin, xmin, ymin + 0.3, xmin + 0.4], axis=1).astype(np.float32)
    scores = np.sort(rng.uniform(0.3, 1.0, num_detections))[::-1].astype(np.float32)
    return {
        "box_encodings": rng.normal(0, 1, (n, 4)).astype(np.float32),
        "class_logits": rng.normal(-3, 2, (n, 5)).astype(np.float32),
        "detection_boxes": np.concatenate([boxes, np.zeros((100 - num_detections, 4))]),
        "detection_scores": np.concatenate([scores, np.zeros(100 - num_detections)]),
        "detection_classes": np.concatenate(
            [rng.integers(1, 5, num_detections).astype(np.float32), np.zeros(100 - num_detections)]
        ),
        "num_detections": num_detections,
    }


def _copy(outputs: dict) -> dict:
    return {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in outputs.items()}


def test_float_noise_passes_and_the_report_is_json() -> None:
    tf1 = _outputs()
    tf2 = _copy(tf1)
    rng = np.random.default_rng(1)
    tf2["class_logits"] = tf2["class_logits"] + rng.normal(0, 1e-6, tf2["class_logits"].shape)
    result = compare_image("a.jpg", tf1, tf2, LEVEL_SIZES)
    assert result.passed
    assert result.detections.checked == 50 and result.detections.matched == 50
    report = summarize([result], tf1_graph="meta")
    assert report.passed and report.num_images == 1
    data = json.loads(report.to_json())
    assert data["images"][0]["class_logits"]["per_level_max_abs_diff"][0] < 1e-5
    assert "PASS" in report.summary()


def test_relative_tolerance_scales_with_the_largest_tf1_value() -> None:
    tf1 = np.array([[100.0, 0.0]])
    assert compare_raw(tf1, tf1 + 9e-3).passed  # 9e-3 <= 1e-4 * 100
    assert not compare_raw(tf1, tf1 + 1.1e-2).passed
    small = np.array([[0.5, 0.0]])
    assert compare_raw(small, small + 9e-5).passed  # floor: 1e-4 * max(1, 0.5)
    assert not compare_raw(small, small + 1.1e-4).passed
    assert not compare_raw(small, np.zeros((2, 2))).passed  # shape mismatch
    assert not compare_raw(small, small * np.nan).passed


def test_detections_match_as_a_set_not_by_rank() -> None:
    tf1 = _outputs()
    tf2 = _copy(tf1)
    # Neighbouring ranks swapped, as NMS does for scores within float noise.
    order = np.arange(100)
    order[[10, 11]] = order[[11, 10]]
    for key in ("detection_boxes", "detection_scores", "detection_classes"):
        tf2[key] = tf2[key][order]
    assert compare_detections(tf1, tf2).passed


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ("class", "detection_classes"),
        ("box", "detection_boxes"),
        ("score", "detection_scores"),
        ("missing", "num_detections"),
    ],
)
def test_each_detection_condition_can_fail(change: str, field: str) -> None:
    tf1 = _outputs()
    tf2 = _copy(tf1)
    if change == "class":
        tf2[field][3] = tf2[field][3] % 4 + 1
    elif change == "box":
        tf2[field][3] = tf2[field][3] + np.array([0, 0, 0.001, 0])  # IoU ~0.997
    elif change == "score":
        tf2[field][3] = tf2[field][3] + 2e-4
    else:
        tf2[field] = 40  # TF2 keeps fewer detections than TF1's top 50
    result = compare_detections(tf1, tf2)
    assert not result.passed
    assert result.unmatched
    if change != "missing":
        assert result.unmatched[0]["rank"] == 3


def test_only_top_k_of_tf1_is_checked() -> None:
    tf1 = _outputs()
    tf2 = _copy(tf1)
    tf2["detection_classes"][55] = tf2["detection_classes"][55] % 4 + 1  # rank 55 > top 50
    assert compare_detections(tf1, tf2).passed
    few = _outputs(num_detections=7)
    assert compare_detections(few, _copy(few)).checked == 7


def test_iou_of_identical_and_disjoint_boxes() -> None:
    box = np.array([0.1, 0.1, 0.5, 0.6])
    np.testing.assert_allclose(box_iou(box, np.stack([box, box + 1.0])), [1.0, 0.0])
    empty = np.array([0.2, 0.2, 0.2, 0.2])
    assert box_iou(empty, empty[None])[0] == 1.0


def test_diagnosis_names_a_level_specific_difference() -> None:
    tf1 = _outputs()
    tf2 = _copy(tf1)
    tf2["box_encodings"][12:] += 0.5  # only the second level
    result = compare_image("a.jpg", tf1, tf2, LEVEL_SIZES)
    assert not result.box_encodings.passed and result.class_logits.passed
    notes = " ".join(diagnose(tf1, tf2, result, LEVEL_SIZES))
    assert "levels [1]" in notes
    assert "box predictor" in notes


def test_diagnosis_names_an_input_path_difference() -> None:
    tf1 = _outputs()
    tf2 = _copy(tf1)
    tf2["box_encodings"] += 0.01
    tf2["class_logits"] += 0.01
    result = compare_image("a.jpg", tf1, tf2, LEVEL_SIZES)
    assert "resize sampling" in " ".join(diagnose(tf1, tf2, result, LEVEL_SIZES))


def test_diagnosis_names_a_permutation_and_a_class_shift() -> None:
    tf1 = _outputs()
    permuted = _copy(tf1)
    # Level 0 flattened anchor-major instead of (row, column, anchor).
    level0 = tf1["class_logits"][:12].reshape(2, 2, 3, 5).transpose(2, 0, 1, 3).reshape(12, 5)
    permuted["class_logits"][:12] = level0
    result = compare_image("a.jpg", tf1, permuted, LEVEL_SIZES)
    assert "permutation" in " ".join(diagnose(tf1, permuted, result, LEVEL_SIZES))

    shifted = _copy(tf1)
    shifted["class_logits"] = np.roll(tf1["class_logits"], -1, axis=1)
    result = compare_image("a.jpg", tf1, shifted, LEVEL_SIZES)
    assert "shifted by one column" in " ".join(diagnose(tf1, shifted, result, LEVEL_SIZES))


def test_diagnosis_blames_post_processing_when_raw_outputs_agree() -> None:
    tf1 = _outputs()
    tf2 = _copy(tf1)
    tf2["detection_classes"] = tf2["detection_classes"] - 1  # 0-based class ids
    result = compare_image("a.jpg", tf1, tf2, LEVEL_SIZES)
    assert result.box_encodings.passed and not result.detections.passed
    assert "post-processing" in " ".join(diagnose(tf1, tf2, result, LEVEL_SIZES))


def test_flatten_levels_is_level_then_row_then_column_then_anchor() -> None:
    # Level keys sort numerically ('10' after '9'); channels are anchor-major.
    levels = {
        "10": np.arange(1 * 1 * 1 * 2 * 2).reshape(1, 1, 1, 4) + 1000,
        "9": np.arange(1 * 2 * 1 * 2 * 2).reshape(1, 2, 1, 4),
    }
    flat = flatten_levels(levels, 2)
    np.testing.assert_array_equal(flat[:4], [[0, 1], [2, 3], [4, 5], [6, 7]])
    np.testing.assert_array_equal(flat[4:], [[1000, 1001], [1002, 1003]])


def test_a_near_tie_is_diagnosed_as_such(shared_fixtures) -> None:
    """Two overlapping anchors whose scores differ by float noise: TF1 keeps one, TF2 the
    other. The model's post-processing reproduces TF1's detections from TF1's own raw outputs,
    so the diagnosis says the post-processing is the same, not that it differs."""
    from pipeline.conversion.parity import (
        near_tie_cause,
        reproducing_clippings,
        tf1_postprocess,
    )
    from pipeline.modeling.anchors import tf1_anchor_boxes
    from pipeline.tf1.pipeline_config import ssd_spec_from_config

    config = "ssd_mobilenet_v1_ppn_shared_box_predictor_300x300_coco14_sync.config"
    spec = ssd_spec_from_config(shared_fixtures / "od_api" / "sample_configs" / config)
    anchors = tf1_anchor_boxes(spec)
    n, slots = anchors.shape[0], spec.num_class_slots
    raw = {
        "box_encodings": np.zeros((n, 4), np.float32),
        "class_logits": np.full((n, slots), -12.0, np.float32),
    }
    # Anchors 0 and 1 share a centre (aspect ratios 1 and 2): they overlap beyond the NMS IoU.
    raw["class_logits"][[0, 1], 1] = [2.0, 2.0 - 2e-6]
    tf1 = {**raw, **tf1_postprocess(raw, spec, spec.post_processing.box_clipping)}
    noisy = {k: np.array(v) for k, v in raw.items()}
    noisy["class_logits"][[0, 1], 1] = [2.0 - 2e-6, 2.0]
    tf2 = {**noisy, **tf1_postprocess(noisy, spec, spec.post_processing.box_clipping)}
    result = compare_image("a.jpg", tf1, tf2)
    assert result.box_encodings.passed and result.class_logits.passed
    assert not result.detections.passed
    assert spec.post_processing.box_clipping in reproducing_clippings(tf1, spec)
    notes = diagnose(tf1, tf2, result, postprocessing_cause=near_tie_cause(result))
    assert "post-processing is the same" in notes[-1] and "differs - anchors" not in notes[-1]
    assert "differs - anchors" in diagnose(tf1, tf2, result)[-1]
