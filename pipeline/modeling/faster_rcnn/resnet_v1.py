"""Slim ResNet v1 (50 / 101) laid out exactly as TF1's `faster_rcnn_resnet{50,101}` extractor.

TF1's `FasterRCNNResnetV1FeatureExtractor` runs slim's `resnet_v1_50` / `resnet_v1_101` with
`output_stride=16` under `resnet_arg_scope(batch_norm_epsilon=1e-5, batch_norm_scale=True)` and
takes `block3` as the RPN feature map; the second stage is a fresh `block4` (3 units, stride 1)
on the cropped proposals. What that means, read from `nets/resnet_v1.py` / `resnet_utils.py`:
- the root is `conv1` = `conv2d_same` 7x7/2 (explicit zero padding 3/3, then a VALID conv),
  BatchNorm, ReLU, then `pool1` = 3x3/2 max pool, 'SAME' (the arg scope's padding);
- a block puts its stride on its *last* unit (`resnet_v1_block`); `stack_blocks_dense` stops
  striding once the output stride is reached: block1 and block2 end with a stride-2 unit,
  block3 runs at stride 1 throughout, and block4 would run atrous (rate 2);
- every unit is slim's `bottleneck` (`TF1BottleneckV1` below);
- BatchNorm has scale, epsilon 1e-5; every conv is bias-free; ReLU.

TF1's first stage also *builds* block4 (rate 2) inside `resnet_v1_50`, whose output nothing
reads: its 50 variables are in every checkpoint (`FirstStageFeatureExtractor/resnet_v1_50/
block4/...`) but never affect a result. The backbone holds those weights in
`unused_block4` (built, tracked, never called) so that every checkpoint variable has a place.

The first stage registers with Model Garden's backbone factory as `tf1_faster_rcnn_resnet_v1`
(config `depth`: 50 or 101) and outputs {'4': block3} (stride 16, 1024 channels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import tensorflow as tf
import tf_keras
from official.modeling import hyperparams
from official.vision.modeling.layers.nn_blocks import BottleneckBlock

from pipeline.modeling.faster_rcnn.first_stage import register_first_stage
from pipeline.modeling.functional import TF1FunctionalModel
from pipeline.modeling.tf1_layout import TF1Layout

BACKBONE_TYPE = "tf1_faster_rcnn_resnet_v1"
FEATURE_LEVEL = "4"  # stride 16
# resnet_v1_{depth}: (block, base depth, units, stride of its last unit)
BLOCKS = {
    50: (("block1", 64, 3, 2), ("block2", 128, 4, 2), ("block3", 256, 6, 2), ("block4", 512, 3, 1)),
    101: (("block1", 64, 3, 2), ("block2", 128, 4, 2), ("block3", 256, 23, 2),
          ("block4", 512, 3, 1)),
}  # fmt: skip
SUPPORTED_DEPTHS = tuple(BLOCKS)
OUTPUT_STRIDE = 16
# The second stage: `_extract_box_classifier_features`' block4, 3 units of stride 1.
SECOND_STAGE_BLOCK = ("block4", 512, 3, 1)
# Slim's unit order in a scope, and the BottleneckBlock sub-layers holding each.
_UNIT_LAYERS = (
    ("shortcut", "_shortcut", "_norm0"),
    ("conv1", "_conv1", "_norm1"),
    ("conv2", "_conv2", "_norm2"),
    ("conv3", "_conv3", "_norm3"),
)


def first_stage_scope(depth: int) -> str:
    return f"FirstStageFeatureExtractor/resnet_v1_{depth}"


def second_stage_scope(depth: int) -> str:
    return f"SecondStageFeatureExtractor/resnet_v1_{depth}"


def unit_plan(
    blocks: tuple[tuple[str, int, int, int], ...], output_stride: int | None
) -> Iterator[tuple[str, int, int, int, int]]:
    """(block, unit number, base depth, stride, rate) of every unit, as `stack_blocks_dense`
    decides them: once the running stride reaches `output_stride` (counted after the root's
    4), units run at stride 1 and later ones atrous."""
    current, rate = 1, 1
    for name, base, num_units, stride in blocks:
        for index in range(num_units):
            unit_stride = stride if index == num_units - 1 else 1
            if output_stride is not None and current == output_stride:
                yield name, index + 1, base, 1, rate
                rate *= unit_stride
            else:
                yield name, index + 1, base, unit_stride, 1
                current *= unit_stride


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1BottleneckV1(BottleneckBlock):
    """Slim's resnet_v1 `bottleneck` unit: Model Garden's BottleneckBlock, but for strides.

    For stride 1 the two compute the same thing (projection = slim's `shortcut` conv + BN when
    the depth changes; conv1 1x1, conv2 3x3 'SAME' (atrous at `dilation_rate`), conv3 1x1, each
    with BN; ReLU after conv1, conv2 and the sum), so those units are BottleneckBlock as is.
    A stride-2 unit differs twice, so this subclass handles it:
    - slim's shortcut of a unit whose depth is unchanged is `subsample`, a 1x1 max pool with the
      stride (x[:, ::2, ::2]); BottleneckBlock without projection adds its input unchanged;
    - slim's conv2 is `conv2d_same`: explicit zero padding (1 before, 1 after for 3x3) and a
      VALID conv; Keras 'same' with stride 2 pads 0 before and 1 after on even sizes, which
      samples the grid one pixel off.
    (Model Garden's ResNet also strides the *first* unit of a block, with a projection; slim
    strides the last.) The layer keeps BottleneckBlock's sub-layer names (`_conv2`, `_norm0`,
    ...), which the TF1 layout records point at.
    """

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        if self._strides > 1:
            self._conv2 = tf_keras.layers.Conv2D(
                filters=self._filters,
                kernel_size=3,
                strides=self._strides,
                dilation_rate=self._dilation_rate,
                padding="valid",
                use_bias=False,
                kernel_regularizer=self._kernel_regularizer,
                bias_regularizer=self._bias_regularizer,
            )
            effective = 3 + 2 * (self._dilation_rate - 1)
            before = (effective - 1) // 2
            self._conv2_padding = ((before, effective - 1 - before),) * 2

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if self._strides == 1:
            return super().call(inputs, training=training)
        if self._use_projection:
            shortcut = self._norm0(self._shortcut(inputs), training=training)
        else:
            shortcut = inputs[:, :: self._strides, :: self._strides, :]
        x = self._activation1(self._norm1(self._conv1(inputs), training=training))
        padding = [[0, 0], *self._conv2_padding, [0, 0]]
        x = self._conv2(tf.pad(x, padding))
        x = self._activation2(self._norm2(x, training=training))
        x = self._norm3(self._conv3(x), training=training)
        return self._activation3(x + shortcut)


class _Builder:
    """Builds slim units on Keras tensors and records each layer's TF1 scope."""

    def __init__(
        self,
        layout: TF1Layout,
        norm_momentum: float,
        norm_epsilon: float,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None,
    ) -> None:
        self.layout = layout
        self.norm_momentum = norm_momentum
        self.norm_epsilon = norm_epsilon
        self.kernel_regularizer = kernel_regularizer

    def norm(self) -> tf_keras.layers.BatchNormalization:
        return tf_keras.layers.BatchNormalization(
            momentum=self.norm_momentum, epsilon=self.norm_epsilon
        )

    def root(self, inputs: tf.Tensor, scope: str) -> tf.Tensor:
        """conv1 (conv2d_same 7x7/2, BN, ReLU) and pool1 (3x3/2 'SAME' max pool)."""
        conv = tf_keras.layers.Conv2D(
            64, 7, strides=2, padding="valid", use_bias=False,
            kernel_regularizer=self.kernel_regularizer,
        )  # fmt: skip
        norm = self.norm()
        x = tf.pad(inputs, [[0, 0], [3, 3], [3, 3], [0, 0]])
        x = tf_keras.layers.Activation("relu")(norm(conv(x)))
        self.layout.add(f"{scope}/conv1", "conv", conv)
        self.layout.add(f"{scope}/conv1", "batch_norm", norm)
        return tf_keras.layers.MaxPooling2D(3, 2, padding="same")(x)

    def units(
        self, x: tf.Tensor, scope: str, plan: list[tuple[str, int, int, int, int]]
    ) -> dict[str, tf.Tensor]:
        """Run the units of `plan` (`unit_plan`'s) on `x`; {block name: its output}."""
        outputs = {}
        for name, number, base, stride, rate in plan:
            unit = TF1BottleneckV1(
                filters=base,
                strides=stride,
                dilation_rate=rate,
                use_projection=int(x.shape[-1]) != base * 4,
                activation="relu",
                norm_momentum=self.norm_momentum,
                norm_epsilon=self.norm_epsilon,
                kernel_regularizer=self.kernel_regularizer,
            )
            x = unit(x)
            unit_scope = f"{scope}/{name}/unit_{number}/bottleneck_v1"
            for tf1_name, conv, norm in _UNIT_LAYERS:
                if conv == "_shortcut" and not unit._use_projection:
                    continue
                self.layout.conv_bn(f"{unit_scope}/{tf1_name}", unit, conv, norm)
            outputs[name] = x
        return outputs


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
        if depth not in BLOCKS:
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
        build = _Builder(layout, norm_momentum, norm_epsilon, kernel_regularizer)
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
    build = _Builder(layout, norm_momentum, norm_epsilon, kernel_regularizer)
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
