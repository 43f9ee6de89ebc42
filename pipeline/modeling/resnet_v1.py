"""Slim ResNet v1 (50 / 101 / 152) as TF1's detectors build it, shared by both families.

Read from slim's `nets/resnet_v1.py` / `resnet_utils.py` (the copies the TF1 OD API imports):
- the root is `conv1` = `conv2d_same` 7x7/2 with 64 filters (explicit zero padding 3/3, then a
  VALID conv), BatchNorm, the arg scope's activation, then `pool1` = 3x3/2 max pool, 'SAME';
- a block puts its stride on its *last* unit (`resnet_v1_block`); base depths are
  max(int(d * depth_multiplier), min_base_depth) (`resnet_v1_50(min_base_depth=8,
  depth_multiplier=1)` by default);
- every unit is slim's `bottleneck` (`TF1BottleneckV1` below): conv1 and conv2 take the arg
  scope's activation, conv3 and the shortcut none, and the sum is always `tf.nn.relu`;
- convs are bias-free; `resnet_arg_scope` gives BatchNorm scale, epsilon 1e-5, decay 0.997 as
  conv2d's `normalizer_params`, which an outer conv_hyperparams arg scope does not replace (it sets
  the activation, the regularizer and batch_norm's own defaults, not conv2d's normalizer_params).

Two users: the Faster R-CNN first / second stages (`faster_rcnn/resnet_v1.py`, output stride 16)
and the SSD FPN base `TF1SSDResNetV1Backbone` below (`ssd_resnet{50,101,152}_v1_fpn`).

`SSDResnetV1FpnFeatureExtractor` runs `resnet_v1_{depth}` with `store_non_strided_activations`:
`stack_blocks_dense` then runs a block's last unit at stride 1, records the block's output (the
FPN reads `block1`..`block4`, strides 4..32) and subsamples it afterwards (`subsample`, a 1x1
max pool: x[:, ::2, ::2]). Every unit thus has stride 1, where Model Garden's `BottleneckBlock`
computes slim's unit exactly (`inner_activation` gives conv1/conv2 their own activation). The
base runs under `resnet_arg_scope()` (ReLU, L2 1e-4) and, with
`override_base_feature_extractor_hyperparams`, under the config's conv_hyperparams too: its
activation (relu6 in the zoo config) replaces ReLU in the root and in conv1/conv2 of every unit;
the BatchNorm stays resnet's (epsilon 1e-5, scale, decay 0.997; `center` would be the
config's, and only center: true is supported).
Registered with Model Garden's backbone factory as `tf1_ssd_resnet_v1`; outputs
{'2': block1, '3': block2, '4': block3, '5': block4} before subsampling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import tensorflow as tf
import tf_keras
from official.modeling import hyperparams, tf_utils
from official.vision.modeling.backbones import factory
from official.vision.modeling.layers.nn_blocks import BottleneckBlock

from pipeline.modeling.functional import TF1FunctionalModel
from pipeline.modeling.tf1_layout import TF1Layout

Block = tuple[str, int, int, int]  # (block, base depth, units, stride of its last unit)
# resnet_v1_{depth}'s blocks.
BLOCKS: dict[int, tuple[Block, ...]] = {
    50: (("block1", 64, 3, 2), ("block2", 128, 4, 2), ("block3", 256, 6, 2), ("block4", 512, 3, 1)),
    101: (("block1", 64, 3, 2), ("block2", 128, 4, 2), ("block3", 256, 23, 2),
          ("block4", 512, 3, 1)),
    152: (("block1", 64, 3, 2), ("block2", 128, 8, 2), ("block3", 256, 36, 2),
          ("block4", 512, 3, 1)),
}  # fmt: skip
SUPPORTED_DEPTHS = tuple(BLOCKS)
# resnet_arg_scope's BatchNorm (conv2d normalizer_params) and L2 weight.
BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_DECAY = 0.997
WEIGHT_DECAY = 0.0001
# Slim's unit order in a scope, and the BottleneckBlock sub-layers holding each.
_UNIT_LAYERS = (
    ("shortcut", "_shortcut", "_norm0"),
    ("conv1", "_conv1", "_norm1"),
    ("conv2", "_conv2", "_norm2"),
    ("conv3", "_conv3", "_norm3"),
)


def scaled_blocks(
    depth: int, depth_multiplier: float = 1.0, min_base_depth: int = 8
) -> tuple[Block, ...]:
    """resnet_v1_{depth}'s blocks with `depth_func` applied to the base depths."""
    if depth not in BLOCKS:
        raise ValueError(f"ResNet v1 depth {depth} is not one of {SUPPORTED_DEPTHS}")
    return tuple(
        (name, max(int(base * depth_multiplier), min_base_depth), units, stride)
        for name, base, units, stride in BLOCKS[depth]
    )


def unit_plan(
    blocks: tuple[Block, ...], output_stride: int | None
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
    """Slim's resnet_v1 `bottleneck` unit: Model Garden's BottleneckBlock, but for strides and
    the activation of its inner convs.

    For stride 1 the two compute the same thing (projection = slim's `shortcut` conv + BN when
    the depth changes; conv1 1x1, conv2 3x3 'SAME' (atrous at `dilation_rate`), conv3 1x1, each
    with BN; an activation after conv1, conv2 and the sum), so those units are BottleneckBlock as
    is, with `inner_activation` (default: `activation`) after conv1 and conv2: slim takes those
    from the arg scope (relu6 under an overriding SSD conv_hyperparams) but always sums with ReLU.
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

    def __init__(self, *args: Any, inner_activation: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inner_activation = inner_activation or self._activation

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "inner_activation": self._inner_activation}

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self._activation1 = tf_utils.get_activation(self._inner_activation, use_keras_layer=True)
        self._activation2 = tf_utils.get_activation(self._inner_activation, use_keras_layer=True)
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


class ResNetBuilder:
    """Builds slim ResNet v1 layers on Keras tensors and records each layer's TF1 scope.

    `activation` is the arg scope's (the root's and every unit's conv1/conv2); the units' sum is
    always ReLU."""

    def __init__(
        self,
        layout: TF1Layout,
        norm_momentum: float,
        norm_epsilon: float,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None,
        activation: str = "relu",
    ) -> None:
        self.layout = layout
        self.norm_momentum = norm_momentum
        self.norm_epsilon = norm_epsilon
        self.kernel_regularizer = kernel_regularizer
        self.activation = activation

    def norm(self) -> tf_keras.layers.BatchNormalization:
        return tf_keras.layers.BatchNormalization(
            momentum=self.norm_momentum, epsilon=self.norm_epsilon
        )

    def root(self, inputs: tf.Tensor, scope: str) -> tf.Tensor:
        """conv1 (conv2d_same 7x7/2, BN, activation) and pool1 (3x3/2 'SAME' max pool)."""
        conv = tf_keras.layers.Conv2D(
            64, 7, strides=2, padding="valid", use_bias=False,
            kernel_regularizer=self.kernel_regularizer,
        )  # fmt: skip
        norm = self.norm()
        x = tf.pad(inputs, [[0, 0], [3, 3], [3, 3], [0, 0]])
        x = tf_keras.layers.Activation(self.activation)(norm(conv(x)))
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
                inner_activation=self.activation,
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


BACKBONE_TYPE = "tf1_ssd_resnet_v1"
# The FPN level each block's (non-strided) output is: block1 at stride 4 is level 2.
SSD_BLOCK_LEVELS = {"block1": "2", "block2": "3", "block3": "4", "block4": "5"}


def ssd_scope(depth: int) -> str:
    return f"FeatureExtractor/resnet_v1_{depth}"


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1SSDResNetV1Backbone(TF1FunctionalModel):
    """The ResNet v1 base of TF1's `ssd_resnet{50,101,152}_v1_fpn`:
    {'2'..'5': block1..block4 outputs before each block's subsampling}."""

    def __init__(
        self,
        depth: int = 50,
        depth_multiplier: float = 1.0,
        min_depth: int = 16,
        activation: str = "relu",
        input_specs: tf_keras.layers.InputSpec | None = None,
        norm_momentum: float = BATCH_NORM_DECAY,
        norm_epsilon: float = BATCH_NORM_EPSILON,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ) -> None:
        input_specs = input_specs or tf_keras.layers.InputSpec(shape=[None, None, None, 3])
        config = {
            "depth": depth,
            "depth_multiplier": depth_multiplier,
            "min_depth": min_depth,
            "activation": activation,
            "input_specs": input_specs,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "kernel_regularizer": kernel_regularizer,
        }
        blocks = scaled_blocks(depth, depth_multiplier, min_depth)
        scope = ssd_scope(depth)
        layout = TF1Layout("backbone")
        build = ResNetBuilder(layout, norm_momentum, norm_epsilon, kernel_regularizer, activation)
        inputs = tf_keras.Input(shape=input_specs.shape[1:])
        x = build.root(inputs, scope)
        endpoints = {}
        for name, base, num_units, stride in blocks:
            # store_non_strided_activations: every unit at stride 1, the block's output recorded,
            # then subsampled by the stride of its last unit.
            plan = [(name, number, base, 1, 1) for number in range(1, num_units + 1)]
            x = endpoints[SSD_BLOCK_LEVELS[name]] = build.units(x, scope, plan)[name]
            if stride > 1:
                x = x[:, ::stride, ::stride, :]
        self._finish(inputs, endpoints, layout, config, **kwargs)


@dataclasses.dataclass
class TF1SSDResNetV1Config(hyperparams.Config):
    """Model Garden config of the `tf1_ssd_resnet_v1` backbone."""

    depth: int = 50
    depth_multiplier: float = 1.0
    min_depth: int = 16
    # The arg scope's activation: relu (resnet_arg_scope), or the config's when it overrides.
    activation: str = "relu"


@factory.register_backbone_builder(BACKBONE_TYPE)
def build_tf1_ssd_resnet_v1(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: hyperparams.Config,
    norm_activation_config: hyperparams.Config,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> tf_keras.Model:
    """Model Garden backbone factory entry. The BatchNorm is resnet_arg_scope's whatever the
    norm_activation config says (see the module docstring)."""
    if backbone_config.type != BACKBONE_TYPE:
        raise ValueError(f"backbone type {backbone_config.type!r} is not {BACKBONE_TYPE!r}")
    return TF1SSDResNetV1Backbone(
        input_specs=input_specs,
        kernel_regularizer=l2_regularizer,
        **backbone_config.get().as_dict(),
    )
