"""SSD ResNet v1 FPN (RetinaNet: `ssd_resnet{50,101,152}_v1_fpn`), converted exactly.

No real graph of these models can be downloaded here, so the TF1 OD API's own code
(`../shared/tf1_reference`) is the oracle, on the OD API sample config
`ssd_resnet50_v1_fpn_shared_box_predictor_640x640_coco14_sync.config` at 256x256 (everything
else as in the sample; the resnet101/152 copies change only `feature_extractor.type`):
- the variables TF1 builds (names and shapes) are the ones the model built from the same config
  records, for 50, 101 and 152;
- a resnet50 model exported by the TF1 exporter, holding synthetic weights of its own layout
  (`synthetic_checkpoint`, whose ResNet damping keeps the features alive), converts with every
  variable mapped and passes parity on 2 COCO images (raw outputs per FPN level, TF1's top-50
  detections); the same weights with ReLU in place of the config's relu6 in the ResNet units
  fail it (the override reaches the base);
- its training losses (focal classification, smooth L1, L2 of the config's conv_hyperparams on
  the base) equal those of the TF1 OD API's training graph, the L2 set without the override is
  TF1's (resnet_arg_scope's 1e-4 on the base), and 2 fine-tune steps run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.tf1.pipeline_config import ssd_spec_from_config

SAMPLE = "ssd_resnet50_v1_fpn_shared_box_predictor_640x640_coco14_sync.config"
ZOO_MODEL = "ssd_resnet50_v1_fpn_shared_box_predictor_640x640_coco14_sync_2018_07_03"
SCRIPTS = Path(__file__).parent / "tf1_scripts"
DEPTHS = (50, 101, 152)
SIZE = 256
NUM_IMAGES = 2
# sample config variables: 463 + global_step (resnet_v1_50: 265, FPN: 18, head: 180).
NUM_VARIABLES = 463


@pytest.fixture(scope="module")
def small_configs(od_api_configs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """{depth: the sample config at SIZE x SIZE with feature_extractor.type ssd_resnet{depth}}."""
    text = (od_api_configs / SAMPLE).read_text()
    for old in ("height: 640", "width: 640", "type: 'ssd_resnet50_v1_fpn'"):
        assert old in text, old
    text = text.replace("height: 640", f"height: {SIZE}").replace("width: 640", f"width: {SIZE}")
    root = tmp_path_factory.mktemp("resnet_fpn_configs")
    configs = {}
    for depth in DEPTHS:
        configs[depth] = root / f"ssd_resnet{depth}_v1_fpn.config"
        configs[depth].write_text(text.replace("ssd_resnet50_v1_fpn", f"ssd_resnet{depth}_v1_fpn"))
    return configs


def test_sample_config_translates(od_api_configs: Path) -> None:
    from pipeline.modeling.builder import model_config

    spec = ssd_spec_from_config(od_api_configs / SAMPLE)
    assert spec.architecture == "ssd_resnet50_v1_fpn" and spec.is_fpn
    assert spec.image_size == (640, 640)
    extractor = spec.feature_extractor
    assert extractor.fpn is not None
    assert (extractor.fpn.min_level, extractor.fpn.max_level) == (3, 7)
    assert (extractor.fpn.additional_layer_depth, extractor.min_depth) == (256, 16)
    assert extractor.override_base_feature_extractor_hyperparams
    assert extractor.activation == "relu6"
    assert extractor.batch_norm_epsilon == pytest.approx(0.001)
    predictor = spec.box_predictor
    assert predictor.weight_shared and (predictor.depth, predictor.num_layers_before_predictor) == (
        256,
        4,
    )
    training = spec.training
    assert training.classification_loss == "weighted_sigmoid_focal"
    assert (training.focal_gamma, training.focal_alpha) == (2.0, 0.25)
    assert training.encode_background_as_zeros and training.normalize_loc_loss_by_codesize
    # The override puts the config's relu6 into the ResNet units; without it, resnet_arg_scope's
    # ReLU.
    backbone = model_config(spec).backbone
    assert backbone.type == "tf1_ssd_resnet_v1"
    assert (backbone.tf1_ssd_resnet_v1.depth, backbone.tf1_ssd_resnet_v1.activation) == (
        50,
        "relu6",
    )
    plain = dataclasses.replace(
        spec,
        feature_extractor=dataclasses.replace(
            extractor, override_base_feature_extractor_hyperparams=False
        ),
    )
    assert model_config(plain).backbone.tf1_ssd_resnet_v1.activation == "relu"


def test_preprocessing_subtracts_the_channel_means(od_api_configs: Path) -> None:
    import tensorflow as tf

    from pipeline.modeling.preprocessing import preprocess

    spec = ssd_spec_from_config(od_api_configs / SAMPLE)
    image = np.full([1, 640, 640, 3], 200, np.uint8)
    out = preprocess(tf.constant(image), spec).numpy()
    np.testing.assert_allclose(out[0, 0, 0], [200 - 123.68, 200 - 116.779, 200 - 103.939], 1e-6)


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ("depth_multiplier: 1.0", "depth_multiplier: 1.0\n      use_explicit_padding: true",
         "feature_extractor.use_explicit_padding is true"),
        ("epsilon: 0.001,\n        }\n      }\n      override",
         "epsilon: 0.001,\n          center: false\n        }\n      }\n      override",
         "feature_extractor.conv_hyperparams.batch_norm.center is false"),
        ("type: 'ssd_resnet50_v1_fpn'", "type: 'ssd_resnet50_v1_ppn'",
         "describes ssd_resnet50_v1_ppn, which is not supported"),
    ],
)  # fmt: skip
def test_unsupported_options_name_their_field(
    od_api_configs: Path, tmp_path: Path, old: str, new: str, error: str
) -> None:
    text = (od_api_configs / SAMPLE).read_text()
    assert old in text
    path = tmp_path / "pipeline.config"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(PipelineError, match=re.escape(error)) as raised:
        ssd_spec_from_config(path)
    assert "\n" not in str(raised.value)


def test_use_depthwise_is_ignored_as_tf1_ignores_it(od_api_configs: Path, tmp_path: Path) -> None:
    """SSDResnetV1FpnFeatureExtractor takes use_depthwise ("UNUSED currently") and builds the
    same model."""
    text = (od_api_configs / SAMPLE).read_text()
    path = tmp_path / "pipeline.config"
    path.write_text(text.replace("min_depth: 16", "min_depth: 16\n      use_depthwise: true", 1))
    assert ssd_spec_from_config(path) == ssd_spec_from_config(od_api_configs / SAMPLE)


def test_zoo_entry_composes() -> None:
    from pipeline.params import compose

    zoo = compose(Path("conf"), ["zoo=ssd_resnet50_v1_fpn_coco"]).zoo
    assert zoo.architecture == "ssd_resnet50_v1_fpn" and zoo.name == ZOO_MODEL
    assert zoo.url == f"http://download.tensorflow.org/models/object_detection/{ZOO_MODEL}.tar.gz"


@pytest.fixture(scope="module")
def tf1_variables(tf1_reference_python: Path, tf1_reference_dir: Path, small_configs) -> dict:
    """{depth: {name: shape}} of the models the TF1 OD API builds from the small configs."""
    paths = [str(small_configs[depth]) for depth in DEPTHS]
    result = subprocess.run(
        [str(tf1_reference_python), str(SCRIPTS / "list_variables.py"), str(tf1_reference_dir),
         *paths],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    listing = json.loads(result.stdout)
    return {depth: listing[path] for depth, path in zip(DEPTHS, paths, strict=True)}


@pytest.mark.slow
@pytest.mark.parametrize(
    "depth", [50, *(pytest.param(d, marks=pytest.mark.extended) for d in DEPTHS[1:])]
)
def test_variables_are_the_tf1_od_apis(depth: int, small_configs, tf1_variables) -> None:
    from pipeline.modeling.builder import build_ssd_model
    from pipeline.modeling.tf1_layout import model_records

    spec = ssd_spec_from_config(small_configs[depth])
    model = build_ssd_model(spec)
    ours = {
        name: list(variable.shape)
        for record in model_records(model)
        for name, variable, _ in record.variables()
    }
    expected = dict(tf1_variables[depth])
    del expected["global_step"]
    assert sorted(ours) == sorted(expected)
    assert ours == expected
    scope = f"FeatureExtractor/resnet_v1_{depth}"
    assert f"{scope}/fpn/bottom_up_block6/BatchNorm/gamma" in ours
    assert f"{scope}/block4/unit_3/bottleneck_v1/conv3/weights" in ours
    assert len(model.trainable_variables) + len(model.non_trainable_variables) == len(ours)


@pytest.fixture(scope="module")
def reference_export(
    tf1_reference_export, small_configs, tf1_variables, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The resnet50 config built and exported by the TF1 OD API, holding synthetic weights of
    its own layout (the reference's seeded weights leave the ResNet stream saturated: every
    image then gives the same raw outputs, which would prove little)."""
    from pipeline.tf1.synthetic_checkpoint import synthetic_weights, write_tf1_checkpoint

    layout = {
        name: (tuple(shape), "int64" if name == "global_step" else "float32")
        for name, shape in tf1_variables[50].items()
    }
    prefix = tmp_path_factory.mktemp("resnet_fpn_weights") / "model.ckpt"
    write_tf1_checkpoint(prefix, synthetic_weights(layout))
    return tf1_reference_export(small_configs[50], checkpoint=prefix)


@pytest.fixture(scope="module")
def converted(reference_export: Path, coco_tiny: Path, tmp_path_factory) -> tuple[Path, dict]:
    from pipeline.conversion.convert import convert

    out = tmp_path_factory.mktemp("resnet_fpn") / "tf2"
    report = convert(
        reference_export,
        out,
        verify_images=coco_tiny / "val2017",
        max_verify_images=NUM_IMAGES,
        progress=False,
    )
    return out, report


@pytest.mark.slow
def test_convert_passes_parity_with_the_tf1_od_apis_export(converted) -> None:
    _, report = converted
    assert report["complete"] and report["source"]["architecture"] == "ssd_resnet50_v1_fpn"
    assert report["tf1"]["unmapped"] == [] and report["tf2"]["uninitialised"] == []
    assert report["tf1"]["mapped"] == report["tf1"]["total"] - 1 == NUM_VARIABLES
    assert report["post_processing"]["box_clipping"] == "after_nms"
    parity = report["parity"]
    assert parity["passed"], parity
    assert parity["detections_checked"] == parity["detections_matched"] == 50 * NUM_IMAGES
    assert parity["class_logits_max_abs_tf1"] > 1.0
    images = parity["images"]
    assert all(len(image["class_logits"]["per_level_max_abs_diff"]) == 5 for image in images)
    # Live features: the two images' outputs differ.
    assert images[0]["class_logits"]["max_abs_tf1"] != images[1]["class_logits"]["max_abs_tf1"]


@pytest.mark.slow
@pytest.mark.extended
def test_relu_in_place_of_the_overriding_relu6_fails_parity(
    converted, reference_export: Path, coco_tiny: Path
) -> None:
    from pipeline.conversion.parity import verify_conversion
    from pipeline.modeling import load_converted
    from pipeline.modeling.builder import build_ssd_model

    out, _ = converted
    model, spec = load_converted(out)
    extractor = dataclasses.replace(
        spec.feature_extractor, override_base_feature_extractor_hyperparams=False
    )
    relu = build_ssd_model(dataclasses.replace(spec, feature_extractor=extractor))
    relu.set_weights(model.get_weights())
    report = verify_conversion(
        reference_export, relu, spec, images_dir=coco_tiny / "val2017", max_images=1
    )
    assert not report.passed
    assert not report.images[0].class_logits.passed
    assert "differ on every level" in report.diagnosis[0]
    assert "the ResNet v1 base (conv2d_same root, BN epsilon 1e-5" in report.diagnosis[0]


@pytest.fixture(scope="module")
def batch(tf1_reference_python, tf1_reference_dir, coco_tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("batch") / "batch.npz"
    subprocess.run(
        [str(tf1_reference_python), str(tf1_reference_dir / "make_batch.py"), str(coco_tiny),
         "train2017", str(out), "--batch", "2", "--size", str(SIZE)],
        check=True, capture_output=True,
    )  # fmt: skip
    return out


@pytest.mark.slow
def test_training_losses_equal_the_tf1_od_apis(
    converted, reference_export: Path, batch: Path, tf1_reference_python, tf1_reference_dir
) -> None:
    """Focal classification loss (alpha 0.25, gamma 2, background encoded as zeros), smooth L1
    normalised by the code size, and L2 0.0004 on every kernel of the base, FPN and head (the
    override puts the config's regularizer on the ResNet)."""
    from test_training_losses_tf1 import _tf2_losses, check_losses_equal
    from test_training_support import tf1_losses

    out, _ = converted
    tf1 = tf1_losses(tf1_reference_python, tf1_reference_dir, reference_export, batch)
    check_losses_equal(tf1, _tf2_losses(out, batch))


@pytest.mark.slow
@pytest.mark.extended
def test_regularized_weights_without_the_override_are_tf1s(
    small_configs, tf1_reference_python, tf1_reference_dir, tmp_path: Path
) -> None:
    """Without override_base_feature_extractor_hyperparams the base keeps resnet_arg_scope's L2
    (1e-4), the FPN and head the config's (4e-4): the TF1 training graph's regularization losses
    (tests/tf1_scripts/regularized_weights.py) name the same kernels with the same weights."""
    from test_regularization import check_regularized_weights_are_tf1s

    text = small_configs[50].read_text()
    old = "override_base_feature_extractor_hyperparams: true"
    assert old in text
    path = tmp_path / "pipeline.config"
    path.write_text(text.replace(old, "override_base_feature_extractor_hyperparams: false"))
    expected = check_regularized_weights_are_tf1s(tf1_reference_python, tf1_reference_dir, path)
    base = "FeatureExtractor/resnet_v1_50/block2/unit_1/bottleneck_v1/conv2/weights"
    assert expected[base] == pytest.approx(0.0001, rel=1e-5)
    assert expected["FeatureExtractor/resnet_v1_50/fpn/smoothing_1/weights"] == pytest.approx(
        0.0004, rel=1e-5
    )


@pytest.mark.slow
def test_fine_tunes_and_freeze_choices_resolve(converted, coco_tiny: Path, tmp_path: Path) -> None:
    from test_training_support import check_freezing_and_finetune

    out, _ = converted
    check_freezing_and_finetune(out, coco_tiny, tmp_path, num_classes=90)
