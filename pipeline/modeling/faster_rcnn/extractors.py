"""What differs between TF1 Faster R-CNN feature extractors, one entry per `feature_extractor.type`.

The rest of the model (RPN head, proposals, crop-and-pool, box classifier, post-processing) is
the same for every backbone: `model.py` asks this table for the registered Model Garden backbone,
the second-stage extractor, the input normalisation and the TF1 scope of the first stage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from pipeline.modeling.faster_rcnn import inception_resnet_v2, inception_v2, resnet_v1
from pipeline.modeling.faster_rcnn.spec import FasterRCNNSpec
from pipeline.modeling.preprocessing import subtract_channel_means
from pipeline.modeling.tf1_layout import TF1Layout


@dataclasses.dataclass(frozen=True)
class FeatureExtractor:
    """A TF1 Faster R-CNN feature extractor as Model Garden pieces."""

    # The Model Garden backbone one-of config (its type is registered with the factory).
    backbone_config: Callable[[FasterRCNNSpec], Any]
    # (in_channels, layout, spec, norm_momentum, kernel_regularizer) -> a Keras model on
    # [K, h, w, in_channels] crops, recording its TF1 scopes into `layout`.
    second_stage: Callable[[int, TF1Layout, FasterRCNNSpec, float, Any], Any]
    # float32 resized images in 0..255 -> the first stage's input (`extractor.preprocess`).
    normalize: Callable[[tf.Tensor], tf.Tensor]
    first_stage_scope: Callable[[FasterRCNNSpec], str]
    # Where a first-stage disagreement comes from (the parity diagnosis).
    first_stage_causes: str


def _inception_v2_backbone(spec: FasterRCNNSpec) -> Any:
    return inception_v2.BackboneConfig(
        tf1_faster_rcnn_inception_v2=inception_v2.TF1FasterRCNNInceptionV2Config(
            depth_multiplier=spec.depth_multiplier, min_depth=spec.min_depth
        )
    )


def _inception_v2_second_stage(
    in_channels: int, layout: TF1Layout, spec: FasterRCNNSpec, norm_momentum: float,
    kernel_regularizer: Any,
) -> Any:  # fmt: skip
    return inception_v2.build_second_stage_extractor(
        in_channels, layout, spec.depth_multiplier, spec.min_depth, norm_momentum,
        spec.batch_norm_epsilon, kernel_regularizer,
    )  # fmt: skip


def _resnet_depth(spec: FasterRCNNSpec) -> int:
    return int(spec.architecture.removeprefix("faster_rcnn_resnet"))


def _resnet_backbone(spec: FasterRCNNSpec) -> Any:
    return resnet_v1.BackboneConfig(
        tf1_faster_rcnn_resnet_v1=resnet_v1.TF1FasterRCNNResNetV1Config(depth=_resnet_depth(spec))
    )


def _resnet_second_stage(
    in_channels: int, layout: TF1Layout, spec: FasterRCNNSpec, norm_momentum: float,
    kernel_regularizer: Any,
) -> Any:  # fmt: skip
    return resnet_v1.build_second_stage_extractor(
        in_channels, layout, _resnet_depth(spec), norm_momentum, spec.batch_norm_epsilon,
        kernel_regularizer,
    )  # fmt: skip


def _inception_resnet_v2_backbone(spec: FasterRCNNSpec) -> Any:
    return inception_resnet_v2.BackboneConfig(
        tf1_faster_rcnn_inception_resnet_v2=inception_resnet_v2.TF1FasterRCNNInceptionResNetV2Config(
            output_stride=spec.features_stride
        )
    )


def _inception_resnet_v2_second_stage(
    in_channels: int, layout: TF1Layout, spec: FasterRCNNSpec, norm_momentum: float,
    kernel_regularizer: Any,
) -> Any:  # fmt: skip
    return inception_resnet_v2.build_second_stage_extractor(
        in_channels, layout, norm_momentum, spec.batch_norm_epsilon, kernel_regularizer
    )


def _inception_normalize(resized: tf.Tensor) -> tf.Tensor:
    """Both Inception extractors' `preprocess`: 0..255 -> [-1, 1]."""
    return (2.0 / 255.0) * resized - 1.0


INCEPTION_V2 = FeatureExtractor(
    backbone_config=_inception_v2_backbone,
    second_stage=_inception_v2_second_stage,
    normalize=_inception_normalize,
    first_stage_scope=lambda spec: inception_v2.FIRST_STAGE_SCOPE,
    first_stage_causes="x*2/255-1, the Inception v2 first stage (separable stem, BN epsilon/"
    "scale, pools)",
)
RESNET_V1 = FeatureExtractor(
    backbone_config=_resnet_backbone,
    second_stage=_resnet_second_stage,
    normalize=subtract_channel_means,
    first_stage_scope=lambda spec: resnet_v1.first_stage_scope(_resnet_depth(spec)),
    first_stage_causes="channel-mean subtraction, the ResNet v1 first stage (conv2d_same "
    "padding, stride on the last unit of block1/2, BN epsilon 1e-5)",
)
INCEPTION_RESNET_V2 = FeatureExtractor(
    backbone_config=_inception_resnet_v2_backbone,
    second_stage=_inception_resnet_v2_second_stage,
    normalize=_inception_normalize,
    first_stage_scope=lambda spec: inception_resnet_v2.FIRST_STAGE_SCOPE,
    first_stage_causes="x*2/255-1, the Inception-ResNet v2 first stage ('SAME'-aligned "
    "paddings, Mixed_6a stride and block17 rate at output stride 8, BatchNorm without scale, "
    "residual scales)",
)
FEATURE_EXTRACTORS = {
    "faster_rcnn_inception_v2": INCEPTION_V2,
    "faster_rcnn_resnet50": RESNET_V1,
    "faster_rcnn_resnet101": RESNET_V1,
    "faster_rcnn_inception_resnet_v2": INCEPTION_RESNET_V2,
}


def feature_extractor(spec: FasterRCNNSpec) -> FeatureExtractor:
    return FEATURE_EXTRACTORS[spec.architecture]
