"""Assemble the Model Garden `MaskRCNNModel` (masks off) that reproduces a TF1 Faster R-CNN.

The backbone comes out of Model Garden's factory (`tf1_faster_rcnn_inception_v2`,
`tf1_faster_rcnn_resnet_v1` or `tf1_faster_rcnn_inception_resnet_v2`, chosen by `extractors.py`
from `feature_extractor.type`); the RPN head,
box classifier head, proposal generator, crop-and-pool and second-stage generator are the TF1
parts of `pipeline.modeling.faster_rcnn.{heads,layers}`, passed to MaskRCNNModel in the slots
its stock parts occupy. `TF1FasterRCNNModel` subclasses it for one reason: TF1 images keep their
aspect ratio, so the anchors depend on each input's size; the subclass computes TF1's grid
anchors for the input's feature map (Model Garden would build its own `Anchor` from a static
input shape) and also returns the normalized proposals, for stage-by-stage comparison.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras
from official.vision.configs import common
from official.vision.modeling.backbones import factory as backbone_factory
from official.vision.modeling.maskrcnn_model import MaskRCNNModel

from pipeline.errors import PipelineError
from pipeline.modeling.faster_rcnn.extractors import feature_extractor
from pipeline.modeling.faster_rcnn.heads import TF1BoxClassifierHead, TF1RPNHead
from pipeline.modeling.faster_rcnn.layers import (
    TF1CropAndPool,
    TF1ProposalGenerator,
    TF1SecondStageGenerator,
    grid_anchors,
)
from pipeline.modeling.faster_rcnn.spec import SUPPORTED_ARCHITECTURES, FasterRCNNSpec
from pipeline.modeling.preprocessing import resize_tf1
from pipeline.modeling.tf1_layout import LayerRecord


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1FasterRCNNModel(MaskRCNNModel):
    """MaskRCNNModel without masks, with TF1 grid anchors computed per input size."""

    def __init__(self, spec: FasterRCNNSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def anchor_boxes_for(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """{level: [H, W, A * 4]} absolute anchors for the first stage's map of `images`."""
        shape = tf.shape(images)
        # 'SAME' stride-2 layers give ceil(n / 2) each: ceil(n / stride) in all.
        stride = self.spec.features_stride
        height = (shape[1] + stride - 1) // stride
        width = (shape[2] + stride - 1) // stride
        anchors = grid_anchors(height, width, self.spec.anchors)
        return {self.spec.feature_level: tf.reshape(anchors, [height, width, -1])}

    def call(  # type: ignore[override]
        self,
        images: tf.Tensor,
        image_shape: tf.Tensor,
        anchor_boxes: dict[str, tf.Tensor] | None = None,
        training: bool | None = None,
    ) -> dict[str, Any]:
        if anchor_boxes is None:
            anchor_boxes = self.anchor_boxes_for(images)
        outputs, intermediate = self._call_box_outputs(
            images=images, image_shape=image_shape, anchor_boxes=anchor_boxes, training=training
        )
        return {**outputs, "proposal_boxes": intermediate["current_rois"]}

    def get_config(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TF1FasterRCNNModel:
        return build_faster_rcnn_model(FasterRCNNSpec.from_dict(config["spec"]))


def _norm_activation(spec: FasterRCNNSpec) -> common.NormActivation:
    return common.NormActivation(
        activation="relu", use_sync_bn=False, norm_momentum=0.9997,
        norm_epsilon=spec.batch_norm_epsilon,
    )  # fmt: skip


def build_faster_rcnn_model(spec: FasterRCNNSpec) -> TF1FasterRCNNModel:
    """The TF2 model of `spec`, with every variable created.

    `model(preprocessed, image_shape)` takes `preprocess(images, spec)`'s outputs and returns
    Model Garden's dict: `rpn_scores` / `rpn_boxes` ({level: [B, H, W, A * 2 | A * 4]}, one
    level, `spec.feature_level`; TF1 channel order), `proposal_boxes` (normalized,
    zero-padded), `class_outputs` / `box_outputs` (TF1 layouts) and the TF1 post-processed
    `detection_*` / `num_detections`.
    """
    if spec.architecture not in SUPPORTED_ARCHITECTURES:
        raise PipelineError(
            f"model_spec: architecture {spec.architecture!r} is not supported; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    backbone = backbone_factory.build_backbone(
        input_specs=tf_keras.layers.InputSpec(shape=[None, None, None, 3]),
        backbone_config=feature_extractor(spec).backbone_config(spec),
        norm_activation_config=_norm_activation(spec),
    )
    channels = int(backbone.output_specs[spec.feature_level][-1])
    rpn_head = TF1RPNHead(
        num_anchors_per_location=spec.anchors.num_anchors_per_location,
        depth=spec.first_stage_depth,
        kernel_size=spec.first_stage_kernel_size,
        dilation_rate=spec.first_stage_atrous_rate,
    )
    detection_head = TF1BoxClassifierHead(spec, in_channels=channels)
    model = TF1FasterRCNNModel(
        spec,
        backbone=backbone,
        decoder=None,
        rpn_head=rpn_head,
        detection_head=detection_head,
        roi_generator=TF1ProposalGenerator(
            spec.first_stage_nms, spec.box_coder.scales, spec.box_clipping
        ),
        roi_sampler=None,
        roi_aligner=TF1CropAndPool(
            spec.initial_crop_size, spec.maxpool_kernel_size, spec.maxpool_stride
        ),
        detection_generator=TF1SecondStageGenerator(
            spec.second_stage_nms,
            spec.second_stage_score_converter,
            spec.second_stage_logit_scale,
            spec.box_coder.scales,
            spec.box_clipping,
        ),
        min_level=int(spec.feature_level),
        max_level=int(spec.feature_level),
    )
    # Create every variable so that checkpoints restore eagerly (64 x 64 is the smallest
    # convenient input: TF1 requires >= 33 pixels). Tracing the call creates them without
    # running it: an eager call would push max_proposals crops through the second stage
    # (~2 minutes on 2 cores for Inception-ResNet v2's 300 crops of 17 x 17 x 1088).
    images, image_shape = preprocess(tf.zeros([1, 64, 64, 3], tf.uint8), spec)
    trace = tf.function(lambda: model(images, image_shape, training=False), autograph=False)
    trace.get_concrete_function()
    return model


def model_records(model: TF1FasterRCNNModel) -> list[LayerRecord]:
    """All TF1 layout records of a model built by `build_faster_rcnn_model`, in build order."""
    modules = [model.backbone, model.rpn_head, *model.detection_head]
    return [record for module in modules for record in module.tf1_layout.records]


def resized_size(height: tf.Tensor, width: tf.Tensor, spec: FasterRCNNSpec) -> tf.Tensor:
    """TF1 keep_aspect_ratio_resizer's `_compute_new_dynamic_size` (float32, as the graph).

    The 2.x OD API asks `resize_images(preserve_aspect_ratio=True)` for the same size; the two
    can differ only when the rounded long side lands exactly on max_dimension."""
    orig_h = tf.cast(height, tf.float32)
    orig_w = tf.cast(width, tf.float32)
    min_dim = tf.constant(spec.min_dimension, tf.float32)
    max_dim = tf.constant(spec.max_dimension, tf.float32)
    large_scale = min_dim / tf.minimum(orig_h, orig_w)
    large = tf.stack(
        [
            tf.cast(tf.round(orig_h * large_scale), tf.int32),
            tf.cast(tf.round(orig_w * large_scale), tf.int32),
        ]
    )
    small_scale = max_dim / tf.maximum(orig_h, orig_w)
    small = tf.stack(
        [
            tf.cast(tf.round(orig_h * small_scale), tf.int32),
            tf.cast(tf.round(orig_w * small_scale), tf.int32),
        ]
    )
    return tf.where(tf.cast(tf.reduce_max(large), tf.float32) > max_dim, small, large)


def preprocess(images: tf.Tensor, spec: FasterRCNNSpec) -> tuple[tf.Tensor, tf.Tensor]:
    """uint8 [N, H, W, 3] (one size) -> (float32 [N, h, w, 3], image_shape [N, 2]).

    keep_aspect_ratio_resizer with TF1's legacy bilinear sampling, then the feature extractor's
    normalisation (Inception: (2 / 255) * x - 1; ResNet: channel means subtracted)."""
    shape = tf.shape(images)
    size = resized_size(shape[1], shape[2], spec)
    resized = resize_tf1(images, size, spec.resize_method)
    image_shape = tf.tile(size[None, :], [shape[0], 1])
    return feature_extractor(spec).normalize(resized), image_shape


def detection_outputs(model: TF1FasterRCNNModel, images: tf.Tensor) -> dict[str, tf.Tensor]:
    """uint8 images -> the four TF1 detection outputs (float32), as `image_tensor` -> `detection_*`
    in a TF1 export."""
    preprocessed, image_shape = preprocess(images, model.spec)
    outputs = model(preprocessed, image_shape, training=False)
    return {
        "detection_boxes": tf.cast(outputs["detection_boxes"], tf.float32),
        "detection_scores": tf.cast(outputs["detection_scores"], tf.float32),
        "detection_classes": tf.cast(outputs["detection_classes"], tf.float32),
        "num_detections": tf.cast(outputs["num_detections"], tf.float32),
    }
