"""SSD MobileNet v1 PPN (pooling pyramid + weight-shared box predictor with one shared tower),
converted exactly.

No real graph of this model is in the fixtures, so the OD API sample config
(`ssd_mobilenet_v1_ppn_shared_box_predictor_300x300_coco14_sync.config`) is exported by the TF1
OD API's own exporter with seeded weights (tf1_reference/make_zoo_dir.py), then:
- every variable of its checkpoint mapped by layer object (the shared `PredictionTower` to the
  head's box tower, which the class predictor reads too; Conv2d_12/13, built by TF1 but not read
  by the PPN, to the backbone; a frozen graph or SavedModel alone, which freezing pruned of
  them, converts with them zeroed and passes parity);
- anchors equal the graph's; `convert --verify-images` passes parity on 2 COCO images (raw
  outputs per level, TF1's top-50 detections); a change of one level's tower BatchNorm fails on
  that level alone and the diagnosis names its pooling layer;
- the converted model fine-tunes 2 steps; unsupported options name their field.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.tf1.pipeline_config import ssd_spec_from_config

ZOO_MODEL = "ssd_mobilenet_v1_ppn_shared_box_predictor_300x300_coco14_sync_2018_07_03"
SAMPLE = "ssd_mobilenet_v1_ppn_shared_box_predictor_300x300_coco14_sync.config"
NUM_IMAGES = 2
# 6 anchors (5 aspect ratios + the interpolated scale) on 19x19, 10x10, 5x5, 3x3, 2x2, 1x1.
NUM_ANCHORS = 6 * (19 * 19 + 10 * 10 + 5 * 5 + 3 * 3 + 2 * 2 + 1)


@pytest.fixture(scope="module")
def sample(od_api_configs: Path) -> Path:
    return od_api_configs / SAMPLE


def test_sample_config_translates_to_the_ppn_spec(sample: Path) -> None:
    spec = ssd_spec_from_config(sample)
    assert spec.architecture == "ssd_mobilenet_v1_ppn" and spec.is_ppn and not spec.is_fpn
    assert spec.image_size == (300, 300)
    assert spec.feature_extractor.override_base_feature_extractor_hyperparams
    predictor = spec.box_predictor
    assert predictor.weight_shared and predictor.share_prediction_tower
    assert (predictor.depth, predictor.num_layers_before_predictor) == (512, 1)
    assert predictor.kernel_size == 1
    assert predictor.class_prediction_bias_init == pytest.approx(-4.6)
    anchors = spec.anchors
    assert anchors.multiscale is None and anchors.num_layers == 6
    assert not anchors.reduce_boxes_in_lowest_layer
    assert spec.training.classification_loss == "weighted_sigmoid_focal"


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("num_layers: 6\n        min_scale", "num_layers: 5\n        min_scale",
         "ssd_anchor_generator.num_layers is 5 but ssd_mobilenet_v1_ppn makes 6"),
        ("reduce_boxes_in_lowest_layer: false", "reduce_boxes_in_lowest_layer: true",
         "ssd_anchor_generator.reduce_boxes_in_lowest_layer is true"),
        ("kernel_size: 1", "kernel_size: 1\n        use_depthwise: true",
         "weight_shared_convolutional_box_predictor.use_depthwise"),
        ("type: 'ssd_mobilenet_v1_ppn'", "type: 'ssd_mobilenet_v1'",
         "weight_shared_convolutional_box_predictor is supported with"),
    ],
)  # fmt: skip
def test_unsupported_options_name_their_field(
    sample: Path, tmp_path: Path, old: str, new: str, field: str
) -> None:
    text = sample.read_text()
    assert old in text
    path = tmp_path / "pipeline.config"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(PipelineError, match=re.escape(field)) as error:
        ssd_spec_from_config(path)
    assert "\n" not in str(error.value)


def test_the_shared_tower_runs_once_per_level() -> None:
    """One tower output per level feeds both predictors: in training each per-level BatchNorm
    takes one moving-average step per call (two would give 1 - m**2 of the batch mean)."""
    import tensorflow as tf

    from pipeline.modeling.heads import WeightSharedHead

    head = WeightSharedHead(
        min_level=4, max_level=5, num_classes=3, num_anchors_per_location=2, num_convs=1,
        num_filters=8, kernel_size=1, norm_momentum=0.9, share_prediction_tower=True,
    )  # fmt: skip
    features = {
        "4": tf.random.normal([2, 4, 4, 8], seed=1),
        "5": tf.random.normal([2, 2, 2, 8], seed=2),
    }
    head(features, training=True)
    conv = head._box_convs[0]
    for index, level in enumerate("45"):
        batch_mean = tf.reduce_mean(conv(features[level]), axis=[0, 1, 2]).numpy()
        moving_mean = head._box_norms[index][0].moving_mean.numpy()
        np.testing.assert_allclose(moving_mean, 0.1 * batch_mean, rtol=1e-5, atol=1e-7)
    # One tower conv, a BatchNorm (gamma, beta) per level, the two predictors (kernel, bias).
    assert len(head.trainable_variables) == 1 + 2 * 2 + 2 * 2


# The base layers TF1 builds but the PPN never reads (the pyramid starts at Conv2d_11_pointwise).
UNREAD_LAYERS = [
    f"FeatureExtractor/MobilenetV1/Conv2d_{index}_{kind}"
    for index in (12, 13)
    for kind in ("depthwise", "pointwise")
]


def _graph_weights(shapes: dict, pruned: list[str], pruned_to_outputs: bool = True):
    """A frozen graph's variable listing: `shapes` minus the layers named `pruned`."""
    from pipeline.tf1.weights import WeightSource

    source = WeightSource()
    source.form = source.location = "frozen_graph"
    source.unused = {}
    source.shapes = {n: s for n, s in shapes.items() if not n.startswith(tuple(pruned))}
    source.pruned_to_outputs = pruned_to_outputs
    return source


@pytest.mark.parametrize("config", [SAMPLE, "ssd_mobilenet_v1_coco.config"])
def test_a_frozen_graph_may_lack_only_the_layers_the_outputs_never_read(
    od_api_configs: Path, config: str
) -> None:
    """Freezing keeps what reaches the outputs: Conv2d_12/13 of the PPN (built by TF1, never
    read) may be absent from a frozen graph and are zeroed; absent from a checkpoint, or from
    an SSD MobileNet v1 graph, which reads Conv2d_13, they are an error naming the field."""
    from pipeline.conversion.mapping import plan_mapping
    from pipeline.modeling import build_ssd_model
    from pipeline.modeling.tf1_layout import model_records

    spec = ssd_spec_from_config(od_api_configs / config)
    model = build_ssd_model(spec)
    shapes = {
        name: tuple(int(d) for d in variable.shape)
        for record in model_records(model)
        for name, variable, _ in record.variables()
    }
    frozen = _graph_weights(shapes, UNREAD_LAYERS)
    if config == SAMPLE:
        plan = plan_mapping(model, spec, frozen)
        assert plan.complete and plan.pruned_layers == UNREAD_LAYERS
        assert len(plan.pruned) == 20 and len(plan.assignments) == len(shapes) - 20
    missing = "FeatureExtractor/MobilenetV1/Conv2d_12_depthwise/depthwise_weights"
    for weights in ((frozen,) if config != SAMPLE else ()) + (
        _graph_weights(shapes, UNREAD_LAYERS, pruned_to_outputs=False),
    ):
        with pytest.raises(PipelineError, match=f"{missing} .* is required by the config") as e:
            plan_mapping(model, spec, weights)
        assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def converted(sample: Path, tf1_reference_export, coco_tiny: Path, tmp_path_factory):
    from pipeline.conversion.convert import convert

    zoo = tf1_reference_export(sample)
    out = tmp_path_factory.mktemp("ssd_ppn") / "tf2"
    report = convert(
        zoo,
        out,
        verify_images=coco_tiny / "val2017",
        max_verify_images=NUM_IMAGES,
        progress=False,
    )
    return zoo, out, report


@pytest.mark.slow
def test_every_variable_is_mapped_by_layer(converted) -> None:
    from pipeline.conversion.mapping import plan_mapping
    from pipeline.modeling import load_converted

    zoo, out, report = converted
    model, spec = load_converted(out)
    plan = plan_mapping(model, spec, zoo / "model.ckpt")
    assert plan.complete and plan.tf1_ignored == ["global_step"]
    assert report["tf1"]["unmapped"] == [] and report["tf2"]["uninitialised"] == []
    assert report["tf1"]["mapped"] == report["tf1"]["total"] - 1 == len(plan.assignments)
    mapped = {name: record for name, _, record in plan.assignments}
    head = model.head
    tower = "WeightSharedConvolutionalBoxPredictor/PredictionTower/conv2d_0"
    assert mapped[f"{tower}/weights"].layer is head._box_convs[0]
    assert mapped[f"{tower}/BatchNorm/feature_5/moving_mean"].layer is head._box_norms[5][0]
    # One tower: the class predictor reads the box tower's layers.
    assert head._cls_convs is head._box_convs and head._cls_norms is head._box_norms
    assert not [name for name in mapped if re.search("(Class|Box)PredictionTower", name)]
    assert mapped["WeightSharedConvolutionalBoxPredictor/ClassPredictor/weights"].class_dependent
    # TF1 builds the base to Conv2d_13_pointwise though the pyramid starts at Conv2d_11.
    assert mapped["FeatureExtractor/MobilenetV1/Conv2d_13_pointwise/weights"].module == "backbone"
    assert not model.decoder.weights  # max pools only


@pytest.mark.slow
def test_anchors_equal_the_graphs(converted) -> None:
    from pipeline.modeling.anchors import tf1_anchor_boxes
    from pipeline.tf1.graph_runner import TF1GraphRunner

    zoo, _, _ = converted
    with TF1GraphRunner(zoo, graph="meta") as runner:
        graph_anchors = runner.anchors((300, 300))
    anchors = tf1_anchor_boxes(ssd_spec_from_config(zoo))
    assert anchors.shape == (NUM_ANCHORS, 4)
    np.testing.assert_array_equal(anchors, graph_anchors)


@pytest.mark.slow
def test_convert_passes_parity_with_the_od_api_export(converted) -> None:
    _, _, report = converted
    assert report["complete"] and report["source"]["architecture"] == "ssd_mobilenet_v1_ppn"
    parity = report["parity"]
    assert parity["passed"], parity
    assert parity["detections_checked"] == 50 * NUM_IMAGES
    assert parity["detections_matched"] == parity["detections_checked"]
    assert parity["class_logits_max_abs_tf1"] > 1.0
    for image in parity["images"]:
        assert len(image["class_logits"]["per_level_max_abs_diff"]) == 6
        assert len(image["box_encodings"]["per_level_max_abs_diff"]) == 6


@pytest.mark.slow
def test_a_one_level_difference_is_named_by_its_pooling_layer(converted, coco_tiny: Path) -> None:
    from pipeline.conversion.parity import verify_conversion
    from pipeline.modeling import load_converted

    zoo, out, _ = converted
    model, spec = load_converted(out)
    norm = model.head._box_norms[2][0]  # PredictionTower conv2d_0, BatchNorm/feature_2 (P6)
    norm.beta.assign(norm.beta + 0.5)
    report = verify_conversion(zoo, model, spec, images_dir=coco_tiny / "val2017", max_images=1)
    assert not report.passed
    image = report.images[0]
    # The shared tower feeds both predictors: both differ, on that level alone.
    for outputs in (image.box_encodings, image.class_logits):
        assert [level > 1e-4 for level in outputs.per_level_max_abs_diff] == [
            False, False, True, False, False, False
        ]  # fmt: skip
    assert "levels [2] (P6 (MaxPool2d_1_2x2))" in " ".join(report.diagnosis)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["frozen_inference_graph.pb", "saved_model"])
def test_the_frozen_graph_alone_converts_and_passes_parity(
    converted, coco_tiny: Path, tmp_path: Path, form: str
) -> None:
    """The export's frozen graph (or SavedModel) with its pipeline.config, as a user may have
    it: freezing pruned Conv2d_12/13; they are zeroed, named in the report, and the parity
    check against that graph passes."""
    import shutil

    from pipeline.conversion.convert import convert

    zoo, _, _ = converted
    source = tmp_path / "export"
    source.mkdir()
    shutil.copy(zoo / "pipeline.config", source)
    if form == "saved_model":
        shutil.copytree(zoo / form, source / form)
    else:
        shutil.copy(zoo / form, source)
    report = convert(
        source, tmp_path / "tf2", verify_images=coco_tiny / "val2017", max_verify_images=1,
        progress=False,
    )  # fmt: skip
    assert report["complete"] and report["pruned_layers"] == UNREAD_LAYERS
    assert len(report["tf2"]["zeroed_pruned_from_graph"]) == 20
    assert report["tf1"]["mapped"] + 20 == report["tf2"]["total"]
    assert report["parity"]["passed"], report["parity"]


@pytest.mark.slow
def test_fine_tunes_and_freeze_choices_resolve(converted, coco_tiny: Path, tmp_path: Path) -> None:
    from test_training_support import check_freezing_and_finetune

    _, out, _ = converted
    check_freezing_and_finetune(out, coco_tiny, tmp_path, num_classes=90)


def test_zoo_entry_composes() -> None:
    from pipeline.params import compose

    zoo = compose(Path("conf"), ["zoo=ssd_mobilenet_v1_ppn_coco"]).zoo
    assert zoo.architecture == "ssd_mobilenet_v1_ppn" and zoo.name == ZOO_MODEL
    assert zoo.url == f"http://download.tensorflow.org/models/object_detection/{ZOO_MODEL}.tar.gz"
