"""TF1 SSD feature-map layers as Model Garden decoders: the SSD extra layers and the FPN.

The SSD extra feature layers (TF1 `multi_resolution_feature_maps`):

On top of the backbone's two maps, each further SSD feature map is a 1x1 conv to half depth then
a stride-2 3x3 conv (or, with `use_depthwise`, a 3x3 depthwise + 1x1 pointwise pair), each with
BatchNorm and the config's activation — Model Garden's `Conv2DBNBlock` and
`nn_blocks.DepthwiseSeparableConvBlock`. Layer names, depths and the `min_depth` /
`depth_multiplier` rule follow `feature_map_generators.multi_resolution_feature_maps`
(layer_depth [-1, -1, 512, 256, 256, 128]). Registered with Model Garden's decoder factory as
`tf1_ssd_extra_layers`.

The FPN of TF1's FPN feature extractors (`fpn_top_down_feature_maps` + stride-2 convs above
level 5, `TF1FPN`), registered as `tf1_fpn`.

The pooling pyramid of TF1's PPN feature extractor (`pooling_pyramid_feature_maps`, `TF1PPN`),
registered as `tf1_ppn`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import tensorflow as tf
import tf_keras
from official.modeling import hyperparams
from official.vision.modeling.backbones.mobilenet import Conv2DBNBlock
from official.vision.modeling.decoders import factory
from official.vision.ops import spatial_transform_ops

from pipeline.modeling import quantization
from pipeline.modeling.backbones import LAST_ENDPOINT, SCOPES
from pipeline.modeling.functional import TF1FunctionalModel
from pipeline.modeling.mobilenet_defs import SSD_LAYER_DEPTHS, floor_depth
from pipeline.modeling.spec import RESNET_FPN_DEPTHS
from pipeline.modeling.tf1_layout import TF1Layout, bn_implied

DECODER_TYPE = "tf1_ssd_extra_layers"
FPN_DECODER_TYPE = "tf1_fpn"
PPN_DECODER_TYPE = "tf1_ppn"


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
        weight_bits: int = 0,
        activation_bits: int = 0,
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
            "weight_bits": weight_bits,
            "activation_bits": activation_bits,
        }
        block_kwargs = _block_kwargs(self._config_dict)
        blocks = quantization.conv_blocks(weight_bits, activation_bits)
        implied = bn_implied(batch_norm_scale, batch_norm_center)
        layout = TF1Layout("decoder", quantized=weight_bits > 0)
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
            block = blocks.conv_bn(
                filters=depth(layer_depth / 2), kernel_size=1, strides=1, **block_kwargs
            )
            x = block(x)
            layout.conv_bn(name, block, "_conv0", "_norm0", implied=implied)
            layout.fake_quant(name, block, "0")
            name = f"{scope}/{base}_2_Conv2d_{index}_3x3_s2_{depth(layer_depth)}"
            if use_depthwise:
                block = blocks.separable(
                    filters=depth(layer_depth), kernel_size=3, strides=2, **block_kwargs
                )
                x = block(x)
                layout.conv_bn(
                    f"{name}_depthwise", block, "_dwconv0", "_norm0", True, implied=implied
                )
                layout.conv_bn(name, block, "_conv1", "_norm1", implied=implied)
                layout.fake_quant(f"{name}_depthwise", block, "0")
                layout.fake_quant(name, block, "1")
            else:
                block = blocks.conv_bn(
                    filters=depth(layer_depth), kernel_size=3, strides=2, **block_kwargs
                )
                x = block(x)
                layout.conv_bn(name, block, "_conv0", "_norm0", implied=implied)
                layout.fake_quant(name, block, "0")
            outputs[str(levels[0] + index)] = x
        self._finish(inputs, outputs, layout, self._config_dict, **kwargs)


def fpn_level_scopes(architecture: str, min_level: int, max_level: int) -> dict[int, str]:
    """The TF1 layer (under `.../fpn/`) whose output is each FPN level: `smoothing_N` below the
    coarsest backbone level (5 at most), `projection_N` at it, and above it the stride-2 convs:
    MobileNet v1's `bottom_up_Conv2d_14, 15, ...`, ResNet's `bottom_up_block5, 6, ...`."""
    base_max = min(max_level, 5)
    num_levels = base_max - min_level + 1
    scopes = {level: f"smoothing_{level - min_level + 1}" for level in range(min_level, base_max)}
    scopes[base_max] = f"projection_{num_levels}"
    for level in range(base_max + 1, max_level + 1):
        if architecture in RESNET_FPN_DEPTHS:
            scopes[level] = f"bottom_up_block{level - 1}"
        else:
            scopes[level] = f"bottom_up_Conv2d_{level - base_max + 13}"
    return scopes


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1FPN(TF1FunctionalModel):
    """TF1 `fpn_top_down_feature_maps` plus the FPN feature extractors' stride-2 convs above
    level 5: {'2'..'5' backbone maps} -> {str(min_level), ..., str(max_level)}.

    Exactly as SSDMobileNetV1FpnFeatureExtractor and SSDResnetV1FpnFeatureExtractor build it,
    under the config's conv_hyperparams: a 1x1 `projection_N` (bias, no
    BatchNorm, no activation) of every input level; top-down, the coarser result is upsampled
    2x by nearest neighbour and added to the next projection, then a 3x3 `smoothing_N` conv with
    BatchNorm and the config's activation; the coarsest input level is the bare projection (no
    smoothing). Levels above 5 are 3x3 stride-2 convs with BatchNorm + activation
    (`bottom_up_Conv2d_14`, ... / `bottom_up_block5`, ...) on the previous one, starting from
    that bare projection.
    Model Garden's own FPN differs (no bias-only projection output, P6/P7 from the backbone), so
    the layers are Model Garden's `Conv2DBNBlock` and Keras convs in TF1's arrangement.
    """

    def __init__(
        self,
        input_specs: dict[str, tf.TensorShape],
        architecture: str = "ssd_mobilenet_v1_fpn",
        min_level: int = 3,
        max_level: int = 7,
        additional_layer_depth: int = 256,
        depth_multiplier: float = 1.0,
        min_depth: int = 16,
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
            "min_level": min_level,
            "max_level": max_level,
            "additional_layer_depth": additional_layer_depth,
            "depth_multiplier": depth_multiplier,
            "min_depth": min_depth,
            "activation": activation,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "use_sync_bn": use_sync_bn,
            "batch_norm_scale": batch_norm_scale,
            "batch_norm_center": batch_norm_center,
            "kernel_regularizer": kernel_regularizer,
        }
        block_kwargs = _block_kwargs(self._config_dict)
        implied = bn_implied(batch_norm_scale, batch_norm_center)
        layout = TF1Layout("decoder")
        inputs = {level: tf_keras.Input(shape=shape[1:]) for level, shape in input_specs.items()}
        scope = f"{SCOPES[architecture]}/fpn"
        # depth_fn of the FPN extractors: max(int(d * depth_multiplier), min_depth).
        depth = max(int(additional_layer_depth * depth_multiplier), min_depth)
        base_max = min(max_level, 5)
        base_levels = list(range(min_level, base_max + 1))
        num_levels = len(base_levels)

        def projection(index: int, level: int) -> tf.Tensor:
            conv = tf_keras.layers.Conv2D(
                depth, 1, padding="same", kernel_regularizer=kernel_regularizer
            )
            layout.add(f"{scope}/projection_{index}", "conv_bias", conv)
            return conv(inputs[str(level)])

        level_scopes = fpn_level_scopes(architecture, min_level, max_level)
        outputs: dict[str, tf.Tensor] = {}
        top_down = projection(num_levels, base_levels[-1])
        outputs[str(base_levels[-1])] = top_down
        for index in reversed(range(num_levels - 1)):
            level = base_levels[index]
            upsampled = spatial_transform_ops.nearest_upsampling(top_down, 2, use_keras_layer=True)
            top_down = tf_keras.layers.Add()([upsampled, projection(index + 1, level)])
            smoothing = Conv2DBNBlock(filters=depth, kernel_size=3, strides=1, **block_kwargs)
            outputs[str(level)] = smoothing(top_down)
            name = f"{scope}/{level_scopes[level]}"
            layout.conv_bn(name, smoothing, "_conv0", "_norm0", implied=implied)
        x = outputs[str(base_max)]
        for level in range(base_max + 1, max_level + 1):
            block = Conv2DBNBlock(filters=depth, kernel_size=3, strides=2, **block_kwargs)
            x = block(x)
            name = f"{scope}/{level_scopes[level]}"
            layout.conv_bn(name, block, "_conv0", "_norm0", implied=implied)
            outputs[str(level)] = x
        outputs = {str(level): outputs[str(level)] for level in range(min_level, max_level + 1)}
        self._finish(inputs, outputs, layout, self._config_dict, **kwargs)


def ppn_level_scopes(num_layers: int) -> list[str]:
    """The TF1 feature-map key of each PPN level, lowest first (`pooling_pyramid_feature_maps`
    with base_feature_map_depth 0: the bare base map, then `MaxPool2d_i_2x2`)."""
    return ["Base_Conv2d_1x1_0"] + [f"MaxPool2d_{i}_2x2" for i in range(num_layers - 1)]


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1PPN(TF1FunctionalModel):
    """TF1 `pooling_pyramid_feature_maps` as SSDMobileNetV1PpnFeatureExtractor calls it
    (base_feature_map_depth 0, so no 1x1 conv and no variables): level 4 is the stride-16 base
    map ('4', Conv2d_11_pointwise) itself, each further level a 2x2 stride-2 'SAME' max pool of
    the previous one: {'4', ...} -> {'4', ..., str(3 + num_layers)}. Other inputs (the
    backbone's '5', Conv2d_13_pointwise, which TF1 builds but the PPN does not read) are unused.
    Keras' MaxPooling2D is tf.nn.max_pool, TF1's op."""

    def __init__(
        self,
        input_specs: dict[str, tf.TensorShape],
        architecture: str = "ssd_mobilenet_v1_ppn",
        num_layers: int = 6,
        **kwargs: Any,
    ) -> None:
        for unused in ("norm_momentum", "use_sync_bn", "kernel_regularizer"):
            kwargs.pop(unused, None)
        self._config_dict = {
            "input_specs": input_specs,
            "architecture": architecture,
            "num_layers": num_layers,
        }
        inputs = {level: tf_keras.Input(shape=shape[1:]) for level, shape in input_specs.items()}
        base = min(int(level) for level in inputs)
        x = inputs[str(base)]
        outputs = {str(base): x}
        for index in range(1, num_layers):
            x = tf_keras.layers.MaxPooling2D(pool_size=2, strides=2, padding="same")(x)
            outputs[str(base + index)] = x
        self._finish(inputs, outputs, TF1Layout("decoder"), self._config_dict, **kwargs)


@dataclasses.dataclass
class TF1PPNConfig(hyperparams.Config):
    """Model Garden config of the `tf1_ppn` decoder."""

    architecture: str = "ssd_mobilenet_v1_ppn"
    num_layers: int = 6


@dataclasses.dataclass
class TF1FPNConfig(hyperparams.Config):
    """Model Garden config of the `tf1_fpn` decoder."""

    architecture: str = "ssd_mobilenet_v1_fpn"
    min_level: int = 3
    max_level: int = 7
    additional_layer_depth: int = 256
    depth_multiplier: float = 1.0
    min_depth: int = 16
    activation: str = "relu6"
    norm_epsilon: float = 0.001
    batch_norm_scale: bool = True
    batch_norm_center: bool = True


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
    # TF1 quantized graphs: fake-quant bits; 0 = float model.
    weight_bits: int = 0
    activation_bits: int = 0


@dataclasses.dataclass
class DecoderConfig(hyperparams.OneOfConfig):
    type: str | None = DECODER_TYPE
    tf1_ssd_extra_layers: SSDExtraLayersConfig = dataclasses.field(
        default_factory=SSDExtraLayersConfig
    )
    tf1_fpn: TF1FPNConfig = dataclasses.field(default_factory=TF1FPNConfig)
    tf1_ppn: TF1PPNConfig = dataclasses.field(default_factory=TF1PPNConfig)


def _block_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """The conv + BatchNorm + activation options every block of a decoder shares."""
    keys = ("activation", "kernel_regularizer", "norm_momentum", "norm_epsilon", "use_sync_bn")
    return {key: config[key] for key in keys}


def _build_decoder(
    decoder_class: type[TF1FunctionalModel],
    decoder_type: str,
    input_specs: dict[str, tf.TensorShape],
    model_config: hyperparams.Config,
    l2_regularizer: tf_keras.regularizers.Regularizer | None,
) -> tf_keras.Model:
    """A decoder from its Model Garden config (whose fields are its constructor's arguments)
    and the model's norm_activation (momentum, sync BN)."""
    decoder = model_config.decoder
    if decoder.type != decoder_type:
        raise ValueError(f"decoder type {decoder.type!r} is not {decoder_type!r}")
    norm = model_config.norm_activation
    return decoder_class(
        input_specs=input_specs,
        norm_momentum=norm.norm_momentum,
        use_sync_bn=norm.use_sync_bn,
        kernel_regularizer=l2_regularizer,
        **decoder.get().as_dict(),
    )


def _register(decoder_type: str, decoder_class: type[TF1FunctionalModel]) -> Callable[..., Any]:
    """Register `decoder_class` with Model Garden's decoder factory as `decoder_type`."""

    def build(
        input_specs: dict[str, tf.TensorShape],
        model_config: hyperparams.Config,
        l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
    ) -> tf_keras.Model:
        return _build_decoder(
            decoder_class, decoder_type, input_specs, model_config, l2_regularizer
        )

    build.__doc__ = (
        f"Model Garden decoder factory entry (model_config.decoder.type {decoder_type!r})."
    )
    return factory.register_decoder_builder(decoder_type)(build)


build_ssd_extra_layers = _register(DECODER_TYPE, SSDExtraLayers)
build_tf1_fpn = _register(FPN_DECODER_TYPE, TF1FPN)
build_tf1_ppn = _register(PPN_DECODER_TYPE, TF1PPN)
