"""TF1 SSD post-processing as a Model Garden detection generator.

Subclasses Model Garden's `MultilevelDetectionGenerator` (same call signature and output keys, so
`RetinaNetModel` uses it unchanged: `detection_boxes/scores/classes`, `num_detections`, classes
1-based) but computes what TF1's `SSDMetaArch.postprocess` computes, because the stock generator
differs in ways that change detections:
- decoding: Model Garden's `decode_boxes` clips dh/dw at log(1000/16) before `exp`; TF1's
  faster_rcnn box coder does not. The TF1 formula is used (centre/size, scales (10, 10, 5, 5)).
- scores: TF1 divides logits by `logit_scale` and applies the configured converter (sigmoid,
  softmax or identity) before dropping the background slot; Model Garden always uses sigmoid.
- NMS: TF1 `batch_multiclass_non_max_suppression` keeps score > threshold, runs per-class NMS
  with `max_detections_per_class`, keeps the `max_total_detections` best over all classes, and
  clips boxes to the [0, 1] window, dropping those whose clipped area is 0. *When* it clips
  changed in July 2018 (`PostProcessingSpec.box_clipping`): the OD API of the 2018_01..07_03 zoo
  graphs clips every box before NMS; later versions (TF 1.9-1.15 exports) run NMS on the
  unclipped boxes and clip the sorted survivors before the total limit. Model Garden's v1/v2 NMS
  has a single per-class/total limit and a pre-NMS top-k, and does not clip. Here, as in TF1, the
  `NonMaxSuppression` kernel TF1's graphs run does the NMS class by class (greedy, strict score
  threshold; equal scores go to the lower anchor index), the survivors are concatenated class
  by class and ranked by a stable sort, with TF1's clipping around it. (TensorFlow's
  `combined_non_max_suppression` has the same semantics but breaks equal scores in heap order:
  with saturated or near-constant scores it keeps other boxes than TF1.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tf_keras
from official.vision.modeling.layers.detection_generator import MultilevelDetectionGenerator


def decode_tf1_boxes(
    rel_codes: tf.Tensor, anchors: tf.Tensor, scales: Sequence[float], reciprocal: bool = False
) -> tf.Tensor:
    """TF1 FasterRcnnBoxCoder._decode: (ty, tx, th, tw) + anchors (ymin, xmin, ymax, xmax).

    `reciprocal`: divide by the scale factors as multiplication by their float32 reciprocals.
    A TF1 session runs grappler's constant folding, which rewrites `x / const` into
    `x * (1 / const)` (`ReduceDivToReciprocalMul`); the two differ by an ulp now and then. The
    Faster R-CNN graphs' top-level `Decode` ops get that rewrite: with it the proposals equal a
    TF1 OD API export's bit for bit, without it they differ by 1-4 ulps, which is enough to flip
    a crop_and_resize sample at the image border (see `pipeline.conversion.faster_rcnn.parity`).
    SSD keeps the plain division its parity was measured with."""
    ymin_a, xmin_a, ymax_a, xmax_a = tf.unstack(anchors, axis=-1)
    height_a = ymax_a - ymin_a
    width_a = xmax_a - xmin_a
    ycenter_a = ymin_a + height_a / 2.0
    xcenter_a = xmin_a + width_a / 2.0
    ty, tx, th, tw = tf.unstack(rel_codes, axis=-1)
    if reciprocal:
        inverse = [tf.constant(1.0, tf.float32) / tf.constant(s, tf.float32) for s in scales]
        ty, tx, th, tw = ty * inverse[0], tx * inverse[1], th * inverse[2], tw * inverse[3]
    else:
        ty /= scales[0]
        tx /= scales[1]
        th /= scales[2]
        tw /= scales[3]
    w = tf.exp(tw) * width_a
    h = tf.exp(th) * height_a
    ycenter = ty * height_a + ycenter_a
    xcenter = tx * width_a + xcenter_a
    ymin = ycenter - h / 2.0
    xmin = xcenter - w / 2.0
    ymax = ycenter + h / 2.0
    xmax = xcenter + w / 2.0
    return tf.stack([ymin, xmin, ymax, xmax], axis=-1)


def convert_scores(
    logits: tf.Tensor, converter: str, logit_scale: float, add_background_class: bool
) -> tf.Tensor:
    """TF1 score conversion ([..., slots] logits -> [..., num_classes] scores)."""
    logits = tf.divide(logits, logit_scale)
    if converter == "SIGMOID":
        scores = tf.sigmoid(logits)
    elif converter == "SOFTMAX":
        scores = tf.nn.softmax(logits)
    elif converter == "IDENTITY":
        scores = tf.identity(logits)
    else:
        raise ValueError(f"unknown score converter {converter!r}")
    return scores[..., 1:] if add_background_class else scores


def per_class_nms(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    score_threshold: float,
    iou_threshold: float,
    max_detections_per_class: int,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """TF1's multiclass_non_max_suppression before its final sort: boxes [B, N, 4], or
    [B, N, q, 4] with q = 1 or a box per class (Faster R-CNN), scores [B, N, C] -> each class's
    NMS survivors (the `NonMaxSuppression` kernel: greedy, strict score threshold, equal scores
    to the lower index), concatenated class by class: boxes [B, C * M, 4], scores [B, C * M]
    (-1 where a class has fewer than M survivors), classes [B, C * M] (0-based, float)."""
    num_classes = int(scores.shape[-1])
    limit = max_detections_per_class
    if boxes.shape.rank == 3:
        boxes = boxes[:, :, None, :]
    per_class_boxes = int(boxes.shape[2]) > 1

    def one_image(args: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        image_boxes, image_scores = args
        parts_boxes, parts_scores, parts_classes = [], [], []
        for k in range(num_classes):
            class_boxes = image_boxes[:, k if per_class_boxes else 0]
            class_scores = image_scores[:, k]
            selected, valid = tf.raw_ops.NonMaxSuppressionV4(
                boxes=class_boxes, scores=class_scores, max_output_size=limit,
                iou_threshold=iou_threshold, score_threshold=score_threshold,
                pad_to_max_output_size=True,
            )  # fmt: skip
            live = tf.range(limit) < valid
            parts_boxes.append(tf.gather(class_boxes, selected))
            parts_scores.append(tf.where(live, tf.gather(class_scores, selected), -1.0))
            parts_classes.append(tf.fill([limit], float(k)))
        return tf.concat(parts_boxes, 0), tf.concat(parts_scores, 0), tf.concat(parts_classes, 0)

    return tf.map_fn(
        one_image,
        (tf.cast(boxes, tf.float32), tf.cast(scores, tf.float32)),
        fn_output_signature=(tf.float32, tf.float32, tf.float32),
    )


def tf1_multiclass_nms(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    score_threshold: float,
    iou_threshold: float,
    max_detections_per_class: int,
    max_total_detections: int,
    box_clipping: str = "before_nms",
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """boxes [B, N, 4], scores [B, N, C] -> boxes, scores, classes (0-based), num_detections.

    `box_clipping` is 'before_nms' (2018 OD API) or 'after_nms' (later OD API), see the module
    docstring."""
    if box_clipping not in ("before_nms", "after_nms"):
        raise ValueError(f"box_clipping must be 'before_nms' or 'after_nms', not {box_clipping!r}")
    if box_clipping == "before_nms":
        boxes = tf.clip_by_value(boxes, 0.0, 1.0)
        # Boxes TF1 discards for an empty clipped area can never pass a threshold >= 0 at -1.
        scores = tf.where(_nonzero_area(boxes)[..., None], scores, -tf.ones_like(scores))
    survivors, survivor_scores, survivor_classes = per_class_nms(
        boxes, scores, score_threshold, iou_threshold, max_detections_per_class
    )
    if box_clipping == "after_nms":
        # TF1 clips the survivors and drops those left empty before the total limit.
        survivors = tf.clip_by_value(survivors, 0.0, 1.0)
        survivor_scores = tf.where(_nonzero_area(survivors), survivor_scores, -1.0)
    candidates = int(survivor_scores.shape[-1])
    # top_k is stable, like TF1's sort_by_field: ties keep the class-by-class NMS order.
    top_scores, order = tf.math.top_k(survivor_scores, k=min(max_total_detections, candidates))
    num = tf.reduce_sum(tf.cast(top_scores >= 0.0, tf.int32), axis=-1)
    live = tf.range(tf.shape(order)[-1])[None, :] < num[:, None]
    out_boxes = tf.where(live[..., None], tf.gather(survivors, order, batch_dims=1), 0.0)
    out_scores = tf.where(live, top_scores, 0.0)
    out_classes = tf.where(live, tf.gather(survivor_classes, order, batch_dims=1), 0.0)
    return out_boxes, out_scores, out_classes, num


def _nonzero_area(boxes: tf.Tensor) -> tf.Tensor:
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    return (ymax - ymin) * (xmax - xmin) > 0.0


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1DetectionGenerator(MultilevelDetectionGenerator):
    """Model Garden detection generator with TF1 SSD decoding, score conversion and NMS."""

    def __init__(
        self,
        box_coder_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        score_converter: str = "SIGMOID",
        logit_scale: float = 1.0,
        score_threshold: float = 1e-8,
        iou_threshold: float = 0.6,
        max_detections_per_class: int = 100,
        max_total_detections: int = 100,
        add_background_class: bool = True,
        box_clipping: str = "before_nms",
        apply_nms: bool = True,
        return_decoded: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            apply_nms=apply_nms,
            pre_nms_score_threshold=score_threshold,
            nms_iou_threshold=iou_threshold,
            max_num_detections=max_total_detections,
            nms_version="batched",
            return_decoded=return_decoded,
            box_coder_weights=[float(w) for w in box_coder_weights],
            **kwargs,
        )
        self._tf1_config = {
            "box_coder_weights": [float(w) for w in box_coder_weights],
            "score_converter": score_converter,
            "logit_scale": float(logit_scale),
            "score_threshold": float(score_threshold),
            "iou_threshold": float(iou_threshold),
            "max_detections_per_class": int(max_detections_per_class),
            "max_total_detections": int(max_total_detections),
            "add_background_class": bool(add_background_class),
            "box_clipping": str(box_clipping),
            "apply_nms": bool(apply_nms),
            "return_decoded": bool(return_decoded),
        }

    def decode(
        self, raw_boxes: Mapping[str, tf.Tensor], raw_scores: Mapping[str, tf.Tensor],
        anchor_boxes: Mapping[str, tf.Tensor],
    ) -> tuple[tf.Tensor, tf.Tensor]:  # fmt: skip
        """Per-level head outputs -> decoded boxes [B, N, 4] and scores [B, N, C], TF1 order."""
        cfg = self._tf1_config
        encodings, logits, anchors = [], [], []
        for level in sorted(raw_boxes, key=int):
            batch = tf.shape(raw_boxes[level])[0]
            encodings.append(tf.reshape(raw_boxes[level], [batch, -1, 4]))
            anchors.append(tf.reshape(anchor_boxes[level], [batch, -1, 4]))
            channels = raw_scores[level].get_shape().as_list()[-1]
            slots = channels // (raw_boxes[level].get_shape().as_list()[-1] // 4)
            logits.append(tf.reshape(raw_scores[level], [batch, -1, slots]))
        boxes = decode_tf1_boxes(
            tf.concat(encodings, axis=1), tf.concat(anchors, axis=1), cfg["box_coder_weights"]
        )
        scores = convert_scores(
            tf.concat(logits, axis=1),
            cfg["score_converter"],
            cfg["logit_scale"],
            cfg["add_background_class"],
        )
        return boxes, scores

    def __call__(
        self,
        raw_boxes: Mapping[str, tf.Tensor],
        raw_scores: Mapping[str, tf.Tensor],
        anchor_boxes: Mapping[str, tf.Tensor],
        image_shape: tf.Tensor | None = None,
        raw_attributes: Mapping[str, tf.Tensor] | None = None,
    ) -> dict[str, Any]:
        # Coordinates are normalized and TF1's clip window is the unit square, so image_shape is
        # not needed.
        del image_shape, raw_attributes
        cfg = self._tf1_config
        boxes, scores = self.decode(raw_boxes, raw_scores, anchor_boxes)
        decoded = {"decoded_boxes": boxes, "decoded_box_scores": scores}
        if not cfg["apply_nms"]:
            return decoded
        nmsed_boxes, nmsed_scores, nmsed_classes, num = tf1_multiclass_nms(
            boxes,
            scores,
            cfg["score_threshold"],
            cfg["iou_threshold"],
            cfg["max_detections_per_class"],
            cfg["max_total_detections"],
            cfg["box_clipping"],
        )
        return {
            **(decoded if cfg["return_decoded"] else {}),
            "num_detections": num,
            "detection_boxes": nmsed_boxes,
            # 1-based like Model Garden and TF1's exported graphs (background was slot 0).
            "detection_classes": tf.cast(nmsed_classes, tf.int32) + 1,
            "detection_scores": nmsed_scores,
            "detection_attributes": {},
        }

    def get_config(self) -> dict[str, Any]:
        return dict(self._tf1_config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TF1DetectionGenerator:
        return cls(**config)
