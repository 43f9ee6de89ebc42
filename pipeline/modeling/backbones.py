"""MobileNet v1/v2 backbones laid out exactly as the TF1 SSD feature extractors.

Built from Model Garden blocks (`Conv2DBNBlock`, `nn_blocks.InvertedBottleneckBlock`,
`nn_blocks.DepthwiseSeparableConvBlock`) and registered with Model Garden's backbone factory as
`tf1_ssd_mobilenet`. Model Garden's own `MobileNet` cannot serve: SSD MobileNet v2 reads the
*expansion output* of `expanded_conv_13` (TF1 endpoint `layer_15/expansion_output`, 576 channels
at stride 16), which no Model Garden endpoint exposes, and TF1 scales depths with `min_depth`
(16 in the zoo configs) where Model Garden uses 8. Here that block is split into its 1x1 expansion
(a `Conv2DBNBlock`, tapped) and an `InvertedBottleneckBlock` with expand_ratio 1 (depthwise +
projection); the block has stride 2, so no residual connection is lost by the split.

Outputs {'4': stride-16 map, '5': stride-32 map}. Every weight-holding layer is recorded in
`self.tf1_layout` with its TF1 scope (`FeatureExtractor/MobilenetV2/...`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf
import tf_keras
from official.modeling import hyperparams
from official.vision.modeling.backbones import factory
from official.vision.modeling.backbones.mobilenet import Conv2DBNBlock
from official.vision.modeling.layers import nn_blocks, nn_layers

from pipeline.modeling import mobilenet_defs as defs
from pipeline.modeling.tf1_layout import TF1Layout, bn_implied

BACKBONE_TYPE = "tf1_ssd_mobilenet"

# (stride, depth) of TF1 mobilenet_v1's Conv2d_1..Conv2d_13 depthwise-separable layers.
_V1_BLOCKS = (
    (1, 64),
    (2, 128),
    (1, 128),
    (2, 256),
    (1, 256),
    (2, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (2, 1024),
    (1, 1024),
)
_V1_TAPS = {11: "4", 13: "5"}

SCOPES = {
    "ssd_mobilenet_v2": "FeatureExtractor/MobilenetV2",
    "ssd_mobilenet_v1": "FeatureExtractor/MobilenetV1",
}
# The TF1 endpoint the SSD extra layers are stacked on (it prefixes their scope names).
LAST_ENDPOINT = {"ssd_mobilenet_v2": "layer_19", "ssd_mobilenet_v1": "Conv2d_13_pointwise"}


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1MobileNetBackbone(tf_keras.Model):
    """The MobileNet part of a TF1 `ssd_mobilenet_v1` / `ssd_mobilenet_v2` feature extractor."""

    def __init__(
        self,
        architecture: str = "ssd_mobilenet_v2",
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
        if architecture not in SCOPES:
            raise ValueError(f"unsupported architecture {architecture!r}; use one of {SCOPES}")
        input_specs = input_specs or tf_keras.layers.InputSpec(shape=[None, 300, 300, 3])
        self._config_dict = {
            "architecture": architecture,
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
        self._block_kwargs = {
            "kernel_regularizer": kernel_regularizer,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "use_sync_bn": use_sync_bn,
        }
        layout = TF1Layout("backbone", bn_implied(batch_norm_scale, batch_norm_center))
        inputs = tf_keras.Input(shape=input_specs.shape[1:])
        if architecture == "ssd_mobilenet_v2":
            endpoints = self._mobilenet_v2(inputs, layout)
        else:
            endpoints = self._mobilenet_v1(inputs, layout)
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)
        self._output_specs = {level: t.get_shape() for level, t in endpoints.items()}
        self.tf1_layout = layout

    def _mobilenet_v2(self, inputs: tf.Tensor, layout: TF1Layout) -> dict[str, tf.Tensor]:
        cfg = self._config_dict
        scope = SCOPES["ssd_mobilenet_v2"]

        def depth(d: int) -> int:
            return defs.v2_depth(d, cfg["depth_multiplier"], cfg["min_depth"])

        block = Conv2DBNBlock(
            filters=depth(defs.V2_FIRST_CONV_DEPTH),
            kernel_size=3,
            strides=2,
            activation="relu6",
            **self._block_kwargs,
        )
        x = block(inputs)
        layout.conv_bn(f"{scope}/Conv", block, "_conv0", "_norm0")
        in_depth = depth(defs.V2_FIRST_CONV_DEPTH)
        endpoints = {}
        ib_kwargs = {
            "kernel_size": 3,
            "activation": "relu6",
            "divisible_by": 8,
            "use_residual": True,
            "bias_regularizer": None,
            **self._block_kwargs,
        }
        for index, (stride, out, expand_ratio) in enumerate(defs.V2_EXPANDED_CONVS):
            name = "expanded_conv" if index == 0 else f"expanded_conv_{index}"
            out_depth = depth(out)
            if index == defs.V2_TAP_EXPANDED_CONV:
                expanded = nn_layers.make_divisible(in_depth * expand_ratio, 8)
                expand = Conv2DBNBlock(
                    filters=expanded,
                    kernel_size=1,
                    strides=1,
                    activation="relu6",
                    **self._block_kwargs,
                )
                x = expand(x)
                layout.conv_bn(f"{scope}/{name}/expand", expand, "_conv0", "_norm0")
                endpoints["4"] = x
                block = nn_blocks.InvertedBottleneckBlock(
                    in_filters=expanded,
                    out_filters=out_depth,
                    expand_ratio=1,
                    strides=stride,
                    **ib_kwargs,
                )
                if stride == 1 and expanded == out_depth:
                    raise ValueError(f"{name}: splitting a residual block would drop its shortcut")
            else:
                block = nn_blocks.InvertedBottleneckBlock(
                    in_filters=in_depth,
                    out_filters=out_depth,
                    expand_ratio=expand_ratio,
                    strides=stride,
                    **ib_kwargs,
                )
                if expand_ratio > 1:
                    layout.conv_bn(f"{scope}/{name}/expand", block, "_conv0", "_norm0")
            x = block(x)
            layout.conv_bn(f"{scope}/{name}/depthwise", block, "_conv1", "_norm1", depthwise=True)
            layout.conv_bn(f"{scope}/{name}/project", block, "_conv2", "_norm2")
            in_depth = out_depth
        block = Conv2DBNBlock(
            filters=depth(defs.V2_LAST_CONV_DEPTH),
            kernel_size=1,
            strides=1,
            activation="relu6",
            **self._block_kwargs,
        )
        endpoints["5"] = block(x)
        layout.conv_bn(f"{scope}/Conv_1", block, "_conv0", "_norm0")
        return endpoints

    def _mobilenet_v1(self, inputs: tf.Tensor, layout: TF1Layout) -> dict[str, tf.Tensor]:
        cfg = self._config_dict
        scope = SCOPES["ssd_mobilenet_v1"]

        def depth(d: int) -> int:
            return defs.floor_depth(d, cfg["depth_multiplier"], cfg["min_depth"])

        block = Conv2DBNBlock(
            filters=depth(32),
            kernel_size=3,
            strides=2,
            activation=cfg["activation"],
            **self._block_kwargs,
        )
        x = block(inputs)
        layout.conv_bn(f"{scope}/Conv2d_0", block, "_conv0", "_norm0")
        endpoints = {}
        for index, (stride, out) in enumerate(_V1_BLOCKS, start=1):
            block = nn_blocks.DepthwiseSeparableConvBlock(
                filters=depth(out), kernel_size=3, strides=stride, activation=cfg["activation"],
                **self._block_kwargs,
            )  # fmt: skip
            x = block(x)
            layout.conv_bn(
                f"{scope}/Conv2d_{index}_depthwise", block, "_dwconv0", "_norm0", depthwise=True
            )
            layout.conv_bn(f"{scope}/Conv2d_{index}_pointwise", block, "_conv1", "_norm1")
            if index in _V1_TAPS:
                endpoints[_V1_TAPS[index]] = x
        return endpoints

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        return self._output_specs

    def get_config(self) -> dict[str, Any]:
        return dict(self._config_dict)

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: Any = None
    ) -> TF1MobileNetBackbone:
        return cls(**config)


@dataclasses.dataclass
class TF1SSDMobileNetConfig(hyperparams.Config):
    """Model Garden config of the `tf1_ssd_mobilenet` backbone."""

    architecture: str = "ssd_mobilenet_v2"
    depth_multiplier: float = 1.0
    min_depth: int = 16
    # TF1 keeps MobileNet's own relu6 / scaled BatchNorm unless the config sets
    # override_base_feature_extractor_hyperparams (v2 keeps relu6 even then).
    activation: str = "relu6"
    batch_norm_scale: bool = True
    batch_norm_center: bool = True


@dataclasses.dataclass
class BackboneConfig(hyperparams.OneOfConfig):
    """A Model Garden backbone one-of holding the TF1 SSD MobileNet choice."""

    type: str | None = BACKBONE_TYPE
    tf1_ssd_mobilenet: TF1SSDMobileNetConfig = dataclasses.field(
        default_factory=TF1SSDMobileNetConfig
    )


@factory.register_backbone_builder(BACKBONE_TYPE)
def build_tf1_ssd_mobilenet(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: hyperparams.Config,
    norm_activation_config: hyperparams.Config,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> tf_keras.Model:
    """Model Garden backbone factory entry: `factory.build_backbone(...)` with this type."""
    if backbone_config.type != BACKBONE_TYPE:
        raise ValueError(f"backbone type {backbone_config.type!r} is not {BACKBONE_TYPE!r}")
    cfg = backbone_config.get()
    return TF1MobileNetBackbone(
        architecture=cfg.architecture,
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
