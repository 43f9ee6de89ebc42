"""The SSD extra feature layers (TF1 `multi_resolution_feature_maps`) as a Model Garden decoder.

On top of the backbone's two maps, each further SSD feature map is a 1x1 conv to half depth then
a stride-2 3x3 conv (or, with `use_depthwise`, a 3x3 depthwise + 1x1 pointwise pair), each with
BatchNorm and the config's activation — Model Garden's `Conv2DBNBlock` and
`nn_blocks.DepthwiseSeparableConvBlock`. Layer names, depths and the `min_depth` /
`depth_multiplier` rule follow `feature_map_generators.multi_resolution_feature_maps`
(layer_depth [-1, -1, 512, 256, 256, 128]). Registered with Model Garden's decoder factory as
`tf1_ssd_extra_layers`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf
import tf_keras
from official.modeling import hyperparams
from official.vision.modeling.backbones.mobilenet import Conv2DBNBlock
from official.vision.modeling.decoders import factory
from official.vision.modeling.layers import nn_blocks

from pipeline.modeling.backbones import LAST_ENDPOINT, SCOPES
from pipeline.modeling.functional import TF1FunctionalModel
from pipeline.modeling.mobilenet_defs import SSD_LAYER_DEPTHS, floor_depth
from pipeline.modeling.tf1_layout import TF1Layout, bn_implied

DECODER_TYPE = "tf1_ssd_extra_layers"


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class SSDExtraLayers(TF1FunctionalModel):
    """{'4': stride 16, '5': stride 32} -> {'4', ..., str(3 + num_layers)}."""

    def __init__(
        self,
        input_specs: dict[str, tf.TensorShape],
        architecture: str = "ssd_mobilenet_v2",
        num_layers: int = 6,
        depth_multiplier: float = 1.0,
        min_depth: int = 16,
        use_depthwise: bool = False,
        activation: str = "relu6",
        norm_momentum: float = 0.9997,
        norm_epsilon: float = 0.001,
        use_sync_bn: bool = False,
        batch_norm_scale: bool = True,
        batch_norm_center: bool = True,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ) -> None:
        self._config_dict = {
            "input_specs": input_specs,
            "architecture": architecture,
            "num_layers": num_layers,
            "depth_multiplier": depth_multiplier,
            "min_depth": min_depth,
            "use_depthwise": use_depthwise,
            "activation": activation,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "use_sync_bn": use_sync_bn,
            "batch_norm_scale": batch_norm_scale,
            "batch_norm_center": batch_norm_center,
            "kernel_regularizer": kernel_regularizer,
        }
        block_kwargs = {
            "activation": activation,
            "kernel_regularizer": kernel_regularizer,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "use_sync_bn": use_sync_bn,
        }
        implied = bn_implied(batch_norm_scale, batch_norm_center)
        layout = TF1Layout("decoder")
        inputs = {level: tf_keras.Input(shape=shape[1:]) for level, shape in input_specs.items()}
        levels = sorted(int(level) for level in inputs)
        outputs = {str(level): inputs[str(level)] for level in levels}
        scope = SCOPES[architecture]
        base = LAST_ENDPOINT[architecture]

        def depth(d: float) -> int:
            return floor_depth(d, depth_multiplier, min_depth)

        x = outputs[str(levels[-1])]
        for index in range(len(levels), num_layers):
            layer_depth = SSD_LAYER_DEPTHS[index]
            name = f"{scope}/{base}_1_Conv2d_{index}_1x1_{depth(layer_depth / 2)}"
            block = Conv2DBNBlock(
                filters=depth(layer_depth / 2), kernel_size=1, strides=1, **block_kwargs
            )
            x = block(x)
            layout.conv_bn(name, block, "_conv0", "_norm0", implied=implied)
            name = f"{scope}/{base}_2_Conv2d_{index}_3x3_s2_{depth(layer_depth)}"
            if use_depthwise:
                block = nn_blocks.DepthwiseSeparableConvBlock(
                    filters=depth(layer_depth), kernel_size=3, strides=2, **block_kwargs
                )
                x = block(x)
                layout.conv_bn(
                    f"{name}_depthwise", block, "_dwconv0", "_norm0", True, implied=implied
                )
                layout.conv_bn(name, block, "_conv1", "_norm1", implied=implied)
            else:
                block = Conv2DBNBlock(
                    filters=depth(layer_depth), kernel_size=3, strides=2, **block_kwargs
                )
                x = block(x)
                layout.conv_bn(name, block, "_conv0", "_norm0", implied=implied)
            outputs[str(levels[0] + index)] = x
        self._finish(inputs, outputs, layout, self._config_dict, **kwargs)


@dataclasses.dataclass
class SSDExtraLayersConfig(hyperparams.Config):
    """Model Garden config of the `tf1_ssd_extra_layers` decoder."""

    architecture: str = "ssd_mobilenet_v2"
    num_layers: int = 6
    depth_multiplier: float = 1.0
    min_depth: int = 16
    use_depthwise: bool = False
    activation: str = "relu6"
    norm_epsilon: float = 0.001
    batch_norm_scale: bool = True
    batch_norm_center: bool = True


@dataclasses.dataclass
class DecoderConfig(hyperparams.OneOfConfig):
    type: str | None = DECODER_TYPE
    tf1_ssd_extra_layers: SSDExtraLayersConfig = dataclasses.field(
        default_factory=SSDExtraLayersConfig
    )


@factory.register_decoder_builder(DECODER_TYPE)
def build_ssd_extra_layers(
    input_specs: dict[str, tf.TensorShape],
    model_config: hyperparams.Config,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> tf_keras.Model:
    """Model Garden decoder factory entry (model_config.decoder.type 'tf1_ssd_extra_layers')."""
    decoder = model_config.decoder
    if decoder.type != DECODER_TYPE:
        raise ValueError(f"decoder type {decoder.type!r} is not {DECODER_TYPE!r}")
    cfg = decoder.get()
    norm = model_config.norm_activation
    return SSDExtraLayers(
        input_specs=input_specs,
        architecture=cfg.architecture,
        num_layers=cfg.num_layers,
        depth_multiplier=cfg.depth_multiplier,
        min_depth=cfg.min_depth,
        use_depthwise=cfg.use_depthwise,
        activation=cfg.activation,
        norm_momentum=norm.norm_momentum,
        norm_epsilon=cfg.norm_epsilon,
        use_sync_bn=norm.use_sync_bn,
        batch_norm_scale=cfg.batch_norm_scale,
        batch_norm_center=cfg.batch_norm_center,
        kernel_regularizer=l2_regularizer,
    )
