"""The TF2 model: anchors and preprocessing against the real TF1 graphs, architecture vs the real
checkpoint indexes, Model Garden factory registration, TF1 post-processing semantics."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pipeline.modeling import anchors as anchor_lib
from pipeline.modeling.builder import build_ssd_model, model_config
from pipeline.modeling.postprocess import decode_tf1_boxes, tf1_multiclass_nms
from pipeline.modeling.preprocessing import preprocess
from pipeline.modeling.spec import AnchorSpec, SSDSpec
from pipeline.modeling.tf1_layout import model_records
from pipeline.tf1.pipeline_config import ssd_spec_from_config

V2 = "ssd_mobilenet_v2_coco_2018_03_29"
V1 = "ssd_mobilenet_v1_coco_2018_01_28"


@pytest.fixture(scope="module")
def models(tf1_zoo_dir: Path) -> dict[str, tuple[object, SSDSpec]]:
    result = {}
    for name in (V2, V1):
        spec = ssd_spec_from_config(tf1_zoo_dir / name / "pipeline.config")
        result[name] = (build_ssd_model(spec), spec)
    return result


@pytest.mark.parametrize("name", [V2, V1])
def test_anchors_equal_the_tf1_graph_anchors(synthetic_zoos: dict[str, Path], name: str) -> None:
    from pipeline.tf1.graph_runner import tf1_graph_anchors

    graph_anchors = tf1_graph_anchors(synthetic_zoos[name])
    spec = ssd_spec_from_config(synthetic_zoos[name] / "pipeline.config")
    ours = anchor_lib.tf1_anchor_boxes(spec)
    assert ours.shape == graph_anchors.shape == (1917, 4)
    np.testing.assert_array_equal(ours, graph_anchors)


def _reference_anchors(spec: SSDSpec) -> np.ndarray:
    """TF1's tile_anchors / MultipleGridAnchorGenerator._generate, with TF ops as TF1 ran it."""
    height, width = (tf.constant(float(d)) for d in spec.image_size)
    shapes = anchor_lib.feature_map_shapes(spec)
    specs = anchor_lib.box_specs(spec.anchors)
    a = spec.anchors
    min_im = tf.minimum(height, width)
    base = [min_im / height * a.base_anchor_size[0], min_im / width * a.base_anchor_size[1]]
    out = []
    for index, (grid, layer) in enumerate(zip(shapes, specs, strict=True)):
        if a.anchor_strides:
            stride = (a.anchor_strides[index][0] / height, a.anchor_strides[index][1] / width)
        else:
            stride = (1.0 / tf.constant(float(grid[0])), 1.0 / tf.constant(float(grid[1])))
        if a.anchor_offsets:
            offset = (a.anchor_offsets[index][0] / height, a.anchor_offsets[index][1] / width)
        else:
            offset = (0.5 * stride[0], 0.5 * stride[1])
        scales, ratios = zip(*layer, strict=True)
        ratio_sqrts = tf.sqrt(tf.constant(ratios, tf.float32))
        heights = tf.constant(scales, tf.float32) / ratio_sqrts * base[0]
        widths = tf.constant(scales, tf.float32) * ratio_sqrts * base[1]
        y = tf.cast(tf.range(grid[0]), tf.float32) * stride[0] + offset[0]
        x = tf.cast(tf.range(grid[1]), tf.float32) * stride[1] + offset[1]
        x, y = tf.meshgrid(x, y)
        widths_grid, x_grid = tf.meshgrid(widths, x)
        heights_grid, y_grid = tf.meshgrid(heights, y)
        centers = tf.reshape(tf.stack([y_grid, x_grid], axis=-1), [-1, 2])
        sizes = tf.reshape(tf.stack([heights_grid, widths_grid], axis=-1), [-1, 2])
        out.append(tf.concat([centers - 0.5 * sizes, centers + 0.5 * sizes], axis=1))
    return tf.concat(out, axis=0).numpy()


@pytest.mark.parametrize(
    "anchors",
    [
        AnchorSpec(),
        AnchorSpec(
            reduce_boxes_in_lowest_layer=False,
            interpolated_scale_aspect_ratio=0.0,
            aspect_ratios=(1.0, 2.0, 0.5),
            base_anchor_size=(0.8, 1.2),
        ),
        AnchorSpec(
            num_layers=6,
            scales=(0.1, 0.25, 0.4, 0.55, 0.7, 0.85),
            anchor_strides=((16, 16), (32, 32), (64, 64), (128, 128), (256, 256), (512, 512)),
            anchor_offsets=((8, 8), (16, 16), (32, 32), (64, 64), (128, 128), (256, 256)),
        ),
    ],
)
def test_anchor_options_follow_tf1(anchors: AnchorSpec) -> None:
    spec = SSDSpec(image_size=(320, 480), anchors=anchors)
    ours = anchor_lib.tf1_anchor_boxes(spec)
    np.testing.assert_allclose(ours, _reference_anchors(spec), rtol=0, atol=2e-7)
    per_location = anchor_lib.anchors_per_location(spec)
    sizes = [h * w * n for (h, w), n in zip(anchor_lib.feature_map_shapes(spec), per_location,
                                            strict=True)]  # fmt: skip
    assert ours.shape == (sum(sizes), 4)
    # The Model Garden per-level layout is the same anchors in the same order.
    levels = anchor_lib.multilevel_anchor_boxes(spec)
    flat = np.concatenate([levels[k].reshape(-1, 4) for k in sorted(levels, key=int)])
    np.testing.assert_array_equal(flat, ours)


def test_preprocess_equals_the_tf1_graph(synthetic_zoos: dict[str, Path], coco_tiny: Path) -> None:
    from PIL import Image

    from pipeline.tf1.graph_runner import TF1GraphRunner

    path = sorted((coco_tiny / "val2017").glob("*.jpg"))[0]
    image = np.asarray(Image.open(path).convert("RGB"))
    spec = ssd_spec_from_config(synthetic_zoos[V1] / "pipeline.config")
    with TF1GraphRunner(synthetic_zoos[V1]) as runner:
        graph_input = runner.session.run("Preprocessor/sub:0", {"image_tensor:0": image[None]})
    ours = preprocess(image[None], spec).numpy()
    np.testing.assert_array_equal(ours, graph_input)
    # TF2's default (half-pixel centers) would not do.
    half_pixel = tf.image.resize(image[None].astype(np.float32), spec.image_size) * 2 / 255 - 1
    assert np.abs(half_pixel.numpy() - graph_input).max() > 0.01


@pytest.mark.parametrize("name", [V2, V1])
def test_model_holds_exactly_the_checkpoint_variables(
    models: dict[str, tuple[object, SSDSpec]], tf1_zoo_dir: Path, name: str
) -> None:
    model, _ = models[name]
    index = dict(tf.train.list_variables(str(tf1_zoo_dir / name / "model.ckpt")))
    index.pop("global_step")
    tf1_names: dict[str, list[int]] = {}
    covered: list[int] = []
    for record in model_records(model):
        for tf1_name, variable, _ in record.variables():
            assert tf1_name not in tf1_names, f"{tf1_name} mapped twice"
            tf1_names[tf1_name] = list(variable.shape)
            covered.append(id(variable))
    assert tf1_names == {k: list(v) for k, v in index.items()}
    all_variables = [id(v) for m in model.checkpoint_items.values() for v in m.variables]
    assert sorted(covered) == sorted(all_variables)


def test_model_outputs_in_model_garden_layout(models: dict[str, tuple[object, SSDSpec]]) -> None:
    model, spec = models[V2]
    outputs = model(tf.zeros([2, 300, 300, 3]), training=False)
    shapes = anchor_lib.feature_map_shapes(spec)
    for (level, (h, w)), per_location in zip(
        zip(anchor_lib.levels(spec), shapes, strict=True),
        anchor_lib.anchors_per_location(spec),
        strict=True,
    ):
        assert outputs["box_outputs"][str(level)].shape == (2, h, w, per_location * 4)
        assert outputs["cls_outputs"][str(level)].shape == (2, h, w, per_location * 91)
    assert outputs["detection_boxes"].shape == (2, 100, 4)
    assert outputs["num_detections"].shape == (2,)


def _names(spec: SSDSpec) -> dict[str, list[int]]:
    model = build_ssd_model(spec)
    return {
        name: list(variable.shape)
        for record in model_records(model)
        for name, variable, _ in record.variables()
    }


def test_ssdlite_mobilenet_v2_heads_follow_tf1(tf1_zoo_dir: Path) -> None:
    spec = ssd_spec_from_config(tf1_zoo_dir / V2)
    lite = dataclasses.replace(
        spec, box_predictor=dataclasses.replace(spec.box_predictor, use_depthwise=True)
    )
    names = _names(lite)
    # The TF1 ssdlite_mobilenet_v2 checkpoint layout of the first head.
    assert names["BoxPredictor_0/BoxEncodingPredictor_depthwise/depthwise_weights"] == [
        3,
        3,
        576,
        1,
    ]
    assert names["BoxPredictor_0/BoxEncodingPredictor_depthwise/BatchNorm/gamma"] == [576]
    assert names["BoxPredictor_0/BoxEncodingPredictor/weights"] == [1, 1, 576, 12]
    assert names["BoxPredictor_5/ClassPredictor_depthwise/depthwise_weights"] == [3, 3, 128, 1]
    assert names["BoxPredictor_5/ClassPredictor/weights"] == [1, 1, 128, 546]
    assert names["BoxPredictor_5/ClassPredictor/biases"] == [546]


def test_depth_multiplier_follows_tf1(tf1_zoo_dir: Path) -> None:
    v1 = ssd_spec_from_config(tf1_zoo_dir / V1)
    v1 = dataclasses.replace(
        v1, feature_extractor=dataclasses.replace(v1.feature_extractor, depth_multiplier=0.75)
    )
    names = _names(v1)
    # mobilenet_v1: max(int(d * 0.75), 16); extra layers name their depths after the multiplier.
    assert names["FeatureExtractor/MobilenetV1/Conv2d_0/weights"] == [3, 3, 3, 24]
    assert names["FeatureExtractor/MobilenetV1/Conv2d_13_pointwise/weights"] == [1, 1, 768, 768]
    prefix = "FeatureExtractor/MobilenetV1/Conv2d_13_pointwise"
    assert names[f"{prefix}_1_Conv2d_2_1x1_192/weights"] == [1, 1, 768, 192]
    assert names[f"{prefix}_2_Conv2d_2_3x3_s2_384/weights"] == [3, 3, 192, 384]
    assert names[f"{prefix}_2_Conv2d_5_3x3_s2_96/weights"] == [3, 3, 48, 96]
    assert names["BoxPredictor_0/ClassPredictor/weights"] == [1, 1, 384, 273]

    v2 = ssd_spec_from_config(tf1_zoo_dir / V2)
    v2 = dataclasses.replace(
        v2, feature_extractor=dataclasses.replace(v2.feature_extractor, depth_multiplier=0.5)
    )
    names = _names(v2)
    # mobilenet_v2: _make_divisible(d * 0.5, 8, min_depth=16); expansion _make_divisible(6 * in, 8).
    assert names["FeatureExtractor/MobilenetV2/Conv/weights"] == [3, 3, 3, 16]
    assert names["FeatureExtractor/MobilenetV2/expanded_conv/project/weights"] == [1, 1, 16, 16]
    assert names["FeatureExtractor/MobilenetV2/expanded_conv_13/expand/weights"] == [1, 1, 48, 288]
    assert names["FeatureExtractor/MobilenetV2/Conv_1/weights"] == [1, 1, 160, 640]
    assert names["FeatureExtractor/MobilenetV2/layer_19_1_Conv2d_2_1x1_128/weights"] == [
        1, 1, 640, 128,
    ]  # fmt: skip
    assert names["BoxPredictor_0/BoxEncodingPredictor/weights"] == [3, 3, 288, 12]


def test_backbone_and_decoder_come_from_model_garden_factories(tf1_zoo_dir: Path) -> None:
    import tf_keras
    from official.vision.modeling.backbones import factory as backbones
    from official.vision.modeling.decoders import factory as decoders

    from pipeline.modeling.backbones import TF1MobileNetBackbone
    from pipeline.modeling.decoders import SSDExtraLayers

    spec = ssd_spec_from_config(tf1_zoo_dir / V1)
    config = model_config(spec)
    backbone = backbones.build_backbone(
        input_specs=tf_keras.layers.InputSpec(shape=[None, 300, 300, 3]),
        backbone_config=config.backbone,
        norm_activation_config=config.norm_activation,
    )
    assert isinstance(backbone, TF1MobileNetBackbone)
    assert {k: v.as_list() for k, v in backbone.output_specs.items()} == {
        "4": [None, 19, 19, 512],
        "5": [None, 10, 10, 1024],
    }
    decoder = decoders.build_decoder(input_specs=backbone.output_specs, model_config=config)
    assert isinstance(decoder, SSDExtraLayers)
    assert sorted(decoder.output_specs, key=int) == ["4", "5", "6", "7", "8", "9"]


def _reference_tf1_nms(
    boxes: np.ndarray, scores: np.ndarray, thresh: float, iou: float, per_class: int, total: int
) -> list[tuple[int, float, tuple[float, ...]]]:
    """TF1 multiclass_non_max_suppression for one image, step by step in numpy."""
    selected = []
    for cls in range(scores.shape[1]):
        keep = scores[:, cls] > thresh
        cand_boxes = np.clip(boxes[keep], 0.0, 1.0)
        cand_scores = scores[keep, cls]
        area = (cand_boxes[:, 2] - cand_boxes[:, 0]) * (cand_boxes[:, 3] - cand_boxes[:, 1])
        cand_boxes, cand_scores = cand_boxes[area > 0], cand_scores[area > 0]
        chosen: list[int] = []
        for i in np.argsort(-cand_scores, kind="stable"):
            if len(chosen) == per_class:
                break
            b = cand_boxes[i]
            ok = True
            for j in chosen:
                c = cand_boxes[j]
                ih = max(0.0, min(b[2], c[2]) - max(b[0], c[0]))
                iw = max(0.0, min(b[3], c[3]) - max(b[1], c[1]))
                inter = ih * iw
                union = (b[2] - b[0]) * (b[3] - b[1]) + (c[2] - c[0]) * (c[3] - c[1]) - inter
                if union > 0 and inter / union > iou:
                    ok = False
                    break
            if ok:
                chosen.append(int(i))
        selected += [(cls, float(cand_scores[i]), tuple(cand_boxes[i])) for i in chosen]
    selected.sort(key=lambda s: -s[1])
    return selected[:total]


def test_nms_has_tf1_semantics() -> None:
    rng = np.random.default_rng(0)
    n, classes = 300, 4
    centers = rng.uniform(-0.2, 1.2, size=(n, 2))
    sizes = rng.uniform(0.05, 0.4, size=(n, 2))
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1).astype(np.float32)
    boxes[:5] = [1.1, 1.1, 1.3, 1.3]  # entirely outside the window: TF1 drops them
    scores = rng.uniform(0, 1, size=(n, classes)).astype(np.float32)
    scores[:5] = 0.99
    out_boxes, out_scores, out_classes, num = tf1_multiclass_nms(
        tf.constant(boxes[None]), tf.constant(scores[None]), 0.3, 0.5, 7, 20
    )
    expected = _reference_tf1_nms(boxes, scores, 0.3, 0.5, 7, 20)
    assert int(num[0]) == len(expected) == 20
    np.testing.assert_allclose(out_scores[0].numpy(), [e[1] for e in expected], atol=1e-7)
    np.testing.assert_array_equal(out_classes[0].numpy(), [e[0] for e in expected])
    np.testing.assert_allclose(out_boxes[0].numpy(), [e[2] for e in expected], atol=1e-7)
    assert out_boxes.numpy().min() >= 0.0 and out_boxes.numpy().max() <= 1.0
    # Per-class and total limits are distinct (Model Garden's v1/v2 NMS share one).
    assert np.bincount(out_classes[0].numpy().astype(int)).max() <= 7


def test_box_decoding_is_tf1s_without_model_gardens_clip() -> None:
    from official.vision.ops import box_ops

    anchors = tf.constant([[0.2, 0.3, 0.6, 0.5]])
    codes = tf.constant([[1.0, -2.0, 25.0, 0.5]])  # th / 5 = 5 > log(1000 / 16)
    ours = decode_tf1_boxes(codes, anchors, (10.0, 10.0, 5.0, 5.0)).numpy()[0]
    ha, wa, yc, xc = 0.4, 0.2, 0.4, 0.4
    h, w = np.exp(25.0 / 5) * ha, np.exp(0.5 / 5) * wa
    y, x = 1.0 / 10 * ha + yc, -2.0 / 10 * wa + xc
    np.testing.assert_allclose(ours, [y - h / 2, x - w / 2, y + h / 2, x + w / 2], rtol=1e-6)
    model_garden = box_ops.decode_boxes(codes, anchors, weights=[10.0, 10.0, 5.0, 5.0]).numpy()[0]
    assert abs(model_garden[2] - ours[2]) > 1.0
    small = tf.constant([[0.3, 0.1, -0.2, 0.4]])
    np.testing.assert_allclose(
        decode_tf1_boxes(small, anchors, (10.0, 10.0, 5.0, 5.0)).numpy(),
        box_ops.decode_boxes(small, anchors, weights=[10.0, 10.0, 5.0, 5.0]).numpy(),
        atol=1e-6,
    )
