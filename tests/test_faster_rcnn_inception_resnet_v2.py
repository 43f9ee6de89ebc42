"""Faster R-CNN Inception-ResNet v2 atrous (slim inception_resnet_v2 at output stride 8): the config
reader's choices, the real zoo index mapped variable by variable, and stage-by-stage parity with
the zoo config exported by the TF1 OD API's own code (`../shared/tf1_reference`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.tf1.faster_rcnn_config import faster_rcnn_spec_from_config

ZOO = "faster_rcnn_inception_resnet_v2_atrous_coco_2018_01_28"
ENTRIES = 907  # global_step included


def test_zoo_config_reads(tf1_zoo_dir: Path) -> None:
    spec = faster_rcnn_spec_from_config(tf1_zoo_dir / ZOO)
    assert spec.architecture == "faster_rcnn_inception_resnet_v2" and spec.num_classes == 90
    # first_stage_features_stride 8 with stride-8 anchors; the RPN Conv dilated by 2.
    assert (spec.features_stride, spec.feature_level, spec.anchors.stride) == (8, "3", (8.0, 8.0))
    assert spec.first_stage_atrous_rate == 2
    assert spec.batch_norm_epsilon == 0.001  # inception_resnet_v2_arg_scope
    assert (spec.initial_crop_size, spec.maxpool_kernel_size, spec.maxpool_stride) == (17, 1, 1)
    assert (spec.min_dimension, spec.max_dimension, spec.max_proposals) == (600, 1024, 300)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("first_stage_features_stride: 8", "first_stage_features_stride: 16",
         r"first_stage_features_stride is 16 \(only 8 for faster_rcnn_inception_resnet_v2\)"),
        ("height_stride: 8", "height_stride: 16",
         r"height_stride/width_stride are 16/8 \(the feature stride, "
         r"first_stage_features_stride, is 8\)"),
    ],
)  # fmt: skip
def test_unproven_strides_are_refused(
    tf1_zoo_dir: Path, tmp_path: Path, old: str, new: str, message: str
) -> None:
    text = (tf1_zoo_dir / ZOO / "pipeline.config").read_text()
    assert old in text
    config = tmp_path / "pipeline.config"
    config.write_text(text.replace(old, new))
    with pytest.raises(PipelineError, match=message) as error:
        faster_rcnn_spec_from_config(config)
    assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def zoo_model(tf1_zoo_dir: Path):
    from pipeline.modeling.faster_rcnn.model import build_faster_rcnn_model

    spec = faster_rcnn_spec_from_config(tf1_zoo_dir / ZOO)
    return spec, build_faster_rcnn_model(spec)


def test_every_zoo_variable_maps(zoo_model, tf1_zoo_dir: Path) -> None:
    """Every variable of the real zoo index has its place in the model built from the zoo's
    pipeline.config, names and shapes equal (`plan_faster_rcnn_mapping` raises otherwise), and
    every model variable has its TF1 variable: BatchNorm without scale has no gamma on either
    side."""
    from pipeline.conversion.faster_rcnn.mapping import model_variables, plan_faster_rcnn_mapping
    from pipeline.modeling.faster_rcnn.model import model_records
    from pipeline.tf1.checkpoint import TF1Checkpoint

    spec, model = zoo_model
    checkpoint = TF1Checkpoint(tf1_zoo_dir / ZOO)
    assert len(checkpoint.shapes) == ENTRIES
    plan = plan_faster_rcnn_mapping(model, spec, checkpoint)
    assert plan.tf1_ignored == ["global_step"]
    assert {n for n, _, _ in plan.assignments} == set(checkpoint.shapes) - {"global_step"}
    for tf1_name, variable, _ in plan.assignments:
        assert tuple(variable.shape) == checkpoint.shapes[tf1_name], tf1_name
    assert len(model_variables(model)) == len(plan.assignments) == ENTRIES - 1
    norms = [r.layer for r in model_records(model) if r.kind == "batch_norm_no_scale"]
    assert len(norms) == 204 and not any(n.scale or n.gamma is not None for n in norms)
    # The block convs' `Conv2d_1x1` projections have biases and no BatchNorm.
    assert "FirstStageFeatureExtractor/InceptionResnetV2/Repeat_1/block17_20/Conv2d_1x1/biases" in {
        n for n, _, _ in plan.assignments
    }


def test_first_stage_is_stride_8_and_second_stage_reduces_crops(zoo_model) -> None:
    """SAME-aligned first stage: ceil(n / 8) at output stride 8, 1088 channels, block17 and the
    RPN Conv atrous; the second stage's VALID Mixed_7a takes 17 x 17 crops to 8 x 8 x 1536."""
    import tensorflow as tf

    spec, model = zoo_model
    features = model.backbone(tf.zeros([1, 65, 47, 3]))
    assert list(features) == ["3"] and features["3"].shape == (1, 9, 6, 1088)
    assert model.rpn_head.conv.dilation_rate == (2, 2)
    block17 = [
        r.layer for r in model.backbone.tf1_layout.records
        if "/block17_" in r.scope and r.scope.endswith("Conv2d_0b_1x7") and r.kind == "conv"
    ]  # fmt: skip
    assert len(block17) == 20 and {c.dilation_rate for c in block17} == {(2, 2)}
    crops = tf.zeros([2, spec.initial_crop_size, spec.initial_crop_size, 1088])
    assert model.detection_head[0].extractor(crops).shape == (2, 8, 8, 1536)


@pytest.fixture(scope="module")
def irv2_reference_export(
    tf1_reference_export, small_faster_rcnn_config, tf1_zoo_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:  # fmt: skip
    """The zoo config (keep_aspect_ratio 256..384, 64 proposals, score threshold 0) built and
    exported by the TF1 OD API, holding synthetic weights of the real zoo index's layout
    (`synthetic_checkpoint`: the residual scales keep activations alive; measured on the first
    coco_tiny image: top detection score 0.87, 50 distinct top-50 scores)."""
    from pipeline.tf1.synthetic_checkpoint import (
        read_checkpoint_layout,
        synthetic_weights,
        write_tf1_checkpoint,
    )

    prefix = tmp_path_factory.mktemp("irv2_weights") / "model.ckpt"
    write_tf1_checkpoint(prefix, synthetic_weights(read_checkpoint_layout(tf1_zoo_dir / ZOO)))
    config = small_faster_rcnn_config(ZOO, min_dimension=256, max_dimension=384, max_proposals=64)
    return tf1_reference_export(config, checkpoint=prefix)


@pytest.mark.slow
def test_tf1_reference_export_parity(
    irv2_reference_export: Path, two_coco_images: Path, faster_rcnn_parity_check,
    tmp_path: Path,
) -> None:  # fmt: skip
    """`convert --verify-images` against the TF1 OD API's graph: RPN outputs, proposals,
    second-stage outputs and the top-50 detections of 2 COCO images."""
    from pipeline.conversion.convert import convert

    report = convert(
        irv2_reference_export, tmp_path / "out", verify_images=two_coco_images, progress=False
    )
    assert report["complete"] and report["tf1"]["mapped"] == ENTRIES - 1
    assert report["tf2"]["initialised_from_tf1"] == report["tf2"]["total"] == ENTRIES - 1
    faster_rcnn_parity_check(report["parity"])
