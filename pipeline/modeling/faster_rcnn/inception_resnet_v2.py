"""Slim Inception-ResNet v2 laid out exactly as TF1's `faster_rcnn_inception_resnet_v2` extractor.

TF1's `FasterRCNNInceptionResnetV2FeatureExtractor` runs slim's `inception_resnet_v2_base` up to
`PreAuxLogits` with `align_feature_maps=True` and `output_stride=first_stage_features_stride`
under `inception_resnet_v2_arg_scope()`; the second stage rebuilds Mixed_7a, 9 x block8, a last
block8 without activation and Conv2d_7b_1x1 on the cropped proposals. Read from
`nets/inception_resnet_v2.py` and the extractor:
- `align_feature_maps=True` turns every VALID padding of the first stage into 'SAME', so each
  stride-2 layer gives ceil(n / 2); the second stage's Mixed_7a keeps its explicit VALID
  stride-2 convs and max pool (17 x 17 crops -> 8 x 8);
- output stride 8 ('atrous'): Mixed_6a runs at stride 1 and every conv of the 20 block17 runs
  with rate 2 (`slim.arg_scope([slim.conv2d], rate=2)`); output stride 16 would stride Mixed_6a;
- block35 / block17 / block8 concatenate their branches, project back with a 1x1 conv *with
  bias* and no BatchNorm (`Conv2d_1x1`), add `up * scale` (0.17 / 0.10 / 0.20) to their input
  and apply ReLU (the last block8: no activation);
- every other conv is bias-free with BatchNorm *without scale* (`batch_norm_scale=False`: no
  gamma variable, as Keras' `BatchNormalization(scale=False)`) and epsilon 0.001, then ReLU;
- 1 x 7 / 7 x 1 (block17) and 1 x 3 / 3 x 1 (block8) kernels.

Model Garden's `Conv2DBNBlock` is conv + BatchNorm + activation with 'SAME' padding, square
kernels, no dilation and a scaled BatchNorm; `TF1Conv2DBNBlock` adds the rate, rectangular
kernels, VALID padding and BatchNorm without scale.
The first stage registers with Model Garden's backbone factory as
`tf1_faster_rcnn_inception_resnet_v2` (config `output_stride`) and outputs
{level: PreAuxLogits} (1088 channels; level 3 at output stride 8).
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

BACKBONE_TYPE = "tf1_faster_rcnn_inception_resnet_v2"
FIRST_STAGE_SCOPE = "FirstStageFeatureExtractor/InceptionResnetV2"
SECOND_STAGE_SCOPE = "SecondStageFeatureExtractor/InceptionResnetV2"
SUPPORTED_OUTPUT_STRIDES = (8, 16)

# An op of a branch: (scope, depth | 'avg' | 'max', kernel, stride, padding); kernel is
# (height, width). A stride of None is the output-stride-dependent stride of Mixed_6a.
Op = tuple[str, int | str, tuple[int, int], int | None, str]
Branches = list[list[Op]]


def _conv(name: str, depth: int, kernel: int | tuple[int, int] = 1, stride: int | None = 1,
          padding: str = "same") -> Op:  # fmt: skip
    size = (kernel, kernel) if isinstance(kernel, int) else kernel
    return (name, depth, size, stride, padding)


def _pool(name: str, kind: str, stride: int | None, padding: str = "same") -> Op:
    return (name, kind, (3, 3), stride, padding)


STEM: list[Op] = [
    _conv("Conv2d_1a_3x3", 32, 3, 2),
    _conv("Conv2d_2a_3x3", 32, 3),
    _conv("Conv2d_2b_3x3", 64, 3),
    _pool("MaxPool_3a_3x3", "max", 2),
    _conv("Conv2d_3b_1x1", 80, 1),
    _conv("Conv2d_4a_3x3", 192, 3),
    _pool("MaxPool_5a_3x3", "max", 2),
]
MIXED_5B: Branches = [
    [_conv("Conv2d_1x1", 96)],
    [_conv("Conv2d_0a_1x1", 48), _conv("Conv2d_0b_5x5", 64, 5)],
    [_conv("Conv2d_0a_1x1", 64), _conv("Conv2d_0b_3x3", 96, 3), _conv("Conv2d_0c_3x3", 96, 3)],
    [_pool("AvgPool_0a_3x3", "avg", 1), _conv("Conv2d_0b_1x1", 64)],
]
MIXED_6A: Branches = [
    [_conv("Conv2d_1a_3x3", 384, 3, None)],
    [_conv("Conv2d_0a_1x1", 256), _conv("Conv2d_0b_3x3", 256, 3),
     _conv("Conv2d_1a_3x3", 384, 3, None)],
    [_pool("MaxPool_1a_3x3", "max", None)],
]  # fmt: skip
MIXED_7A: Branches = [
    [_conv("Conv2d_0a_1x1", 256), _conv("Conv2d_1a_3x3", 384, 3, 2, "valid")],
    [_conv("Conv2d_0a_1x1", 256), _conv("Conv2d_1a_3x3", 288, 3, 2, "valid")],
    [_conv("Conv2d_0a_1x1", 256), _conv("Conv2d_0b_3x3", 288, 3),
     _conv("Conv2d_1a_3x3", 320, 3, 2, "valid")],
    [_pool("MaxPool_1a_3x3", "max", 2, "valid")],
]  # fmt: skip
BLOCK35: Branches = [
    [_conv("Conv2d_1x1", 32)],
    [_conv("Conv2d_0a_1x1", 32), _conv("Conv2d_0b_3x3", 32, 3)],
    [_conv("Conv2d_0a_1x1", 32), _conv("Conv2d_0b_3x3", 48, 3), _conv("Conv2d_0c_3x3", 64, 3)],
]
BLOCK17: Branches = [
    [_conv("Conv2d_1x1", 192)],
    [_conv("Conv2d_0a_1x1", 128), _conv("Conv2d_0b_1x7", 160, (1, 7)),
     _conv("Conv2d_0c_7x1", 192, (7, 1))],
]  # fmt: skip
BLOCK8: Branches = [
    [_conv("Conv2d_1x1", 192)],
    [_conv("Conv2d_0a_1x1", 192), _conv("Conv2d_0b_1x3", 224, (1, 3)),
     _conv("Conv2d_0c_3x1", 256, (3, 1))],
]  # fmt: skip
# slim.repeat(net, count, block, scale=...): scopes Repeat*/block{n}_{1..count}.
# (repeat scope, block name, branches, count, residual scale, rate at output stride 8)
Repeat = tuple[str, str, Branches, int, float, int]
FIRST_STAGE_REPEATS: tuple[Repeat, ...] = (
    ("Repeat", "block35", BLOCK35, 10, 0.17, 1),
    ("Repeat_1", "block17", BLOCK17, 20, 0.10, 2),
)
SECOND_STAGE_REPEAT: Repeat = ("Repeat", "block8", BLOCK8, 9, 0.20, 1)


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1Conv2DBNBlock(Conv2DBNBlock):
    """Model Garden's Conv2DBNBlock (bias-free conv, BatchNorm, activation) with what slim's
    conv2d also takes: a (height, width) kernel, a dilation `rate`, 'valid' padding and
    BatchNorm without scale (`norm_scale=False`: no gamma)."""

    def __init__(
        self, dilation_rate: int = 1, padding: str = "same", norm_scale: bool = True,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self._dilation_rate = dilation_rate
        self._padding = padding
        self._norm_scale = norm_scale

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self._conv0 = tf_keras.layers.Conv2D(
            filters=self._filters,
            kernel_size=self._kernel_size,
            strides=self._strides,
            padding=self._padding,
            dilation_rate=self._dilation_rate,
            use_bias=False,
            kernel_initializer=self._kernel_initializer,
            kernel_regularizer=self._kernel_regularizer,
            bias_regularizer=self._bias_regularizer,
        )
        if self._use_normalization:
            self._norm0 = self._norm(
                axis=self._bn_axis,
                momentum=self._norm_momentum,
                epsilon=self._norm_epsilon,
                synchronized=self._use_sync_bn,
                scale=self._norm_scale,
            )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "dilation_rate": self._dilation_rate,
            "padding": self._padding,
            "norm_scale": self._norm_scale,
        }


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1ScaledResidual(tf_keras.layers.Layer):
    """The end of slim's block35/17/8: `net += up * scale`, then ReLU (or no activation)."""

    def __init__(self, scale: float, activation: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._scale = scale
        self._activation = activation

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        net, up = inputs
        net = net + up * self._scale
        return tf.nn.relu(net) if self._activation else net

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self._scale, "activation": self._activation}


class _Builder:
    """Builds slim ops on Keras tensors and records each layer's TF1 scope."""

    def __init__(
        self,
        layout: TF1Layout,
        norm_momentum: float,
        norm_epsilon: float,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None,
        mixed_6a_stride: int = 2,
    ) -> None:
        self.layout = layout
        self.kernel_regularizer = kernel_regularizer
        self.mixed_6a_stride = mixed_6a_stride
        self.block_kwargs = {
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "kernel_regularizer": kernel_regularizer,
            "activation": "relu",
        }

    def op(self, x: tf.Tensor, scope: str, op: Op, rate: int = 1) -> tf.Tensor:
        name, what, kernel, stride, padding = op
        stride = self.mixed_6a_stride if stride is None else stride
        if what == "avg":
            return tf_keras.layers.AveragePooling2D(kernel, stride, padding=padding)(x)
        if what == "max":
            return tf_keras.layers.MaxPooling2D(kernel, stride, padding=padding)(x)
        block = TF1Conv2DBNBlock(
            filters=int(what), kernel_size=kernel, strides=stride, padding=padding,
            dilation_rate=rate, norm_scale=False, **self.block_kwargs,
        )  # fmt: skip
        y = block(x)
        self.layout.conv_bn(
            f"{scope}/{name}", block, "_conv0", "_norm0", norm_kind="batch_norm_no_scale"
        )
        return y

    def branches(self, x: tf.Tensor, scope: str, branches: Branches, rate: int = 1) -> tf.Tensor:
        """Run each branch on `x` and concatenate them (a Mixed_* block, a residual's tower)."""
        outputs = []
        for index, branch in enumerate(branches):
            y = x
            for op in branch:
                y = self.op(y, f"{scope}/Branch_{index}", op, rate)
            outputs.append(y)
        return tf_keras.layers.Concatenate(axis=3)(outputs)

    def residual(self, x: tf.Tensor, scope: str, branches: Branches, scale: float,
                 rate: int = 1, activation: bool = True) -> tf.Tensor:  # fmt: skip
        """slim block35 / block17 / block8."""
        mixed = self.branches(x, scope, branches, rate)
        up = tf_keras.layers.Conv2D(
            int(x.shape[-1]), 1, padding="same", use_bias=True,
            kernel_regularizer=self.kernel_regularizer,
        )  # fmt: skip
        self.layout.add(f"{scope}/Conv2d_1x1", "conv_bias", up)
        return TF1ScaledResidual(scale, activation)([x, up(mixed)])

    def repeat(self, x: tf.Tensor, scope: str, repeat: Repeat, rate: int = 1) -> tf.Tensor:
        repeat_scope, block, branches, count, scale, _ = repeat
        for number in range(1, count + 1):
            x = self.residual(x, f"{scope}/{repeat_scope}/{block}_{number}", branches, scale, rate)
        return x


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1InceptionResNetV2FirstStage(TF1FunctionalModel):
    """Slim inception_resnet_v2_base up to PreAuxLogits, SAME-aligned:
    {level: [B, ceil(H/s), ceil(W/s), 1088]} for output stride s (level log2 s)."""

    def __init__(
        self,
        output_stride: int = 8,
        input_specs: tf_keras.layers.InputSpec | None = None,
        norm_momentum: float = 0.9997,
        norm_epsilon: float = 0.001,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ) -> None:
        if output_stride not in SUPPORTED_OUTPUT_STRIDES:
            raise ValueError(
                f"Inception-ResNet v2 output stride {output_stride} is not one of "
                f"{SUPPORTED_OUTPUT_STRIDES}"
            )
        input_specs = input_specs or tf_keras.layers.InputSpec(shape=[None, None, None, 3])
        config = {
            "output_stride": output_stride,
            "input_specs": input_specs,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "kernel_regularizer": kernel_regularizer,
        }
        atrous = output_stride == 8
        layout = TF1Layout("backbone")
        build = _Builder(
            layout, norm_momentum, norm_epsilon, kernel_regularizer, 1 if atrous else 2
        )
        inputs = tf_keras.Input(shape=input_specs.shape[1:])
        x = inputs
        for op in STEM:
            x = build.op(x, FIRST_STAGE_SCOPE, op)
        x = build.branches(x, f"{FIRST_STAGE_SCOPE}/Mixed_5b", MIXED_5B)
        block35, block17 = FIRST_STAGE_REPEATS
        x = build.repeat(x, FIRST_STAGE_SCOPE, block35)
        x = build.branches(x, f"{FIRST_STAGE_SCOPE}/Mixed_6a", MIXED_6A)
        x = build.repeat(x, FIRST_STAGE_SCOPE, block17, rate=block17[5] if atrous else 1)
        level = str(output_stride.bit_length() - 1)
        self._finish(inputs, {level: x}, layout, config, **kwargs)


def build_second_stage_extractor(
    in_channels: int,
    layout: TF1Layout,
    norm_momentum: float = 0.9997,
    norm_epsilon: float = 0.001,
    kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> tf_keras.Model:
    """Mixed_7a, 9 x block8, block8 (no ReLU), Conv2d_7b_1x1 on [K, h, w, in_channels] crops
    -> [K, (h - 3) // 2 + 1, (w - 3) // 2 + 1, 1536]; records into `layout`."""
    build = _Builder(layout, norm_momentum, norm_epsilon, kernel_regularizer)
    inputs = tf_keras.Input(shape=[None, None, in_channels])
    x = build.branches(inputs, f"{SECOND_STAGE_SCOPE}/Mixed_7a", MIXED_7A)
    x = build.repeat(x, SECOND_STAGE_SCOPE, SECOND_STAGE_REPEAT)
    _, _, branches, _, _, _ = SECOND_STAGE_REPEAT
    x = build.residual(x, f"{SECOND_STAGE_SCOPE}/Block8", branches, 1.0, activation=False)
    x = build.op(x, SECOND_STAGE_SCOPE, _conv("Conv2d_7b_1x1", 1536))
    return tf_keras.Model(inputs=inputs, outputs=x, name="second_stage_feature_extractor")


@dataclasses.dataclass
class TF1FasterRCNNInceptionResNetV2Config(hyperparams.Config):
    """Model Garden config of the `tf1_faster_rcnn_inception_resnet_v2` backbone."""

    output_stride: int = 8


@dataclasses.dataclass
class BackboneConfig(hyperparams.OneOfConfig):
    """A Model Garden backbone one-of holding the TF1 Faster R-CNN Inception-ResNet v2 choice."""

    type: str | None = BACKBONE_TYPE
    tf1_faster_rcnn_inception_resnet_v2: TF1FasterRCNNInceptionResNetV2Config = dataclasses.field(
        default_factory=TF1FasterRCNNInceptionResNetV2Config
    )


build_tf1_faster_rcnn_inception_resnet_v2 = register_first_stage(
    BACKBONE_TYPE, TF1InceptionResNetV2FirstStage
)
