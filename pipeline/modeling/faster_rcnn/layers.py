"""TF1 Faster R-CNN anchors, proposals, crops and detections as Model Garden MaskRCNNModel parts.

Each replaces the stock part that computes something else:
- anchors: Model Garden's `Anchor` centres anchors at stride/2 and orders them scale-major per
  level; TF1's `grid_anchor_generator` centres them at `offset` (0 by default), orders
  (row, column, aspect ratio, scale) and works in absolute pixels. `grid_anchors` mirrors
  `grid_anchor_generator.tile_anchors` op for op in float32.
- `TF1ProposalGenerator` (the `roi_generator`): TF1 `_postprocess_rpn` — anchors clipped to the
  image, faster_rcnn box decoding, softmax objectness, single-class NMS with TF1's clip order,
  proposals padded with zeros and *normalized* (TF1 crops with normalized boxes; Model Garden's
  generator returns absolute boxes after its own top-k / multilevel NMS).
- `TF1CropAndPool` (the `roi_aligner`): `tf.image.crop_and_resize` to initial_crop_size then a
  VALID max pool, where Model Garden's `MultilevelROIAligner` does ROI Align.
- `TF1SecondStageGenerator` (the `detection_generator`): TF1 `_postprocess_box_classifier` —
  per-class decoding against the absolute proposals, score conversion, per-class NMS clipped to
  the image window and normalized to it, padded proposals ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from pipeline.modeling.faster_rcnn.spec import GridAnchorSpec, NMSSpec
from pipeline.modeling.postprocess import convert_scores, decode_tf1_boxes, per_class_nms


def grid_anchors(height: tf.Tensor, width: tf.Tensor, spec: GridAnchorSpec) -> tf.Tensor:
    """[H * W * A, 4] absolute (ymin, xmin, ymax, xmax) anchors in TF1 order."""
    # ops.meshgrid(scales, aspect_ratios) flattened: aspect ratio major, scale minor.
    scales = tf.constant([s for _ in spec.aspect_ratios for s in spec.scales], tf.float32)
    ratios = tf.constant([a for a in spec.aspect_ratios for _ in spec.scales], tf.float32)
    base = tf.constant(spec.base_size, tf.float32)
    stride = tf.constant(spec.stride, tf.float32)
    offset = tf.constant(spec.offset, tf.float32)
    ratio_sqrts = tf.sqrt(ratios)
    heights = scales / ratio_sqrts * base[0]
    widths = scales * ratio_sqrts * base[1]
    y_centers = tf.cast(tf.range(height), tf.float32) * stride[0] + offset[0]
    x_centers = tf.cast(tf.range(width), tf.float32) * stride[1] + offset[1]
    count = tf.size(scales)
    grid = tf.stack([height, width, count])
    y_grid = tf.broadcast_to(y_centers[:, None, None], grid)
    x_grid = tf.broadcast_to(x_centers[None, :, None], grid)
    h_grid = tf.broadcast_to(heights[None, None, :], grid)
    w_grid = tf.broadcast_to(widths[None, None, :], grid)
    centers = tf.reshape(tf.stack([y_grid, x_grid], axis=3), [-1, 2])
    sizes = tf.reshape(tf.stack([h_grid, w_grid], axis=3), [-1, 2])
    return tf.concat([centers - 0.5 * sizes, centers + 0.5 * sizes], axis=1)


def clip_to_window(boxes: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """box_list_ops.clip_to_window (without the filtering): window [..., 4] broadcasts."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    wy0, wx0, wy1, wx1 = tf.unstack(window, axis=-1)
    return tf.stack(
        [
            tf.maximum(tf.minimum(ymin, wy1), wy0),
            tf.maximum(tf.minimum(xmin, wx1), wx0),
            tf.maximum(tf.minimum(ymax, wy1), wy0),
            tf.maximum(tf.minimum(xmax, wx1), wx0),
        ],
        axis=-1,
    )


def _area(boxes: tf.Tensor) -> tf.Tensor:
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    return (ymax - ymin) * (xmax - xmin)


def _change_frame(boxes: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """box_list_ops.change_coordinate_frame: (box - window origin) * (1 / window size)."""
    origin = tf.stack([window[..., 0], window[..., 1], window[..., 0], window[..., 1]], axis=-1)
    height = window[..., 2] - window[..., 0]
    width = window[..., 3] - window[..., 1]
    scale = tf.stack([1.0 / height, 1.0 / width, 1.0 / height, 1.0 / width], axis=-1)
    return (boxes - origin) * scale


def tf1_batch_nms(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    window: tf.Tensor,
    nms: NMSSpec,
    box_clipping: str,
    change_frame: bool,
    valid: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """TF1 `batch_multiclass_non_max_suppression` with a clip window.

    boxes [B, N, q, 4] (q = 1 or num classes), scores [B, N, C], window [B, 4] absolute, `valid`
    [B, N] (TF1's num_valid_boxes). Returns boxes [B, T, 4], scores [B, T], 0-based classes
    [B, T] (float, like TF1), num_detections [B] (int32), zero-padded to T = max_total.

    `box_clipping` 'before_nms' (OD API of TF <= 1.8): score filter, clip to the window, drop
    empty boxes, NMS per class, best max_total overall. 'after_nms' (later OD API): NMS per class
    on the unclipped boxes, then clip, drop empty boxes, best max_total. The per-class greedy NMS
    (IoU > threshold suppresses, strict score threshold, per-class and total limits) is TF1's,
    class by class (`pipeline.modeling.postprocess.per_class_nms`), and the survivors are ranked
    by a stable sort as TF1's sort_by_field ranks them.
    """
    window_b = window[:, None, None, :]
    if valid is not None:
        scores = tf.where(valid[..., None], scores, -tf.ones_like(scores))
    if box_clipping == "before_nms":
        boxes = clip_to_window(boxes, window_b)
        # Empty clipped boxes are pruned by TF1; a score of -1 never passes a threshold >= 0.
        scores = tf.where(_area(boxes) > 0.0, scores, -tf.ones_like(scores))
        if change_frame:
            boxes = _change_frame(boxes, window_b)
    kept, kept_scores, kept_classes = per_class_nms(
        boxes, scores, nms.score_threshold, nms.iou_threshold, nms.max_detections_per_class
    )
    if box_clipping == "after_nms":
        # Every per-class survivor is clipped, and those left empty are dropped, before the
        # total limit.
        kept = clip_to_window(kept, window[:, None, :])
        kept_scores = tf.where(_area(kept) > 0.0, kept_scores, -tf.ones_like(kept_scores))
    slots = int(kept_scores.shape[-1])
    total = min(nms.max_total_detections, slots)
    top_scores, order = tf.math.top_k(kept_scores, k=total)  # stable: ties keep class order
    top_boxes = tf.gather(kept, order, batch_dims=1)
    top_classes = tf.gather(kept_classes, order, batch_dims=1)
    if change_frame and box_clipping == "after_nms":
        top_boxes = _change_frame(top_boxes, window[:, None, :])
    keep = top_scores >= 0.0
    count = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
    pad = nms.max_total_detections - total
    top_boxes = tf.pad(tf.where(keep[..., None], top_boxes, 0.0), [[0, 0], [0, pad], [0, 0]])
    top_scores = tf.pad(tf.where(keep, top_scores, 0.0), [[0, 0], [0, pad]])
    top_classes = tf.pad(tf.where(keep, top_classes, 0.0), [[0, 0], [0, pad]])
    return top_boxes, top_scores, top_classes, count


def _image_window(image_shape: tf.Tensor) -> tf.Tensor:
    """[B, 2] (height, width) -> [B, 4] window (0, 0, height, width), float32."""
    shape = tf.cast(image_shape, tf.float32)
    zeros = tf.zeros_like(shape[:, 0])
    return tf.stack([zeros, zeros, shape[:, 0], shape[:, 1]], axis=1)


def _scale_boxes(boxes: tf.Tensor, y_scale: tf.Tensor, x_scale: tf.Tensor) -> tf.Tensor:
    """box_list_ops.scale: y * y_scale, x * x_scale (y_scale/x_scale broadcast as [B, 1])."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    return tf.stack([ymin * y_scale, xmin * x_scale, ymax * y_scale, xmax * x_scale], axis=-1)


def normalize_boxes(boxes: tf.Tensor, image_shape: tf.Tensor) -> tf.Tensor:
    """box_list_ops.to_normalized_coordinates of [B, N, 4] absolute boxes, image_shape [B, 2]."""
    shape = tf.cast(image_shape, tf.float32)
    return _scale_boxes(boxes, 1.0 / shape[:, 0:1], 1.0 / shape[:, 1:2])


def absolute_boxes(boxes: tf.Tensor, image_shape: tf.Tensor) -> tf.Tensor:
    """ops.normalized_to_image_coordinates of [B, N, 4] normalized boxes, image_shape [B, 2]."""
    shape = tf.cast(image_shape, tf.float32)
    return _scale_boxes(boxes, shape[:, 0:1], shape[:, 1:2])


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1ProposalGenerator(tf_keras.layers.Layer):
    """TF1 `_postprocess_rpn` with the `roi_generator` call signature of Model Garden."""

    def __init__(
        self,
        nms: NMSSpec,
        box_coder_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        box_clipping: str = "before_nms",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._nms = nms
        self._weights = [float(w) for w in box_coder_weights]
        self.box_clipping = box_clipping

    def call(
        self,
        raw_boxes: Mapping[str, tf.Tensor],
        raw_scores: Mapping[str, tf.Tensor],
        anchor_boxes: Mapping[str, tf.Tensor],
        image_shape: tf.Tensor,
        training: bool | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """-> normalized proposals [B, max_proposals, 4] (zero-padded), their objectness [B, P]."""
        del training
        encodings, logits, anchors = [], [], []
        for level in sorted(raw_boxes, key=int):
            batch = tf.shape(raw_boxes[level])[0]
            encodings.append(tf.reshape(raw_boxes[level], [batch, -1, 4]))
            logits.append(tf.reshape(raw_scores[level], [batch, -1, 2]))
            anchors.append(tf.reshape(anchor_boxes[level], [-1, 4]))
        encodings = tf.concat(encodings, axis=1)
        logits = tf.concat(logits, axis=1)
        anchors = tf.concat(anchors, axis=0)
        # TF1 clips the anchors (not the proposals) to the first image's window at inference.
        anchors = clip_to_window(anchors, _image_window(image_shape)[0])
        proposals, scores, _ = self.absolute_proposals(encodings, logits, anchors, image_shape)
        return normalize_boxes(proposals, image_shape), scores

    def absolute_proposals(
        self, encodings: tf.Tensor, logits: tf.Tensor, anchors: tf.Tensor, image_shape: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """encodings [B, N, 4], logits [B, N, 2], anchors [N, 4] -> absolute proposals
        [B, max_proposals, 4] (zero-padded), their objectness [B, P], their count [B]: TF1's
        decoding, softmax and NMS clipped to `image_shape` (training prunes the anchors instead
        of clipping them, then calls this)."""
        tf.debugging.assert_equal(
            tf.shape(anchors)[0], tf.shape(encodings)[1], "anchors do not match the RPN outputs"
        )
        boxes = decode_tf1_boxes(
            encodings, tf.broadcast_to(anchors, tf.shape(encodings)), self._weights,
            reciprocal=True,
        )  # fmt: skip
        objectness = tf.nn.softmax(logits)[..., 1:2]
        proposals, scores, _, count = tf1_batch_nms(
            boxes[:, :, None, :], objectness, _image_window(image_shape), self._nms,
            self.box_clipping, change_frame=False,
        )  # fmt: skip
        return proposals, scores, count

    def get_config(self) -> dict[str, Any]:
        return {
            "nms": dataclasses.asdict(self._nms),
            "box_coder_weights": self._weights,
            "box_clipping": self.box_clipping,
        }


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1CropAndPool(tf_keras.layers.Layer):
    """The `roi_aligner`: crop_and_resize at normalized boxes, then a VALID max pool."""

    def __init__(self, crop_size: int, pool_kernel: int, pool_stride: int, **kwargs: Any):
        super().__init__(**kwargs)
        self._crop_size = crop_size
        self._pool = tf_keras.layers.MaxPooling2D(pool_kernel, pool_stride, padding="valid")
        self._config = {
            "crop_size": crop_size,
            "pool_kernel": pool_kernel,
            "pool_stride": pool_stride,
        }

    def call(self, features: Mapping[str, tf.Tensor], boxes: tf.Tensor) -> tf.Tensor:
        """features {level: [B, H, W, C]} (one level), boxes [B, N, 4] -> [B, N, h, w, C]."""
        (feature,) = features.values()
        shape = tf.shape(boxes)
        batch, num = shape[0], shape[1]
        indices = tf.repeat(tf.range(batch), num)
        crops = tf.image.crop_and_resize(
            feature, tf.reshape(boxes, [-1, 4]), indices, [self._crop_size, self._crop_size]
        )
        pooled = self._pool(crops)
        return tf.reshape(pooled, tf.concat([[batch, num], tf.shape(pooled)[1:]], axis=0))

    def get_config(self) -> dict[str, Any]:
        return dict(self._config)


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1SecondStageGenerator(tf_keras.layers.Layer):
    """TF1 `_postprocess_box_classifier` with the `detection_generator` signature of Model
    Garden (detection classes 1-based, boxes normalized to the image, as the TF1 exports)."""

    def __init__(
        self,
        nms: NMSSpec,
        score_converter: str = "SOFTMAX",
        logit_scale: float = 1.0,
        box_coder_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        box_clipping: str = "before_nms",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._nms = nms
        self._converter = score_converter
        self._logit_scale = float(logit_scale)
        self._weights = [float(w) for w in box_coder_weights]
        self.box_clipping = box_clipping

    def call(
        self,
        raw_boxes: tf.Tensor,
        raw_scores: tf.Tensor,
        proposals: tf.Tensor,
        image_shape: tf.Tensor,
        regression_weights: Sequence[float] | None = None,
        bbox_per_class: bool = True,
    ) -> dict[str, tf.Tensor]:
        """raw_boxes [B, N, K * 4], raw_scores [B, N, K + 1], proposals [B, N, 4] normalized."""
        del regression_weights, bbox_per_class  # TF1's coder weights come from the config
        shape = tf.shape(raw_boxes)
        batch, num = shape[0], shape[1]
        num_classes = raw_scores.shape[-1] - 1
        encodings = tf.reshape(raw_boxes, [batch, num, num_classes, 4])
        # ops.normalized_to_image_coordinates: the absolute proposals TF1 decodes against.
        absolute = absolute_boxes(proposals, image_shape)
        tiled = tf.broadcast_to(absolute[:, :, None, :], tf.shape(encodings))
        boxes = decode_tf1_boxes(encodings, tiled, self._weights, reciprocal=True)
        scores = convert_scores(raw_scores, self._converter, self._logit_scale, True)
        # Padded proposals are all-zero boxes; real ones never have zero area (TF1 pruned them).
        valid = _area(proposals) > 0.0
        nmsed_boxes, nmsed_scores, nmsed_classes, count = tf1_batch_nms(
            boxes, scores, _image_window(image_shape), self._nms, self.box_clipping,
            change_frame=True, valid=valid,
        )  # fmt: skip
        return {
            "num_detections": count,
            "detection_boxes": nmsed_boxes,
            "detection_classes": tf.cast(nmsed_classes, tf.int32) + 1,
            "detection_scores": nmsed_scores,
        }

    def get_config(self) -> dict[str, Any]:
        return {
            "apply_nms": True,
            "score_converter": self._converter,
            "logit_scale": self._logit_scale,
            "box_coder_weights": self._weights,
            "box_clipping": self.box_clipping,
        }
