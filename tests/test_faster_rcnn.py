"""Faster R-CNN Inception v2: config, mapping, TF1 post-processing semantics and stage-by-stage
parity with real TF1 graphs (the TF 1.8 user export and a TF1 OD API reference export).
ResNet v1 backbones: test_faster_rcnn_resnet.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.tf1.faster_rcnn_config import faster_rcnn_spec_from_config

ZOO = "faster_rcnn_inception_v2_coco_2018_01_28"
USER = "faster_rcnn_inception_v2_cards_export_tf1.8"
F32 = np.float32


@pytest.fixture(scope="module")
def user_export(shared_fixtures: Path) -> Path:
    path = shared_fixtures / "tf1_user_models" / USER
    if not path.is_dir():
        pytest.skip(f"shared fixture not available: {path}")
    return path


def test_zoo_and_user_configs(tf1_zoo_dir: Path, user_export: Path) -> None:
    zoo = faster_rcnn_spec_from_config(tf1_zoo_dir / ZOO)
    assert zoo.num_classes == 90 and zoo.max_proposals == 100
    assert (zoo.min_dimension, zoo.max_dimension) == (600, 1024)
    assert zoo.anchors.scales == (0.25, 0.5, 1.0, 2.0) and zoo.anchors.offset == (0.0, 0.0)
    assert zoo.first_stage_nms.iou_threshold == float(F32(0.7))
    assert zoo.second_stage_nms.score_threshold == float(F32(0.3))
    assert (zoo.initial_crop_size, zoo.maxpool_kernel_size, zoo.maxpool_stride) == (14, 2, 2)
    user = faster_rcnn_spec_from_config(user_export)
    assert user.num_classes == 6 and user.max_proposals == 300
    assert user.second_stage_nms.max_total_detections == 300
    assert type(user).from_dict(json.loads(json.dumps(user.to_dict()))) == user


@pytest.mark.parametrize(
    ("path", "field", "what"),
    [
        ("tf1_zoo/mask_rcnn_inception_v2_coco_2018_01_28/pipeline.config",
         "predict_instance_masks", "Mask R-CNN"),
        ("od_api/sample_configs/rfcn_resnet101_coco.config", "second_stage_box_predictor",
         "R-FCN"),
    ],
)  # fmt: skip
def test_unsupported_two_stage_models_get_one_line(
    shared_fixtures: Path, path: str, field: str, what: str
) -> None:
    with pytest.raises(PipelineError) as error:
        faster_rcnn_spec_from_config(shared_fixtures / path)
    message = str(error.value)
    assert field in message and what in message and "\n" not in message
    assert "supported: faster_rcnn with feature_extractor.type faster_rcnn_inception_v2" in message


@pytest.fixture(scope="module")
def user_model(user_export: Path):
    from pipeline.modeling.faster_rcnn.model import build_faster_rcnn_model

    return build_faster_rcnn_model(faster_rcnn_spec_from_config(user_export))


def test_every_variable_maps_user_export_and_zoo_index(
    user_model, user_export: Path, tf1_zoo_dir: Path
) -> None:
    from pipeline.conversion.faster_rcnn.mapping import model_variables, plan_faster_rcnn_mapping
    from pipeline.tf1.checkpoint import TF1Checkpoint

    spec = user_model.spec
    checkpoint = TF1Checkpoint(user_export)
    plan = plan_faster_rcnn_mapping(user_model, spec, checkpoint)
    assert len(plan.assignments) == len(checkpoint.shapes) - 1 == 356
    assert plan.tf1_ignored == ["global_step"]
    assert len(model_variables(user_model)) == 356
    # The zoo index (90 classes): the same layout but the class-count dependent predictors.
    zoo = TF1Checkpoint(tf1_zoo_dir / ZOO)
    with pytest.raises(PipelineError, match=r"model.faster_rcnn.num_classes \(6\)"):
        plan_faster_rcnn_mapping(user_model, spec, zoo)
    fresh = plan_faster_rcnn_mapping(user_model, spec, zoo, fresh_class_predictors=True)
    assert len(fresh.assignments) == 352
    assert fresh.fresh_layers == [
        "SecondStageBoxPredictor/BoxEncodingPredictor",
        "SecondStageBoxPredictor/ClassPredictor",
    ]
    assert set(zoo.shapes) - set(fresh.tf1_mapped) - set(fresh.tf1_replaced) == {"global_step"}


def test_other_backbone_checkpoint_is_named(user_model, tf1_zoo_dir: Path) -> None:
    from pipeline.conversion.faster_rcnn.mapping import plan_faster_rcnn_mapping
    from pipeline.tf1.checkpoint import TF1Checkpoint

    other = TF1Checkpoint(tf1_zoo_dir / "faster_rcnn_resnet50_coco_2018_01_28")
    with pytest.raises(PipelineError, match=r"holds FirstStageFeatureExtractor/resnet_v1_50/"):
        plan_faster_rcnn_mapping(user_model, user_model.spec, other)


def test_box_clipping_before_and_after_nms() -> None:
    """TF1 2018 clips before NMS, later OD API code after: a box sticking out of the image
    overlaps its neighbour more once clipped."""
    import tensorflow as tf

    from pipeline.modeling.faster_rcnn.layers import tf1_batch_nms
    from pipeline.modeling.faster_rcnn.spec import NMSSpec

    # Window 0..10. A: 0..10 x -10..10 (clipped: 0..10 x 0..10), B: 0..10 x 0..10.
    # IoU(A, B) = 0.5 unclipped, 1.0 clipped; threshold 0.7.
    boxes = tf.constant([[[[0.0, -10.0, 10.0, 10.0]], [[0.0, 0.0, 10.0, 10.0]]]])
    scores = tf.constant([[[0.9], [0.8]]])
    window = tf.constant([[0.0, 0.0, 10.0, 10.0]])
    nms = NMSSpec(0.0, 0.7, 10, 10)
    _, s1, _, n1 = tf1_batch_nms(boxes, scores, window, nms, "before_nms", True)
    b2, s2, _, n2 = tf1_batch_nms(boxes, scores, window, nms, "after_nms", True)
    assert int(n1[0]) == 1 and np.allclose(s1[0, :1], [0.9])
    assert int(n2[0]) == 2 and np.allclose(s2[0, :2], [0.9, 0.8])
    # Both clip and normalize to the window in the end.
    assert np.allclose(b2[0, :2], [[0, 0, 1, 1], [0, 0, 1, 1]])


@pytest.mark.parametrize("clipping", ["before_nms", "after_nms"])
def test_equal_scores_go_to_the_lower_proposal_and_class_as_in_tf1(clipping: str) -> None:
    """Saturated second-stage scores tie exactly (softmax gives 1.0). TF1 runs the
    NonMaxSuppression kernel class by class over each class's own boxes (equal scores: the lower
    proposal first) and ranks the survivors with a stable sort (equal scores: the lower class
    first); combined NMS breaks such ties in heap order."""
    import tensorflow as tf
    from test_postprocessing_eras import _iou

    from pipeline.modeling.faster_rcnn.layers import tf1_batch_nms
    from pipeline.modeling.faster_rcnn.spec import NMSSpec

    rng = np.random.default_rng(0)
    x = np.arange(40, dtype=np.float32) * 0.2
    # A box per class: class 1's are class 0's moved down; all of class 0 score 1.0.
    class0 = np.stack([np.full(40, 2.0), x, np.full(40, 6.0), x + 1.0], axis=1)
    class1 = class0 + np.array([1.0, 0.0, 1.0, 0.0])
    order = rng.permutation(40)
    boxes = np.stack([class0, class1], axis=1)[order].astype(np.float32)  # [40, 2, 4]
    scores = np.stack([np.ones(40), np.full(40, 0.5)], axis=1).astype(np.float32)
    window = tf.constant([[0.0, 0.0, 10.0, 10.0]])
    out_boxes, out_scores, out_classes, num = tf1_batch_nms(
        tf.constant(boxes[None]), tf.constant(scores[None]), window, NMSSpec(0.0, 0.5, 10, 12),
        clipping, change_frame=False,
    )  # fmt: skip
    expected = []  # greedy in proposal order, per class; class 0's survivors rank first
    for k in range(2):
        kept: list[int] = []
        for i in range(40):
            if len(kept) < 10 and all(_iou(boxes[i, k], boxes[j, k]) <= 0.5 for j in kept):
                kept.append(i)
        expected += [(k, i) for i in kept]
    expected = expected[:12]
    n = int(num[0])
    assert n == 12
    np.testing.assert_array_equal(out_classes[0, :n], [k for k, _ in expected])
    np.testing.assert_array_equal(out_boxes[0, :n], [boxes[i, k] for k, i in expected])
    np.testing.assert_array_equal(out_scores[0, :n], [scores[i, k] for k, i in expected])


def test_user_graph_box_clipping_is_read(user_export: Path) -> None:
    from pipeline.tf1.graph_facts import detect_box_clipping

    assert detect_box_clipping([user_export / "model.ckpt.meta"]).value == "before_nms"


@pytest.fixture(scope="module")
def user_synthetic(user_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.tf1.synthetic_checkpoint import make_synthetic_zoo_dir

    return make_synthetic_zoo_dir(user_export, tmp_path_factory.mktemp("frcnn") / USER)


@pytest.mark.slow
def test_tf1_8_user_export_parity_predict_evaluate(
    user_synthetic: Path,
    coco_tiny: Path,
    two_coco_images: Path,
    faster_rcnn_parity_check,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The real TF 1.8 graph (synthetic weights of its exact layout) against the conversion,
    stage by stage on 2 COCO images; then predict and evaluate on the converted directory."""
    from pipeline.cli import main

    images = two_coco_images
    out = tmp_path / "converted"
    args = ["convert", "--tf1-dir", str(user_synthetic), "--out", str(out), "--verify-images",
            str(images), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "356/357 TF1 variables mapped" in capsys.readouterr().out
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["complete"] and report["tf2"]["uninitialised"] == []
    faster_rcnn_parity_check(report["parity"])

    assert main(["predict", "--model", str(out), "--images", str(images), "--out",
                 str(tmp_path / "pred.json"), "--no-progress"]) == 0  # fmt: skip
    predictions = json.loads((tmp_path / "pred.json").read_text())
    assert len(predictions) == 2 * 300  # score threshold 0, 300 detections per image
    records = tmp_path / "records"
    annotations = coco_tiny / "annotations" / "instances_val2017.json"
    assert (
        main(
            [
                "build-tfrecords",
                "--annotations",
                str(annotations),
                "--images",
                str(coco_tiny / "val2017"),
                "--out",
                str(records),
                "--no-progress",
            ]
        )
        == 0
    )
    assert main(["evaluate", "--model", str(out), "--tfrecords", str(records / "*.tfrecord"),
                 "--label-map", str(records / "label_map.json"), "--out",
                 str(tmp_path / "eval"), "--max-images", "2", "--no-progress",
                 # A 6-class model on COCO's label map: this checks the plumbing, not the AP.
                 "--allow-class-mismatch"]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and metrics["num_detections"] == 600


@pytest.mark.slow
def test_diagnosis_names_the_first_disagreeing_stage(
    user_synthetic: Path, coco_tiny: Path, tmp_path: Path
) -> None:
    from pipeline.conversion.faster_rcnn import parity as fp
    from pipeline.conversion.faster_rcnn.mapping import plan_faster_rcnn_mapping
    from pipeline.conversion.mapping import apply_plan
    from pipeline.modeling.faster_rcnn.model import build_faster_rcnn_model
    from pipeline.tf1.checkpoint import TF1Checkpoint
    from pipeline.tf1.graph_runner import load_image

    # The TF 1.8 graph clips before NMS; a model of the later era fails at the proposals and
    # the diagnosis names the era that reproduces TF1.
    spec = faster_rcnn_spec_from_config(user_synthetic)
    model = build_faster_rcnn_model(spec.with_box_clipping("after_nms"))
    checkpoint = TF1Checkpoint(user_synthetic)
    apply_plan(plan_faster_rcnn_mapping(model, spec, checkpoint), checkpoint)
    path = sorted((coco_tiny / "val2017").glob("*.jpg"))[0]
    (tmp_path / "images").mkdir()
    shutil.copyfile(path, tmp_path / "images" / path.name)
    report = fp.verify_faster_rcnn(user_synthetic, model, tmp_path / "images")
    assert not report["passed"] and report["images"][0]["first_failing_stage"] == "proposals"
    assert "with box_clipping=before_nms every stage agrees" in report["diagnosis"][-1]
    model.spec = spec
    model.roi_generator.box_clipping = model.detection_generator.box_clipping = "before_nms"

    image = load_image(path)
    (tf1,) = fp.run_tf1_stages(user_synthetic, [image])
    assert fp.compare_stages("a", tf1, fp.run_tf2_stages(model, image, tf1["proposals"])).passed
    bias = model.detection_head[0].class_predictor.bias
    bias.assign(bias + 0.5 * np.arange(bias.shape[0], dtype=np.float32))
    result = fp.compare_stages("a", tf1, fp.run_tf2_stages(model, image, tf1["proposals"]))
    assert result.first_failing_stage == "class_logits"
    assert "SecondStageBoxPredictor ClassPredictor" in fp.diagnose([result])[0]
    conv = model.rpn_head.conv.bias
    conv.assign(conv + 0.1)
    result = fp.compare_stages("a", tf1, fp.run_tf2_stages(model, image, tf1["proposals"]))
    assert result.first_failing_stage == "rpn_box_encodings"


@pytest.mark.slow
def test_tf1_reference_export_parity(
    tf1_reference_export, small_faster_rcnn_config, two_coco_images: Path,
    faster_rcnn_parity_check, tmp_path: Path,
) -> None:  # fmt: skip
    """A zoo-config model exported by the TF1 OD API's own (2.x-era) exporter: NMS before
    clipping. Smaller keep_aspect_ratio bounds and score threshold 0 (random weights score low)."""
    from pipeline.conversion.convert import convert

    export = tf1_reference_export(small_faster_rcnn_config(ZOO))
    report = convert(export, tmp_path / "out", verify_images=two_coco_images, progress=False)
    assert report["post_processing"]["box_clipping"] == "after_nms"
    assert report["complete"] and report["tf1"]["mapped"] == 356
    faster_rcnn_parity_check(report["parity"])


def test_converted_faster_rcnn_dir_is_described_and_fine_tuned_as_two_stage(
    tmp_path: Path,
) -> None:
    from pipeline.inference.detector import model_num_classes
    from pipeline.modeling.faster_rcnn.spec import FasterRCNNSpec
    from pipeline.training.config import FASTER_RCNN_EXPERIMENT, experiment_name
    from pipeline.training.task import load_spec

    spec = FasterRCNNSpec(num_classes=6)
    (tmp_path / "model_spec.json").write_text(json.dumps(spec.to_dict()))
    assert model_num_classes(tmp_path) == 6
    assert load_spec(tmp_path) == spec and load_spec(tmp_path, 3).num_classes == 3
    assert experiment_name(str(tmp_path)) == FASTER_RCNN_EXPERIMENT
