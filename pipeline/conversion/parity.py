"""Prove a conversion: the TF1 graph and the TF2 model compute the same thing on real images.

Criteria (issue 3), checked on every image:
- raw outputs: max |TF1 - TF2| <= 1e-4 * max(1, max |TF1|), separately for the box encodings
  (`concat`, [N, 4]) and the class logits (`concat_1`, [N, C+1]); float32 noise through a
  MobileNet is ~1e-6 relative, a semantic difference (resize sampling, anchor order, a missing
  BatchNorm) is orders of magnitude larger;
- detections: each of TF1's 50 highest-scoring detections has a TF2 detection of the same class
  with IoU >= 0.999 and |score difference| <= 1e-4.

When a criterion fails, `diagnose` looks at where the outputs differ (which feature-map level,
boxes or classes, a permutation, a class shift) and names the likely semantic difference.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.modeling.spec import RESNET_FPN_DEPTHS

# The criterion constants of issue 3.
RELATIVE_TOLERANCE = 1e-4
TOP_K = 50
IOU_THRESHOLD = 0.999
SCORE_TOLERANCE = 1e-4
# What in the normalization and base network a difference on every level points at.
MOBILENET_BASE_CAUSES = (
    "normalization (x*2/255-1), the base network (BN epsilon 1e-3, relu6, SAME padding)"
)
RESNET_BASE_CAUSES = (
    "normalization (channel means 123.68, 116.779, 103.939 subtracted), the ResNet v1 base "
    "(conv2d_same root, BN epsilon 1e-5, the config's activation in the root and the units' "
    "conv1/conv2 when override_base_feature_extractor_hyperparams, ReLU after each sum, "
    "block outputs taken before their stride)"
)

# One image in, TF1-layout outputs out: box_encodings [N, 4], class_logits [N, C+1] and the four
# detection outputs (batch dimension dropped, classes 1..C).
OutputsFn = Callable[[np.ndarray], Mapping[str, Any]]
_REQUIRED_OUTPUTS = (
    "box_encodings",
    "class_logits",
    "detection_boxes",
    "detection_scores",
    "detection_classes",
    "num_detections",
)


@dataclasses.dataclass
class RawComparison:
    """One raw output on one image (or the worst over images)."""

    max_abs_diff: float
    max_abs_tf1: float
    tolerance: float
    passed: bool
    # Max |diff| per feature-map level (TF1 head order), where the level sizes are known.
    per_level_max_abs_diff: list[float] = dataclasses.field(default_factory=list)
    # Elements beyond the tolerance (in a quantized model, a fake-quant bucket flipped upstream
    # moves outputs by whole quanta).
    num_differing: int = 0


@dataclasses.dataclass
class DetectionComparison:
    checked: int  # min(TOP_K, TF1 num_detections)
    matched: int
    tf1_num_detections: int
    tf2_num_detections: int
    min_iou: float  # worst best-match IoU over the checked detections (1.0 if none checked)
    max_score_diff: float
    passed: bool
    # The first few TF1 detections without a match, for diagnosis.
    unmatched: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ImageParity:
    image: str
    box_encodings: RawComparison
    class_logits: RawComparison
    detections: DetectionComparison
    passed: bool = False


@dataclasses.dataclass
class ParityReport:
    """Figures and pass/fail per criterion over all images; JSON-serialisable (`to_dict`)."""

    num_images: int
    box_encodings_max_abs_diff: float
    box_encodings_max_abs_tf1: float
    box_encodings_passed: bool
    class_logits_max_abs_diff: float
    class_logits_max_abs_tf1: float
    class_logits_passed: bool
    detections_checked: int
    detections_matched: int
    detections_min_iou: float
    detections_max_score_diff: float
    detections_passed: bool
    passed: bool
    relative_tolerance: float = RELATIVE_TOLERANCE
    # Raw output elements beyond the tolerance, over all images.
    box_encodings_num_differing: int = 0
    class_logits_num_differing: int = 0
    top_k: int = TOP_K
    iou_threshold: float = IOU_THRESHOLD
    score_tolerance: float = SCORE_TOLERANCE
    tf1_graph: str = ""
    tf1_graph_file: str = ""
    diagnosis: list[str] = dataclasses.field(default_factory=list)
    images: list[ImageParity] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        """A few readable lines (for the CLI and conversion_report.md)."""
        verdict = "PASS" if self.passed else "FAIL"
        lines = [
            f"parity {verdict} on {self.num_images} image(s) (TF1 graph: {self.tf1_graph} "
            f"{self.tf1_graph_file})",
            f"- box encodings: max |TF1-TF2| {self.box_encodings_max_abs_diff:.3g} "
            f"(max |TF1| {self.box_encodings_max_abs_tf1:.3g}"
            f"{_differing(self.box_encodings_num_differing)}) "
            f"{'ok' if self.box_encodings_passed else 'FAIL'}",
            f"- class logits: max |TF1-TF2| {self.class_logits_max_abs_diff:.3g} "
            f"(max |TF1| {self.class_logits_max_abs_tf1:.3g}"
            f"{_differing(self.class_logits_num_differing)}) "
            f"{'ok' if self.class_logits_passed else 'FAIL'}",
            f"- detections: {self.detections_matched}/{self.detections_checked} of TF1's top "
            f"{self.top_k} matched (min IoU {self.detections_min_iou:.6f}, max score diff "
            f"{self.detections_max_score_diff:.3g}) {'ok' if self.detections_passed else 'FAIL'}",
        ]
        lines += [f"- diagnosis: {line}" for line in self.diagnosis]
        return "\n".join(lines)


def _differing(count: int) -> str:
    return f"; {count} elements beyond tolerance" if count else ""


def compare_raw(
    tf1: np.ndarray,
    tf2: np.ndarray,
    level_sizes: Sequence[int] | None = None,
    relative_tolerance: float = RELATIVE_TOLERANCE,
) -> RawComparison:
    """max |TF1 - TF2| against relative_tolerance * max(1, max |TF1|)."""
    tf1 = np.asarray(tf1, dtype=np.float64)
    tf2 = np.asarray(tf2, dtype=np.float64)
    max_abs_tf1 = float(np.abs(tf1).max()) if tf1.size else 0.0
    tolerance = relative_tolerance * max(1.0, max_abs_tf1)
    if tf1.shape != tf2.shape:
        return RawComparison(float("inf"), max_abs_tf1, tolerance, False)
    diff = np.abs(tf1 - tf2)
    max_diff = float(diff.max()) if diff.size else 0.0
    if not np.isfinite(diff).all():
        max_diff = float("inf")
    per_level = []
    if level_sizes and sum(level_sizes) == tf1.shape[0]:
        start = 0
        for size in level_sizes:
            per_level.append(float(diff[start : start + size].max()))
            start += size
    differing = int(np.count_nonzero(~(diff <= tolerance)))
    return RawComparison(
        max_diff, max_abs_tf1, tolerance, max_diff <= tolerance, per_level, differing
    )


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (ymin, xmin, ymax, xmax) box with each of `boxes`; identical empty boxes -> 1."""
    box = np.asarray(box, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ymin = np.maximum(box[0], boxes[:, 0])
    xmin = np.maximum(box[1], boxes[:, 1])
    ymax = np.minimum(box[2], boxes[:, 2])
    xmax = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ymax - ymin, 0, None) * np.clip(xmax - xmin, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    identical = np.all(np.abs(boxes - box) <= 1e-7, axis=1)
    return np.where(identical, 1.0, iou)


def _valid(outputs: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    count = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
    boxes = np.asarray(outputs["detection_boxes"]).reshape(-1, 4)[:count]
    scores = np.asarray(outputs["detection_scores"]).reshape(-1)[:count]
    classes = np.asarray(outputs["detection_classes"]).reshape(-1)[:count]
    return boxes, scores, np.rint(classes).astype(np.int64)


def compare_detections(
    tf1: Mapping[str, Any],
    tf2: Mapping[str, Any],
    top_k: int = TOP_K,
    iou_threshold: float = IOU_THRESHOLD,
    score_tolerance: float = SCORE_TOLERANCE,
) -> DetectionComparison:
    """Each of TF1's top-k detections needs a TF2 detection of the same class with
    IoU >= iou_threshold and |score difference| <= score_tolerance.

    Matching is by set, not by rank: detections whose scores are within float noise of each other
    may come out in either order.
    """
    boxes1, scores1, classes1 = _valid(tf1)
    boxes2, scores2, classes2 = _valid(tf2)
    order = np.argsort(-scores1, kind="stable")[:top_k]
    matched = 0
    min_iou = 1.0
    max_score_diff = 0.0
    unmatched: list[dict[str, Any]] = []
    for index in order:
        same_class = classes2 == classes1[index]
        best_iou, best_score_diff = 0.0, float("inf")
        if same_class.any():
            ious = box_iou(boxes1[index], boxes2[same_class])
            score_diffs = np.abs(scores2[same_class] - scores1[index])
            ok = (ious >= iou_threshold) & (score_diffs <= score_tolerance)
            # The closest candidate: a match if there is one, else the best-overlapping box.
            pick = int(np.argmax(ok)) if ok.any() else int(np.argmax(ious))
            best_iou, best_score_diff = float(ious[pick]), float(score_diffs[pick])
            if ok.any():
                matched += 1
        min_iou = min(min_iou, best_iou)
        max_score_diff = max(max_score_diff, best_score_diff)
        if (best_iou < iou_threshold or best_score_diff > score_tolerance) and len(unmatched) < 5:
            unmatched.append(
                {
                    "rank": int(np.where(order == index)[0][0]),
                    "class": int(classes1[index]),
                    "score": float(scores1[index]),
                    "box": [float(v) for v in boxes1[index]],
                    "best_tf2_iou": best_iou,
                    "best_tf2_score_diff": best_score_diff,
                }
            )
    checked = len(order)
    return DetectionComparison(
        checked=checked,
        matched=matched,
        tf1_num_detections=len(scores1),
        tf2_num_detections=len(scores2),
        min_iou=min_iou,
        max_score_diff=max_score_diff if checked else 0.0,
        passed=matched == checked,
        unmatched=unmatched,
    )


def compare_image(
    name: str,
    tf1: Mapping[str, Any],
    tf2: Mapping[str, Any],
    level_sizes: Sequence[int] | None = None,
) -> ImageParity:
    box = compare_raw(tf1["box_encodings"], tf2["box_encodings"], level_sizes)
    cls = compare_raw(tf1["class_logits"], tf2["class_logits"], level_sizes)
    det = compare_detections(tf1, tf2)
    return ImageParity(name, box, cls, det, passed=box.passed and cls.passed and det.passed)


def summarize(
    images: Sequence[ImageParity], tf1_graph: str = "", diagnosis: Sequence[str] = ()
) -> ParityReport:
    def worst(values: Sequence[float], default: float = 0.0) -> float:
        return float(max(values)) if values else default

    box = [i.box_encodings for i in images]
    cls = [i.class_logits for i in images]
    det = [i.detections for i in images]
    box_ok = bool(images) and all(c.passed for c in box)
    cls_ok = bool(images) and all(c.passed for c in cls)
    det_ok = bool(images) and all(d.passed for d in det)
    return ParityReport(
        num_images=len(images),
        box_encodings_max_abs_diff=worst([c.max_abs_diff for c in box]),
        box_encodings_max_abs_tf1=worst([c.max_abs_tf1 for c in box]),
        box_encodings_passed=box_ok,
        class_logits_max_abs_diff=worst([c.max_abs_diff for c in cls]),
        class_logits_max_abs_tf1=worst([c.max_abs_tf1 for c in cls]),
        class_logits_passed=cls_ok,
        detections_checked=sum(d.checked for d in det),
        detections_matched=sum(d.matched for d in det),
        detections_min_iou=min([d.min_iou for d in det], default=1.0),
        detections_max_score_diff=worst([d.max_score_diff for d in det]),
        detections_passed=det_ok,
        passed=box_ok and cls_ok and det_ok,
        box_encodings_num_differing=sum(c.num_differing for c in box),
        class_logits_num_differing=sum(c.num_differing for c in cls),
        tf1_graph=tf1_graph,
        diagnosis=list(diagnosis),
        images=list(images),
    )


def _level_sizes(heads: Mapping[str, np.ndarray] | None, box_code_size: int = 4) -> list[int]:
    """Anchors per feature map, from the TF1 box-encoding heads ([H, W, A*4]) in TF1 order."""
    if not heads:
        return []
    names = [n for n in heads if n.endswith(("BoxEncodingPredictor", "/BoxPredictor"))]

    def key(name: str) -> tuple[int, str]:
        scope = name.split("/")[0]
        suffix = scope.rsplit("_", 1)[-1]
        return (int(suffix) if suffix.isdigit() else -1, name)

    return [int(np.prod(heads[n].shape[:-1])) * heads[n].shape[-1] // box_code_size for n in
            sorted(names, key=key)]  # fmt: skip


POSTPROCESSING_CAUSES = (
    "post-processing differs - anchors, box decoding (faster_rcnn coder, no dh/dw clip), score "
    "converter, clipping to [0, 1], per-class NMS thresholds/limits, or class ids (TF1 emits 1..C)"
)


def diagnose(
    tf1: Mapping[str, Any],
    tf2: Mapping[str, Any],
    result: ImageParity,
    level_sizes: Sequence[int] = (),
    level_names: Sequence[str] = (),
    base_causes: str = MOBILENET_BASE_CAUSES,
    postprocessing_cause: str | None = None,
) -> list[str]:
    """Name the semantic difference that best explains a failed comparison on one image.
    `level_names`: what each level is (e.g. the FPN layer producing it), for the notes;
    `base_causes`: what in the normalization and base network could differ;
    `postprocessing_cause`: why detections differ where raw outputs agree, when known."""
    notes: list[str] = []
    box, cls = result.box_encodings, result.class_logits
    tf1_cls, tf2_cls = np.asarray(tf1["class_logits"]), np.asarray(tf2["class_logits"])
    tf1_box, tf2_box = np.asarray(tf1["box_encodings"]), np.asarray(tf2["box_encodings"])
    if tf1_cls.shape != tf2_cls.shape or tf1_box.shape != tf2_box.shape:
        notes.append(
            f"raw output shapes differ: TF1 box {tf1_box.shape} / logits {tf1_cls.shape}, TF2 "
            f"box {tf2_box.shape} / logits {tf2_cls.shape} (anchor count per level or class "
            f"slots incl. background)"
        )
        return notes
    if not (box.passed and cls.passed):
        failing = [
            i
            for i, (b, c) in enumerate(
                zip(box.per_level_max_abs_diff, cls.per_level_max_abs_diff, strict=True)
            )
            if b > box.tolerance or c > cls.tolerance
        ]
        if level_sizes and failing and failing != list(range(len(level_sizes))):
            named = (
                f" ({', '.join(level_names[i] for i in failing)})"
                if len(level_names) == len(level_sizes)
                else ""
            )
            notes.append(
                f"raw outputs differ only on feature-map levels {failing}{named} (0 = finest): the "
                f"layers feeding those maps (extra layers, their depthwise/kernel settings, "
                f"padding) or those heads differ"
            )
        elif level_sizes and failing:
            notes.append(
                "raw outputs differ on every level: the shared input path differs - resize "
                "sampling (TF1 ResizeBilinear align_corners=False, half_pixel_centers=False), "
                f"{base_causes} or the weights' mapping"
            )
        for i, size in enumerate(level_sizes):
            start = sum(level_sizes[:i])
            a = tf1_cls[start : start + size]
            b = tf2_cls[start : start + size]
            tol = cls.tolerance
            if np.abs(a - b).max() > tol and np.allclose(
                np.sort(a, axis=None), np.sort(b, axis=None), atol=tol
            ):
                notes.append(
                    f"level {i}: TF2 logits are a permutation of TF1's: the flattening order "
                    f"differs (TF1 is row, column, anchor, with channels anchor-major)"
                )  # fmt: skip
        if cls.max_abs_diff > cls.tolerance and tf1_cls.shape[1] > 1:
            shifted = np.abs(tf1_cls[:, 1:] - tf2_cls[:, :-1]).max()
            shifted_back = np.abs(tf1_cls[:, :-1] - tf2_cls[:, 1:]).max()
            if min(shifted, shifted_back) <= cls.tolerance:
                notes.append("class logits are shifted by one column: background slot handling")
        if box.passed and not cls.passed:
            notes.append("box encodings agree but class logits do not: class predictor mapping")
        if cls.passed and not box.passed:
            notes.append("class logits agree but box encodings do not: box predictor mapping")
    if box.passed and cls.passed and not result.detections.passed:
        det = result.detections
        notes.append(
            f"raw outputs agree but detections do not (TF1 {det.tf1_num_detections}, TF2 "
            f"{det.tf2_num_detections} detections; worst IoU {det.min_iou:.4f}, worst score "
            f"diff {det.max_score_diff:.3g}): " + (postprocessing_cause or POSTPROCESSING_CAUSES)
        )
    return notes


def tf1_postprocess(tf1: Mapping[str, Any], spec: Any, clipping: str) -> dict[str, Any] | None:
    """The spec's post-processing (anchors, decoding, score conversion, NMS with `clipping`)
    applied to TF1 raw outputs, as detections in TF1 layout; None when the anchors do not line
    up with them."""
    import tensorflow as tf

    from pipeline.modeling.anchors import tf1_anchor_boxes
    from pipeline.modeling.postprocess import convert_scores, decode_tf1_boxes, tf1_multiclass_nms

    anchors = tf1_anchor_boxes(spec)
    if anchors.shape[0] != np.asarray(tf1["box_encodings"]).shape[0]:
        return None
    post = spec.post_processing
    boxes = decode_tf1_boxes(
        tf.constant(tf1["box_encodings"][None], tf.float32),
        tf.constant(anchors),
        spec.box_coder.scales,
    )
    scores = convert_scores(
        tf.constant(tf1["class_logits"][None], tf.float32),
        post.score_converter,
        post.logit_scale,
        spec.add_background_class,
    )
    out_boxes, out_scores, out_classes, num = tf1_multiclass_nms(
        boxes, scores, post.score_threshold, post.iou_threshold,
        post.max_detections_per_class, post.max_total_detections, clipping,
    )  # fmt: skip
    return {
        "detection_boxes": out_boxes.numpy()[0],
        "detection_scores": out_scores.numpy()[0],
        "detection_classes": out_classes.numpy()[0] + 1.0,
        "num_detections": int(num.numpy()[0]),
    }


def reproducing_clippings(tf1: Mapping[str, Any], spec: Any, top_k: int = TOP_K) -> list[str]:
    """The box-clipping choices under which the spec's post-processing, applied to the TF1
    graph's own raw outputs, reproduces the graph's top-k detections."""
    from pipeline.modeling.spec import BOX_CLIPPING_CHOICES

    agreeing = []
    for clipping in BOX_CLIPPING_CHOICES:
        candidate = tf1_postprocess(tf1, spec, clipping)
        if candidate is not None and compare_detections(tf1, candidate, top_k).passed:
            agreeing.append(clipping)
    return agreeing


def postprocessing_hint(spec: Any, agreeing: Sequence[str]) -> str | None:
    """When raw outputs agree and detections do not, and another box-clipping choice reproduces
    the TF1 graph's detections from its own raw outputs (`reproducing_clippings`): the graph
    comes from another OD API era."""
    post = spec.post_processing
    if not agreeing or post.box_clipping in agreeing:
        return None
    other = agreeing[0]
    return (
        f"the TF1 graph's detections are reproduced from its own raw outputs with boxes clipped "
        f"{other.replace('_', ' ')}, not {post.box_clipping.replace('_', ' ')}: the graph comes "
        f"from another OD API era; convert with --box-clipping {other}"
    )


def near_tie_cause(result: ImageParity) -> str:
    """The cause of a detection mismatch when the model's own post-processing reproduces the
    TF1 graph's detections from the graph's raw outputs: the post-processing is the same, and
    the raw outputs' float noise reorders near-equal scores."""
    raw_diff = max(result.box_encodings.max_abs_diff, result.class_logits.max_abs_diff)
    example = ""
    if result.detections.unmatched:
        u = result.detections.unmatched[0]
        example = (
            f" (TF1's rank-{u['rank']} class-{u['class']} detection at {u['score']:.6g}: TF2's "
            f"closest box of that class overlaps it with IoU {u['best_tf2_iou']:.3f}, score "
            f"{u['best_tf2_score_diff']:.2g} away)"
        )
    return (
        f"the model's post-processing applied to the TF1 graph's own raw outputs reproduces its "
        f"detections, so post-processing is the same; the raw outputs' float differences (up to "
        f"{raw_diff:.2g}, within tolerance) reorder near-equal scores and NMS keeps another of "
        f"overlapping boxes{example}: weights whose scores barely vary between anchors (untrained "
        f"or synthetic) do this; check with other weights or images"
    )


def flatten_levels(levels: Mapping[str, Any], width: int) -> np.ndarray:
    """Model Garden {level: [1, H, W, A*width]} -> [N, width] in TF1 order (level, H, W, A)."""
    parts = [np.asarray(levels[key])[0].reshape(-1, width) for key in sorted(levels, key=int)]
    return np.concatenate(parts, axis=0)


def tf1_layout_outputs(model_output: Mapping[str, Any], num_class_slots: int) -> dict[str, Any]:
    """A RetinaNetModel's output dict for one image -> TF1 layout (see `OutputsFn`)."""
    return {
        "box_encodings": flatten_levels(model_output["box_outputs"], 4),
        "class_logits": flatten_levels(model_output["cls_outputs"], num_class_slots),
        "detection_boxes": np.asarray(model_output["detection_boxes"])[0],
        "detection_scores": np.asarray(model_output["detection_scores"])[0],
        "detection_classes": np.asarray(model_output["detection_classes"])[0].astype(np.float32),
        "num_detections": int(np.asarray(model_output["num_detections"])[0]),
    }


def model_outputs_fn(model: Any, spec: Any) -> OutputsFn:
    """Adapter for the converter's Model Garden RetinaNetModel: preprocess one uint8 image as TF1
    does, run the model, and return its raw outputs in TF1 layout plus its detections."""
    import tensorflow as tf

    from pipeline.modeling.preprocessing import preprocess

    def run(image: np.ndarray) -> dict[str, Any]:
        batch = tf.constant(np.asarray(image)[None] if np.ndim(image) == 3 else image)
        output = model(preprocess(batch, spec), training=False)
        return tf1_layout_outputs(output, spec.num_class_slots)

    return run


def raw_passed(result: ImageParity) -> bool:
    return result.box_encodings.passed and result.class_logits.passed


def _spec_of(tf2: Any, spec: Any, tf1_zoo_dir: Path) -> Any:
    """The spec the TF2 side was built from, where it can be known."""
    if spec is not None:
        return spec
    if isinstance(tf2, str | os.PathLike):
        from pipeline.modeling.builder import read_spec

        return read_spec(tf2)
    if hasattr(tf2, "checkpoint_items") and (tf1_zoo_dir / "pipeline.config").is_file():
        from pipeline.tf1.pipeline_config import ssd_spec_from_config

        return ssd_spec_from_config(tf1_zoo_dir / "pipeline.config")
    return None


def _outputs_fn(tf2: Any, spec: Any, tf1_zoo_dir: Path) -> OutputsFn:
    """Accept a converted directory, a (model, spec) pair's model, or an outputs function."""
    if isinstance(tf2, str | os.PathLike):
        from pipeline.modeling import load_converted

        model, loaded_spec = load_converted(tf2)
        return model_outputs_fn(model, spec or loaded_spec)
    if hasattr(tf2, "checkpoint_items") or hasattr(tf2, "backbone"):
        if spec is None:
            from pipeline.tf1.pipeline_config import ssd_spec_from_config

            spec = ssd_spec_from_config(tf1_zoo_dir / "pipeline.config")
        return model_outputs_fn(tf2, spec)
    if callable(tf2):
        return tf2
    raise TypeError(f"cannot get TF2 outputs from {type(tf2).__name__}")


def base_causes(spec: Any) -> str:
    """The normalization and base-network settings a difference on every level points at."""
    if getattr(spec, "architecture", None) in RESNET_FPN_DEPTHS:
        return RESNET_BASE_CAUSES
    return MOBILENET_BASE_CAUSES


def level_names(spec: Any) -> list[str]:
    """For an FPN or PPN SSD, each level's name and the TF1 layer producing it
    ('P3 (fpn/smoothing_1)', 'P5 (MaxPool2d_0_2x2)'); empty otherwise."""
    from pipeline.modeling.anchors import levels
    from pipeline.modeling.decoders import fpn_level_scopes, ppn_level_scopes

    if getattr(spec, "is_ppn", False):
        scopes = ppn_level_scopes(spec.anchors.num_layers)
        return [f"P{level} ({scope})" for level, scope in zip(levels(spec), scopes, strict=True)]
    if not getattr(spec, "is_fpn", False):
        return []

    fpn = spec.feature_extractor.fpn
    scopes = fpn_level_scopes(spec.architecture, fpn.min_level, fpn.max_level)
    return [f"P{level} (fpn/{scopes[level]})" for level in sorted(scopes)]


def verify_conversion(
    tf1_zoo_dir: str | os.PathLike[str],
    tf2: Any,
    spec: Any = None,
    images_dir: str | os.PathLike[str] | None = None,
    max_images: int | None = 8,
    images: Sequence[tuple[str, np.ndarray]] | None = None,
    tf1_graph: str = "auto",
    progress: bool = False,
    checkpoint_prefix: str | os.PathLike[str] | None = None,
    restore_name: Callable[[str], str] | None = None,
) -> ParityReport:
    """Run the TF1 graph of `tf1_zoo_dir` and the TF2 model on the same images and compare.

    `tf2` is the converted RetinaNetModel (with `spec`, or the spec read from the zoo's
    pipeline.config), a converted model directory, or a function image -> outputs in TF1 layout.
    Images come from `images_dir` (first `max_images` in name order) or `images` (name, uint8).
    `tf1_graph`, `checkpoint_prefix` and `restore_name` choose the TF1 graph and the weights it
    is restored with (`pipeline.tf1.graph_runner.TF1GraphRunner`).
    """
    from pipeline.tf1.graph_runner import TF1GraphRunner, iter_images

    tf1_zoo_dir = Path(tf1_zoo_dir)
    if images is None:
        if images_dir is None:
            raise ValueError("verify_conversion needs images_dir or images")
        images = [(path.name, image) for path, image in iter_images(images_dir, max_images)]
    run_tf2 = _outputs_fn(tf2, spec, tf1_zoo_dir)
    iterator: Any = images
    if progress:
        from tqdm import tqdm

        iterator = tqdm(images, desc="parity", unit="image")
    results: list[ImageParity] = []
    diagnosis: list[str] = []
    with TF1GraphRunner(tf1_zoo_dir, tf1_graph, checkpoint_prefix, restore_name) as runner:
        kind, graph_file = runner.kind, runner.files.path
        for name, image in iterator:
            tf1_out = runner.run(image, with_heads=True)
            tf2_out = run_tf2(image)
            missing = [key for key in _REQUIRED_OUTPUTS if key not in tf2_out]
            if missing:
                raise ValueError(
                    f"TF2 outputs lack {missing}: parity needs the raw head outputs; pass the "
                    f"converted model or directory, not an exported detector"
                )
            sizes = _level_sizes(tf1_out.get("heads"))
            result = compare_image(name, tf1_out, tf2_out, sizes)
            results.append(result)
            if not result.passed and not diagnosis:
                hint_spec = _spec_of(tf2, spec, tf1_zoo_dir)
                agreeing: list[str] = []
                if raw_passed(result) and hint_spec is not None:
                    agreeing = reproducing_clippings(tf1_out, hint_spec)
                same = hint_spec is not None and hint_spec.post_processing.box_clipping in agreeing
                notes = diagnose(
                    tf1_out, tf2_out, result, sizes, level_names(hint_spec),
                    base_causes(hint_spec), near_tie_cause(result) if same else None,
                )  # fmt: skip
                hint = postprocessing_hint(hint_spec, agreeing) if hint_spec else None
                notes += [hint] if hint else []
                diagnosis = [f"{name}: {note}" for note in notes]
    report = summarize(results, tf1_graph=kind, diagnosis=diagnosis)
    report.tf1_graph_file = str(graph_file)
    return report
