"""Prove a Faster R-CNN conversion stage by stage against the TF1 graph, on real images.

Stages, in the order data flows (each compared with `pipeline.conversion.parity.compare_raw`:
max |TF1 - TF2| <= 1e-4 * max(1, max |TF1|)):
1. `rpn_box_encodings` / `rpn_objectness` — the first-stage predictor outputs
   (`FirstStageBoxPredictor/{BoxEncodingPredictor,ClassPredictor}/BiasAdd`, flattened to TF1's
   [anchors, 4] / [anchors, 2]);
2. `proposals` — the normalized boxes TF1 crops with (the `CropAndResize` input);
3. `box_encodings` / `class_logits` — the second-stage outputs (`all_refined_box_encodings`,
   `all_class_predictions_with_background`), computed on TF1's proposals (`run_tf2_stages`:
   each stage is judged on the input TF1 gave it);
4. detections — TF1's top 50 reproduced (`compare_detections`: IoU >= 0.999, |score| <= 1e-4).
Proposals that swapped places because their scores tie exactly are re-paired before they are
compared (`align_proposals`, counted in the report). The first stage that disagrees is named in the
diagnosis: a later stage cannot agree when an
earlier one does not, so that is where to look.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from pipeline.conversion.parity import (
    RELATIVE_TOLERANCE,
    RawComparison,
    compare_detections,
    compare_raw,
)
from pipeline.errors import PipelineError
from pipeline.tf1.graph_runner import DETECTION_TENSORS, TF1GraphRunner, iter_images

RPN_BOXES = "FirstStageBoxPredictor/BoxEncodingPredictor/BiasAdd"
RPN_CLASSES = "FirstStageBoxPredictor/ClassPredictor/BiasAdd"
BOX_ENCODINGS = "all_refined_box_encodings"
CLASS_LOGITS = "all_class_predictions_with_background"
REQUIRED = (RPN_BOXES, RPN_CLASSES, BOX_ENCODINGS, CLASS_LOGITS,
            *DETECTION_TENSORS)  # fmt: skip
STAGES = ("rpn_box_encodings", "rpn_objectness", "proposals", "box_encodings", "class_logits")
_FIRST_STAGE = "the first-stage feature extractor"
_STAGE_CAUSES = {
    "rpn_box_encodings": "the input path (keep_aspect_ratio resize size and legacy sampling), "
    "{first_stage} or the first-stage `Conv`/predictor mapping",
    "rpn_objectness": "the first-stage ClassPredictor mapping (2 logits per anchor, background "
    "first)",
    "proposals": "first-stage post-processing: grid anchor order/offset, anchor clipping, box "
    "decoding, the NMS clip order or thresholds, max proposals",
    "box_encodings": "crop_and_resize / max pool, the second-stage feature extractor (Inception "
    "v2 Mixed_5a-c, ResNet v1 block4, Inception-ResNet v2 Mixed_7a-Conv2d_7b_1x1) or the "
    "SecondStageBoxPredictor box mapping",
    "class_logits": "the SecondStageBoxPredictor ClassPredictor mapping",
}


def _crop_boxes_tensor(graph: Any) -> str:
    crops = [op for op in graph.get_operations() if op.type == "CropAndResize"]
    return crops[0].inputs[1].name


def run_tf1_stages(
    zoo_dir: str | os.PathLike[str], images: Iterable[np.ndarray], **graph: Any
) -> list[dict]:
    """The TF1 graph's stage outputs (batch dimension dropped) for each uint8 image.

    `graph`: which graph and weights (`TF1GraphRunner`'s graph, checkpoint_prefix, restore_name).
    """
    results = []
    with TF1GraphRunner(zoo_dir, raw_outputs=False, **graph) as runner:
        names = {op.name for op in runner.graph.get_operations()}
        missing = [name for name in REQUIRED if name not in names]
        if missing:
            raise PipelineError(
                f"{zoo_dir}: graph has no `{missing[0]}` tensor; expected a TF1 Object Detection "
                "API Faster R-CNN inference graph (exported with export_inference_graph)"
            )
        fetches = {
            "rpn_box_encodings": f"{RPN_BOXES}:0",
            "rpn_objectness": f"{RPN_CLASSES}:0",
            "proposals": _crop_boxes_tensor(runner.graph),
            "box_encodings": f"{BOX_ENCODINGS}:0",
            "class_logits": f"{CLASS_LOGITS}:0",
            **{name: f"{name}:0" for name in DETECTION_TENSORS},
        }
        for image in images:
            raw = runner.session.run(fetches, {runner.input_tensor: image[None]})
            results.append(_flatten(raw))
    return results


def _flatten(raw: dict[str, Any]) -> dict[str, Any]:
    out = {
        "rpn_box_encodings": np.asarray(raw["rpn_box_encodings"]).reshape(-1, 4),
        "rpn_objectness": np.asarray(raw["rpn_objectness"]).reshape(-1, 2),
        "proposals": np.asarray(raw["proposals"]).reshape(-1, 4),
        "box_encodings": np.asarray(raw["box_encodings"]).reshape(
            np.asarray(raw["proposals"]).reshape(-1, 4).shape[0], -1
        ),
        "class_logits": np.asarray(raw["class_logits"]).reshape(
            np.asarray(raw["proposals"]).reshape(-1, 4).shape[0], -1
        ),
    }
    for name in DETECTION_TENSORS:
        value = np.asarray(raw[name])
        out[name] = value[0] if value.ndim else value
    out["num_detections"] = int(np.asarray(raw["num_detections"]).reshape(-1)[0])
    return out


def run_tf2_stages(
    model: Any, image: np.ndarray, proposals: np.ndarray | None = None
) -> dict[str, Any]:
    """The converted model's outputs in the TF1 layouts of `run_tf1_stages`.

    With `proposals` (TF1's, normalized [N, 4]), the second stage (`box_encodings`,
    `class_logits`) is run on those instead of the model's own, so that it is compared on the
    same input: crop_and_resize is discontinuous at the image border (a sample at exactly
    row H-1 becomes the extrapolation value when the box moves by one ulp), so 1e-7 of float
    noise in a border proposal can change its whole second-stage row. The detections always
    come from the model running on its own proposals.
    """
    import tensorflow as tf

    from pipeline.modeling.faster_rcnn.model import preprocess

    preprocessed, image_shape = preprocess(tf.constant(image[None]), model.spec)
    outputs = model(preprocessed, image_shape, training=False)
    box_outputs, class_outputs = outputs["box_outputs"], outputs["class_outputs"]
    if proposals is not None:
        class_outputs, box_outputs = second_stage_on(model, preprocessed, proposals)
    raw = {
        "rpn_box_encodings": outputs["rpn_boxes"][model.spec.feature_level],
        "rpn_objectness": outputs["rpn_scores"][model.spec.feature_level],
        "proposals": outputs["proposal_boxes"],
        "box_encodings": box_outputs,
        "class_logits": class_outputs,
        "detection_boxes": outputs["detection_boxes"],
        "detection_scores": outputs["detection_scores"],
        "detection_classes": tf.cast(outputs["detection_classes"], tf.float32),
        "num_detections": outputs["num_detections"],
    }
    return _flatten({key: np.asarray(value) for key, value in raw.items()})


def second_stage_on(model: Any, preprocessed: Any, proposals: np.ndarray) -> tuple[Any, Any]:
    """(class outputs, box outputs) of the second stage on the given normalized proposals.

    Model Garden's MaskRCNNModel has no public entry for "the head on these ROIs"; its
    `_run_frcnn_head` is that step (inference: no ROI sampling).
    """
    import tensorflow as tf

    _, features = model._get_backbone_and_decoder_features(preprocessed)
    class_outputs, box_outputs, *_ = model._run_frcnn_head(
        features=features,
        rois=tf.constant(np.asarray(proposals, np.float32)[None]),
        gt_boxes=None,
        gt_classes=None,
        training=False,
        model_outputs={},
        cascade_num=0,
        regression_weights=model._cascade_layer_to_weights[0],
    )
    return class_outputs, box_outputs


@dataclasses.dataclass
class StageParity:
    image: str
    stages: dict[str, RawComparison]
    detections: Any
    first_failing_stage: str | None
    passed: bool
    # Proposals re-paired after an equal-score swap (see `align_proposals`).
    proposals_reordered: int = 0


def align_proposals(
    tf1: dict[str, Any], tf2: dict[str, Any], tolerance: float = RELATIVE_TOLERANCE
) -> tuple[dict[str, Any], int]:
    """Undo proposal swaps between equal-score proposals: NMS implementations order exact score
    ties differently (TF1's NonMaxSuppressionV2 vs another kernel), which permutes the second
    proposals without changing what is computed. Only rows that differ are re-paired, each
    with an identical (to `tolerance`) TF2 row; returns TF2's outputs with the proposals
    re-ordered (the second stage ran on TF1's proposals) and the number of rows moved (0 when
    nothing could or needed to be re-paired)."""
    a, b = np.asarray(tf1["proposals"]), np.asarray(tf2["proposals"])
    if a.shape != b.shape:
        return tf2, 0
    differ = np.where(np.abs(a - b).max(axis=1) > tolerance)[0]
    order = np.arange(len(b))
    free = set(differ.tolist())
    for i in differ:
        match = next((j for j in sorted(free) if np.abs(b[j] - a[i]).max() <= tolerance), None)
        if match is None:
            return tf2, 0
        order[i] = match
        free.discard(match)
    return {**tf2, "proposals": b[order]}, len(differ)


def compare_stages(name: str, tf1: dict[str, Any], tf2: dict[str, Any]) -> StageParity:
    tf2, moved = align_proposals(tf1, tf2)
    stages = {stage: compare_raw(tf1[stage], tf2[stage]) for stage in STAGES}
    detections = compare_detections(tf1, tf2)
    failing = next((stage for stage in STAGES if not stages[stage].passed), None)
    if failing is None and not detections.passed:
        failing = "detections"
    return StageParity(name, stages, detections, failing, failing is None, moved)


def diagnose(results: list[StageParity], first_stage: str = _FIRST_STAGE) -> list[str]:
    """One line per image that fails: the first stage that disagrees and what feeds it
    (`first_stage`: what the backbone's part is, `FeatureExtractor.first_stage_causes`)."""
    notes = []
    for result in results:
        stage = result.first_failing_stage
        if stage is None:
            continue
        if stage == "detections":
            cause = (
                "every raw stage agrees: second-stage post-processing (per-class decoding "
                "against the proposals, score converter, NMS clip order, thresholds, limits)"
            )
        else:
            cause = _STAGE_CAUSES[stage].format(first_stage=first_stage)
        notes.append(f"{result.image}: first disagreeing stage `{stage}`: {cause}")
    return notes


def verify_faster_rcnn(
    tf1_dir: str | os.PathLike[str],
    model: Any,
    images_dir: str | os.PathLike[str],
    max_images: int | None = None,
    **graph: Any,
) -> dict[str, Any]:
    """Run both on the images; the JSON-serialisable parity report (`passed` and figures).

    `graph`: which TF1 graph and weights (see `run_tf1_stages`).
    """
    named = list(iter_images(images_dir, max_images))
    tf1_outputs = run_tf1_stages(tf1_dir, [image for _, image in named], **graph)
    results = [
        compare_stages(path.name, tf1, run_tf2_stages(model, image, tf1["proposals"]))
        for (path, image), tf1 in zip(named, tf1_outputs, strict=True)
    ]
    from pipeline.modeling.faster_rcnn.extractors import feature_extractor

    report = summarize(results, str(tf1_dir), feature_extractor(model.spec).first_stage_causes)
    failing = {r.first_failing_stage for r in results} - {None}
    if failing and failing <= {"proposals", "detections"}:
        other = _other_era(model, named, tf1_outputs)
        if other is not None:
            report["diagnosis"].append(
                f"with box_clipping={other} every stage agrees on every image: the graph's OD API "
                f"era clips boxes {other.replace('_', ' ')}; convert with --box-clipping {other}"
            )
    return report


def _other_era(model: Any, named: list, tf1_outputs: list[dict]) -> str | None:
    """The other box clipping, if it makes every image pass (the model is restored after)."""
    layers = (model.roi_generator, model.detection_generator)
    current = model.spec.box_clipping
    other = "after_nms" if current == "before_nms" else "before_nms"
    try:
        for layer in layers:
            layer.box_clipping = other
        passed = all(
            compare_stages(path.name, tf1, run_tf2_stages(model, image, tf1["proposals"])).passed
            for (path, image), tf1 in zip(named, tf1_outputs, strict=True)
        )
    finally:
        for layer in layers:
            layer.box_clipping = current
    return other if passed else None


def summarize(
    results: list[StageParity], tf1_graph: str, first_stage: str = _FIRST_STAGE
) -> dict[str, Any]:
    report: dict[str, Any] = {"num_images": len(results), "tf1_graph": tf1_graph}
    for stage in STAGES:
        comparisons = [r.stages[stage] for r in results]
        report[stage] = {
            "max_abs_diff": max((c.max_abs_diff for c in comparisons), default=0.0),
            "max_abs_tf1": max((c.max_abs_tf1 for c in comparisons), default=0.0),
            "passed": bool(results) and all(c.passed for c in comparisons),
        }
    detections = [r.detections for r in results]
    report["detections"] = {
        "checked": sum(d.checked for d in detections),
        "matched": sum(d.matched for d in detections),
        "min_iou": min((d.min_iou for d in detections), default=1.0),
        "max_score_diff": max((d.max_score_diff for d in detections), default=0.0),
        "passed": bool(results) and all(d.passed for d in detections),
    }
    # The flat figures the SSD report has (conversion_report.md, DVC metrics): the second stage.
    for stage in ("box_encodings", "class_logits"):
        report[f"{stage}_max_abs_diff"] = report[stage]["max_abs_diff"]
    for key in ("checked", "matched", "min_iou", "max_score_diff"):
        report[f"detections_{key}"] = report["detections"][key]
    report["passed"] = bool(results) and all(r.passed for r in results)
    report["diagnosis"] = diagnose(results, first_stage)
    report["images"] = [
        {
            "image": r.image,
            "first_failing_stage": r.first_failing_stage,
            "proposals_reordered": r.proposals_reordered,
            "stages": {stage: dataclasses.asdict(c) for stage, c in r.stages.items()},
            "box_encodings": dataclasses.asdict(r.stages["box_encodings"]),
            "class_logits": dataclasses.asdict(r.stages["class_logits"]),
            "detections": dataclasses.asdict(r.detections),
        }
        for r in results
    ]
    return report
