"""MobileNet v1/v2/v3 backbones laid out exactly as the TF1 SSD feature extractors.

Built from Model Garden blocks (`Conv2DBNBlock`, `nn_blocks.InvertedBottleneckBlock`,
`nn_blocks.DepthwiseSeparableConvBlock`) and registered with Model Garden's backbone factory as
`tf1_ssd_mobilenet`. Model Garden's own `MobileNet` cannot serve: SSD MobileNet v2 reads the
*expansion output* of `expanded_conv_13` (TF1 endpoint `layer_15/expansion_output`, 576 channels
at stride 16), which no Model Garden endpoint exposes, and TF1 scales depths with `min_depth`
(16 in the zoo configs) where Model Garden uses 8. Here that block is split into its 1x1 expansion
(a `Conv2DBNBlock`, tapped) and an `InvertedBottleneckBlock` with expand_ratio 1 (depthwise +
projection); the block has stride 2, so no residual connection is lost by the split.

MobileNet v3 (`ssd_mobilenet_v3_large` / `_small`) is built the same way from slim's
V3_LARGE_DETECTION / V3_SMALL_DETECTION conv defs (`mobilenet_defs.V3_DETECTION`: the last
stride-32 blocks at half depth), tapping `layer_14` / `layer_10` expansion outputs. Model
Garden's block options are exact for it: hard-swish is slim's x * relu6(x + 3) / 6, and the
squeeze-excite (`se_ratio` 0.25 of the expanded depth, `expand_se_in_filters`, relu inner,
`hard_sigmoid` gate relu6(x + 3) * 0.16667, conv biases) is slim's `squeeze_excite` with
mobilenet_v3's parameters.

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
from official.vision.modeling.layers import nn_layers

from pipeline.modeling import inception, quantization, resnet_v1
from pipeline.modeling import mobilenet_defs as defs
from pipeline.modeling.functional import TF1FunctionalModel
from pipeline.modeling.spec import QUANTIZED_ARCHITECTURES, RESNET_FPN_DEPTHS
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
# The last base layer the detections read, where TF1 builds more: the PPN reads
# Conv2d_11_pointwise, so a frozen graph prunes Conv2d_12/13 (their checkpoint variables exist).
_V1_LAST_READ = {"ssd_mobilenet_v1_ppn": 11}
# SSDMobileNetV1FpnFeatureExtractor's FPN inputs: Conv2d_{3,5,11,13}_pointwise for levels 2..5.
_V1_FPN_TAPS = {3: "2", 5: "3", 11: "4", 13: "5"}

SCOPES = {
    "ssd_mobilenet_v2": "FeatureExtractor/MobilenetV2",
    "ssd_mobilenet_v1": "FeatureExtractor/MobilenetV1",
    "ssd_mobilenet_v1_fpn": "FeatureExtractor/MobilenetV1",
    # The PPN taps Conv2d_11_pointwise ('4') but TF1 builds the base to Conv2d_13_pointwise, whose
    # variables are in its checkpoints: the backbone keeps the SSD taps ('5' goes unused).
    "ssd_mobilenet_v1_ppn": "FeatureExtractor/MobilenetV1",
    **{architecture: "FeatureExtractor/MobilenetV3" for architecture in defs.V3_DETECTION},
    inception.ARCHITECTURE: inception.SCOPE,
    **{name: resnet_v1.ssd_scope(depth) for name, depth in RESNET_FPN_DEPTHS.items()},
}
# The TF1 endpoint the SSD extra layers are stacked on (it prefixes their scope names).
LAST_ENDPOINT = {
    "ssd_mobilenet_v2": "layer_19",
    "ssd_mobilenet_v1": "Conv2d_13_pointwise",
    "ssd_mobilenet_v1_fpn": "Conv2d_13_pointwise",
    **{architecture: v3.last_endpoint for architecture, v3 in defs.V3_DETECTION.items()},
    inception.ARCHITECTURE: inception.LAST_ENDPOINT,
}
# Model Garden backbone type of each architecture (the rest are `tf1_ssd_mobilenet`).
BACKBONE_TYPES = {
    inception.ARCHITECTURE: inception.BACKBONE_TYPE,
    **{name: resnet_v1.BACKBONE_TYPE for name in RESNET_FPN_DEPTHS},
}


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1MobileNetBackbone(TF1FunctionalModel):
    """The MobileNet part of a TF1 `ssd_mobilenet_v1` / `_v2` / `_v3_large` / `_v3_small`
    feature extractor."""

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
        weight_bits: int = 0,
        activation_bits: int = 0,
        **kwargs: Any,
    ) -> None:
        if weight_bits > 0 and architecture not in QUANTIZED_ARCHITECTURES:
            raise ValueError(f"no quantized {architecture}; use one of {QUANTIZED_ARCHITECTURES}")
        if architecture not in SCOPES or architecture in BACKBONE_TYPES:
            mobilenets = [name for name in SCOPES if name not in BACKBONE_TYPES]
            raise ValueError(f"unsupported architecture {architecture!r}; use one of {mobilenets}")
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
            "weight_bits": weight_bits,
            "activation_bits": activation_bits,
        }
        self._block_kwargs = {
            "kernel_regularizer": kernel_regularizer,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "use_sync_bn": use_sync_bn,
        }
        layout = TF1Layout(
            "backbone", bn_implied(batch_norm_scale, batch_norm_center), weight_bits > 0
        )
        self._blocks = quantization.conv_blocks(weight_bits, activation_bits)
        inputs = tf_keras.Input(shape=input_specs.shape[1:])
        if architecture == "ssd_mobilenet_v2":
            endpoints = self._mobilenet_v2_v3(inputs, layout, defs.V2)
        elif architecture in defs.V3_DETECTION:
            endpoints = self._mobilenet_v2_v3(inputs, layout, defs.V3_DETECTION[architecture])
        else:
            endpoints = self._mobilenet_v1(inputs, layout)
        self._finish(inputs, endpoints, layout, self._config_dict, **kwargs)

    def _expanded_conv(
        self,
        x: tf.Tensor,
        layout: TF1Layout,
        scope: str,
        in_depth: int,
        out_depth: int,
        expand_ratio: float,
        stride: int,
        kernel_size: int = 3,
        activation: str = "relu6",
        squeeze_excite: bool = False,
        tap: bool = False,
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        """slim `conv_blocks.expanded_conv` as a Model Garden `InvertedBottleneckBlock`; with
        `tap`, split after the expansion and also return the expansion output (the SSD's
        `layer_N/expansion_output`). Returns (output, expansion output or None)."""
        ib_kwargs: dict[str, Any] = {
            "kernel_size": kernel_size,
            "activation": activation,
            "divisible_by": 8,
            "use_residual": True,
            "bias_regularizer": None,
            **self._block_kwargs,
        }
        if squeeze_excite:
            # slim mobilenet_v3 `squeeze_excite` on the depthwise output: squeeze to
            # _make_divisible(expanded / 4, 8) with relu, gate with relu6(x + 3) * 0.16667.
            ib_kwargs.update(
                se_ratio=1.0 / defs.V3_SE_SQUEEZE_FACTOR,
                expand_se_in_filters=True,
                se_inner_activation="relu",
                se_gating_activation="hard_sigmoid",
            )
        tapped = None
        if tap:
            expanded = nn_layers.make_divisible(in_depth * expand_ratio, 8)
            expand = self._blocks.conv_bn(
                filters=expanded,
                kernel_size=1,
                strides=1,
                activation=activation,
                **self._block_kwargs,
            )
            x = tapped = expand(x)
            layout.conv_bn(f"{scope}/expand", expand, "_conv0", "_norm0")
            layout.fake_quant(f"{scope}/expand", expand, "0")
            if stride == 1 and expanded == out_depth:
                raise ValueError(f"{scope}: splitting a residual block would drop its shortcut")
            block = self._blocks.inverted_bottleneck(
                in_filters=expanded,
                out_filters=out_depth,
                expand_ratio=1,
                strides=stride,
                **ib_kwargs,
            )
        else:
            block = self._blocks.inverted_bottleneck(
                in_filters=in_depth,
                out_filters=out_depth,
                expand_ratio=expand_ratio,
                strides=stride,
                **ib_kwargs,
            )
        x = block(x)
        if expand_ratio > 1 and not tap:
            layout.conv_bn(f"{scope}/expand", block, "_conv0", "_norm0")
            layout.fake_quant(f"{scope}/expand", block, "0")
        layout.conv_bn(f"{scope}/depthwise", block, "_conv1", "_norm1", depthwise=True)
        layout.fake_quant(f"{scope}/depthwise", block, "1")
        if squeeze_excite:
            se = block._squeeze_excitation
            layout.add(f"{scope}/squeeze_excite/Conv", "conv_bias", se, "_se_reduce")
            layout.add(f"{scope}/squeeze_excite/Conv_1", "conv_bias", se, "_se_expand")
        layout.conv_bn(f"{scope}/project", block, "_conv2", "_norm2")
        layout.fake_quant(f"{scope}/project", block, "2")
        if layout.quantized and block.has_residual:
            name = f"{scope}/post_activation_bypass_quant"
            layout.add(name, "moving_average_quant", block, "_bypass_quant")
        return x, tapped

    def _mobilenet_v2_v3(
        self, inputs: tf.Tensor, layout: TF1Layout, conv_defs: defs.MobileNetDef
    ) -> dict[str, tf.Tensor]:
        """slim `mobilenet.mobilenet_base` over a v2 or v3 conv def, to the SSD's last endpoint.
        Its conv defs name every activation explicitly, so an overriding conv_hyperparams
        activation does not reach the base (unlike mobilenet_v1)."""
        cfg = self._config_dict
        scope = SCOPES[cfg["architecture"]]

        def depth(d: int) -> int:
            return defs.v2_depth(d, cfg["depth_multiplier"], cfg["min_depth"])

        block = self._blocks.conv_bn(
            filters=depth(conv_defs.first_conv_depth),
            kernel_size=3,
            strides=2,
            activation=conv_defs.conv_activation,
            **self._block_kwargs,
        )
        x = block(inputs)
        layout.conv_bn(f"{scope}/Conv", block, "_conv0", "_norm0")
        layout.fake_quant(f"{scope}/Conv", block, "0")
        in_depth = depth(conv_defs.first_conv_depth)
        endpoints = {}
        for index, spec in enumerate(conv_defs.blocks):
            name = "expanded_conv" if index == 0 else f"expanded_conv_{index}"
            x, tapped = self._expanded_conv(
                x,
                layout,
                f"{scope}/{name}",
                in_depth,
                depth(spec.depth),
                spec.expand_ratio,
                spec.stride,
                kernel_size=spec.kernel_size,
                activation=spec.activation,
                squeeze_excite=spec.squeeze_excite,
                tap=index == conv_defs.tap_block,
            )
            if tapped is not None:
                endpoints["4"] = tapped
            in_depth = depth(spec.depth)
        block = self._blocks.conv_bn(
            filters=depth(conv_defs.last_conv_depth),
            kernel_size=1,
            strides=1,
            activation=conv_defs.conv_activation,
            **self._block_kwargs,
        )
        endpoints["5"] = block(x)
        layout.conv_bn(f"{scope}/Conv_1", block, "_conv0", "_norm0")
        layout.fake_quant(f"{scope}/Conv_1", block, "0")
        return endpoints

    def _mobilenet_v1(self, inputs: tf.Tensor, layout: TF1Layout) -> dict[str, tf.Tensor]:
        cfg = self._config_dict
        scope = SCOPES["ssd_mobilenet_v1"]
        # TF1 names the quantization ops by op scope, which repeats `MobilenetV1`.
        quant_scope = f"{scope}/MobilenetV1"
        taps = _V1_FPN_TAPS if cfg["architecture"] == "ssd_mobilenet_v1_fpn" else _V1_TAPS
        last_read = _V1_LAST_READ.get(cfg["architecture"], len(_V1_BLOCKS))
        unread_from: int | None = None

        def depth(d: int) -> int:
            return defs.floor_depth(d, cfg["depth_multiplier"], cfg["min_depth"])

        block = self._blocks.conv_bn(
            filters=depth(32),
            kernel_size=3,
            strides=2,
            activation=cfg["activation"],
            **self._block_kwargs,
        )
        x = block(inputs)
        layout.conv_bn(f"{scope}/Conv2d_0", block, "_conv0", "_norm0")
        layout.fake_quant(f"{quant_scope}/Conv2d_0", block, "0")
        endpoints = {}
        for index, (stride, out) in enumerate(_V1_BLOCKS, start=1):
            if index == last_read + 1:
                unread_from = len(layout.records)
            block = self._blocks.separable(
                filters=depth(out), kernel_size=3, strides=stride, activation=cfg["activation"],
                **self._block_kwargs,
            )  # fmt: skip
            x = block(x)
            layout.conv_bn(
                f"{scope}/Conv2d_{index}_depthwise", block, "_dwconv0", "_norm0", depthwise=True
            )
            layout.conv_bn(f"{scope}/Conv2d_{index}_pointwise", block, "_conv1", "_norm1")
            layout.fake_quant(f"{quant_scope}/Conv2d_{index}_depthwise", block, "0")
            layout.fake_quant(f"{quant_scope}/Conv2d_{index}_pointwise", block, "1")
            if index in taps:
                endpoints[taps[index]] = x
        if unread_from is not None:
            layout.mark_unread(unread_from)
        return endpoints


@dataclasses.dataclass
class TF1SSDMobileNetConfig(hyperparams.Config):
    """Model Garden config of the `tf1_ssd_mobilenet` backbone."""

    architecture: str = "ssd_mobilenet_v2"
    depth_multiplier: float = 1.0
    min_depth: int = 16
    # TF1 keeps MobileNet's own relu6 / scaled BatchNorm unless the config sets
    # override_base_feature_extractor_hyperparams (v2 keeps relu6 even then; v3 names its own
    # relu / hard-swish per layer).
    activation: str = "relu6"
    batch_norm_scale: bool = True
    batch_norm_center: bool = True
    # TF1 quantized graphs (graph_rewriter.quantization): fake-quant bits; 0 = float model.
    weight_bits: int = 0
    activation_bits: int = 0


@dataclasses.dataclass
class BackboneConfig(hyperparams.OneOfConfig):
    """A Model Garden backbone one-of holding the TF1 SSD feature extractor choice."""

    type: str | None = BACKBONE_TYPE
    tf1_ssd_mobilenet: TF1SSDMobileNetConfig = dataclasses.field(
        default_factory=TF1SSDMobileNetConfig
    )
    tf1_ssd_inception_v2: inception.TF1SSDInceptionV2Config = dataclasses.field(
        default_factory=inception.TF1SSDInceptionV2Config
    )
    tf1_ssd_resnet_v1: resnet_v1.TF1SSDResNetV1Config = dataclasses.field(
        default_factory=resnet_v1.TF1SSDResNetV1Config
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
        weight_bits=cfg.weight_bits,
        activation_bits=cfg.activation_bits,
    )
