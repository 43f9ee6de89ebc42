"""Slim ResNet v1 (50 / 101) laid out exactly as TF1's `faster_rcnn_resnet{50,101}` extractor.

TF1's `FasterRCNNResnetV1FeatureExtractor` runs slim's `resnet_v1_50` / `resnet_v1_101` with
`output_stride=16` under `resnet_arg_scope(batch_norm_epsilon=1e-5, batch_norm_scale=True)` and
takes `block3` as the RPN feature map; the second stage is a fresh `block4` (3 units, stride 1)
on the cropped proposals. The units, the root and what slim does are in
`pipeline.modeling.resnet_v1` (shared with the SSD FPN base); at output stride 16
`stack_blocks_dense` stops striding once that stride is reached: block1 and block2 end with a
stride-2 unit, block3 runs at stride 1 throughout, and block4 would run atrous (rate 2).
ReLU everywhere (no conv_hyperparams reach the base).

TF1's first stage also *builds* block4 (rate 2) inside `resnet_v1_50`, whose output nothing
reads: its 50 variables are in every checkpoint (`FirstStageFeatureExtractor/resnet_v1_50/
block4/...`) but never affect a result. The backbone holds those weights in
`unused_block4` (built, tracked, never called) so that every checkpoint variable has a place.

The first stage registers with Model Garden's backbone factory as `tf1_faster_rcnn_resnet_v1`
(config `depth`: 50 or 101) and outputs {'4': block3} (stride 16, 1024 channels).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tf_keras
from official.modeling import hyperparams

from pipeline.modeling.faster_rcnn.first_stage import register_first_stage
from pipeline.modeling.functional import TF1FunctionalModel
from pipeline.modeling.resnet_v1 import BLOCKS, ResNetBuilder, unit_plan
from pipeline.modeling.tf1_layout import TF1Layout

BACKBONE_TYPE = "tf1_faster_rcnn_resnet_v1"
FEATURE_LEVEL = "4"  # stride 16
SUPPORTED_DEPTHS = (50, 101)
OUTPUT_STRIDE = 16
# The second stage: `_extract_box_classifier_features`' block4, 3 units of stride 1.
SECOND_STAGE_BLOCK = ("block4", 512, 3, 1)


def first_stage_scope(depth: int) -> str:
    return f"FirstStageFeatureExtractor/resnet_v1_{depth}"


def second_stage_scope(depth: int) -> str:
    return f"SecondStageFeatureExtractor/resnet_v1_{depth}"


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1ResNetV1FirstStage(TF1FunctionalModel):
    """Slim resnet_v1_{depth} at output stride 16: {'4': [B, ceil(H/16), ceil(W/16), 1024]}
    (block3), plus TF1's never-read first-stage block4 weights in `unused_block4`."""

    def __init__(
        self,
        depth: int = 50,
        input_specs: tf_keras.layers.InputSpec | None = None,
        norm_momentum: float = 0.997,
        norm_epsilon: float = 1e-5,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ) -> None:
        if depth not in SUPPORTED_DEPTHS:
            raise ValueError(f"ResNet v1 depth {depth} is not one of {SUPPORTED_DEPTHS}")
        input_specs = input_specs or tf_keras.layers.InputSpec(shape=[None, None, None, 3])
        config = {
            "depth": depth,
            "input_specs": input_specs,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "kernel_regularizer": kernel_regularizer,
        }
        scope = first_stage_scope(depth)
        layout = TF1Layout("backbone")
        build = ResNetBuilder(layout, norm_momentum, norm_epsilon, kernel_regularizer)
        inputs = tf_keras.Input(shape=input_specs.shape[1:])
        x = build.root(inputs, scope)
        # The root's stride 4 counts towards the output stride, as in slim's resnet_v1.
        plan = list(unit_plan(BLOCKS[depth], OUTPUT_STRIDE // 4))
        outputs = build.units(x, scope, [unit for unit in plan if unit[0] != "block4"])
        self._finish(inputs, {FEATURE_LEVEL: outputs["block3"]}, layout, config, **kwargs)
        # block4 as TF1 builds it after block3 (output stride reached: atrous, rate 2).
        block4_input = tf_keras.Input(shape=[None, None, int(outputs["block3"].shape[-1])])
        block4 = build.units(block4_input, scope, [unit for unit in plan if unit[0] == "block4"])
        self.unused_block4 = tf_keras.Model(block4_input, block4["block4"], name="unused_block4")


def build_second_stage_extractor(
    in_channels: int,
    layout: TF1Layout,
    depth: int = 50,
    norm_momentum: float = 0.997,
    norm_epsilon: float = 1e-5,
    kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> tf_keras.Model:
    """block4 (3 units, stride 1) on [K, h, w, in_channels] crops -> [K, h, w, 2048]."""
    build = ResNetBuilder(layout, norm_momentum, norm_epsilon, kernel_regularizer)
    inputs = tf_keras.Input(shape=[None, None, in_channels])
    plan = list(unit_plan((SECOND_STAGE_BLOCK,), None))
    outputs = build.units(inputs, second_stage_scope(depth), plan)
    return tf_keras.Model(inputs, outputs["block4"], name="second_stage_feature_extractor")


@dataclasses.dataclass
class TF1FasterRCNNResNetV1Config(hyperparams.Config):
    """Model Garden config of the `tf1_faster_rcnn_resnet_v1` backbone."""

    depth: int = 50


@dataclasses.dataclass
class BackboneConfig(hyperparams.OneOfConfig):
    """A Model Garden backbone one-of holding the TF1 Faster R-CNN ResNet v1 choice."""

    type: str | None = BACKBONE_TYPE
    tf1_faster_rcnn_resnet_v1: TF1FasterRCNNResNetV1Config = dataclasses.field(
        default_factory=TF1FasterRCNNResNetV1Config
    )


build_tf1_faster_rcnn_resnet_v1 = register_first_stage(BACKBONE_TYPE, TF1ResNetV1FirstStage)
