"""Faster R-CNN ResNet50 / ResNet101 (slim ResNet v1): the real zoo indexes map variable by
variable, the config reader's choices, and stage-by-stage parity with a resnet50 model exported
by the TF1 OD API's own code (`../shared/tf1_reference`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.tf1.faster_rcnn_config import faster_rcnn_spec_from_config

ZOOS = {
    "faster_rcnn_resnet50": ("faster_rcnn_resnet50_coco_2018_01_28", 50, 326),
    "faster_rcnn_resnet101": ("faster_rcnn_resnet101_coco_2018_01_28", 101, 581),
}


@pytest.mark.parametrize("architecture", sorted(ZOOS))
def test_zoo_configs_read(tf1_zoo_dir: Path, architecture: str) -> None:
    spec = faster_rcnn_spec_from_config(tf1_zoo_dir / ZOOS[architecture][0])
    assert spec.architecture == architecture and spec.num_classes == 90
    # resnet_arg_scope(batch_norm_epsilon=1e-5) in FasterRCNNResnetV1FeatureExtractor.
    assert spec.batch_norm_epsilon == 1e-5
    assert (spec.min_dimension, spec.max_dimension, spec.max_proposals) == (600, 1024, 100)
    assert (spec.initial_crop_size, spec.maxpool_kernel_size, spec.maxpool_stride) == (14, 2, 2)


def test_other_first_stage_stride_is_refused(tf1_zoo_dir: Path, tmp_path: Path) -> None:
    text = (tf1_zoo_dir / ZOOS["faster_rcnn_resnet50"][0] / "pipeline.config").read_text()
    config = tmp_path / "pipeline.config"
    config.write_text(
        text.replace("first_stage_features_stride: 16", "first_stage_features_stride: 8")
    )
    with pytest.raises(
        PipelineError,
        match=r"first_stage_features_stride is 8 \(only 16 for faster_rcnn_resnet50\)",
    ) as error:
        faster_rcnn_spec_from_config(config)
    assert "faster_rcnn_resnet50 or faster_rcnn_resnet101" in str(error.value)


def test_unit_strides_and_rates_follow_stack_blocks_dense() -> None:
    """Output stride 16: the stride sits on the last unit of block1 and block2, block3 runs at
    stride 1 and the (never read) first-stage block4 atrous at rate 2."""
    from pipeline.modeling.faster_rcnn.resnet_v1 import BLOCKS, SECOND_STAGE_BLOCK, unit_plan

    plan = list(unit_plan(BLOCKS[101], 4))
    assert len(plan) == 3 + 4 + 23 + 3
    strided = [(block, unit) for block, unit, _, stride, _ in plan if stride != 1]
    assert strided == [("block1", 3), ("block2", 4)]
    assert {rate for block, *_, rate in plan if block == "block4"} == {2}
    assert {rate for block, *_, rate in plan if block != "block4"} == {1}
    assert [unit[3:] for unit in unit_plan((SECOND_STAGE_BLOCK,), None)] == [(1, 1)] * 3


def test_every_supported_type_has_an_extractor_and_a_diagnosis() -> None:
    from pipeline.conversion.faster_rcnn.parity import StageParity, diagnose
    from pipeline.modeling.faster_rcnn.extractors import FEATURE_EXTRACTORS
    from pipeline.modeling.faster_rcnn.spec import SUPPORTED_ARCHITECTURES, FasterRCNNSpec

    assert set(FEATURE_EXTRACTORS) == set(SUPPORTED_ARCHITECTURES)
    extractor = FEATURE_EXTRACTORS["faster_rcnn_resnet101"]
    spec = FasterRCNNSpec(architecture="faster_rcnn_resnet101")
    assert extractor.first_stage_scope(spec) == "FirstStageFeatureExtractor/resnet_v1_101"
    failing = StageParity("a.jpg", {}, None, "rpn_box_encodings", False)
    (note,) = diagnose([failing], extractor.first_stage_causes)
    assert "channel-mean subtraction, the ResNet v1 first stage" in note


def test_box_decoding_equals_a_tf1_session_bit_for_bit() -> None:
    """A TF1 session's grappler turns `x / 10.0` into `x * (1 / 10.0)`: the Faster R-CNN decoder
    multiplies by the reciprocals (without, 1-4 ulp differences in proposals flipped a
    crop_and_resize border sample and a ResNet101 detection)."""
    import numpy as np
    import tensorflow as tf

    from pipeline.modeling.postprocess import decode_tf1_boxes

    rng = np.random.default_rng(0)
    codes = rng.normal(0.0, 3.0, [4096, 4]).astype(np.float32)
    corner = rng.uniform(0.0, 500.0, [4096, 2]).astype(np.float32)
    anchors = np.concatenate([corner, corner + rng.uniform(8.0, 300.0, [4096, 2])], axis=1)
    anchors = anchors.astype(np.float32)
    scales = (10.0, 10.0, 5.0, 5.0)
    graph = tf.Graph()
    with graph.as_default():
        inputs = [tf.compat.v1.placeholder(tf.float32, [None, 4]) for _ in range(2)]
        decoded = decode_tf1_boxes(inputs[0], inputs[1], scales)
    with tf.compat.v1.Session(graph=graph) as session:
        tf1 = session.run(decoded, {inputs[0]: codes, inputs[1]: anchors})
    reciprocal = decode_tf1_boxes(tf.constant(codes), tf.constant(anchors), scales, True).numpy()
    divided = decode_tf1_boxes(tf.constant(codes), tf.constant(anchors), scales).numpy()
    assert np.array_equal(reciprocal, tf1)
    assert not np.array_equal(divided, tf1)


@pytest.mark.parametrize("architecture", sorted(ZOOS))
def test_every_zoo_variable_maps(tf1_zoo_dir: Path, architecture: str) -> None:
    """Every variable of the real zoo index has its place in the model built from the zoo's
    pipeline.config, names and shapes equal (`plan_faster_rcnn_mapping` raises otherwise), and
    every model variable has its TF1 variable."""
    from pipeline.conversion.faster_rcnn.mapping import model_variables, plan_faster_rcnn_mapping
    from pipeline.modeling.faster_rcnn.model import build_faster_rcnn_model
    from pipeline.tf1.checkpoint import TF1Checkpoint

    name, depth, entries = ZOOS[architecture]
    spec = faster_rcnn_spec_from_config(tf1_zoo_dir / name)
    model = build_faster_rcnn_model(spec)
    checkpoint = TF1Checkpoint(tf1_zoo_dir / name)
    assert len(checkpoint.shapes) == entries
    plan = plan_faster_rcnn_mapping(model, spec, checkpoint)
    assert len(plan.assignments) == len(model_variables(model)) == entries - 1
    assert plan.tf1_ignored == ["global_step"]
    assert {n for n, _, _ in plan.assignments} == set(checkpoint.shapes) - {"global_step"}
    for tf1_name, variable, _ in plan.assignments:
        assert tuple(variable.shape) == checkpoint.shapes[tf1_name], tf1_name
    # TF1's first stage builds block4 too (nothing reads it): its weights are held, not run.
    block4 = f"FirstStageFeatureExtractor/resnet_v1_{depth}/block4/"
    unused = {id(v) for v in model.backbone.unused_block4.variables}
    held = [v for n, v, _ in plan.assignments if n.startswith(block4)]
    assert len(held) == len(unused) == 50 and {id(v) for v in held} == unused
    assert model.backbone.output_specs["4"][-1] == 1024


@pytest.fixture(scope="module")
def resnet50_reference_export(
    tf1_reference_export, small_faster_rcnn_config, tf1_zoo_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:  # fmt: skip
    """The zoo resnet50 config (keep_aspect_ratio 320..512, score threshold 0) built and exported
    by the TF1 OD API, holding synthetic weights of the real zoo index's layout
    (`synthetic_checkpoint`: its ResNet damping keeps scores unsaturated; the reference's own
    seeded weights saturate every softmax after 16 residual units)."""
    from pipeline.tf1.synthetic_checkpoint import (
        read_checkpoint_layout,
        synthetic_weights,
        write_tf1_checkpoint,
    )

    name = ZOOS["faster_rcnn_resnet50"][0]
    prefix = tmp_path_factory.mktemp("resnet50_weights") / "model.ckpt"
    write_tf1_checkpoint(prefix, synthetic_weights(read_checkpoint_layout(tf1_zoo_dir / name)))
    return tf1_reference_export(small_faster_rcnn_config(name), checkpoint=prefix)


@pytest.mark.slow
def test_tf1_reference_export_parity(
    resnet50_reference_export: Path, two_coco_images: Path, faster_rcnn_parity_check,
    tmp_path: Path,
) -> None:  # fmt: skip
    """`convert --verify-images` against the TF1 OD API's graph: RPN outputs, proposals,
    second-stage outputs and the top-50 detections of 2 COCO images."""
    from pipeline.conversion.convert import convert

    report = convert(
        resnet50_reference_export, tmp_path / "out", verify_images=two_coco_images,
        progress=False,
    )  # fmt: skip
    assert report["post_processing"]["box_clipping"] == "after_nms"
    assert report["complete"] and report["tf1"]["mapped"] == 325
    faster_rcnn_parity_check(report["parity"])
