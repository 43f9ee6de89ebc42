"""Issue 9, item 1: SSD post-processing of every TF1 era.

The OD API changed *when* multiclass NMS clips boxes to the image window in July 2018: the
2018_01..07_03 zoo graphs (TF <= 1.8) clip every box before NMS, later exports (TF 1.9-1.15, the
2.8 code in ../shared/tf1_reference) clip the NMS survivors. Proof here:
- the wiring of every real TF1 graph in ../shared/fixtures is read correctly (and the two eras are
  told apart by the graph, not by its TF version alone);
- a small constructed case where the two orders give different detections, each equal to what
  TF1's code does by hand;
- the real TF 1.14 user export (synthetic weights of its exact layout) converts with parity, and
  the 2018 behaviour forced on it fails with a diagnosis naming the fix;
- an export made by the TF1 OD API's own exporter converts with parity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.tf1.graph_facts import box_clipping_of_graph, detect_box_clipping, read_graph_def

# (fixture folder, TF version in its meta graph, where its NMS clips)
REAL_GRAPHS = [
    ("tf1_zoo/ssd_mobilenet_v1_coco_2018_01_28", "1.5.0", "before_nms"),
    ("tf1_zoo/ssd_mobilenet_v2_coco_2018_03_29", "1.5.0", "before_nms"),
    ("tf1_zoo/ssd_inception_v2_coco_2018_01_28", "1.5.0", "before_nms"),
    (
        "tf1_zoo/ssd_mobilenet_v1_fpn_shared_box_predictor_640x640_coco14_sync_2018_07_03",
        "1.8.0",
        "before_nms",
    ),
    ("tf1_zoo/ssd_mobilenet_v1_quantized_300x300_coco14_sync_2018_07_18", "1.9.0-rc0", "after_nms"),
    ("tf1_user_models/ssd_mobilenet_v1_person_export_tf1.14", "1.14.0", "after_nms"),
    ("tf1_user_models/ssd_mobilenet_v3_large_pose_export_tf1.14", "1.14.0", "after_nms"),
]
PERSON_EXPORT = "tf1_user_models/ssd_mobilenet_v1_person_export_tf1.14"


@pytest.mark.parametrize(("folder", "version", "clipping"), REAL_GRAPHS)
def test_box_clipping_is_read_from_each_real_graph(shared_fixtures, folder, version, clipping):
    meta = shared_fixtures / folder / "model.ckpt.meta"
    graph_def, tf_version = read_graph_def(meta)
    assert tf_version == version
    assert box_clipping_of_graph(graph_def) == clipping
    assert detect_box_clipping([meta]).value == clipping


def test_the_built_in_models_graph_clips_before_nms(builtin_zoo):
    """Its NMS loop is a library function (TF2-style control flow, pipeline.tf1.graph_builder)
    and its clip plain Minimum/Maximum ops, not an inlined `ClipToWindow` scope."""
    graph_def, _ = read_graph_def(builtin_zoo / "model.ckpt.meta")
    assert not any(node.op.startswith("NonMaxSuppression") for node in graph_def.node)
    assert box_clipping_of_graph(graph_def) == "before_nms"


def test_without_an_inference_graph_the_tf_version_or_the_later_default_decides(tmp_path):
    import tensorflow as tf

    training = tf.compat.v1.MetaGraphDef()
    training.meta_info_def.tensorflow_version = "1.8.0"
    (tmp_path / "old.meta").write_bytes(training.SerializeToString())
    training.meta_info_def.tensorflow_version = "1.13.1"
    (tmp_path / "new.meta").write_bytes(training.SerializeToString())
    assert detect_box_clipping([tmp_path / "old.meta"]).value == "before_nms"
    assert detect_box_clipping([tmp_path / "new.meta"]).value == "after_nms"
    fallback = detect_box_clipping([])
    assert fallback.value == "after_nms" and "--box-clipping" in fallback.reason


def _tf1_reference_nms(boxes, scores, clip_first, iou=0.5, per_class=10, total=10):
    """TF1's multiclass_non_max_suppression for one class, written out from the OD API source:
    2018 (clip + drop empty boxes, then NMS) or later (NMS, then clip + drop, then the total)."""
    import tensorflow as tf

    def clip(b):
        return np.clip(b, 0.0, 1.0)

    def area(b):
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    keep = scores > 0.0
    boxes, scores = boxes[keep], scores[keep]
    if clip_first:
        boxes = clip(boxes)
        nonempty = area(boxes) > 0
        boxes, scores = boxes[nonempty], scores[nonempty]
    selected = tf.image.non_max_suppression(boxes, scores, per_class, iou).numpy()
    boxes, scores = boxes[selected], scores[selected]
    if not clip_first:
        boxes = clip(boxes)
        nonempty = area(boxes) > 0
        boxes, scores = boxes[nonempty], scores[nonempty]
    return boxes[:total], scores[:total]


@pytest.mark.parametrize("clipping", ["before_nms", "after_nms"])
def test_the_two_orders_give_different_detections_each_as_tf1(clipping):
    import tensorflow as tf

    from pipeline.modeling.postprocess import tf1_multiclass_nms

    boxes = np.array(
        [
            [0.5, 0.8, 0.9, 1.6],  # mostly right of the image
            [0.5, 0.7, 0.9, 1.0],  # its clipped twin: IoU 0.22 unclipped, 0.67 clipped
            [1.2, 0.1, 1.5, 0.4],  # entirely below the image: empty once clipped
            [0.1, 0.1, 0.3, 0.3],
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.8, 0.95, 0.7], np.float32)
    out_boxes, out_scores, _, num = tf1_multiclass_nms(
        tf.constant(boxes[None]), tf.constant(scores[None, :, None]), 0.0, 0.5, 10, 10, clipping
    )
    n = int(num[0])
    expected_boxes, expected_scores = _tf1_reference_nms(boxes, scores, clipping == "before_nms")
    np.testing.assert_allclose(out_scores[0, :n], expected_scores)
    np.testing.assert_allclose(out_boxes[0, :n], expected_boxes)
    # before: the twins suppress each other once clipped; after: both survive.
    assert n == (2 if clipping == "before_nms" else 3)
    assert np.all(out_scores[0, n:] == 0.0)


def test_pruning_after_nms_promotes_candidates_beyond_the_total_limit():
    """Later TF1 clips and prunes the sorted NMS output *before* taking max_total_detections, so
    an empty box among the best does not take a slot."""
    import tensorflow as tf

    from pipeline.modeling.postprocess import tf1_multiclass_nms

    boxes = np.array([[1.2, 0.1, 1.5, 0.4], [0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.7, 0.7]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    _, out_scores, _, num = tf1_multiclass_nms(
        tf.constant(boxes[None]), tf.constant(scores[None, :, None]), 0.0, 0.5, 10, 2, "after_nms"
    )
    assert int(num[0]) == 2
    np.testing.assert_allclose(out_scores[0], [0.8, 0.7])


@pytest.mark.parametrize("clipping", ["before_nms", "after_nms"])
def test_equal_scores_go_to_the_lower_index_and_the_lower_class_as_in_tf1(clipping):
    """Saturated (or near-constant) scores tie exactly. TF1 runs the NonMaxSuppression kernel
    class by class (equal scores: the lower anchor index first) and ranks the concatenated
    survivors with a stable sort (equal scores: the lower class first). combined NMS, used
    before, breaks ties in heap order and kept other boxes (found on an OD API export of the
    MobileNet v1 FPN sample config whose seeded weights give near-constant scores)."""
    import tensorflow as tf

    from pipeline.modeling.postprocess import tf1_multiclass_nms

    rng = np.random.default_rng(0)
    # 40 overlapping boxes sliding right; all of class 0 score 1.0, all of class 1 score 0.5.
    x = np.arange(40, dtype=np.float32) * 0.02
    boxes = np.stack([np.full(40, 0.2), x, np.full(40, 0.6), x + 0.1], axis=1).astype(np.float32)
    boxes = boxes[rng.permutation(40)]
    scores = np.stack([np.ones(40), np.full(40, 0.5)], axis=1).astype(np.float32)
    out_boxes, out_scores, out_classes, num = tf1_multiclass_nms(
        tf.constant(boxes[None]), tf.constant(scores[None]), 0.0, 0.5, 10, 12, clipping
    )
    n = int(num[0])
    expected = []  # greedy, in index order, per class; class 0's survivors rank first
    for k in range(2):
        kept: list[int] = []
        for i in range(40):
            if len(kept) < 10 and all(_iou(boxes[i], boxes[j]) <= 0.5 for j in kept):
                kept.append(i)
        expected += [(k, i) for i in kept]
    expected = expected[:12]
    assert n == len(expected) == 12
    np.testing.assert_array_equal(out_classes[0, :n], [k for k, _ in expected])
    np.testing.assert_array_equal(out_boxes[0, :n], boxes[[i for _, i in expected]])
    np.testing.assert_array_equal(out_scores[0, :n], [scores[i, k] for k, i in expected])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(
        0.0, min(a[3], b[3]) - max(a[1], b[1])
    )
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


@pytest.fixture(scope="module")
def person_export(shared_fixtures, tmp_path_factory) -> Path:
    from pipeline.tf1.synthetic_checkpoint import make_synthetic_zoo_dir

    root = tmp_path_factory.mktemp("person")
    return make_synthetic_zoo_dir(shared_fixtures / PERSON_EXPORT, root / "tf1", seed=0)


def test_tf1_14_user_export_converts_with_parity(person_export, coco_tiny, tmp_path):
    from pipeline.conversion.convert import convert
    from pipeline.modeling.builder import read_spec

    report = convert(
        person_export,
        tmp_path / "tf2",
        verify_images=coco_tiny / "val2017",
        max_verify_images=4,
        progress=False,
    )
    parity = report["parity"]
    assert parity["passed"], parity["diagnosis"]
    assert parity["detections_matched"] == parity["detections_checked"] == 200
    assert report["post_processing"]["box_clipping"] == "after_nms"
    assert "model.ckpt.meta" in report["post_processing"]["why"]
    assert read_spec(tmp_path / "tf2").post_processing.box_clipping == "after_nms"
    markdown = (tmp_path / "tf2" / "conversion_report.md").read_text()
    assert "boxes clipped after nms" in markdown


def test_forcing_the_2018_order_on_a_later_export_fails_and_names_the_fix(
    person_export, coco_tiny, tmp_path
):
    from pipeline.conversion.convert import convert
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="parity with the TF1 graph FAILED"):
        convert(
            person_export,
            tmp_path / "tf2",
            verify_images=coco_tiny / "val2017",
            max_verify_images=2,
            progress=False,
            box_clipping="before_nms",
        )
    import json

    report = json.loads((tmp_path / "tf2" / "conversion_report.json").read_text())
    assert report["post_processing"]["why"].startswith("set by --box-clipping")
    assert any("--box-clipping after_nms" in line for line in report["parity"]["diagnosis"])


def test_tf1_od_api_exporter_output_converts_with_parity(
    tf1_reference_export, od_api_configs, coco_tiny, tmp_path
):
    """A zoo directory made by the TF1 OD API's own exporter (2.8-era code, later post-processing)
    from the sample ssd_mobilenet_v1 config."""
    from pipeline.conversion.convert import convert

    export = tf1_reference_export(od_api_configs / "ssd_mobilenet_v1_coco.config")
    report = convert(
        export, tmp_path / "tf2", verify_images=coco_tiny / "val2017", max_verify_images=3,
        progress=False,
    )  # fmt: skip
    assert report["post_processing"]["box_clipping"] == "after_nms"
    assert report["parity"]["passed"], report["parity"]["diagnosis"]
    assert report["complete"]
