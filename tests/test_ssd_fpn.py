"""SSD MobileNet v1 FPN with the weight-shared box predictor (RetinaNet-style), converted exactly.

- the real zoo model `ssd_mobilenet_v1_fpn_shared_box_predictor_640x640_coco14_sync_2018_07_03`:
  every variable of its index (334) mapped by layer object, without running a graph;
- its real TF 1.8 inference graph run with synthetic weights of that exact layout: anchors equal
  the graph's, and `convert --verify-images` passes parity on 2 COCO images (raw outputs per FPN
  level, TF1's top-50 detections); a change of one level's tower BatchNorm fails on that level
  alone and the diagnosis names it (P6, fpn/bottom_up_Conv2d_14);
- the OD API sample config describes the same model; unsupported options name their field.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.tf1.pipeline_config import ssd_spec_from_config

ZOO_MODEL = "ssd_mobilenet_v1_fpn_shared_box_predictor_640x640_coco14_sync_2018_07_03"
SAMPLE = "ssd_mobilenet_v1_fpn_shared_box_predictor_640x640_coco14_sync.config"
NUM_IMAGES = 2
# 6 anchors (3 aspect ratios x 2 scales) on 80x80, 40x40, 20x20, 10x10, 5x5.
NUM_ANCHORS = 6 * (80 * 80 + 40 * 40 + 20 * 20 + 10 * 10 + 5 * 5)


@pytest.fixture(scope="module")
def zoo(tf1_zoo_dir: Path) -> Path:
    path = tf1_zoo_dir / ZOO_MODEL
    if not path.is_dir():
        pytest.skip(f"shared fixture not available: {path}")
    return path


def test_config_translates_to_the_fpn_spec(zoo: Path, od_api_configs: Path) -> None:
    spec = ssd_spec_from_config(zoo)
    assert spec.architecture == "ssd_mobilenet_v1_fpn" and spec.is_fpn
    assert spec.image_size == (640, 640)
    fpn = spec.feature_extractor.fpn
    assert (fpn.min_level, fpn.max_level, fpn.additional_layer_depth) == (3, 7, 256)
    predictor = spec.box_predictor
    assert predictor.weight_shared and predictor.depth == 256
    assert predictor.num_layers_before_predictor == 4 and predictor.kernel_size == 3
    assert predictor.class_prediction_bias_init == pytest.approx(-4.6)
    multiscale = spec.anchors.multiscale
    assert (multiscale.min_level, multiscale.max_level, multiscale.scales_per_octave) == (3, 7, 2)
    assert spec.training.classification_loss == "weighted_sigmoid_focal"
    # The sample config is the same model but for its evaluation score threshold.
    sample = ssd_spec_from_config(od_api_configs / SAMPLE)
    assert sample.with_box_clipping("before_nms").feature_extractor == spec.feature_extractor
    assert (sample.box_predictor, sample.anchors) == (spec.box_predictor, spec.anchors)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("kernel_size: 3", "kernel_size: 3\n        apply_conv_hyperparams_to_heads: true",
         "apply_conv_hyperparams_to_heads"),
        ('type: "ssd_mobilenet_v1_fpn"', 'type: "ssd_mobilenet_v1_fpn"\n      use_depthwise: true',
         "feature_extractor.use_depthwise"),
        ("max_level: 7\n        anchor_scale", "max_level: 6\n        anchor_scale",
         "multiscale_anchor_generator has levels 3..6"),
        ('type: "ssd_mobilenet_v1_fpn"', 'type: "ssd_mobilenet_v1"',
         "weight_shared_convolutional_box_predictor is supported with"),
        ("max_total_detections: 100", "max_total_detections: 100\n        use_combined_nms: true",
         "batch_non_max_suppression.use_combined_nms is true"),
    ],
)  # fmt: skip
def test_unsupported_options_name_their_field(
    zoo: Path, tmp_path: Path, old: str, new: str, field: str
) -> None:
    text = (zoo / "pipeline.config").read_text()
    assert old in text
    with pytest.raises(PipelineError, match=re.escape(field)) as error:
        ssd_spec_from_config_text(tmp_path, text.replace(old, new, 1))
    assert "\n" not in str(error.value)


def test_every_variable_of_the_real_index_is_mapped_by_layer(zoo: Path) -> None:
    from pipeline.conversion.mapping import plan_mapping
    from pipeline.modeling.builder import build_ssd_model

    spec = ssd_spec_from_config(zoo)
    model = build_ssd_model(spec)
    plan = plan_mapping(model, spec, zoo / "model.ckpt")
    assert plan.complete and plan.tf1_ignored == ["global_step"]
    assert len(plan.assignments) == 333
    mapped = {name: record for name, _, record in plan.assignments}
    head = model.head
    # The tower convs are shared across levels, their BatchNorms are per level (feature_i).
    tower = "WeightSharedConvolutionalBoxPredictor/ClassPredictionTower/conv2d_2"
    assert mapped[f"{tower}/weights"].layer is head._cls_convs[2]
    assert mapped[f"{tower}/BatchNorm/feature_4/moving_mean"].layer is head._cls_norms[4][2]
    assert mapped["WeightSharedConvolutionalBoxPredictor/BoxPredictor/biases"].layer is (
        head._box_regressor
    )
    assert mapped["WeightSharedConvolutionalBoxPredictor/ClassPredictor/weights"].class_dependent
    fpn = "FeatureExtractor/MobilenetV1/fpn"
    for scope in (
        "projection_3/biases",
        "smoothing_1/BatchNorm/gamma",
        "bottom_up_Conv2d_15/weights",
    ):
        assert mapped[f"{fpn}/{scope}"].module == "decoder"
    assert mapped["FeatureExtractor/MobilenetV1/Conv2d_13_pointwise/weights"].module == "backbone"
    # Tower convs carry no bias (TF1's have none).
    assert not any(conv.use_bias for conv in [*head._cls_convs, *head._box_convs])


@pytest.fixture(scope="module")
def converted(zoo: Path, coco_tiny: Path, tmp_path_factory) -> tuple[Path, Path, dict]:
    from pipeline.conversion.convert import convert
    from pipeline.tf1.synthetic_checkpoint import make_synthetic_zoo_dir

    root = tmp_path_factory.mktemp("ssd_fpn")
    synthetic = make_synthetic_zoo_dir(zoo, root / "tf1", seed=0)
    report = convert(
        synthetic,
        root / "tf2",
        verify_images=coco_tiny / "val2017",
        max_verify_images=NUM_IMAGES,
        progress=False,
    )
    return synthetic, root / "tf2", report


def test_anchors_equal_the_real_graphs(converted) -> None:
    from pipeline.modeling.anchors import tf1_anchor_boxes
    from pipeline.tf1.graph_runner import TF1GraphRunner

    synthetic, _, _ = converted
    with TF1GraphRunner(synthetic, graph="meta") as runner:
        graph_anchors = runner.anchors((640, 640))
    anchors = tf1_anchor_boxes(ssd_spec_from_config(synthetic))
    assert anchors.shape == (NUM_ANCHORS, 4)
    np.testing.assert_array_equal(anchors, graph_anchors)


def test_convert_passes_parity_with_the_real_tf1_8_graph(converted) -> None:
    _, _, report = converted
    assert report["complete"] and report["source"]["architecture"] == "ssd_mobilenet_v1_fpn"
    assert report["tf1"]["unmapped"] == [] and report["tf2"]["uninitialised"] == []
    assert report["tf1"]["mapped"] == report["tf1"]["total"] - 1 == 333
    assert report["post_processing"]["box_clipping"] == "before_nms"  # a TF 1.8 graph
    parity = report["parity"]
    assert parity["passed"], parity
    assert parity["detections_checked"] == 50 * NUM_IMAGES
    assert parity["detections_matched"] == parity["detections_checked"]
    assert parity["class_logits_max_abs_tf1"] > 1.0
    for image in parity["images"]:
        assert len(image["class_logits"]["per_level_max_abs_diff"]) == 5


def test_a_one_level_difference_is_named_by_its_fpn_level(converted, coco_tiny: Path) -> None:
    from pipeline.conversion.parity import verify_conversion
    from pipeline.modeling import load_converted

    synthetic, out, _ = converted
    model, spec = load_converted(out)
    norm = model.head._box_norms[3][0]  # box tower conv2d_0, BatchNorm/feature_3 (P6)
    norm.beta.assign(norm.beta + 0.5)
    report = verify_conversion(
        synthetic, model, spec, images_dir=coco_tiny / "val2017", max_images=1
    )
    assert not report.passed
    per_level = report.images[0].box_encodings.per_level_max_abs_diff
    assert [level > 0 for level in per_level] == [False, False, False, True, False]
    assert report.images[0].class_logits.passed
    notes = " ".join(report.diagnosis)
    assert "levels [3] (P6 (fpn/bottom_up_Conv2d_14))" in notes


def test_fine_tunes_and_freeze_choices_resolve(converted, coco_tiny: Path, tmp_path: Path) -> None:
    from test_training_support import check_freezing_and_finetune

    _, out, _ = converted
    check_freezing_and_finetune(out, coco_tiny, tmp_path, num_classes=90)


def test_zoo_entry_composes() -> None:
    from pipeline.params import compose

    zoo = compose(Path("conf"), ["zoo=ssd_mobilenet_v1_fpn_coco"]).zoo
    assert zoo.architecture == "ssd_mobilenet_v1_fpn" and zoo.name == ZOO_MODEL
    assert zoo.url == f"http://download.tensorflow.org/models/object_detection/{ZOO_MODEL}.tar.gz"


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("depth: 256", "depth: 128", "weight_shared_convolutional_box_predictor.depth (128)"),
        ("num_layers_before_predictor: 4", "num_layers_before_predictor: 3",
         "weight_shared_convolutional_box_predictor.num_layers_before_predictor (3)"),
        ("scales_per_octave: 2", "scales_per_octave: 3",
         "multiscale_anchor_generator (anchors per location)"),
    ],
)  # fmt: skip
def test_a_config_that_does_not_describe_the_checkpoint_names_the_field(
    zoo: Path, tmp_path: Path, old: str, new: str, field: str
) -> None:
    from pipeline.conversion.mapping import plan_mapping
    from pipeline.modeling.builder import build_ssd_model

    text = (zoo / "pipeline.config").read_text()
    assert old in text
    spec = ssd_spec_from_config_text(tmp_path, text.replace(old, new, 1))
    with pytest.raises(PipelineError, match=re.escape(field)):
        plan_mapping(build_ssd_model(spec), spec, zoo / "model.ckpt")


def ssd_spec_from_config_text(tmp_path: Path, text: str):
    path = tmp_path / "pipeline.config"
    path.write_text(text)
    return ssd_spec_from_config(path)
