"""The Inception v2 base of TF1's `ssd_inception_v2`, laid out exactly as slim builds it.

Model Garden has no Inception backbone, so this is assembled from Model Garden's `Conv2DBNBlock`
(slim conv + BatchNorm + activation, no bias) and Keras pooling / concatenation, following slim
`nets/inception_v2.inception_v2_base` up to `Mixed_5c` (table `MIXED_BLOCKS` below):
- `Conv2d_1a_7x7` is a slim `separable_conv2d` with a depthwise multiplier of
  min(depth(64) / 3, 8): a depthwise 7x7 stride-2 conv and a 1x1 pointwise conv fused
  (`tf.nn.separable_conv2d`, no BatchNorm between them), then BatchNorm and the activation —
  Keras `SeparableConv2D` computes exactly that op, and no Model Garden block does (its separable
  blocks put BatchNorm between the two convs);
- every pooling is 3x3 with 'SAME' padding (the inception arg_scope), average pools stride 1
  (TF excludes the padding from the average, as Keras' AveragePooling2D does);
- depths are max(int(d * depth_multiplier), min_depth).
The whole base runs under the config's conv_hyperparams (ssd_inception_v2_feature_extractor wraps
it in that arg_scope): its activation and BatchNorm settings apply, whatever
`override_base_feature_extractor_hyperparams` says.

The SSD reads `Mixed_4c` (stride 16) and `Mixed_5c` (stride 32). Registered with Model Garden's
backbone factory as `tf1_ssd_inception_v2`; every weight-holding layer is recorded in
`self.tf1_layout` with its TF1 scope (`FeatureExtractor/InceptionV2/Mixed_3b/Branch_1/...`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import tensorflow as tf
import tf_keras
from official.modeling import hyperparams, tf_utils
from official.vision.modeling.backbones import factory
from official.vision.modeling.backbones.mobilenet import Conv2DBNBlock

from pipeline.modeling.functional import TF1FunctionalModel
from pipeline.modeling.mobilenet_defs import floor_depth
from pipeline.modeling.tf1_layout import TF1Layout, bn_implied

BACKBONE_TYPE = "tf1_ssd_inception_v2"
ARCHITECTURE = "ssd_inception_v2"
SCOPE = "FeatureExtractor/InceptionV2"
LAST_ENDPOINT = "Mixed_5c"
# from_layer of ssd_inception_v2_feature_extractor: the SSD's first two feature maps.
TAPS = {"Mixed_4c": "4", "Mixed_5c": "5"}


class Conv(NamedTuple):
    name: str  # slim scope inside the branch, e.g. 'Conv2d_0b_3x3'
    depth: int  # before depth_multiplier / min_depth
    kernel_size: int
    stride: int = 1


class Pool(NamedTuple):
    name: str  # e.g. 'AvgPool_0a_3x3'
    kind: str  # 'avg' | 'max'
    stride: int = 1


Branch = tuple[Conv | Pool, ...]


def _mixed(b0: Branch, b1: Branch, b2: Branch, b3: Branch | None = None) -> tuple[Branch, ...]:
    return (b0, b1, b2) if b3 is None else (b0, b1, b2, b3)


def _pool_branch(depth: int, kind: str = "avg") -> Branch:
    name = "AvgPool_0a_3x3" if kind == "avg" else "MaxPool_0a_3x3"
    return (Pool(name, kind), Conv("Conv2d_0b_1x1", depth, 1))


def _standard(d0: int, d1: tuple[int, int], d2: tuple[int, int, int], d3: int, pool: str = "avg"):
    """Mixed_3b/3c/4b-4e/5b/5c: 1x1 | 1x1-3x3 | 1x1-3x3-3x3 | pool-1x1."""
    return _mixed(
        (Conv("Conv2d_0a_1x1", d0, 1),),
        (Conv("Conv2d_0a_1x1", d1[0], 1), Conv("Conv2d_0b_3x3", d1[1], 3)),
        (
            Conv("Conv2d_0a_1x1", d2[0], 1),
            Conv("Conv2d_0b_3x3", d2[1], 3),
            Conv("Conv2d_0c_3x3", d2[2], 3),
        ),
        _pool_branch(d3, pool),
    )


def _reduction(d0: tuple[int, int], d1: tuple[int, int, int]):
    """Mixed_4a/5a: 1x1-3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""
    return _mixed(
        (Conv("Conv2d_0a_1x1", d0[0], 1), Conv("Conv2d_1a_3x3", d0[1], 3, 2)),
        (
            Conv("Conv2d_0a_1x1", d1[0], 1),
            Conv("Conv2d_0b_3x3", d1[1], 3),
            Conv("Conv2d_1a_3x3", d1[2], 3, 2),
        ),
        (Pool("MaxPool_1a_3x3", "max", 2),),
    )


# slim inception_v2_base after the root block (Conv2d_1a_7x7 .. MaxPool_3a_3x3).
MIXED_BLOCKS: tuple[tuple[str, tuple[Branch, ...]], ...] = (
    ("Mixed_3b", _standard(64, (64, 64), (64, 96, 96), 32)),
    ("Mixed_3c", _standard(64, (64, 96), (64, 96, 96), 64)),
    ("Mixed_4a", _reduction((128, 160), (64, 96, 96))),
    ("Mixed_4b", _standard(224, (64, 96), (96, 128, 128), 128)),
    ("Mixed_4c", _standard(192, (96, 128), (96, 128, 128), 128)),
    ("Mixed_4d", _standard(160, (128, 160), (128, 160, 160), 96)),
    ("Mixed_4e", _standard(96, (128, 192), (160, 192, 192), 96)),
    ("Mixed_5a", _reduction((128, 192), (192, 256, 256))),
    ("Mixed_5b", _standard(352, (192, 320), (160, 224, 224), 128)),
    ("Mixed_5c", _standard(352, (192, 320), (192, 224, 224), 128, pool="max")),
)


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1InceptionV2Backbone(TF1FunctionalModel):
    """The Inception v2 part of a TF1 `ssd_inception_v2` feature extractor."""

    def __init__(
        self,
        depth_multiplier: float = 1.0,
        min_depth: int = 16,
        input_specs: tf_keras.layers.InputSpec | None = None,
        activation: str = "relu6",
        batch_norm_scale: bool = True,
        batch_norm_center: bool = True,
        norm_momentum: float = 0.9997,
        norm_epsilon: float = 0.001,
        use_sync_bn: bool = False,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ) -> None:
        input_specs = input_specs or tf_keras.layers.InputSpec(shape=[None, 300, 300, 3])
        self._config_dict = {
            "depth_multiplier": depth_multiplier,
            "min_depth": min_depth,
            "input_specs": input_specs,
            "activation": activation,
            "batch_norm_scale": batch_norm_scale,
            "batch_norm_center": batch_norm_center,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "use_sync_bn": use_sync_bn,
            "kernel_regularizer": kernel_regularizer,
        }
        block_kwargs = {
            "activation": activation,
            "kernel_regularizer": kernel_regularizer,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "use_sync_bn": use_sync_bn,
        }

        def depth(d: int) -> int:
            return floor_depth(d, depth_multiplier, min_depth)

        layout = TF1Layout("backbone", bn_implied(batch_norm_scale, batch_norm_center))

        def conv(x: tf.Tensor, scope: str, filters: int, kernel: int, stride: int) -> tf.Tensor:
            block = Conv2DBNBlock(
                filters=filters, kernel_size=kernel, strides=stride, **block_kwargs
            )
            layout.conv_bn(scope, block, "_conv0", "_norm0")
            return block(x)

        inputs = tf_keras.Input(shape=input_specs.shape[1:])
        separable = tf_keras.layers.SeparableConv2D(
            filters=depth(64),
            kernel_size=7,
            strides=2,
            padding="same",
            depth_multiplier=min(depth(64) // 3, 8),
            use_bias=False,
            depthwise_regularizer=kernel_regularizer,
            pointwise_regularizer=kernel_regularizer,
        )
        norm = tf_keras.layers.BatchNormalization(
            momentum=norm_momentum, epsilon=norm_epsilon, synchronized=use_sync_bn
        )
        x = separable(inputs)
        x = tf_utils.get_activation(activation, use_keras_layer=True)(norm(x))
        layout.add(f"{SCOPE}/Conv2d_1a_7x7", "separable", separable)
        layout.add(f"{SCOPE}/Conv2d_1a_7x7", "batch_norm", norm, implied=layout.bn_implied)
        x = tf_keras.layers.MaxPool2D(3, strides=2, padding="same")(x)
        x = conv(x, f"{SCOPE}/Conv2d_2b_1x1", depth(64), 1, 1)
        x = conv(x, f"{SCOPE}/Conv2d_2c_3x3", depth(192), 3, 1)
        x = tf_keras.layers.MaxPool2D(3, strides=2, padding="same")(x)
        endpoints = {}
        for block_name, branches in MIXED_BLOCKS:
            outputs = []
            for index, branch in enumerate(branches):
                y = x
                for op in branch:
                    scope = f"{SCOPE}/{block_name}/Branch_{index}/{op.name}"
                    if isinstance(op, Pool):
                        pool = (
                            tf_keras.layers.AveragePooling2D
                            if op.kind == "avg"
                            else tf_keras.layers.MaxPool2D
                        )
                        y = pool(3, strides=op.stride, padding="same")(y)
                    else:
                        y = conv(y, scope, depth(op.depth), op.kernel_size, op.stride)
                outputs.append(y)
            x = tf_keras.layers.Concatenate(axis=-1)(outputs)
            if block_name in TAPS:
                endpoints[TAPS[block_name]] = x
        self._finish(inputs, endpoints, layout, self._config_dict, **kwargs)


@dataclasses.dataclass
class TF1SSDInceptionV2Config(hyperparams.Config):
    """Model Garden config of the `tf1_ssd_inception_v2` backbone."""

    depth_multiplier: float = 1.0
    min_depth: int = 16
    activation: str = "relu6"
    batch_norm_scale: bool = True
    batch_norm_center: bool = True


@factory.register_backbone_builder(BACKBONE_TYPE)
def build_tf1_ssd_inception_v2(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: hyperparams.Config,
    norm_activation_config: hyperparams.Config,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> tf_keras.Model:
    """Model Garden backbone factory entry: `factory.build_backbone(...)` with this type."""
    if backbone_config.type != BACKBONE_TYPE:
        raise ValueError(f"backbone type {backbone_config.type!r} is not {BACKBONE_TYPE!r}")
    cfg = backbone_config.get()
    return TF1InceptionV2Backbone(
        depth_multiplier=cfg.depth_multiplier,
        min_depth=cfg.min_depth,
        input_specs=input_specs,
        activation=cfg.activation,
        batch_norm_scale=cfg.batch_norm_scale,
        batch_norm_center=cfg.batch_norm_center,
        norm_momentum=norm_activation_config.norm_momentum,
        norm_epsilon=norm_activation_config.norm_epsilon,
        use_sync_bn=norm_activation_config.use_sync_bn,
        kernel_regularizer=l2_regularizer,
    )
