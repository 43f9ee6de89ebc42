"""pipeline.config parsing: every OD API sample config and the zoo configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.modeling.spec import SSDSpec
from pipeline.tf1.pipeline_config import read_pipeline_config, ssd_spec_from_config

SUPPORTED_SAMPLES = {
    # file: (architecture, box predictor kernel, box predictor depthwise, extras depthwise)
    "ssd_mobilenet_v1_coco.config": ("ssd_mobilenet_v1", 1, False, False),
    "ssd_mobilenet_v2_coco.config": ("ssd_mobilenet_v2", 1, False, False),
    "ssdlite_mobilenet_v1_coco.config": ("ssd_mobilenet_v1", 3, True, True),
    "ssd_mobilenet_v1_0.75_depth_300x300_coco14_sync.config": ("ssd_mobilenet_v1", 1, False, False),
    "ssd_inception_v2_coco.config": ("ssd_inception_v2", 3, False, False),
}
UNSUPPORTED_SAMPLES = {
    "embedded_ssd_mobilenet_v1_coco.config": "embedded_ssd_mobilenet_v1",
    "faster_rcnn_inception_resnet_v2_atrous_coco.config": "faster_rcnn_inception_resnet_v2",
    "faster_rcnn_inception_v2_coco.config": "faster_rcnn_inception_v2",
    "faster_rcnn_resnet101_coco.config": "faster_rcnn_resnet101",
    "faster_rcnn_resnet50_coco.config": "faster_rcnn_resnet50",
    "mask_rcnn_inception_v2_coco.config": "faster_rcnn_inception_v2",
    "mask_rcnn_resnet50_atrous_coco.config": "faster_rcnn_resnet50",
    "rfcn_resnet101_coco.config": "faster_rcnn_resnet101",
}
# Parsed (and converted) in tests/test_ssd_fpn.py, tests/test_ssd_resnet_fpn.py and
# tests/test_ssd_ppn.py.
WEIGHT_SHARED_SAMPLES = (
    "ssd_mobilenet_v1_fpn_shared_box_predictor_640x640_coco14_sync.config",
    "ssd_resnet50_v1_fpn_shared_box_predictor_640x640_coco14_sync.config",
    "ssd_mobilenet_v1_ppn_shared_box_predictor_300x300_coco14_sync.config",
)
FOCAL_LOSS_SAMPLES = ("ssd_mobilenet_v1_0.75_depth_300x300_coco14_sync.config",)
# Quantized graphs (graph_rewriter.quantization): parsed in tests/test_quantized.py.
QUANTIZED_SAMPLES = (
    "ssd_mobilenet_v1_quantized_300x300_coco14_sync.config",
    "ssd_mobilenet_v2_quantized_300x300_coco.config",
)
F32 = np.float32


def test_every_sample_config_is_classified(od_api_configs: Path) -> None:
    names = {p.name for p in od_api_configs.glob("*.config")}
    classified = set(SUPPORTED_SAMPLES) | set(UNSUPPORTED_SAMPLES) | set(QUANTIZED_SAMPLES)
    assert names == classified | set(WEIGHT_SHARED_SAMPLES)


@pytest.mark.parametrize("name", sorted(SUPPORTED_SAMPLES))
def test_supported_sample_configs_parse(od_api_configs: Path, name: str) -> None:
    architecture, kernel, head_depthwise, extras_depthwise = SUPPORTED_SAMPLES[name]
    spec = ssd_spec_from_config(od_api_configs / name)
    assert spec.architecture == architecture
    assert spec.num_classes == 90
    assert spec.image_size == (300, 300)
    assert spec.box_predictor.kernel_size == kernel
    assert spec.box_predictor.use_depthwise is head_depthwise
    assert spec.feature_extractor.use_depthwise is extras_depthwise
    assert spec.feature_extractor.min_depth == 16
    assert spec.feature_extractor.batch_norm_epsilon == pytest.approx(0.001)
    assert spec.box_coder.scales == (10.0, 10.0, 5.0, 5.0)
    # Values keep the proto's float32 (anchors must be bit-exact).
    assert spec.anchors.aspect_ratios == tuple(float(F32(a)) for a in (1, 2, 0.5, 3, 0.3333))
    assert spec.anchors.reduce_boxes_in_lowest_layer  # proto default, not in the file
    assert spec.post_processing.score_converter == "SIGMOID"
    assert spec.post_processing.score_threshold == float(F32(1e-8))
    assert spec.post_processing.iou_threshold == float(F32(0.6))
    if name in FOCAL_LOSS_SAMPLES:
        assert spec.training.hard_example_miner is None
        assert spec.training.classification_loss == "weighted_sigmoid_focal"
    else:
        assert spec.training.hard_example_miner is not None
        assert spec.training.hard_example_miner.loss_type == "CLASSIFICATION"
        assert spec.training.classification_loss == "weighted_sigmoid"


@pytest.mark.parametrize("name", sorted(UNSUPPORTED_SAMPLES))
def test_unsupported_sample_configs_name_the_architecture(od_api_configs: Path, name: str) -> None:
    with pytest.raises(PipelineError) as error:
        ssd_spec_from_config(od_api_configs / name)
    message = str(error.value)
    assert name in message
    assert f"describes {UNSUPPORTED_SAMPLES[name]}," in message
    assert "feature_extractor.type ssd_mobilenet_v2, ssd_mobilenet_v1, " in message
    assert "\n" not in message


def test_zoo_configs(tf1_zoo_dir: Path) -> None:
    v2 = ssd_spec_from_config(tf1_zoo_dir / "ssd_mobilenet_v2_coco_2018_03_29")
    assert v2.architecture == "ssd_mobilenet_v2"
    assert v2.feature_extractor.use_depthwise is True
    assert v2.box_predictor.kernel_size == 3
    assert v2.post_processing.score_threshold == float(F32(0.3))
    assert v2.post_processing.max_detections_per_class == 100
    assert v2.training.hard_example_miner.min_negatives_per_image == 3
    v1 = ssd_spec_from_config(tf1_zoo_dir / "ssd_mobilenet_v1_coco_2018_01_28/pipeline.config")
    assert v1.architecture == "ssd_mobilenet_v1"
    assert v1.box_predictor.kernel_size == 1
    assert v1.feature_extractor.use_depthwise is False


def test_spec_json_round_trip(tf1_zoo_dir: Path) -> None:
    spec = ssd_spec_from_config(tf1_zoo_dir / "ssd_mobilenet_v2_coco_2018_03_29")
    again = SSDSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert again.with_num_classes(3).num_class_slots == 4
    with pytest.raises(ValueError, match="unknown fields"):
        SSDSpec.from_dict({**spec.to_dict(), "num_clases": 3})


def _zoo_text(tf1_zoo_dir: Path) -> str:
    return (tf1_zoo_dir / "ssd_mobilenet_v2_coco_2018_03_29/pipeline.config").read_text()


def test_unknown_fields_are_tolerated(tmp_path: Path, tf1_zoo_dir: Path) -> None:
    text = _zoo_text(tf1_zoo_dir).replace(
        "  ssd {\n",
        "  ssd {\n    some_future_field: 3\n    future_block { x: 1 y { z: 'a' } }\n",
        1,
    )
    text += "\nfuture_top_level { enabled: true }\n"
    path = tmp_path / "pipeline.config"
    path.write_text(text)
    assert read_pipeline_config(path).model.ssd.num_classes == 90
    assert ssd_spec_from_config(path).architecture == "ssd_mobilenet_v2"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.config"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        (
            "fixed_shape_resizer {\n        height: 300\n        width: 300\n      }",
            "keep_aspect_ratio_resizer {\n        min_dimension: 600\n      }",
            "model.ssd.image_resizer",
        ),
        ("use_depthwise: true", "use_depthwise: true\n      use_explicit_padding: true",
         "use_explicit_padding"),
        ("num_layers: 6", "num_layers: 5", "ssd_anchor_generator.num_layers"),
        ("max_depth: 0\n        num_layers_before_predictor: 0",
         "max_depth: 64\n        num_layers_before_predictor: 2", "num_layers_before_predictor"),
        ("score_converter: SIGMOID", "score_converter: SIGMOID\n      calibration_config {}",
         "calibration_config"),
    ],
)  # fmt: skip
def test_unsupported_options_name_their_field(
    tmp_path: Path, tf1_zoo_dir: Path, old: str, new: str, field: str
) -> None:
    text = _zoo_text(tf1_zoo_dir)
    assert old in text
    with pytest.raises(PipelineError, match=field.replace(".", r"\.")):
        ssd_spec_from_config(_write(tmp_path, text.replace(old, new, 1)))


def test_parse_error_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "model { ssd { num_classes: ninety } }")
    with pytest.raises(PipelineError, match="not a valid text-format TrainEvalPipelineConfig"):
        read_pipeline_config(path)
    with pytest.raises(PipelineError, match="file not found"):
        read_pipeline_config(tmp_path / "missing" / "pipeline.config")


def test_missing_model_block(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="not supported"):
        ssd_spec_from_config(_write(tmp_path, "train_config { batch_size: 4 }"))


def test_explicit_anchor_settings_are_read(tmp_path: Path, tf1_zoo_dir: Path) -> None:
    text = _zoo_text(tf1_zoo_dir).replace(
        "aspect_ratios: 0.333299994469",
        "aspect_ratios: 0.333299994469\n        reduce_boxes_in_lowest_layer: false\n"
        "        interpolated_scale_aspect_ratio: 0.0\n        base_anchor_height: 0.5\n"
        + "".join(f"        scales: {s}\n" for s in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)),
    )
    spec = ssd_spec_from_config(_write(tmp_path, text))
    assert spec.anchors.reduce_boxes_in_lowest_layer is False
    assert spec.anchors.interpolated_scale_aspect_ratio == 0.0
    assert spec.anchors.base_anchor_size == (0.5, 1.0)
    assert len(spec.anchors.scales) == 6


@pytest.mark.parametrize(
    ("extractor", "hint"),
    [
        ("ssd_mobiledet_cpu", ""),
        ("ssd_mobilenet_v2_fpn", ""),
        ("ssd_mobilenet_v1_keras", " (a TF2 Object Detection API model, already TF2)"),
    ],
)
def test_unsupported_ssd_extractors_are_refused_in_one_line(
    tmp_path: Path, tf1_zoo_dir: Path, extractor: str, hint: str
) -> None:
    text = _zoo_text(tf1_zoo_dir).replace('type: "ssd_mobilenet_v2"', f'type: "{extractor}"', 1)
    assert extractor in text
    with pytest.raises(PipelineError) as error:
        ssd_spec_from_config(_write(tmp_path, text))
    message = str(error.value)
    assert f"model describes {extractor}{hint}, which is not supported; supported: " in message
    assert "\n" not in message and "ssd_resnet50_v1_fpn" in message
