"""Inception v2 laid out exactly as TF1's `faster_rcnn_inception_v2` feature extractor.

Model Garden has no Inception v2, so both halves are assembled here from Model Garden's
`Conv2DBNBlock` (conv without bias + BatchNorm + activation, 'SAME' padding) and Keras pooling,
following slim's `inception_v2_base` (first stage, up to `Mixed_4e`, stride 16) and the OD API's
`_extract_box_classifier_features` (second stage, `Mixed_5a`-`Mixed_5c` on the cropped
proposals). Slim details that matter for parity: the stem is a 7x7 *separable* conv with depth
multiplier min(depth(64) // 3, 8); every conv is ReLU after BatchNorm (epsilon 1e-3, with scale:
the extractor's arg scope sets `batch_norm_scale=True`); pools are 'SAME' ('VALID' only where
slim says so, nowhere in these blocks); depths are max(int(d * depth_multiplier), min_depth).

The first stage registers with Model Garden's backbone factory as `tf1_faster_rcnn_inception_v2`
and outputs {'4': Mixed_4e}; every weight-holding layer is recorded in `tf1_layout` with its TF1
scope.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf
import tf_keras
from official.modeling import hyperparams
from official.vision.modeling.backbones.mobilenet import Conv2DBNBlock

from pipeline.modeling.faster_rcnn.first_stage import register_first_stage
from pipeline.modeling.functional import TF1FunctionalModel
from pipeline.modeling.tf1_layout import TF1Layout

BACKBONE_TYPE = "tf1_faster_rcnn_inception_v2"
FIRST_STAGE_SCOPE = "FirstStageFeatureExtractor/InceptionV2"
SECOND_STAGE_SCOPE = "SecondStageFeatureExtractor/InceptionV2"
FEATURE_LEVEL = "4"  # stride 16

# A branch is a sequence of ops: (scope, depth, kernel, stride) for a conv, or
# (scope, 'avg' | 'max', kernel, stride) for a pool. Blocks concatenate their branches in order.
Op = tuple[str, int | str, int, int]
_AVG = ("AvgPool_0a_3x3", "avg", 3, 1)


def _standard(b0: int, b1: tuple[int, int], b2: tuple[int, int, int], b3: int,
              pool: Op = _AVG) -> list[list[Op]]:  # fmt: skip
    """The 4-branch block: 1x1 | 1x1-3x3 | 1x1-3x3-3x3 | pool-1x1."""
    return [
        [("Conv2d_0a_1x1", b0, 1, 1)],
        [("Conv2d_0a_1x1", b1[0], 1, 1), ("Conv2d_0b_3x3", b1[1], 3, 1)],
        [
            ("Conv2d_0a_1x1", b2[0], 1, 1),
            ("Conv2d_0b_3x3", b2[1], 3, 1),
            ("Conv2d_0c_3x3", b2[2], 3, 1),
        ],
        [pool, ("Conv2d_0b_1x1", b3, 1, 1)],
    ]


def _reduction(b0: tuple[int, int], b1: tuple[int, int, int]) -> list[list[Op]]:
    """The stride-2 block: 1x1-3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""
    return [
        [("Conv2d_0a_1x1", b0[0], 1, 1), ("Conv2d_1a_3x3", b0[1], 3, 2)],
        [
            ("Conv2d_0a_1x1", b1[0], 1, 1),
            ("Conv2d_0b_3x3", b1[1], 3, 1),
            ("Conv2d_1a_3x3", b1[2], 3, 2),
        ],
        [("MaxPool_1a_3x3", "max", 3, 2)],
    ]


FIRST_STAGE_BLOCKS: dict[str, list[list[Op]]] = {
    "Mixed_3b": _standard(64, (64, 64), (64, 96, 96), 32),
    "Mixed_3c": _standard(64, (64, 96), (64, 96, 96), 64),
    "Mixed_4a": _reduction((128, 160), (64, 96, 96)),
    "Mixed_4b": _standard(224, (64, 96), (96, 128, 128), 128),
    "Mixed_4c": _standard(192, (96, 128), (96, 128, 128), 128),
    "Mixed_4d": _standard(160, (128, 160), (128, 160, 160), 96),
    "Mixed_4e": _standard(96, (128, 192), (160, 192, 192), 96),
}
SECOND_STAGE_BLOCKS: dict[str, list[list[Op]]] = {
    "Mixed_5a": _reduction((128, 192), (192, 256, 256)),
    "Mixed_5b": _standard(352, (192, 320), (160, 224, 224), 128),
    "Mixed_5c": _standard(352, (192, 320), (192, 224, 224), 128, ("MaxPool_0a_3x3", "max", 3, 1)),
}


class _Builder:
    """Builds slim conv/pool ops on Keras tensors and records each conv's TF1 scope."""

    def __init__(
        self,
        layout: TF1Layout,
        depth_multiplier: float,
        min_depth: int,
        norm_momentum: float,
        norm_epsilon: float,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None,
    ) -> None:
        self.layout = layout
        self.depth_multiplier = depth_multiplier
        self.min_depth = min_depth
        self.block_kwargs = {
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "kernel_regularizer": kernel_regularizer,
            "activation": "relu",
        }

    def depth(self, d: int) -> int:
        return max(int(d * self.depth_multiplier), self.min_depth)

    def conv(self, x: tf.Tensor, scope: str, depth: int, kernel: int, stride: int) -> tf.Tensor:
        block = Conv2DBNBlock(
            filters=self.depth(depth), kernel_size=kernel, strides=stride, **self.block_kwargs
        )
        y = block(x)
        self.layout.conv_bn(scope, block, "_conv0", "_norm0")
        return y

    def op(self, x: tf.Tensor, scope: str, op: Op) -> tf.Tensor:
        name, what, kernel, stride = op
        if what == "avg":
            return tf_keras.layers.AveragePooling2D(kernel, stride, padding="same")(x)
        if what == "max":
            return tf_keras.layers.MaxPooling2D(kernel, stride, padding="same")(x)
        return self.conv(x, f"{scope}/{name}", int(what), kernel, stride)

    def blocks(self, x: tf.Tensor, scope: str, blocks: dict[str, list[list[Op]]]) -> tf.Tensor:
        for block_name, branches in blocks.items():
            outputs = []
            for index, branch in enumerate(branches):
                y = x
                for op in branch:
                    y = self.op(y, f"{scope}/{block_name}/Branch_{index}", op)
                outputs.append(y)
            x = tf_keras.layers.Concatenate(axis=3)(outputs)
        return x

    def stem(self, inputs: tf.Tensor, scope: str) -> tf.Tensor:
        """Conv2d_1a_7x7 (separable) .. MaxPool_3a_3x3."""
        depthwise_multiplier = min(int(self.depth(64) / 3), 8)
        separable = tf_keras.layers.SeparableConv2D(
            self.depth(64),
            7,
            strides=2,
            padding="same",
            depth_multiplier=depthwise_multiplier,
            use_bias=False,
            depthwise_regularizer=self.block_kwargs["kernel_regularizer"],
            pointwise_regularizer=self.block_kwargs["kernel_regularizer"],
        )
        norm = tf_keras.layers.BatchNormalization(
            momentum=self.block_kwargs["norm_momentum"],
            epsilon=self.block_kwargs["norm_epsilon"],
        )
        x = tf_keras.layers.Activation("relu")(norm(separable(inputs)))
        self.layout.add(f"{scope}/Conv2d_1a_7x7", "separable", separable)
        self.layout.add(f"{scope}/Conv2d_1a_7x7", "batch_norm", norm)
        x = tf_keras.layers.MaxPooling2D(3, 2, padding="same")(x)
        x = self.conv(x, f"{scope}/Conv2d_2b_1x1", 64, 1, 1)
        x = self.conv(x, f"{scope}/Conv2d_2c_3x3", 192, 3, 1)
        return tf_keras.layers.MaxPooling2D(3, 2, padding="same")(x)


def _builder_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "depth_multiplier": config["depth_multiplier"],
        "min_depth": config["min_depth"],
        "norm_momentum": config["norm_momentum"],
        "norm_epsilon": config["norm_epsilon"],
        "kernel_regularizer": config["kernel_regularizer"],
    }


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1InceptionV2FirstStage(TF1FunctionalModel):
    """Slim inception_v2_base up to Mixed_4e: {'4': [B, ceil(H/16), ceil(W/16), 576]}."""

    def __init__(
        self,
        depth_multiplier: float = 1.0,
        min_depth: int = 16,
        input_specs: tf_keras.layers.InputSpec | None = None,
        norm_momentum: float = 0.9997,
        norm_epsilon: float = 0.001,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ) -> None:
        input_specs = input_specs or tf_keras.layers.InputSpec(shape=[None, None, None, 3])
        config = {
            "depth_multiplier": depth_multiplier,
            "min_depth": min_depth,
            "input_specs": input_specs,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "kernel_regularizer": kernel_regularizer,
        }
        layout = TF1Layout("backbone")
        build = _Builder(layout, **_builder_kwargs(config))
        inputs = tf_keras.Input(shape=input_specs.shape[1:])
        x = build.stem(inputs, FIRST_STAGE_SCOPE)
        x = build.blocks(x, FIRST_STAGE_SCOPE, FIRST_STAGE_BLOCKS)
        self._finish(inputs, {FEATURE_LEVEL: x}, layout, config, **kwargs)


def build_second_stage_extractor(
    in_channels: int,
    layout: TF1Layout,
    depth_multiplier: float = 1.0,
    min_depth: int = 16,
    norm_momentum: float = 0.9997,
    norm_epsilon: float = 0.001,
    kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> tf_keras.Model:
    """Mixed_5a-c on [K, h, w, in_channels] crops -> [K, h', w', 1024]; records into `layout`."""
    build = _Builder(
        layout, depth_multiplier, min_depth, norm_momentum, norm_epsilon, kernel_regularizer
    )
    inputs = tf_keras.Input(shape=[None, None, in_channels])
    outputs = build.blocks(inputs, SECOND_STAGE_SCOPE, SECOND_STAGE_BLOCKS)
    return tf_keras.Model(inputs=inputs, outputs=outputs, name="second_stage_feature_extractor")


@dataclasses.dataclass
class TF1FasterRCNNInceptionV2Config(hyperparams.Config):
    """Model Garden config of the `tf1_faster_rcnn_inception_v2` backbone."""

    depth_multiplier: float = 1.0
    min_depth: int = 16


@dataclasses.dataclass
class BackboneConfig(hyperparams.OneOfConfig):
    """A Model Garden backbone one-of holding the TF1 Faster R-CNN Inception v2 choice."""

    type: str | None = BACKBONE_TYPE
    tf1_faster_rcnn_inception_v2: TF1FasterRCNNInceptionV2Config = dataclasses.field(
        default_factory=TF1FasterRCNNInceptionV2Config
    )


build_tf1_faster_rcnn_inception_v2 = register_first_stage(BACKBONE_TYPE, TF1InceptionV2FirstStage)
