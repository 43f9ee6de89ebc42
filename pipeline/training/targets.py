"""TF1 SSD target assignment (argmax matcher + faster_rcnn box coder) on Model Garden ops.

TF1's `TargetAssigner` with an `ArgMaxMatcher` maps onto Model Garden's pieces one to one:
`IouSimilarity` (same IoU, 0 where boxes do not intersect), `BoxMatcher` (thresholds split the best
IoU of each anchor into negative / ignored / positive exactly as TF1's matched/unmatched thresholds
do, and `force_match_for_each_col` is TF1's `force_match_for_each_row`, with the same
tie-breaking by first index), `TargetGather` (its semantics written out when the anchor count is
dynamic) and `box_ops.encode_boxes` (TF1's faster_rcnn
coder: (ty, tx, th, tw) scaled by (10, 10, 5, 5), epsilon 1e-8 on sizes). Model Garden's
`AnchorLabeler` is not used because it expects Model Garden's per-level anchors; the TF1 anchors
are one flat list in TF1 order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import tensorflow as tf
from official.vision.ops import box_matcher, box_ops, iou_similarity, target_gather

# Match indicator values, as TF1's `Match.match_results` (-1 unmatched, -2 ignored).
POSITIVE = 1
NEGATIVE = -1
IGNORED = -2


@dataclasses.dataclass(frozen=True)
class MatcherSettings:
    """TF1 `argmax_matcher` fields."""

    matched_threshold: float = 0.5
    unmatched_threshold: float = 0.5
    negatives_lower_than_unmatched: bool = True
    force_match_for_each_row: bool = True
    ignore_thresholds: bool = False  # TF1: every anchor matches its best box, whatever the IoU
    negative_class_weight: float = 1.0


def _gather_dynamic(
    labels: tf.Tensor, match_indices: tf.Tensor, mask: tf.Tensor, mask_val: float
) -> tf.Tensor:
    """`TargetGather` for [G, D] labels and [N] indices where N is only known at run time: the
    matched rows, `mask_val` where masked (everywhere when G is 0)."""
    filler = tf.zeros(tf.concat([[1], tf.shape(labels)[1:]], axis=0), labels.dtype)
    padded = tf.concat([labels, filler], axis=0)  # index 0 exists even without ground truth
    targets = tf.gather(padded, match_indices)
    return tf.where(mask, tf.cast(mask_val, labels.dtype) * tf.ones_like(targets), targets)


class TF1TargetAssigner:
    """Labels TF1-ordered anchors for one image, as TF1's SSD `TargetAssigner` does."""

    def __init__(
        self,
        anchors: tf.Tensor,
        matcher: MatcherSettings,
        box_coder_scales: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
    ):
        self._anchors = tf.convert_to_tensor(anchors, tf.float32)
        if matcher.unmatched_threshold > matcher.matched_threshold:
            raise ValueError("unmatched_threshold must not exceed matched_threshold")
        self._negative_weight = float(matcher.negative_class_weight)
        if matcher.ignore_thresholds:
            thresholds, indicators = [], [POSITIVE]
        elif matcher.negatives_lower_than_unmatched:
            # [-inf, unmatched) negative, [unmatched, matched) ignored, [matched, inf) positive.
            thresholds = [matcher.unmatched_threshold, matcher.matched_threshold]
            indicators = [NEGATIVE, IGNORED, POSITIVE]
        else:
            thresholds = [matcher.unmatched_threshold, matcher.matched_threshold]
            indicators = [IGNORED, NEGATIVE, POSITIVE]
        self._matcher = box_matcher.BoxMatcher(
            thresholds=thresholds,
            indicators=indicators,
            force_match_for_each_col=matcher.force_match_for_each_row,
        )
        self._similarity = iou_similarity.IouSimilarity()
        if self._anchors.shape[0] is None:
            # Model Garden's TargetGather needs a static anchor count (two-stage models prune
            # anchors per image size and match proposals): the same gather-then-mask, dynamic.
            self._gather = _gather_dynamic
        else:
            self._gather = target_gather.TargetGather()
        self._scales = [float(s) for s in box_coder_scales]

    @property
    def num_anchors(self) -> int:
        return int(self._anchors.shape[0])

    def __call__(self, boxes: tf.Tensor, classes: tf.Tensor) -> dict[str, tf.Tensor]:
        """Targets for one image.

        Args:
          boxes: [G, 4] normalised (ymin, xmin, ymax, xmax) ground-truth boxes (G may be 0).
          classes: [G] model class ids 1..K (0 is background).

        Returns:
          cls_targets [N] int32 (0 = background), cls_weights [N] (0 for ignored anchors),
          box_targets [N, 4] encoded (ty, tx, th, tw), box_weights [N] (1 for positives),
          match [N] int32 (POSITIVE / NEGATIVE / IGNORED).
        """
        boxes = tf.cast(boxes, tf.float32)
        classes = tf.cast(classes, tf.int32)
        similarity = self._similarity(self._anchors, boxes)  # [N, G]
        matched_gt, indicators = self._matcher(similarity)
        positive = tf.equal(indicators, POSITIVE)
        not_positive = tf.logical_not(positive)
        cls_targets = self._gather(classes[:, None], matched_gt, not_positive[:, None], 0)[:, 0]
        matched_boxes = self._gather(boxes, matched_gt, tf.tile(not_positive[:, None], [1, 4]), 0)
        encoded = box_ops.encode_boxes(matched_boxes, self._anchors, weights=self._scales)
        box_targets = tf.where(positive[:, None], encoded, tf.zeros_like(encoded))
        match = tf.cast(indicators, tf.int32)  # POSITIVE / NEGATIVE / IGNORED, as TF1's Match
        return {
            "cls_targets": cls_targets,
            "cls_weights": tf.where(
                positive, 1.0, tf.where(tf.equal(match, NEGATIVE), self._negative_weight, 0.0)
            ),
            "box_targets": box_targets,
            "box_weights": tf.cast(positive, tf.float32),
            "match": match,
        }
