"""TF1 Faster R-CNN training: the training-mode forward pass, two-stage targets and losses.

Semantics follow TF1's `faster_rcnn_meta_arch.FasterRCNNMetaArch` with `is_training=True`
(`_predict_first_stage`, `_postprocess_rpn`, `_sample_box_classifier_batch`, `_loss_rpn`,
`_loss_box_classifier`), number_of_stages 2 and no hard example miner:
- anchors that stick out of the (padded) image are pruned with their RPN outputs
  (`prune_outside_window`; inference clips them instead);
- first stage: anchors matched to the ground truth by IoU (argmax matcher 0.7 / 0.3, every box
  forced onto its best anchor), a balanced sample of `first_stage_minibatch_size` anchors
  (`first_stage_positive_balance_fraction` positives at most), 2-way softmax objectness and
  smooth-L1 (faster_rcnn coder 10, 10, 5, 5) localization on the sampled anchors, each image's
  sums divided by its number of sampled anchors, averaged over the batch;
- proposals: TF1's decoding and NMS (`first_stage_max_proposals`) on the pruned anchors, gradient
  stopped, then per image a balanced sample of `second_stage_batch_size` proposals
  (`second_stage_balance_fraction`) among the valid ones, labelled by an IoU 0.5 matcher (TF1
  does not add the ground-truth boxes to the proposals), kept in NMS order, zero-padded;
- second stage on the sampled proposals: softmax classification over num_classes + 1 and
  smooth-L1 localization of the encodings predicted for the matched class only, each divided by
  (number of sampled proposals of the image x batch size), padding masked out.
Matching, encoding and IoU are Model Garden's ops through `pipeline.training.targets`
(`TF1TargetAssigner`); the per-anchor losses are `pipeline.training.losses`'; the sampler is
`sampling.balanced_sample` (stateless, seeded).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf

from pipeline.errors import PipelineError
from pipeline.modeling.faster_rcnn.layers import absolute_boxes, normalize_boxes
from pipeline.modeling.faster_rcnn.model import TF1FasterRCNNModel
from pipeline.modeling.faster_rcnn.spec import FasterRCNNSpec
from pipeline.training.faster_rcnn.sampling import balanced_sample
from pipeline.training.losses import LossSettings, classification_losses, localization_losses
from pipeline.training.targets import MatcherSettings, TF1TargetAssigner

# TF1 `target_assigner.create_target_assigner('FasterRCNN', 'proposal' | 'detection')`.
PROPOSAL_MATCHER = MatcherSettings(
    matched_threshold=0.7, unmatched_threshold=0.3, force_match_for_each_row=True
)
DETECTION_MATCHER = MatcherSettings(
    matched_threshold=0.5, unmatched_threshold=0.5, force_match_for_each_row=False
)
SUPPORTED_CLASSIFICATION = ("weighted_softmax",)
# One image's (cls_targets, box_targets, box_weights) from `TF1TargetAssigner`, for tf.map_fn.
_TARGETS = (
    tf.TensorSpec([None], tf.int32),
    tf.TensorSpec([None, 4], tf.float32),
    tf.TensorSpec([None], tf.float32),
)
LOSS_NAMES = (
    "rpn_box_loss",
    "rpn_objectness_loss",
    "box_loss",
    "cls_loss",
)


@dataclasses.dataclass(frozen=True)
class TwoStageLossSettings:
    """The faster_rcnn loss and sampling fields of a pipeline.config."""

    first_stage_minibatch_size: int
    first_stage_positive_fraction: float
    first_stage_localization_weight: float
    first_stage_objectness_weight: float
    second_stage_batch_size: int
    second_stage_positive_fraction: float
    second_stage_localization_weight: float
    second_stage_classification_weight: float
    classification_logit_scale: float
    box_coder_scales: tuple[float, ...]


def two_stage_loss_settings(spec: FasterRCNNSpec) -> TwoStageLossSettings:
    """The spec's training fields, refusing what fine-tuning does not implement (one line)."""
    t = spec.training
    field = "pipeline.config: model.faster_rcnn"
    if t.second_stage_classification_loss not in SUPPORTED_CLASSIFICATION:
        raise PipelineError(
            f"{field}.second_stage_classification_loss is {t.second_stage_classification_loss}; "
            f"fine-tuning supports {', '.join(SUPPORTED_CLASSIFICATION)}"
        )
    if t.hard_example_miner:
        raise PipelineError(
            f"{field}.hard_example_miner is set; fine-tuning supports balanced sampling "
            "(second_stage_batch_size / second_stage_balance_fraction) only"
        )
    if t.use_static_balanced_label_sampler:
        raise PipelineError(
            f"{field}.use_static_balanced_label_sampler is true; fine-tuning supports the "
            "dynamic sampler only"
        )
    if t.second_stage_dropout:
        raise PipelineError(
            f"{field}.second_stage_box_predictor.mask_rcnn_box_predictor.use_dropout is true; "
            "fine-tuning supports use_dropout: false"
        )
    if t.second_stage_batch_size > spec.max_proposals:
        raise PipelineError(
            f"{field}.second_stage_batch_size ({t.second_stage_batch_size}) exceeds "
            f"first_stage_max_proposals ({spec.max_proposals}); TF1 refuses this too"
        )
    return TwoStageLossSettings(
        first_stage_minibatch_size=int(t.first_stage_minibatch_size),
        first_stage_positive_fraction=float(t.first_stage_positive_balance_fraction),
        first_stage_localization_weight=float(t.first_stage_localization_loss_weight),
        first_stage_objectness_weight=float(t.first_stage_objectness_loss_weight),
        second_stage_batch_size=int(t.second_stage_batch_size),
        second_stage_positive_fraction=float(t.second_stage_balance_fraction),
        second_stage_localization_weight=float(t.second_stage_localization_loss_weight),
        second_stage_classification_weight=float(t.second_stage_classification_loss_weight),
        classification_logit_scale=float(t.second_stage_classification_logit_scale),
        box_coder_scales=tuple(float(s) for s in spec.box_coder.scales),
    )


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """A batch's ground truth: boxes [B, M, 4] normalized (ymin, xmin, ymax, xmax), classes
    [B, M] model ids 1..K (padding ignored), num_boxes [B], image_shape [B, 2] (the true
    resized size of each image inside the possibly padded batch)."""

    boxes: tf.Tensor
    classes: tf.Tensor
    num_boxes: tf.Tensor
    image_shape: tf.Tensor

    def image(self, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Image `index`'s absolute boxes [G, 4] and classes [G]."""
        count = self.num_boxes[index]
        shape = tf.cast(self.image_shape[index], tf.float32)
        scale = tf.stack([shape[0], shape[1], shape[0], shape[1]])
        return self.boxes[index, :count] * scale, self.classes[index, :count]


def _softmax_losses(logits: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor, scale: float):
    settings = LossSettings(classification="weighted_softmax", logit_scale=scale)
    return classification_losses(logits, targets, weights, settings)


def _smooth_l1_losses(encodings: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor):
    return localization_losses(encodings, targets, weights, LossSettings())


def prune_outside(anchors: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """Indices of the anchors inside [0, 0, height, width] (box_list_ops.prune_outside_window)."""
    ymin, xmin, ymax, xmax = tf.unstack(anchors, axis=-1)
    inside = (ymin >= 0.0) & (xmin >= 0.0) & (ymax <= height) & (xmax <= width)
    return tf.where(inside)[:, 0]


def _image_seeds(seed: tf.Tensor, batch: tf.Tensor, stage: int, first_image: Any = 0) -> tf.Tensor:
    """[B, 2] stateless seeds for one sampling stage, one per image: images are numbered in the
    global batch (this replica's first is `first_image`)."""
    stage_seed = tf.random.experimental.stateless_fold_in(seed, stage)
    return tf.map_fn(
        lambda i: tf.random.experimental.stateless_fold_in(stage_seed, i),
        tf.range(batch) + first_image,
        fn_output_signature=tf.TensorSpec([2], stage_seed.dtype),
    )


def rpn_losses(
    logits: tf.Tensor,
    encodings: tf.Tensor,
    anchors: tf.Tensor,
    truth: GroundTruth,
    settings: TwoStageLossSettings,
    seed: tf.Tensor,
    batch_size: tf.Tensor | None = None,
    first_image: Any = 0,
) -> dict[str, tf.Tensor]:
    """TF1 `_loss_rpn`: logits [B, N, 2], encodings [B, N, 4] of the (pruned) anchors [N, 4].

    `batch_size` is the global batch (TF1 averages over it); it defaults to this batch's."""
    batch = tf.shape(logits)[0]
    seeds = _image_seeds(seed, batch, 1, first_image)
    assigner = TF1TargetAssigner(anchors, PROPOSAL_MATCHER, settings.box_coder_scales)

    def one_image(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        boxes, _ = truth.image(index)
        targets = assigner(boxes, tf.ones(tf.shape(boxes)[:1], tf.int32))
        sampled = balanced_sample(
            targets["cls_weights"] > 0.0,
            targets["cls_targets"] > 0,
            settings.first_stage_minibatch_size,
            settings.first_stage_positive_fraction,
            seeds[index],
        )
        return (
            targets["cls_targets"],
            targets["box_targets"],
            targets["box_weights"],
            tf.cast(sampled, tf.float32),
        )

    cls_targets, box_targets, box_weights, sampled = tf.map_fn(
        one_image,
        tf.range(batch),
        fn_output_signature=(*_TARGETS, tf.TensorSpec([None], tf.float32)),
    )
    normalizer = tf.maximum(tf.reduce_sum(sampled, axis=1), 1.0)
    objectness = _softmax_losses(logits, cls_targets, sampled, 1.0)
    localization = _smooth_l1_losses(encodings, box_targets, sampled * box_weights)
    count = tf.cast(batch if batch_size is None else batch_size, tf.float32)
    return {
        "rpn_box_loss": settings.first_stage_localization_weight
        * tf.reduce_sum(tf.reduce_sum(localization, axis=1) / normalizer)
        / count,
        "rpn_objectness_loss": settings.first_stage_objectness_weight
        * tf.reduce_sum(tf.reduce_sum(objectness, axis=1) / normalizer)
        / count,
    }


def sample_proposals(
    proposals: tf.Tensor,
    num_proposals: tf.Tensor,
    truth: GroundTruth,
    settings: TwoStageLossSettings,
    seed: tf.Tensor,
    first_image: Any = 0,
) -> tuple[tf.Tensor, tf.Tensor]:
    """TF1 `_sample_box_classifier_batch`: absolute proposals [B, P, 4] (NMS order, zero-padded,
    `num_proposals` [B] valid) -> sampled proposals [B, S, 4] in NMS order, zero-padded, and
    their count [B] (S = second_stage_batch_size)."""
    size = settings.second_stage_batch_size
    batch = tf.shape(proposals)[0]
    seeds = _image_seeds(seed, batch, 2, first_image)

    def one_image(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        boxes, classes = truth.image(index)
        image_proposals = proposals[index]
        assigner = TF1TargetAssigner(image_proposals, DETECTION_MATCHER, settings.box_coder_scales)
        targets = assigner(boxes, classes)
        valid = tf.range(tf.shape(image_proposals)[0]) < num_proposals[index]
        sampled = balanced_sample(
            tf.logical_and(valid, targets["cls_weights"] > 0.0),
            targets["cls_targets"] > 0,
            size,
            settings.second_stage_positive_fraction,
            seeds[index],
        )
        kept = tf.gather(image_proposals, tf.where(sampled)[:, 0])[:size]
        count = tf.shape(kept)[0]
        return tf.pad(kept, [[0, size - count], [0, 0]]), count

    return tf.map_fn(
        one_image,
        tf.range(batch),
        fn_output_signature=(tf.TensorSpec([size, 4], tf.float32), tf.TensorSpec([], tf.int32)),
    )


def box_classifier_losses(
    class_logits: tf.Tensor,
    box_encodings: tf.Tensor,
    proposals: tf.Tensor,
    num_proposals: tf.Tensor,
    truth: GroundTruth,
    settings: TwoStageLossSettings,
    batch_size: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """TF1 `_loss_box_classifier`: class logits [B, S, K + 1], box encodings [B, S, K * 4] of the
    absolute sampled proposals [B, S, 4] (`num_proposals` [B] valid)."""
    batch = tf.shape(class_logits)[0]
    num_slots = tf.shape(proposals)[1]

    def one_image(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        boxes, classes = truth.image(index)
        assigner = TF1TargetAssigner(proposals[index], DETECTION_MATCHER, settings.box_coder_scales)
        targets = assigner(boxes, classes)
        return targets["cls_targets"], targets["box_targets"], targets["box_weights"]

    cls_targets, box_targets, box_weights = tf.map_fn(
        one_image,
        tf.range(batch),
        fn_output_signature=_TARGETS,
    )
    # The matched class's encodings; background (0) picks TF1's zero padding row.
    encodings = tf.reshape(box_encodings, [batch, num_slots, -1, 4])
    encodings = tf.pad(encodings, [[0, 0], [0, 0], [1, 0], [0, 0]])
    encodings = tf.gather(encodings, cls_targets, axis=2, batch_dims=2)
    valid = tf.cast(tf.range(num_slots)[None, :] < num_proposals[:, None], tf.float32)
    count = tf.cast(batch if batch_size is None else batch_size, tf.float32)
    normalizer = tf.maximum(tf.cast(num_proposals, tf.float32), 1.0)[:, None] * count
    weights = valid / normalizer
    classification = _softmax_losses(
        class_logits, cls_targets, tf.ones_like(valid), settings.classification_logit_scale
    )
    localization = _smooth_l1_losses(encodings, box_targets, box_weights)
    return {
        "box_loss": settings.second_stage_localization_weight
        * tf.reduce_sum(localization * weights),
        "cls_loss": settings.second_stage_classification_weight
        * tf.reduce_sum(classification * weights),
    }


def training_losses(
    model: TF1FasterRCNNModel,
    images: tf.Tensor,
    truth: GroundTruth,
    settings: TwoStageLossSettings,
    seed: tf.Tensor,
    training: bool = True,
    batch_size: tf.Tensor | None = None,
    first_image: Any = 0,
) -> dict[str, Any]:
    """The TF1 training-mode forward pass and its four losses.

    images: preprocessed [B, H, W, 3] (H, W the batch's padded size); seed: [2] int stateless
    seed of this step; batch_size / first_image: the global batch size and this replica's first
    image in it. Returns the losses and `num_proposals` [B] (sampled proposals)."""
    level = model.spec.feature_level  # the first stage's one map (stride 16, or 8 when atrous)
    features = model.backbone(images, training=training)
    features = {level: features[level]}
    rpn_scores, rpn_boxes = model.rpn_head(features, training=training)
    batch = tf.shape(images)[0]
    # Losses in float32 (mixed precision computes the network in float16).
    logits = tf.cast(tf.reshape(rpn_scores[level], [batch, -1, 2]), tf.float32)
    encodings = tf.cast(tf.reshape(rpn_boxes[level], [batch, -1, 4]), tf.float32)
    anchors = tf.reshape(model.anchor_boxes_for(images)[level], [-1, 4])
    padded = tf.cast(tf.shape(images)[1:3], tf.float32)
    keep = prune_outside(anchors, padded[0], padded[1])
    anchors = tf.gather(anchors, keep)
    logits = tf.gather(logits, keep, axis=1)
    encodings = tf.gather(encodings, keep, axis=1)
    losses = rpn_losses(logits, encodings, anchors, truth, settings, seed, batch_size, first_image)

    proposals, _, num_valid = model.roi_generator.absolute_proposals(
        encodings, logits, anchors, truth.image_shape
    )
    proposals = tf.stop_gradient(proposals)
    sampled, num_sampled = sample_proposals(
        proposals, num_valid, truth, settings, seed, first_image
    )
    padded_shape = tf.tile(tf.shape(images)[None, 1:3], [batch, 1])
    normalized = normalize_boxes(sampled, padded_shape)
    roi_features = model.roi_aligner(features, normalized)
    (head,) = model.detection_head  # MaskRCNNModel keeps a list (one head per cascade stage)
    class_logits, box_encodings = head(roi_features, training=training)
    losses.update(
        box_classifier_losses(
            tf.cast(class_logits, tf.float32),
            tf.cast(box_encodings, tf.float32),
            absolute_boxes(normalized, padded_shape),
            num_sampled,
            truth,
            settings,
            batch_size,
        )
    )
    losses["num_proposals"] = num_sampled
    return losses
