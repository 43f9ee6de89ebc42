"""TF1 SSD losses: weighted sigmoid / focal classification, smooth-L1 boxes, hard example mining.

Semantics follow TF1's `ssd_meta_arch.SSDMetaArch.loss`:
- classification over all K+1 logits (background at 0), one-hot targets, per-anchor weights
  (0 for ignored anchors): `weighted_sigmoid` or `weighted_sigmoid_focal` (Model Garden's
  `FocalLoss` computes exactly TF1's `SigmoidFocalClassificationLoss` per entry);
- localization: smooth L1 (Huber, delta 1) summed over the 4 coordinates, weighted by positives;
- optional hard example mining, then the sums are divided by max(#positives in the batch, 1) when
  `normalize_loss_by_num_matches`.
Model Garden has no hard example miner (its RetinaNet uses focal loss only), so `hard_example_mask`
is hand-written after TF1's `HardExampleMiner`.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
import tf_keras
from official.vision.losses import focal_loss
from official.vision.ops import box_ops

from pipeline.training.targets import NEGATIVE


@dataclasses.dataclass(frozen=True)
class HardExampleMinerSettings:
    """TF1 `hard_example_miner` fields."""

    num_hard_examples: int | None = 3000
    iou_threshold: float = 0.99
    loss_type: str = "classification"  # classification | localization | both
    max_negatives_per_positive: float | None = 3.0
    min_negatives_per_image: int = 3


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """The TF1 `loss` block of an SSD pipeline.config (plus normalisation flags)."""

    classification: str = "weighted_sigmoid"  # weighted_sigmoid | weighted_sigmoid_focal
    focal_gamma: float = 2.0
    focal_alpha: float | None = 0.25
    localization: str = "weighted_smooth_l1"
    smooth_l1_delta: float = 1.0
    classification_weight: float = 1.0
    localization_weight: float = 1.0
    hard_example_miner: HardExampleMinerSettings | None = dataclasses.field(
        default_factory=HardExampleMinerSettings
    )
    normalize_loss_by_num_matches: bool = True
    normalize_loc_loss_by_codesize: bool = False
    add_background_class: bool = True  # logits carry a background slot at index 0
    # TF1 `encode_background_as_zeros`: unmatched anchors' target is all zeros, the background
    # slot included (ssd_meta_arch's `_unmatched_class_label`); else one-hot on slot 0.
    encode_background_as_zeros: bool = False
    logit_scale: float = 1.0  # weighted_softmax only


def classification_losses(
    logits: tf.Tensor, cls_targets: tf.Tensor, cls_weights: tf.Tensor, settings: LossSettings
) -> tf.Tensor:
    """Per-anchor classification loss [B, N] (summed over the K+1 classes, weighted)."""
    num_logits = logits.shape[-1]
    # Without a background slot, or with encode_background_as_zeros, background is the all-zero
    # target (one_hot of -1).
    index = cls_targets if settings.add_background_class else cls_targets - 1
    if settings.encode_background_as_zeros:
        index = tf.where(cls_targets > 0, index, -1)
    onehot = tf.one_hot(index, num_logits, dtype=tf.float32)
    if settings.classification == "weighted_sigmoid":
        per_entry = tf.nn.sigmoid_cross_entropy_with_logits(labels=onehot, logits=logits)
    elif settings.classification == "weighted_sigmoid_focal":
        # TF1 without alpha applies no alpha weighting: alpha 0.5 halves every entry exactly.
        alpha = 0.5 if settings.focal_alpha is None else settings.focal_alpha
        per_entry = focal_loss.FocalLoss(
            alpha=alpha, gamma=settings.focal_gamma, reduction=tf_keras.losses.Reduction.NONE
        ).call(onehot, logits)
        if settings.focal_alpha is None:
            per_entry = 2.0 * per_entry
    elif settings.classification == "weighted_softmax":
        per_anchor = tf.nn.softmax_cross_entropy_with_logits(
            labels=onehot, logits=logits / settings.logit_scale
        )
        return per_anchor * cls_weights
    else:
        raise ValueError(f"unsupported classification loss {settings.classification!r}")
    return tf.reduce_sum(per_entry, axis=-1) * cls_weights


def localization_losses(
    box_outputs: tf.Tensor, box_targets: tf.Tensor, box_weights: tf.Tensor, settings: LossSettings
) -> tf.Tensor:
    """Per-anchor smooth-L1 loss [B, N] summed over (ty, tx, th, tw), weighted by positives."""
    if settings.localization not in ("weighted_smooth_l1", "weighted_l2"):
        raise ValueError(f"unsupported localization loss {settings.localization!r}")
    diff = box_outputs - box_targets
    if settings.localization == "weighted_l2":
        per_coord = 0.5 * tf.square(diff)
    else:
        delta = settings.smooth_l1_delta
        abs_diff = tf.abs(diff)
        per_coord = tf.where(
            abs_diff <= delta, 0.5 * tf.square(diff), delta * abs_diff - 0.5 * delta * delta
        )
    return tf.reduce_sum(per_coord, axis=-1) * box_weights


def hard_example_mask(
    cls_losses: tf.Tensor,
    loc_losses: tf.Tensor,
    box_outputs: tf.Tensor,
    anchors: tf.Tensor,
    match: tf.Tensor,
    miner: HardExampleMinerSettings,
    settings: LossSettings,
    box_coder_scales: tuple[float, ...],
) -> tf.Tensor:
    """[B, N] 0/1 mask of the anchors TF1's HardExampleMiner keeps (hand-written, see module doc).

    Per image: NMS over the predicted (decoded) boxes scored by the anchor losses, keep at most
    `num_hard_examples`, then keep all positives among them and the first
    max(min_negatives_per_image, max_negatives_per_positive * #positives) negatives in NMS order.
    """
    num_anchors = tf.shape(cls_losses)[1]
    decoded = box_ops.decode_boxes(
        tf.stop_gradient(box_outputs), anchors[None], weights=list(box_coder_scales)
    )
    loss_type = miner.loss_type.lower()
    if loss_type == "classification":
        image_losses = settings.classification_weight * cls_losses
    elif loss_type == "localization":
        image_losses = settings.localization_weight * loc_losses
    elif loss_type == "both":
        image_losses = (
            settings.classification_weight * cls_losses + settings.localization_weight * loc_losses
        )
    else:
        raise ValueError(f"unsupported hard example miner loss_type {miner.loss_type!r}")
    image_losses = tf.stop_gradient(image_losses)
    max_output = miner.num_hard_examples or num_anchors

    def mine_one(args: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> tf.Tensor:
        boxes, losses, image_match = args
        selected = tf.image.non_max_suppression(boxes, losses, max_output, miner.iou_threshold)
        if miner.max_negatives_per_positive is not None:
            selected_match = tf.gather(image_match, selected)
            positives = selected_match >= 0
            negatives = tf.equal(selected_match, NEGATIVE)
            num_positives = tf.reduce_sum(tf.cast(positives, tf.int32))
            quota = miner.max_negatives_per_positive * tf.cast(num_positives, tf.float32)
            max_negatives = tf.maximum(miner.min_negatives_per_image, tf.cast(quota, tf.int32))
            # As TF1: anchors that are neither positive nor negative (ignored) pass this test too.
            within_quota = tf.cumsum(tf.cast(negatives, tf.int32)) <= max_negatives
            selected = tf.boolean_mask(selected, tf.logical_or(positives, within_quota))
        return tf.scatter_nd(
            selected[:, None], tf.ones_like(selected, tf.float32), shape=[num_anchors]
        )

    return tf.map_fn(
        mine_one,
        (decoded, image_losses, match),
        fn_output_signature=tf.TensorSpec([None], tf.float32),
    )


def ssd_losses(
    cls_outputs: tf.Tensor,
    box_outputs: tf.Tensor,
    labels: dict[str, tf.Tensor],
    anchors: tf.Tensor,
    settings: LossSettings,
    box_coder_scales: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0),
    num_matches: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """TF1 SSD classification and localization losses for a batch.

    Args:
      cls_outputs: [B, N, K+1] logits; box_outputs: [B, N, 4] encodings (TF1 order).
      labels: the batched output of `TF1TargetAssigner`.
      num_matches: the number of positives to normalise by; defaults to this batch's count.
        Under a multi-replica strategy pass the count summed over replicas so that the sum of the
        replicas' losses equals the single-device loss.
    """
    cls_losses = classification_losses(
        cls_outputs, labels["cls_targets"], labels["cls_weights"], settings
    )
    loc_losses = localization_losses(
        box_outputs, labels["box_targets"], labels["box_weights"], settings
    )
    if settings.hard_example_miner is not None:
        mask = hard_example_mask(
            cls_losses,
            loc_losses,
            box_outputs,
            anchors,
            labels["match"],
            settings.hard_example_miner,
            settings,
            box_coder_scales,
        )
        cls_losses = cls_losses * mask
        loc_losses = loc_losses * mask
    cls_sum = tf.reduce_sum(cls_losses)
    loc_sum = tf.reduce_sum(loc_losses)
    normalizer = tf.constant(1.0)
    if settings.normalize_loss_by_num_matches:
        if num_matches is None:
            num_matches = tf.reduce_sum(labels["box_weights"])
        normalizer = tf.maximum(tf.cast(num_matches, tf.float32), 1.0)
    loc_normalizer = normalizer * (4.0 if settings.normalize_loc_loss_by_codesize else 1.0)
    cls_loss = settings.classification_weight * cls_sum / normalizer
    box_loss = settings.localization_weight * loc_sum / loc_normalizer
    return {"cls_loss": cls_loss, "box_loss": box_loss, "num_matches": normalizer}
