"""TF1 SSD anchors (MultipleGridAnchorGenerator), reproduced in TF1 order.

Model Garden's `Anchor` places `num_scales * len(aspect_ratios)` anchors of one size family per
level; TF1's `ssd_anchor_generator` uses 3 anchors on the first map (0.1 scale box + two aspect
ratios), an extra interpolated-scale anchor on the others, and grid strides derived from each
feature map's size. Hand-written because no library reproduces it: this mirrors
`object_detection/anchor_generators/multiple_grid_anchor_generator.py` (create_ssd_anchors +
_generate) and `grid_anchor_generator.tile_anchors`, step by step in float32 with the same
operation order, so the result equals the anchors embedded in the TF1 graphs to the last bit.

Order: feature map (finest first), then row, then column, then anchor — the order in which the
TF1 box predictors' outputs are flattened, and in which Model Garden's detection generator
reshapes a level's [B, H, W, A*4] outputs.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.modeling.spec import AnchorSpec, MultiscaleAnchorSpec, SSDSpec

# The MobileNet SSD feature maps: output stride 16 and 32 from the base network, then one stride-2
# extra layer per further map.
FIRST_FEATURE_STRIDE = 16
MIN_LEVEL = 4  # log2(16): Model Garden names feature maps by level


def levels(spec: SSDSpec) -> list[int]:
    multiscale = spec.anchors.multiscale
    if multiscale is not None:
        return list(range(multiscale.min_level, multiscale.max_level + 1))
    return list(range(MIN_LEVEL, MIN_LEVEL + spec.anchors.num_layers))


def feature_map_shapes(spec: SSDSpec) -> list[tuple[int, int]]:
    """(H, W) of each SSD feature map for `spec.image_size`."""
    if spec.anchors.multiscale is not None:
        # FPN levels: level l has stride 2**l, each step a 'SAME' stride-2 conv (ceil(n/2)).
        shapes = []
        height, width = spec.image_size
        for level in range(1, levels(spec)[-1] + 1):
            height, width = -(-height // 2), -(-width // 2)
            if level >= levels(spec)[0]:
                shapes.append((height, width))
        return shapes
    return grid_shapes(spec.image_size, spec.anchors.num_layers)


def grid_shapes(image_size: tuple[int, int], num_layers: int) -> list[tuple[int, int]]:
    """(H, W) of each of `num_layers` feature maps; 'SAME' stride 2 gives ceil(n/2)."""
    height, width = image_size
    shapes = []
    for _ in range(int(math.log2(FIRST_FEATURE_STRIDE))):
        height, width = -(-height // 2), -(-width // 2)
    for _ in range(num_layers):
        shapes.append((height, width))
        height, width = -(-height // 2), -(-width // 2)
    return shapes


def box_specs(anchors: AnchorSpec) -> list[list[tuple[float, float]]]:
    """Per layer, the (scale, aspect ratio) of each anchor, exactly as `create_ssd_anchors`."""
    num_layers = anchors.num_layers
    if anchors.scales:
        scales = [float(s) for s in anchors.scales] + [1.0]
    else:
        scales = [
            anchors.min_scale + (anchors.max_scale - anchors.min_scale) * i / (num_layers - 1)
            for i in range(num_layers)
        ] + [1.0]
    specs = []
    for layer, scale, scale_next in zip(range(num_layers), scales[:-1], scales[1:], strict=False):
        if layer == 0 and anchors.reduce_boxes_in_lowest_layer:
            layer_specs = [(0.1, 1.0), (scale, 2.0), (scale, 0.5)]
        else:
            layer_specs = [(scale, aspect) for aspect in anchors.aspect_ratios]
            if anchors.interpolated_scale_aspect_ratio > 0.0:
                layer_specs.append(
                    (float(np.sqrt(scale * scale_next)), anchors.interpolated_scale_aspect_ratio)
                )
        specs.append(layer_specs)
    return specs


def multiscale_box_specs(multiscale: MultiscaleAnchorSpec) -> list[tuple[float, float]]:
    """(scale, aspect ratio) of each anchor at a location, in TF1 order: GridAnchorGenerator's
    `ops.meshgrid(scales, aspect_ratios)` flattened, aspect ratio major, scale fastest."""
    scales = [2 ** (float(s) / multiscale.scales_per_octave)
              for s in range(multiscale.scales_per_octave)]  # fmt: skip
    return [(scale, aspect) for aspect in multiscale.aspect_ratios for scale in scales]


def anchors_per_location(spec: SSDSpec) -> list[int]:
    if spec.anchors.multiscale is not None:
        return [len(multiscale_box_specs(spec.anchors.multiscale))] * len(levels(spec))
    return [len(layer) for layer in box_specs(spec.anchors)]


def _tile_anchors(
    grid: tuple[int, int],
    layer_specs: list[tuple[float, float]],
    base_anchor_size: tuple[np.float32, np.float32],
    stride: tuple[np.float32, np.float32],
    offset: tuple[np.float32, np.float32],
) -> np.ndarray:
    f32 = np.float32
    scales = np.array([s for s, _ in layer_specs], dtype=f32)
    ratio_sqrts = np.sqrt(np.array([a for _, a in layer_specs], dtype=f32))
    heights = scales / ratio_sqrts * base_anchor_size[0]
    widths = scales * ratio_sqrts * base_anchor_size[1]
    y_centers = np.arange(grid[0], dtype=f32) * stride[0] + offset[0]
    x_centers = np.arange(grid[1], dtype=f32) * stride[1] + offset[1]
    # [H, W, A] grids; anchor index varies fastest, then column, then row.
    shape = (grid[0], grid[1], len(layer_specs))
    y_grid = np.broadcast_to(y_centers[:, None, None], shape)
    x_grid = np.broadcast_to(x_centers[None, :, None], shape)
    h_grid = np.broadcast_to(heights[None, None, :], shape)
    w_grid = np.broadcast_to(widths[None, None, :], shape)
    centers = np.stack([y_grid, x_grid], axis=3).reshape(-1, 2)
    sizes = np.stack([h_grid, w_grid], axis=3).reshape(-1, 2)
    half = f32(0.5) * sizes
    return np.concatenate([centers - half, centers + half], axis=1).astype(f32)


def _multiscale_anchor_boxes_per_layer(spec: SSDSpec) -> list[np.ndarray]:
    """`MultiscaleGridAnchorGenerator._generate`: per level a GridAnchorGenerator with base size
    2**level * anchor_scale, stride 2**level, offset stride / 2 (when the image size is a multiple
    of the stride, else 0), then `to_normalized_coordinates` (a multiply by 1 / size)."""
    f32 = np.float32
    multiscale = spec.anchors.multiscale
    assert multiscale is not None
    im_height, im_width = spec.image_size
    layer_specs = multiscale_box_specs(multiscale)
    result = []
    for level, grid in zip(levels(spec), feature_map_shapes(spec), strict=True):
        stride = 2.0**level
        base = f32(stride * multiscale.anchor_scale)
        offset = (
            f32(stride / 2.0) if im_height % stride == 0 else f32(0.0),
            f32(stride / 2.0) if im_width % stride == 0 else f32(0.0),
        )
        boxes = _tile_anchors(grid, layer_specs, (base, base), (f32(stride), f32(stride)), offset)
        scale = np.array(
            [f32(1) / f32(im_height), f32(1) / f32(im_width)] * 2, dtype=f32
        )  # ymin, xmin, ymax, xmax
        result.append((boxes * scale).astype(f32))
    return result


def tf1_anchor_boxes_per_layer(spec: SSDSpec) -> list[np.ndarray]:
    """One [H*W*A, 4] array per feature map, normalized (ymin, xmin, ymax, xmax)."""
    f32 = np.float32
    anchors = spec.anchors
    if anchors.multiscale is not None:
        return _multiscale_anchor_boxes_per_layer(spec)
    shapes = feature_map_shapes(spec)
    im_height, im_width = f32(spec.image_size[0]), f32(spec.image_size[1])
    if anchors.anchor_strides:
        strides = [(f32(h) / im_height, f32(w) / im_width) for h, w in anchors.anchor_strides]
    else:
        strides = [(f32(1.0) / f32(h), f32(1.0) / f32(w)) for h, w in shapes]
    if anchors.anchor_offsets:
        offsets = [(f32(h) / im_height, f32(w) / im_width) for h, w in anchors.anchor_offsets]
    else:
        offsets = [(f32(0.5) * h, f32(0.5) * w) for h, w in strides]
    min_im = min(im_height, im_width)
    base = (
        (min_im / im_height) * f32(anchors.base_anchor_size[0]),
        (min_im / im_width) * f32(anchors.base_anchor_size[1]),
    )
    return [
        _tile_anchors(grid, layer_specs, base, stride, offset)
        for grid, layer_specs, stride, offset in zip(
            shapes, box_specs(anchors), strides, offsets, strict=True
        )
    ]


def tf1_anchor_boxes(spec: SSDSpec) -> np.ndarray:
    """All anchors [N, 4] (normalized ymin, xmin, ymax, xmax) in TF1 order."""
    return np.concatenate(tf1_anchor_boxes_per_layer(spec), axis=0)


def multilevel_anchor_boxes(spec: SSDSpec) -> dict[str, np.ndarray]:
    """Model Garden layout: {level: [H, W, A*4]} — the TF1 anchors, same order."""
    result = {}
    for level, (height, width), boxes in zip(
        levels(spec), feature_map_shapes(spec), tf1_anchor_boxes_per_layer(spec), strict=True
    ):
        result[str(level)] = boxes.reshape(height, width, -1)
    return result
