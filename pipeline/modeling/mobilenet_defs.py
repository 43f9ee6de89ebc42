"""Architecture facts of the TF1 SSD MobileNet feature extractors, in one place.

Plain data and integer rules (no TensorFlow), read by both implementations of the architecture:
the Keras model (`pipeline.modeling.backbones` / `decoders`) and the TF1 reference graph
(`pipeline.tf1.graph_builder`). Sources: slim `nets/mobilenet/mobilenet_v2.py` (V2_DEF),
`nets/mobilenet/mobilenet.py` (`_make_divisible`, `depth_multiplier`), `nets/mobilenet_v1.py`,
and the OD API's `ssd_mobilenet_v{1,2}_feature_extractor.py` / `feature_map_generators.py`.
"""

from __future__ import annotations

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
