"""Assemble the Model Garden `RetinaNetModel` that reproduces a TF1 SSD, and load converted ones.

The backbone and decoder come out of Model Garden's factories (`build_backbone`,
`build_decoder`) through the builders this package registers (`tf1_ssd_mobilenet`,
`tf1_ssd_inception_v2`, `tf1_ssd_resnet_v1`; `tf1_ssd_extra_layers`, `tf1_fpn`); the head is a
`RetinaNetHead` subclass and the post-processing a `MultilevelDetectionGenerator` subclass
with TF1 semantics. Anchors are TF1's, passed to the model as fixed `anchor_boxes`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import tensorflow as tf
import tf_keras
from official.modeling import hyperparams
from official.vision.configs import common
from official.vision.modeling.backbones import factory as backbone_factory
from official.vision.modeling.decoders import factory as decoder_factory
from official.vision.modeling.maskrcnn_model import MaskRCNNModel
from official.vision.modeling.retinanet_model import RetinaNetModel

from pipeline.errors import PipelineError
from pipeline.modeling import anchors as anchor_lib
from pipeline.modeling import inception, resnet_v1
from pipeline.modeling.backbones import BackboneConfig, TF1SSDMobileNetConfig
from pipeline.modeling.decoders import (
    FPN_DECODER_TYPE,
    PPN_DECODER_TYPE,
    DecoderConfig,
    SSDExtraLayersConfig,
    TF1FPNConfig,
    TF1PPNConfig,
)
from pipeline.modeling.faster_rcnn.spec import FAMILY as FASTER_RCNN
from pipeline.modeling.faster_rcnn.spec import FasterRCNNSpec
from pipeline.modeling.heads import SSDHead, WeightSharedHead
from pipeline.modeling.postprocess import TF1DetectionGenerator
from pipeline.modeling.spec import RESNET_FPN_DEPTHS, SUPPORTED_ARCHITECTURES, SSDSpec

# Files of a converted model directory (see pipeline.conversion).
CHECKPOINT_DIR = "checkpoint"
SPEC_FILE = "model_spec.json"


@dataclasses.dataclass
class SSDModelConfig(hyperparams.Config):
    """The Model Garden view of an SSDSpec: what the backbone/decoder factories read."""

    backbone: BackboneConfig = dataclasses.field(default_factory=BackboneConfig)
    decoder: DecoderConfig = dataclasses.field(default_factory=DecoderConfig)
    norm_activation: common.NormActivation = dataclasses.field(
        default_factory=lambda: common.NormActivation(
            activation="relu6", use_sync_bn=False, norm_momentum=0.9997, norm_epsilon=0.001
        )
    )


def quantization_bits(spec: SSDSpec) -> dict[str, int]:
    """The fake-quant bits of a TF1 quantized graph's layers ({} for a float model)."""
    if spec.quantization is None:
        return {}
    return {
        "weight_bits": spec.quantization.weight_bits,
        "activation_bits": spec.quantization.activation_bits,
    }


def model_config(spec: SSDSpec) -> SSDModelConfig:
    extractor = spec.feature_extractor
    # The MobileNet base keeps slim's BatchNorm epsilon unless the config overrides its
    # hyperparameters (override_base_feature_extractor_hyperparams); ssd_inception_v2 always
    # builds its base under the config's conv_hyperparams.
    inception_base = spec.architecture == inception.ARCHITECTURE
    override = extractor.override_base_feature_extractor_hyperparams or inception_base
    base_epsilon = extractor.batch_norm_epsilon if override else 0.001
    # mobilenet_v2/v3's conv defs set their activations inside any outer arg_scope;
    # mobilenet_v1 and inception_v2 take the overriding activation.
    takes_activation = spec.architecture in (
        "ssd_mobilenet_v1",
        "ssd_mobilenet_v1_fpn",
        "ssd_mobilenet_v1_ppn",
        inception.ARCHITECTURE,
    )
    base_activation = extractor.activation if override and takes_activation else "relu6"
    base_scale = extractor.batch_norm_scale if override else True
    base_center = extractor.batch_norm_center if override else True
    if spec.architecture in RESNET_FPN_DEPTHS:
        # resnet_arg_scope's ReLU, or the overriding conv_hyperparams' activation (its BatchNorm
        # stays resnet's: see pipeline.modeling.resnet_v1).
        backbone = BackboneConfig(
            type=resnet_v1.BACKBONE_TYPE,
            tf1_ssd_resnet_v1=resnet_v1.TF1SSDResNetV1Config(
                depth=RESNET_FPN_DEPTHS[spec.architecture],
                depth_multiplier=extractor.depth_multiplier,
                min_depth=extractor.min_depth,
                activation=extractor.activation if override else "relu",
            ),
        )
    elif inception_base:
        backbone = BackboneConfig(
            type=inception.BACKBONE_TYPE,
            tf1_ssd_inception_v2=inception.TF1SSDInceptionV2Config(
                depth_multiplier=extractor.depth_multiplier,
                min_depth=extractor.min_depth,
                activation=base_activation,
                batch_norm_scale=base_scale,
                batch_norm_center=base_center,
            ),
        )
    else:
        backbone = BackboneConfig(
            type="tf1_ssd_mobilenet",
            tf1_ssd_mobilenet=TF1SSDMobileNetConfig(
                architecture=spec.architecture,
                depth_multiplier=extractor.depth_multiplier,
                min_depth=extractor.min_depth,
                activation=base_activation,
                batch_norm_scale=base_scale,
                batch_norm_center=base_center,
                **quantization_bits(spec),
            ),
        )
    if spec.is_fpn:
        fpn = extractor.fpn
        assert fpn is not None
        decoder = DecoderConfig(
            type=FPN_DECODER_TYPE,
            tf1_fpn=TF1FPNConfig(
                architecture=spec.architecture,
                min_level=fpn.min_level,
                max_level=fpn.max_level,
                additional_layer_depth=fpn.additional_layer_depth,
                depth_multiplier=extractor.depth_multiplier,
                min_depth=extractor.min_depth,
                activation=extractor.activation,
                norm_epsilon=extractor.batch_norm_epsilon,
                batch_norm_scale=extractor.batch_norm_scale,
                batch_norm_center=extractor.batch_norm_center,
            ),
        )
    elif spec.is_ppn:
        decoder = DecoderConfig(
            type=PPN_DECODER_TYPE,
            tf1_ppn=TF1PPNConfig(
                architecture=spec.architecture, num_layers=spec.anchors.num_layers
            ),
        )
    else:
        decoder = DecoderConfig(
            type="tf1_ssd_extra_layers",
            tf1_ssd_extra_layers=SSDExtraLayersConfig(
                architecture=spec.architecture,
                num_layers=spec.anchors.num_layers,
                depth_multiplier=extractor.depth_multiplier,
                min_depth=extractor.min_depth,
                use_depthwise=extractor.use_depthwise,
                activation=extractor.activation,
                norm_epsilon=extractor.batch_norm_epsilon,
                batch_norm_scale=extractor.batch_norm_scale,
                batch_norm_center=extractor.batch_norm_center,
                **quantization_bits(spec),
            ),
        )
    return SSDModelConfig(
        backbone=backbone,
        decoder=decoder,
        norm_activation=common.NormActivation(
            activation="relu6",
            use_sync_bn=False,
            norm_momentum=extractor.batch_norm_decay,
            norm_epsilon=base_epsilon,
        ),
    )


def build_ssd_model(spec: SSDSpec) -> RetinaNetModel:
    """The TF2 model of `spec`, built (variables created) for spec.image_size inputs.

    `model(preprocessed, training=False)` returns Model Garden's dict: `cls_outputs` /
    `box_outputs` ({level: [B, H, W, A * C]}, TF1 channel order) and the TF1 post-processed
    `detection_*` / `num_detections`. Layers carry no Keras regularizers: TF1's L2 set is
    applied by the fine-tune task (`pipeline.modeling.regularization`).
    """
    if spec.architecture not in SUPPORTED_ARCHITECTURES:
        raise PipelineError(
            f"model_spec: architecture {spec.architecture!r} is not supported; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    config = model_config(spec)
    height, width = spec.image_size
    input_specs = tf_keras.layers.InputSpec(shape=[None, height, width, 3])
    backbone = backbone_factory.build_backbone(
        input_specs=input_specs,
        backbone_config=config.backbone,
        norm_activation_config=config.norm_activation,
    )
    decoder = decoder_factory.build_decoder(input_specs=backbone.output_specs, model_config=config)
    levels = anchor_lib.levels(spec)
    per_location = anchor_lib.anchors_per_location(spec)
    predictor = spec.box_predictor
    head_kwargs = {
        "min_level": levels[0],
        "max_level": levels[-1],
        "num_classes": spec.num_class_slots,
        "kernel_size": predictor.kernel_size,
        "class_prediction_bias_init": predictor.class_prediction_bias_init,
        "batch_norm_scale": predictor.batch_norm_scale,
        "batch_norm_center": predictor.batch_norm_center,
        "norm_momentum": spec.feature_extractor.batch_norm_decay,
        "norm_epsilon": predictor.batch_norm_epsilon,
    }
    head: SSDHead | WeightSharedHead
    if predictor.weight_shared:
        head = WeightSharedHead(
            num_anchors_per_location=per_location[0],
            num_convs=predictor.num_layers_before_predictor,
            num_filters=predictor.depth,
            share_prediction_tower=predictor.share_prediction_tower,
            **head_kwargs,
        )
    else:
        head = SSDHead(
            num_anchors_per_location={
                str(level): count for level, count in zip(levels, per_location, strict=True)
            },
            use_depthwise=predictor.use_depthwise,
            depthwise_activation=predictor.activation,
            **quantization_bits(spec),
            **head_kwargs,
        )
    post = spec.post_processing
    generator = TF1DetectionGenerator(
        box_coder_weights=spec.box_coder.scales,
        score_converter=post.score_converter,
        logit_scale=post.logit_scale,
        score_threshold=post.score_threshold,
        iou_threshold=post.iou_threshold,
        max_detections_per_class=post.max_detections_per_class,
        max_total_detections=post.max_total_detections,
        add_background_class=spec.add_background_class,
        box_clipping=post.box_clipping,
    )
    anchor_boxes = {
        level: tf.constant(boxes)
        for level, boxes in anchor_lib.multilevel_anchor_boxes(spec).items()
    }
    model = RetinaNetModel(
        backbone=backbone,
        decoder=decoder,
        head=head,
        detection_generator=generator,
        anchor_boxes=anchor_boxes,
        min_level=levels[0],
        max_level=levels[-1],
    )
    # Create every variable (the head builds lazily) so that checkpoints restore eagerly.
    model(tf.zeros([1, height, width, 3]), training=False)
    return model


def read_spec(directory: str | os.PathLike[str]) -> SSDSpec | FasterRCNNSpec:
    """The spec of a converted directory: SSDSpec, or FasterRCNNSpec for `family: faster_rcnn`."""
    path = Path(directory) / SPEC_FILE
    if not path.is_file():
        raise PipelineError(
            f"{path}: not found; pass a directory written by `python -m pipeline convert`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("family") == FASTER_RCNN:
            return FasterRCNNSpec.from_dict(data)
        return SSDSpec.from_dict(data)
    except (ValueError, TypeError) as error:
        raise PipelineError(
            f"{path}: invalid model spec ({error}); re-run the conversion"
        ) from error


def load_converted(
    directory: str | os.PathLike[str],
) -> tuple[RetinaNetModel | MaskRCNNModel, SSDSpec | FasterRCNNSpec]:
    """Rebuild the model of a converted directory (SSD or Faster R-CNN) and restore its
    checkpoint; also of a SavedModel exported here (fine-tune's `saved_model/`, whose
    model_spec.json sits beside saved_model.pb), from its variables."""
    directory = Path(directory)
    spec = read_spec(directory)
    if isinstance(spec, FasterRCNNSpec):
        from pipeline.modeling.faster_rcnn.model import build_faster_rcnn_model

        model = build_faster_rcnn_model(spec)
    else:
        model = build_ssd_model(spec)
    if (directory / "saved_model.pb").is_file():
        # The serving module tracks the Keras model as `model`.
        status = tf.train.Checkpoint(model=model).read(str(directory / "variables" / "variables"))
        status.expect_partial().assert_existing_objects_matched()
        return model, spec
    checkpoint_path = tf.train.latest_checkpoint(str(directory / CHECKPOINT_DIR))
    if checkpoint_path is None:
        raise PipelineError(
            f"{directory / CHECKPOINT_DIR}: no checkpoint found; re-run the conversion"
        )
    checkpoint = tf.train.Checkpoint(**model.checkpoint_items)
    status = checkpoint.read(checkpoint_path)
    status.expect_partial().assert_existing_objects_matched()
    return model, spec
