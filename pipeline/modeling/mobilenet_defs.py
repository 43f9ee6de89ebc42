"""Architecture facts of the TF1 SSD MobileNet feature extractors, in one place.

Plain data and integer rules (no TensorFlow), read by both implementations of the architecture:
the Keras model (`pipeline.modeling.backbones` / `decoders`) and the TF1 reference graph
(`pipeline.tf1.graph_builder`). Sources: slim `nets/mobilenet/mobilenet_v2.py` (V2_DEF),
`nets/mobilenet/mobilenet_v3.py` (V3_LARGE / V3_SMALL and their `_DETECTION` variants),
`nets/mobilenet/mobilenet.py` (`_make_divisible`, `depth_multiplier`), `nets/mobilenet_v1.py`,
and the OD API's `ssd_mobilenet_v{1,2,3}_feature_extractor.py` / `feature_map_generators.py`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

# (stride, output depth, expansion factor) of V2_DEF's 17 expanded_conv ops after the first Conv.
V2_EXPANDED_CONVS = (
    (1, 16, 1),
    (2, 24, 6),
    (1, 24, 6),
    (2, 32, 6),
    (1, 32, 6),
    (1, 32, 6),
    (2, 64, 6),
    (1, 64, 6),
    (1, 64, 6),
    (1, 64, 6),
    (1, 96, 6),
    (1, 96, 6),
    (1, 96, 6),
    (2, 160, 6),
    (1, 160, 6),
    (1, 160, 6),
    (1, 320, 6),
)
# SSD taps `layer_15/expansion_output`: layer_1 is Conv, layer_k the (k-2)th expanded conv, so
# this is expanded_conv_13's expansion.
V2_TAP_EXPANDED_CONV = 13
# Depths of V2_DEF's first Conv and final Conv_1 (TF1 endpoint `layer_19`).
V2_FIRST_CONV_DEPTH = 32
V2_LAST_CONV_DEPTH = 1280

# ssd_mobilenet_v1/v2 feature_map_layout['layer_depth']: the first two maps come from the base
# network (-1), the others are the extra layers' depths.
SSD_LAYER_DEPTHS = (-1, -1, 512, 256, 256, 128)


def make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """slim nets/mobilenet `_make_divisible` (Model Garden's `nn_layers.make_divisible`, which
    the Keras blocks use internally, is the same rule)."""
    min_value = divisor if min_value is None else min_value
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def v2_depth(depth: int, depth_multiplier: float, min_depth: int) -> int:
    """mobilenet_v2 under SSD's arg_scope: `mobilenet.depth_multiplier` =
    _make_divisible(depth * multiplier, 8, min_depth)."""
    return make_divisible(depth * depth_multiplier, 8, min_depth)


def floor_depth(depth: float, depth_multiplier: float, min_depth: int) -> int:
    """max(int(depth * multiplier), min_depth): mobilenet_v1's `depth` and the SSD extra layers'
    `feature_map_generators.get_depth_fn` (the same rule)."""
    return max(int(depth * depth_multiplier), min_depth)


class ExpandedConv(NamedTuple):
    """One slim `conv_blocks.expanded_conv` (mobilenet_v2's ops, mobilenet_v3's `mbv3_op` /
    `mbv3_op_se`)."""

    expand_ratio: float  # expansion = _make_divisible(input depth * expand_ratio, 8)
    depth: int  # num_outputs (projection depth) before the depth multiplier
    kernel_size: int  # depthwise kernel
    stride: int
    activation: str  # inner (expansion + depthwise) activation: 'relu6' | 'relu' | 'hard_swish'
    squeeze_excite: bool


@dataclasses.dataclass(frozen=True)
class MobileNetDef:
    """A slim mobilenet_v2 / v3 conv def up to the SSD feature extractor's last endpoint.

    The layers are slim's `spec` list in order: `Conv` (3x3, stride 2), the expanded convs
    (`expanded_conv`, `expanded_conv_1`, ...), then `Conv_1` (1x1), both convs with
    `conv_activation`: endpoint `layer_{i+1}` is spec entry i.
    """

    first_conv_depth: int
    blocks: tuple[ExpandedConv, ...]
    last_conv_depth: int
    # The SSD's first feature map is this expanded conv's expansion output (stride 16).
    tap_block: int
    conv_activation: str = "hard_swish"

    @property
    def last_endpoint(self) -> str:
        """`layer_N` of `Conv_1`, the SSD's second feature map (it prefixes the extra layers)."""
        return f"layer_{len(self.blocks) + 2}"

    def reduce_tail(self, start_id: int, end_id: int, multiplier: float = 0.5) -> MobileNetDef:
        """mobilenet_v3 `_reduce_consecutive_layers`: num_outputs of spec entries
        start_id..end_id (0-based, entry 0 = `Conv`) times `multiplier`, rounded."""

        def reduce(spec_id: int, depth: int) -> int:
            return round(depth * multiplier) if start_id <= spec_id <= end_id else depth

        last_id = len(self.blocks) + 1
        return dataclasses.replace(
            self,
            first_conv_depth=reduce(0, self.first_conv_depth),
            blocks=tuple(
                block._replace(depth=reduce(index + 1, block.depth))
                for index, block in enumerate(self.blocks)
            ),
            last_conv_depth=reduce(last_id, self.last_conv_depth),
        )


_RE, _HS = "relu", "hard_swish"
# mobilenet_v3.V3_LARGE up to its `Conv_1` (960); the pooling and 1280-wide logits conv after it
# are not part of the SSD base.
V3_LARGE = MobileNetDef(
    first_conv_depth=16,
    blocks=(
        ExpandedConv(1, 16, 3, 1, _RE, False),
        ExpandedConv(4, 24, 3, 2, _RE, False),
        ExpandedConv(3, 24, 3, 1, _RE, False),
        ExpandedConv(3, 40, 5, 2, _RE, True),
        ExpandedConv(3, 40, 5, 1, _RE, True),
        ExpandedConv(3, 40, 5, 1, _RE, True),
        ExpandedConv(6, 80, 3, 2, _HS, False),
        ExpandedConv(2.5, 80, 3, 1, _HS, False),
        ExpandedConv(184 / 80.0, 80, 3, 1, _HS, False),
        ExpandedConv(184 / 80.0, 80, 3, 1, _HS, False),
        ExpandedConv(6, 112, 3, 1, _HS, True),
        ExpandedConv(6, 112, 3, 1, _HS, True),
        ExpandedConv(6, 160, 5, 2, _HS, True),
        ExpandedConv(6, 160, 5, 1, _HS, True),
        ExpandedConv(6, 160, 5, 1, _HS, True),
    ),
    last_conv_depth=960,
    tap_block=12,  # `layer_14/expansion_output`
)
V3_SMALL = MobileNetDef(
    first_conv_depth=16,
    blocks=(
        ExpandedConv(1, 16, 3, 2, _RE, True),
        ExpandedConv(72.0 / 16, 24, 3, 2, _RE, False),
        ExpandedConv(88.0 / 24, 24, 3, 1, _RE, False),
        ExpandedConv(4, 40, 5, 2, _HS, True),
        ExpandedConv(6, 40, 5, 1, _HS, True),
        ExpandedConv(6, 40, 5, 1, _HS, True),
        ExpandedConv(3, 48, 5, 1, _HS, True),
        ExpandedConv(3, 48, 5, 1, _HS, True),
        ExpandedConv(6, 96, 5, 2, _HS, True),
        ExpandedConv(6, 96, 5, 1, _HS, True),
        ExpandedConv(6, 96, 5, 1, _HS, True),
    ),
    last_conv_depth=576,
    tap_block=8,  # `layer_10/expansion_output`
)
# V2_DEF as the Keras backbone reads it: 3x3 depthwise and relu6 throughout.
V2 = MobileNetDef(
    first_conv_depth=V2_FIRST_CONV_DEPTH,
    blocks=tuple(
        ExpandedConv(expand_ratio, depth, 3, stride, "relu6", False)
        for stride, depth, expand_ratio in V2_EXPANDED_CONVS
    ),
    last_conv_depth=V2_LAST_CONV_DEPTH,
    tap_block=V2_TAP_EXPANDED_CONV,
    conv_activation="relu6",
)
# What the SSD feature extractors build (V3_LARGE_DETECTION / V3_SMALL_DETECTION): the last
# stride-32 blocks and Conv_1 at half depth.
V3_DETECTION = {
    "ssd_mobilenet_v3_large": V3_LARGE.reduce_tail(13, 16),
    "ssd_mobilenet_v3_small": V3_SMALL.reduce_tail(9, 12),
}
# slim mobilenet_v3's squeeze-excite: squeeze to _make_divisible(channels / 4, 8) with relu,
# excite with hard-sigmoid relu6(x + 3) * 0.16667 (Model Garden's `hard_sigmoid`, same constant).
V3_SE_SQUEEZE_FACTOR = 4
