"""Build a TF1 Object Detection API SSD MobileNet v2 inference graph and write a zoo directory.

This is how the project makes a genuine TF1-format zoo model without the zoo's download server
(issue 6): a `tf.compat.v1` graph with the OD API's variable names and output tensor names,
saved the way the OD API exporter saves one (`model.ckpt.{data,index,meta}`, `checkpoint`,
`pipeline.config`, `frozen_inference_graph.pb`).

Hand-written because the OD API itself (TF1, tf.contrib.slim) does not run on TensorFlow 2; every
step mirrors the TF1 source it names, in the same float32 operation order, so that at the released
configuration (depth multiplier 1, 300x300, 90 classes, depthwise extra layers, 3x3 predictors)
the variables equal `ssd_mobilenet_v2_coco_2018_03_29/model.ckpt.index` name for name and shape
for shape, and with the same weights the raw outputs equal the released graph's
(tests/test_tf1_graph_builder.py):
- preprocessing: `fixed_shape_resizer` (ResizeBilinear, align_corners=False, no half-pixel
  centers) then `(2/255) * x - 1` (ssd_mobilenet_v2_feature_extractor.preprocess);
- MobileNet v2 base: slim `nets/mobilenet/mobilenet_v2.V2_DEF` up to `layer_19` (Conv_1), with
  `conv_blocks.expanded_conv` and `mobilenet.depth_multiplier` (`_make_divisible`, min_depth);
  BatchNorm in inference form (`tf.nn.batch_normalization`, the real graph's non-fused ops);
- extra layers: `feature_map_generators.multi_resolution_feature_maps` with layout
  from_layer ['layer_15/expansion_output', 'layer_19', '', '', '', ''],
  layer_depth [-1, -1, 512, 256, 256, 128], insert_1x1_conv;
- heads: `ConvolutionalBoxPredictor` (conv + bias per feature map, no BN/activation), reshaped to
  [B, H*W*A, 1, 4] / [B, H*W*A, C+1] and concatenated into `concat` / `concat_1`;
- anchors: `multiple_grid_anchor_generator.create_ssd_anchors` + `grid_anchor_generator.
  tile_anchors` (normalized, unclipped) -> `Concatenate/concat`;
- post-processing: `SSDMetaArch.postprocess` (faster_rcnn box coder decode, logit scale + sigmoid,
  background dropped) and `post_processing.batch_multiclass_non_max_suppression` (per class:
  score > threshold, clip to the [0, 1] window dropping empty boxes, NMS; then sort, keep
  max_total, pad), classes + 1 as the exporter's `add`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.modeling import mobilenet_defs as defs
from pipeline.modeling.anchors import box_specs, grid_shapes
from pipeline.modeling.spec import AnchorSpec


def _f32(value: float) -> float:
    """The value a TF1 proto float field holds (pipeline.config floats are float32)."""
    return float(np.float32(value))


@dataclasses.dataclass(frozen=True)
class SSDGraphConfig:
    """What a TF1 ssd_mobilenet_v2 pipeline.config decides about the inference graph."""

    num_classes: int = 90
    image_size: tuple[int, int] = (300, 300)
    depth_multiplier: float = 1.0
    min_depth: int = 16
    use_depthwise: bool = True
    box_predictor_kernel_size: int = 3
    num_layers: int = 6
    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 0.3333)
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = True
    box_coder_scales: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    score_threshold: float = 0.3
    iou_threshold: float = 0.6
    max_detections_per_class: int = 100
    max_total_detections: int = 100
    logit_scale: float = 1.0
    batch_norm_epsilon: float = 0.001
    batch_norm_decay: float = 0.9997
    l2_weight: float = 4e-5
    class_prediction_bias_init: float = 0.0

    def __post_init__(self) -> None:
        if not 2 <= self.num_layers <= 6:
            raise PipelineError(f"graph config: num_layers {self.num_layers}; use 2..6")
        if self.num_classes <= 0 or self.depth_multiplier <= 0:
            raise PipelineError("graph config: num_classes and depth_multiplier must be > 0")
        # Proto float fields hold float32 values; TF1 computes from those.
        for name in (
            "depth_multiplier", "min_scale", "max_scale", "interpolated_scale_aspect_ratio",
            "score_threshold", "iou_threshold", "logit_scale", "batch_norm_epsilon",
        ):  # fmt: skip
            object.__setattr__(self, name, _f32(getattr(self, name)))
        object.__setattr__(self, "aspect_ratios", tuple(_f32(a) for a in self.aspect_ratios))
        object.__setattr__(self, "box_coder_scales", tuple(_f32(s) for s in self.box_coder_scales))
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))

    @property
    def num_class_slots(self) -> int:
        return self.num_classes + 1

    def anchor_spec(self) -> AnchorSpec:
        """These anchor fields as the model spec's `AnchorSpec`."""
        return AnchorSpec(
            num_layers=self.num_layers,
            min_scale=self.min_scale,
            max_scale=self.max_scale,
            aspect_ratios=self.aspect_ratios,
            interpolated_scale_aspect_ratio=self.interpolated_scale_aspect_ratio,
            reduce_boxes_in_lowest_layer=self.reduce_boxes_in_lowest_layer,
        )

    def box_specs(self) -> list[list[tuple[float, float]]]:
        """create_ssd_anchors: per layer, (scale, aspect ratio) of each anchor."""
        return box_specs(self.anchor_spec())


def v2_base_depth(depth: int, config: SSDGraphConfig) -> int:
    """mobilenet.depth_multiplier under SSD's arg_scope(min_depth=config.min_depth)."""
    return defs.v2_depth(depth, config.depth_multiplier, config.min_depth)


def extra_layer_depth(depth: float, config: SSDGraphConfig) -> int:
    """feature_map_generators.get_depth_fn."""
    return defs.floor_depth(depth, config.depth_multiplier, config.min_depth)


class _Builder:
    """Creates the graph's ops; one instance per graph."""

    def __init__(self, config: SSDGraphConfig) -> None:
        import tensorflow as tf

        self.tf = tf
        self.v1 = tf.compat.v1
        self.config = config

    # -- layers ------------------------------------------------------------------------------

    def variable(self, name: str, shape: list[int], initializer: Any, trainable: bool = True):
        tf = self.tf
        collections = [tf.compat.v1.GraphKeys.GLOBAL_VARIABLES]
        if not trainable:
            collections.append(tf.compat.v1.GraphKeys.MOVING_AVERAGE_VARIABLES)
        return self.v1.get_variable(
            name,
            shape=shape,
            dtype=tf.float32,
            initializer=initializer,
            trainable=trainable,
            collections=collections,
            use_resource=False,  # TF1 graphs hold VariableV2 ops
        )

    def batch_norm(self, net: Any, epsilon: float) -> Any:
        """slim.batch_norm(is_training=False, center, scale, fused=False)."""
        v1 = self.v1
        depth = net.shape[-1]
        with v1.variable_scope("BatchNorm"):
            beta = self.variable("beta", [depth], v1.zeros_initializer())
            gamma = self.variable("gamma", [depth], v1.ones_initializer())
            mean = self.variable("moving_mean", [depth], v1.zeros_initializer(), trainable=False)
            variance = self.variable(
                "moving_variance", [depth], v1.ones_initializer(), trainable=False
            )
            return self.tf.nn.batch_normalization(
                net, mean, variance, beta, gamma, epsilon, name="batchnorm"
            )

    def conv(
        self,
        net: Any,
        scope: str,
        depth: int,
        kernel: int,
        stride: int = 1,
        activation: bool = True,
        epsilon: float = 0.001,
    ) -> Any:
        """slim.conv2d with normalizer_fn=batch_norm ('SAME', no bias)."""
        tf, v1 = self.tf, self.v1
        with v1.variable_scope(scope):
            weights = self.variable(
                "weights",
                [kernel, kernel, int(net.shape[-1]), depth],
                v1.truncated_normal_initializer(stddev=0.03),
            )
            net = tf.nn.conv2d(net, weights, [1, stride, stride, 1], "SAME", name="Conv2D")
            net = self.batch_norm(net, epsilon)
            return tf.nn.relu6(net, name="Relu6") if activation else tf.identity(net)

    def depthwise(
        self, net: Any, scope: str, kernel: int, stride: int, epsilon: float = 0.001
    ) -> Any:
        """slim.separable_conv2d(num_outputs=None, depth_multiplier=1) + BN + relu6."""
        tf, v1 = self.tf, self.v1
        with v1.variable_scope(scope):
            weights = self.variable(
                "depthwise_weights",
                [kernel, kernel, int(net.shape[-1]), 1],
                v1.truncated_normal_initializer(stddev=0.03),
            )
            net = tf.nn.depthwise_conv2d(
                net, weights, [1, stride, stride, 1], "SAME", name="depthwise"
            )
            net = self.batch_norm(net, epsilon)
            return tf.nn.relu6(net, name="Relu6")

    def predictor(self, net: Any, scope: str, depth: int, bias_init: float) -> Any:
        """slim.conv2d(activation_fn=None, normalizer_fn=None): conv + bias."""
        tf, v1 = self.tf, self.v1
        kernel = self.config.box_predictor_kernel_size
        with v1.variable_scope(scope):
            weights = self.variable(
                "weights",
                [kernel, kernel, int(net.shape[-1]), depth],
                v1.truncated_normal_initializer(stddev=0.03),
            )
            biases = self.variable("biases", [depth], v1.constant_initializer(bias_init))
            net = tf.nn.conv2d(net, weights, [1, 1, 1, 1], "SAME", name="Conv2D")
            return tf.nn.bias_add(net, biases, name="BiasAdd")

    # -- network -----------------------------------------------------------------------------

    def expanded_conv(
        self, net: Any, scope: str, stride: int, depth: int, factor: int
    ) -> tuple[Any, Any]:
        """conv_blocks.expanded_conv: expand (if wider) -> depthwise -> linear project (+ input).

        Returns the block output and its expansion output (None without expansion)."""
        tf, v1 = self.tf, self.v1
        with v1.variable_scope(scope):
            inputs = tf.identity(net, "input")
            in_depth = int(inputs.shape[-1])
            # expand_input_by_factor(1, divisible_by=1) for the first block, (6, 8) after.
            inner = defs.make_divisible(in_depth * factor, 1 if factor == 1 else 8)
            net = inputs
            expansion = None
            if inner > in_depth:
                net = self.conv(net, "expand", inner, 1)
                net = expansion = tf.identity(net, "expansion_output")
            net = self.depthwise(net, "depthwise", 3, stride)
            net = tf.identity(net, "depthwise_output")
            net = self.conv(net, "project", depth, 1, activation=False)
            if stride == 1 and depth == in_depth:
                net = net + inputs
            return tf.identity(net, "output"), expansion

    def mobilenet_v2_base(self, images: Any) -> dict[str, Any]:
        """mobilenet_v2.mobilenet_base(final_endpoint='layer_19') endpoints needed by SSD."""
        tf = self.tf
        net = tf.identity(images, "input")
        net = self.conv(
            net, "Conv", v2_base_depth(defs.V2_FIRST_CONV_DEPTH, self.config), 3, stride=2
        )
        endpoints = {}
        for index, (stride, depth, factor) in enumerate(defs.V2_EXPANDED_CONVS):
            scope = "expanded_conv" if index == 0 else f"expanded_conv_{index}"
            depth = v2_base_depth(depth, self.config)
            net, expansion = self.expanded_conv(net, scope, stride, depth, factor)
            if index == defs.V2_TAP_EXPANDED_CONV:
                endpoints["layer_15/expansion_output"] = expansion
        endpoints["layer_19"] = self.conv(
            net, "Conv_1", v2_base_depth(defs.V2_LAST_CONV_DEPTH, self.config), 1
        )
        return endpoints

    def feature_maps(self, images: Any) -> list[Any]:
        """SSDMobileNetV2FeatureExtractor.extract_features."""
        config = self.config
        eps = config.batch_norm_epsilon
        with self.v1.variable_scope("MobilenetV2"):
            endpoints = self.mobilenet_v2_base(images)
            maps = [endpoints["layer_15/expansion_output"], endpoints["layer_19"]]
            base = "layer_19"
            for index in range(2, config.num_layers):
                depth = defs.SSD_LAYER_DEPTHS[index]
                half = extra_layer_depth(depth / 2, config)
                net = self.conv(maps[-1], f"{base}_1_Conv2d_{index}_1x1_{half}", half, 1,
                                epsilon=eps)  # fmt: skip
                full = extra_layer_depth(depth, config)
                name = f"{base}_2_Conv2d_{index}_3x3_s2_{full}"
                if config.use_depthwise:
                    net = self.depthwise(net, f"{name}_depthwise", 3, 2, epsilon=eps)
                    net = self.conv(net, name, full, 1, epsilon=eps)
                else:
                    net = self.conv(net, name, full, 3, stride=2, epsilon=eps)
                maps.append(net)
        return maps

    # -- anchors -----------------------------------------------------------------------------

    def anchors(self, feature_maps: list[Any], image_size: tuple[Any, Any]) -> Any:
        """MultipleGridAnchorGenerator._generate (normalized; strides 1/grid, offsets half)."""
        tf = self.tf
        with tf.name_scope("MultipleGridAnchorGenerator"):
            im_height = tf.cast(image_size[0], tf.float32)
            im_width = tf.cast(image_size[1], tf.float32)
            min_im = tf.minimum(im_height, im_width)
            base_anchor_size = [min_im / im_height * 1.0, min_im / im_width * 1.0]
            layers = []
            for feature_map, specs in zip(feature_maps, self.config.box_specs(), strict=True):
                shape = tf.shape(feature_map)
                grid_height, grid_width = shape[1], shape[2]
                stride = (
                    1.0 / tf.cast(grid_height, tf.float32),
                    1.0 / tf.cast(grid_width, tf.float32),
                )
                offset = (0.5 * stride[0], 0.5 * stride[1])
                scales, aspect_ratios = zip(*specs, strict=True)
                layers.append(
                    tf.identity(
                        self.tile_anchors(
                            grid_height, grid_width, scales, aspect_ratios,
                            base_anchor_size, stride, offset,
                        )
                    )
                )  # fmt: skip
        with tf.name_scope("Concatenate"):
            return tf.concat(layers, 0, name="concat")

    def tile_anchors(
        self, grid_height, grid_width, scales, aspect_ratios, base_anchor_size, stride, offset
    ) -> Any:
        """grid_anchor_generator.tile_anchors: anchor fastest, then column, then row."""
        tf = self.tf
        scales = tf.constant(scales, tf.float32)
        ratio_sqrts = tf.sqrt(tf.constant(aspect_ratios, tf.float32))
        heights = scales / ratio_sqrts * base_anchor_size[0]
        widths = scales * ratio_sqrts * base_anchor_size[1]
        y_centers = tf.cast(tf.range(grid_height), tf.float32) * stride[0] + offset[0]
        x_centers = tf.cast(tf.range(grid_width), tf.float32) * stride[1] + offset[1]
        num = tf.shape(scales)[0]
        # ops.meshgrid: [H, W] grids, then [H, W, A] against the per-anchor sizes.
        x_grid = tf.tile(x_centers[None, :], [grid_height, 1])
        y_grid = tf.tile(y_centers[:, None], [1, grid_width])
        x_grid3 = tf.tile(x_grid[:, :, None], [1, 1, num])
        y_grid3 = tf.tile(y_grid[:, :, None], [1, 1, num])
        widths3 = tf.tile(widths[None, None, :], [grid_height, grid_width, 1])
        heights3 = tf.tile(heights[None, None, :], [grid_height, grid_width, 1])
        centers = tf.reshape(tf.stack([y_grid3, x_grid3], axis=3), [-1, 2])
        sizes = tf.reshape(tf.stack([heights3, widths3], axis=3), [-1, 2])
        return tf.concat([centers - 0.5 * sizes, centers + 0.5 * sizes], 1)

    # -- post-processing ---------------------------------------------------------------------

    def decode(self, box_encodings: Any, anchors: Any) -> Any:
        """SSDMetaArch._batch_decode with FasterRcnnBoxCoder._decode."""
        tf = self.tf
        batch = tf.shape(box_encodings)[0]
        # `Postprocessor/ExpandDims`: the graph runner finds the anchors as this op's input.
        tiled = tf.reshape(tf.tile(tf.expand_dims(anchors, 0), [batch, 1, 1]), [-1, 4])
        with tf.name_scope("Decode"):
            codes = tf.reshape(box_encodings, [-1, 4])
            ymin_a, xmin_a, ymax_a, xmax_a = tf.unstack(tf.transpose(tiled))
            width_a = xmax_a - xmin_a
            height_a = ymax_a - ymin_a
            ycenter_a = ymin_a + height_a / 2.0
            xcenter_a = xmin_a + width_a / 2.0
            ty, tx, th, tw = tf.unstack(tf.transpose(codes))
            sy, sx, sh, sw = self.config.box_coder_scales
            ty /= sy
            tx /= sx
            th /= sh
            tw /= sw
            w = tf.exp(tw) * width_a
            h = tf.exp(th) * height_a
            ycenter = ty * height_a + ycenter_a
            xcenter = tx * width_a + xcenter_a
            boxes = tf.transpose(
                tf.stack(
                    [ycenter - h / 2.0, xcenter - w / 2.0, ycenter + h / 2.0, xcenter + w / 2.0]
                )
            )
            return tf.reshape(boxes, tf.stack([batch, tf.shape(box_encodings)[1], 4]))

    def multiclass_nms(self, boxes: Any, scores: Any) -> tuple[Any, Any, Any, Any]:
        """post_processing.multiclass_non_max_suppression for one image (q = 1), clip window
        [0, 0, 1, 1] (fixed_shape_resizer), then pad_or_clip_box_list to max_total."""
        tf = self.tf
        config = self.config
        window = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32)
        win_ymin, win_xmin, win_ymax, win_xmax = tf.unstack(window)
        selected_boxes, selected_scores, selected_classes = [], [], []
        for class_index in range(config.num_classes):
            class_scores = scores[:, class_index]
            keep = tf.reshape(tf.where(tf.greater(class_scores, config.score_threshold)), [-1])
            class_boxes = tf.gather(boxes, keep)
            class_scores = tf.gather(class_scores, keep)
            # box_list_ops.clip_to_window(filter_nonoverlapping=True)
            ymin, xmin, ymax, xmax = tf.split(class_boxes, 4, axis=1)
            ymin = tf.maximum(tf.minimum(ymin, win_ymax), win_ymin)
            ymax = tf.maximum(tf.minimum(ymax, win_ymax), win_ymin)
            xmin = tf.maximum(tf.minimum(xmin, win_xmax), win_xmin)
            xmax = tf.maximum(tf.minimum(xmax, win_xmax), win_xmin)
            clipped = tf.concat([ymin, xmin, ymax, xmax], 1)
            area = tf.squeeze((ymax - ymin) * (xmax - xmin), [1])
            nonzero = tf.reshape(tf.where(tf.greater(area, 0.0)), [-1])
            clipped = tf.gather(clipped, nonzero)
            class_scores = tf.gather(class_scores, nonzero)
            size = tf.minimum(config.max_detections_per_class, tf.shape(clipped)[0])
            selected = tf.raw_ops.NonMaxSuppressionV2(
                boxes=clipped,
                scores=class_scores,
                max_output_size=size,
                iou_threshold=tf.constant(config.iou_threshold, tf.float32),
            )
            selected_boxes.append(tf.gather(clipped, selected))
            kept_scores = tf.gather(class_scores, selected)
            selected_scores.append(kept_scores)
            selected_classes.append(tf.zeros_like(kept_scores) + class_index)
        all_boxes = tf.concat(selected_boxes, 0)
        all_scores = tf.concat(selected_scores, 0)
        all_classes = tf.concat(selected_classes, 0)
        # box_list_ops.sort_by_field (descending, top_k), then keep max_total_detections.
        _, order = tf.nn.top_k(all_scores, tf.shape(all_scores)[0], sorted=True)
        count = tf.minimum(config.max_total_detections, tf.shape(all_scores)[0])
        order = order[:count]
        pad = config.max_total_detections - count
        out_boxes = tf.pad(tf.gather(all_boxes, order), [[0, pad], [0, 0]])
        out_scores = tf.pad(tf.gather(all_scores, order), [[0, pad]])
        out_classes = tf.pad(tf.gather(all_classes, order), [[0, pad]])
        total = config.max_total_detections
        out_boxes.set_shape([total, 4])
        out_scores.set_shape([total])
        out_classes.set_shape([total])
        return out_boxes, out_scores, out_classes, count

    # -- the whole graph ---------------------------------------------------------------------

    def build(self) -> dict[str, Any]:
        tf, v1 = self.tf, self.v1
        config = self.config
        images = v1.placeholder(tf.uint8, [None, None, None, 3], name="image_tensor")
        with tf.name_scope("Preprocessor"):
            resized = tf.raw_ops.ResizeBilinear(
                images=tf.cast(images, tf.float32),
                size=tf.constant(config.image_size, tf.int32),
                align_corners=False,
                half_pixel_centers=False,
            )
            preprocessed = (2.0 / 255.0) * resized - 1.0
        with v1.variable_scope("FeatureExtractor"):
            feature_maps = self.feature_maps(preprocessed)
        anchors_per_location = [len(specs) for specs in config.box_specs()]
        box_encodings, class_logits = [], []
        for index, (feature_map, count) in enumerate(
            zip(feature_maps, anchors_per_location, strict=True)
        ):
            with v1.variable_scope(f"BoxPredictor_{index}"):
                boxes = self.predictor(feature_map, "BoxEncodingPredictor", count * 4, 0.0)
                logits = self.predictor(
                    feature_map,
                    "ClassPredictor",
                    count * config.num_class_slots,
                    config.class_prediction_bias_init,
                )
                shape = tf.shape(feature_map)
                cells = shape[1] * shape[2] * count
                box_encodings.append(tf.reshape(boxes, tf.stack([shape[0], cells, 1, 4])))
                class_logits.append(
                    tf.reshape(logits, tf.stack([shape[0], cells, config.num_class_slots]))
                )
        raw_boxes = tf.concat(box_encodings, 1, name="concat")
        raw_logits = tf.concat(class_logits, 1, name="concat_1")
        squeezed = tf.squeeze(raw_boxes, [2], name="Squeeze")
        anchors = self.anchors(feature_maps, (config.image_size[0], config.image_size[1]))
        with tf.name_scope("Postprocessor"):
            decoded = self.decode(squeezed, anchors)
            scores = tf.sigmoid(
                tf.divide(raw_logits, config.logit_scale, name="scale_logits"),
                name="convert_scores",
            )
            scores = scores[:, :, 1:]
            with tf.name_scope("BatchMultiClassNonMaxSuppression"):
                # Plain graph code: autograph would only slow down tracing the class loop.
                per_image = tf.autograph.experimental.do_not_convert(
                    lambda args: self.multiclass_nms(args[0], args[1])
                )
                nms_boxes, nms_scores, nms_classes, num = tf.map_fn(
                    per_image,
                    (decoded, scores),
                    fn_output_signature=(tf.float32, tf.float32, tf.float32, tf.int32),
                )
            num = tf.cast(num, tf.float32)
        # The exporter's outputs: classes shifted by label_id_offset 1 (background was 0).
        classes = tf.add(nms_classes, 1.0, name="add")
        return {
            "image_tensor": images,
            "concat": raw_boxes,
            "concat_1": raw_logits,
            "anchors": anchors,
            "detection_boxes": tf.identity(nms_boxes, name="detection_boxes"),
            "detection_scores": tf.identity(nms_scores, name="detection_scores"),
            "detection_classes": tf.identity(classes, name="detection_classes"),
            "num_detections": tf.identity(num, name="num_detections"),
        }


def build_inference_graph(config: SSDGraphConfig) -> tuple[Any, dict[str, Any]]:
    """A new tf.Graph holding the inference graph and `global_step`; returns (graph, tensors)."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tensors = _Builder(config).build()
        tf.compat.v1.get_variable(
            "global_step",
            shape=[],
            dtype=tf.int64,
            initializer=tf.compat.v1.zeros_initializer(),
            trainable=False,
            collections=[
                tf.compat.v1.GraphKeys.GLOBAL_VARIABLES,
                tf.compat.v1.GraphKeys.GLOBAL_STEP,
            ],
            use_resource=False,
        )
    return graph, tensors


def graph_variable_layout(config: SSDGraphConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """{TF1 variable name: (shape, numpy dtype name)} of the graph `config` describes."""
    graph, _ = build_inference_graph(config)
    with graph.as_default():
        variables = graph.get_collection("variables")
    return {
        v.op.name: (tuple(int(d) for d in v.shape), v.dtype.base_dtype.as_numpy_dtype.__name__)
        for v in sorted(variables, key=lambda v: v.op.name)
    }


def config_number(value: float) -> str:
    """A pipeline.config float: the shortest decimal that reads back to the float32 a proto float
    field holds, in Python's notation (`0.2`, not `0.20000000298023224`; `1e-08`)."""
    return repr(float(str(np.float32(value))))


def _lower(flag: bool) -> str:
    return str(bool(flag)).lower()


def _field_line(indent: int, field: str, value: object, default: object) -> str:
    """`field: value` on a new line of `indent` spaces, or nothing when value is the default."""
    return "" if value == default else f"\n{' ' * indent}{field}: {value}"


# The OD API sample ssd_mobilenet_v2_coco.config's train_config (batch 24, RMSProp, 200k steps).
RELEASED_TRAIN_CONFIG = """\
  batch_size: 24
  data_augmentation_options {
    random_horizontal_flip {
    }
  }
  data_augmentation_options {
    ssd_random_crop {
    }
  }
  optimizer {
    rms_prop_optimizer {
      learning_rate {
        exponential_decay_learning_rate {
          initial_learning_rate: 0.004
          decay_steps: 800720
          decay_factor: 0.95
        }
      }
      momentum_optimizer_value: 0.9
      decay: 0.9
      epsilon: 1.0
    }
  }
  fine_tune_checkpoint: "PATH_TO_BE_CONFIGURED/model.ckpt"
  num_steps: 200000
  fine_tune_checkpoint_type: "detection"
"""


@dataclasses.dataclass(frozen=True)
class TrainEvalSections:
    """The parts of a pipeline.config that say how a model was trained and evaluated, not what
    it is: `train_config`'s body (text, indented by 2), the input readers' files (under
    PATH_TO_BE_CONFIGURED), and eval_config's fields. Defaults: what the graph builder has always
    written for its zoo directories (the OD API sample config's training, generic file names)."""

    train_config: str = RELEASED_TRAIN_CONFIG
    label_map: str = "label_map.pbtxt"
    train_record: str = "train.record"
    val_record: str = "val.record"
    eval_examples: int = 8000
    metrics_set: str = ""  # empty: left out


def _conv_hyperparams(config: SSDGraphConfig, indent: int) -> str:
    lines = f"""\
regularizer {{
  l2_regularizer {{
    weight: {config_number(config.l2_weight)}
  }}
}}
initializer {{
  truncated_normal_initializer {{
    mean: 0.0
    stddev: 0.03
  }}
}}
activation: RELU_6
batch_norm {{
  decay: {config_number(config.batch_norm_decay)}
  center: true
  scale: true
  epsilon: {config_number(config.batch_norm_epsilon)}
  train: true
}}"""
    return "\n".join(" " * indent + line for line in lines.splitlines())


def pipeline_config_text(
    config: SSDGraphConfig,
    sections: TrainEvalSections = TrainEvalSections(),
    *,
    header: str = "",
    override_base_feature_extractor_hyperparams: bool = False,
) -> str:
    """A TF1 text-format TrainEvalPipelineConfig describing `config`, in the released config's
    layout.

    `header` (comment lines, each starting with `#`) goes first; `sections` fills train_config,
    the input readers and eval_config.
    """
    n = config_number
    # Fields at their proto default are left out, as the released file leaves them out.
    feature_extractor_layers = _field_line(6, "num_layers", config.num_layers, 6)
    interpolated = _field_line(
        8, "interpolated_scale_aspect_ratio", n(config.interpolated_scale_aspect_ratio), "1.0"
    )
    logit_scale = _field_line(6, "logit_scale", n(config.logit_scale), "1.0")
    override = _field_line(
        6,
        "override_base_feature_extractor_hyperparams",
        _lower(override_base_feature_extractor_hyperparams),
        "false",
    )
    ratios = "\n".join(f"        aspect_ratios: {n(a)}" for a in config.aspect_ratios)
    y_scale, x_scale, height_scale, width_scale = (n(s) for s in config.box_coder_scales)
    metrics_set = f'\n  metrics_set: "{sections.metrics_set}"' if sections.metrics_set else ""
    prefix = "PATH_TO_BE_CONFIGURED"
    return f"""{header}model {{
  ssd {{
    num_classes: {config.num_classes}
    image_resizer {{
      fixed_shape_resizer {{
        height: {config.image_size[0]}
        width: {config.image_size[1]}
      }}
    }}
    feature_extractor {{
      type: "ssd_mobilenet_v2"
      depth_multiplier: {n(config.depth_multiplier)}
      min_depth: {config.min_depth}{feature_extractor_layers}
      conv_hyperparams {{
{_conv_hyperparams(config, 8)}
      }}
      use_depthwise: {_lower(config.use_depthwise)}{override}
    }}
    box_coder {{
      faster_rcnn_box_coder {{
        y_scale: {y_scale}
        x_scale: {x_scale}
        height_scale: {height_scale}
        width_scale: {width_scale}
      }}
    }}
    matcher {{
      argmax_matcher {{
        matched_threshold: 0.5
        unmatched_threshold: 0.5
        ignore_thresholds: false
        negatives_lower_than_unmatched: true
        force_match_for_each_row: true
      }}
    }}
    similarity_calculator {{
      iou_similarity {{
      }}
    }}
    box_predictor {{
      convolutional_box_predictor {{
        conv_hyperparams {{
{_conv_hyperparams(config, 10)}
        }}
        min_depth: 0
        max_depth: 0
        num_layers_before_predictor: 0
        use_dropout: false
        dropout_keep_probability: 0.8
        kernel_size: {config.box_predictor_kernel_size}
        box_code_size: 4
        apply_sigmoid_to_scores: false
        class_prediction_bias_init: {n(config.class_prediction_bias_init)}
      }}
    }}
    anchor_generator {{
      ssd_anchor_generator {{
        num_layers: {config.num_layers}
        min_scale: {n(config.min_scale)}
        max_scale: {n(config.max_scale)}
{ratios}{interpolated}
        reduce_boxes_in_lowest_layer: {_lower(config.reduce_boxes_in_lowest_layer)}
      }}
    }}
    post_processing {{
      batch_non_max_suppression {{
        score_threshold: {n(config.score_threshold)}
        iou_threshold: {n(config.iou_threshold)}
        max_detections_per_class: {config.max_detections_per_class}
        max_total_detections: {config.max_total_detections}
      }}
      score_converter: SIGMOID{logit_scale}
    }}
    normalize_loss_by_num_matches: true
    loss {{
      localization_loss {{
        weighted_smooth_l1 {{
        }}
      }}
      classification_loss {{
        weighted_sigmoid {{
        }}
      }}
      hard_example_miner {{
        num_hard_examples: 3000
        iou_threshold: 0.99
        loss_type: CLASSIFICATION
        max_negatives_per_positive: 3
        min_negatives_per_image: 3
      }}
      classification_weight: 1.0
      localization_weight: 1.0
    }}
  }}
}}
train_config {{
{sections.train_config}}}
train_input_reader {{
  label_map_path: "{prefix}/{sections.label_map}"
  tf_record_input_reader {{
    input_path: "{prefix}/{sections.train_record}"
  }}
}}
eval_config {{
  num_examples: {sections.eval_examples}{metrics_set}
  use_moving_averages: false
}}
eval_input_reader {{
  label_map_path: "{prefix}/{sections.label_map}"
  shuffle: false
  num_readers: 1
  tf_record_input_reader {{
    input_path: "{prefix}/{sections.val_record}"
  }}
}}
"""


def write_zoo_dir(
    out_dir: str | os.PathLike[str],
    config: SSDGraphConfig | None = None,
    weights: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    calibrate: bool = True,
    frozen: bool = True,
) -> Path:
    """Write a complete TF1 zoo model directory for `config`.

    `weights` ({TF1 variable name: array}) must cover every variable with its exact shape
    (`graph_variable_layout(config)`); without them, synthetic weights are drawn from `seed`
    (`pipeline.tf1.synthetic_checkpoint`) and, with `calibrate`, the heads are rescaled so the
    detector's scores are spread. Writes model.ckpt.{data-00000-of-00001,index,meta},
    checkpoint, pipeline.config and (with `frozen`) frozen_inference_graph.pb.
    """
    import tensorflow as tf

    from pipeline.atomic import atomic_directory
    from pipeline.tf1.graph_runner import write_frozen_graph
    from pipeline.tf1.synthetic_checkpoint import (
        calibrate_heads,
        synthetic_weights,
        write_checkpoint_state,
        write_tf1_checkpoint,
    )

    config = config or SSDGraphConfig()
    graph, _ = build_inference_graph(config)
    with graph.as_default():
        variables = graph.get_collection("variables")
        saver = tf.compat.v1.train.Saver(variables)
    layout = {
        v.op.name: (tuple(int(d) for d in v.shape), v.dtype.base_dtype.as_numpy_dtype.__name__)
        for v in variables
    }
    generated = weights is None
    values = synthetic_weights(layout, seed) if generated else _check_weights(weights, layout)
    out = Path(out_dir)
    with atomic_directory(out) as staging:
        prefix = str(staging / "model.ckpt")
        # The graph (with the Saver's save/restore ops, as the exporter writes it) and the
        # weights are written separately: no session has to hold ~70 MB of variables.
        with graph.as_default():
            tf.compat.v1.train.export_meta_graph(
                filename=f"{prefix}.meta", graph=graph, saver_def=saver.as_saver_def()
            )
        write_tf1_checkpoint(prefix, values)
        (staging / "pipeline.config").write_text(pipeline_config_text(config), encoding="utf-8")
        write_checkpoint_state(staging)
        if generated and calibrate:
            values = calibrate_heads(staging, dict(values), seed)
            write_tf1_checkpoint(prefix, values)
        if frozen:
            write_frozen_graph(staging)
    return out


def _check_weights(
    weights: Mapping[str, np.ndarray], layout: Mapping[str, tuple[tuple[int, ...], str]]
) -> dict[str, np.ndarray]:
    missing = sorted(set(layout) - set(weights))
    extra = sorted(set(weights) - set(layout))
    wrong = [
        f"{name} {tuple(np.shape(weights[name]))} != {shape}"
        for name, (shape, _) in layout.items()
        if name in weights and tuple(np.shape(weights[name])) != shape
    ]
    if missing or extra or wrong:
        raise PipelineError(
            "weights: do not match the graph's variables "
            f"(missing {missing[:5]}, unexpected {extra[:5]}, wrong shapes {wrong[:5]}); "
            "pass one array per variable of graph_variable_layout(config)"
        )
    return {name: np.asarray(weights[name], dtype=dtype) for name, (_, dtype) in layout.items()}


def feature_map_sizes(config: SSDGraphConfig) -> list[tuple[int, int]]:
    """(H, W) of each feature map: stride 16, 32, then ceil-halving ('SAME' padding)."""
    return grid_shapes(config.image_size, config.num_layers)
