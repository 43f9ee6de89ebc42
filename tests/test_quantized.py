"""Quantized SSDs (`graph_rewriter { quantization {} }`, TF1's tf.contrib.quantize): the real
zoo indexes map completely (float weights and fake-quant ranges), the converted v1 model
reproduces the real TF 1.9 fake-quant graph (synthetic weights and ranges of its exact layout),
unsupported combinations and quantization-aware fine-tuning are refused in one line."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.conversion.convert import convert
from pipeline.conversion.mapping import plan_mapping
from pipeline.errors import PipelineError
from pipeline.modeling.builder import build_ssd_model, load_converted
from pipeline.modeling.spec import QuantizationSpec
from pipeline.modeling.tf1_layout import model_records
from pipeline.tf1.checkpoint import TF1Checkpoint
from pipeline.tf1.pipeline_config import ssd_spec_from_config
from pipeline.tf1.weights import CheckpointWeights

V1Q = "ssd_mobilenet_v1_quantized_300x300_coco14_sync_2018_07_18"
V2Q = "ssd_mobilenet_v2_quantized_300x300_coco_2019_01_03"
QUANT_RANGE = re.compile(r"_quant/(min|max)$")
ZOO_QUANTIZATION = QuantizationSpec(delay=48000, weight_bits=8, activation_bits=8)


@pytest.mark.parametrize(
    ("name", "moving_average", "ranges", "bookkeeping", "shadows", "residuals"),
    [
        (V1Q, False, 188, 1, 0, []),
        # MobileNet v2's 10 stride-1 blocks that keep their depth add a residual, quantized by
        # TF1's `post_activation_bypass_quant`.
        (V2Q, True, 308, 738, 204, [2, 4, 5, 7, 8, 9, 11, 12, 14, 15]),
    ],
)
def test_quantized_index_maps_fully(
    tf1_zoo_dir: Path,
    name: str,
    moving_average: bool,
    ranges: int,
    bookkeeping: int,
    shadows: int,
    residuals: list[int],
) -> None:
    """Every float weight and every `weights_quant` / `act_quant` /
    `post_activation_bypass_quant` range of the real index has its TF2 variable, and the other
    way round; the ranges' EMA state, step counters, slots and shadows are the only leftovers."""
    spec = ssd_spec_from_config(tf1_zoo_dir / name)
    assert spec.quantization == ZOO_QUANTIZATION
    model = build_ssd_model(spec)
    checkpoint = TF1Checkpoint(tf1_zoo_dir / name)
    weights = CheckpointWeights(checkpoint, moving_average, "test")
    plan = plan_mapping(model, spec, weights)
    assert plan.complete and not plan.implied and not plan.fresh
    assert sorted(plan.tf1_mapped) == sorted(weights.shapes)
    quant = [n for n in plan.tf1_mapped if QUANT_RANGE.search(n)]
    assert len(quant) == ranges
    assert len(weights.unused_names) == bookkeeping
    assert len(weights.replaced_by_shadows) == shadows
    assert len(plan.tf1_mapped) + bookkeeping + shadows == len(checkpoint.shapes)
    fake_quant = [r for r in model_records(model) if r.kind == "fake_quant"]
    assert len(fake_quant) * 2 == ranges
    bypass = [r.scope.split("/")[-2] for r in fake_quant if "bypass" in r.scope]
    assert sorted(int(scope.rsplit("_", 1)[1]) for scope in bypass) == residuals
    all_variables = {id(v) for m in model.checkpoint_items.values() for v in m.variables}
    assert {id(v) for _, v, _ in plan.assignments} == all_variables


@pytest.fixture(scope="module")
def quantized_zoo(tmp_path_factory: pytest.TempPathFactory, tf1_zoo_dir: Path) -> Path:
    from pipeline.tf1.synthetic_checkpoint import make_synthetic_zoo_dir

    root = tmp_path_factory.mktemp("quantized_zoo")
    return make_synthetic_zoo_dir(tf1_zoo_dir / V1Q, root / V1Q)


def test_synthetic_ranges_are_plausible(quantized_zoo: Path) -> None:
    """Weight ranges are the folded kernels' (as LastValueQuantize stores them), activation
    ranges relu6-like and differ per layer, the heads' cover their outputs."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(quantized_zoo / "model.ckpt"))
    scope = "FeatureExtractor/MobilenetV1/MobilenetV1/Conv2d_0"
    folded = reader.get_tensor("FeatureExtractor/MobilenetV1/Conv2d_0/weights") * (
        reader.get_tensor("FeatureExtractor/MobilenetV1/Conv2d_0/BatchNorm/gamma")
        / np.sqrt(
            reader.get_tensor("FeatureExtractor/MobilenetV1/Conv2d_0/BatchNorm/moving_variance")
            + 1e-3
        )
    )
    assert reader.get_tensor(f"{scope}/weights_quant/min") == pytest.approx(folded.min())
    assert reader.get_tensor(f"{scope}/weights_quant/max") == pytest.approx(folded.max())
    act_max = {
        float(reader.get_tensor(n))
        for n in reader.get_variable_to_shape_map()
        if n.endswith("act_quant/max") and "BoxPredictor" not in n
    }
    assert len(act_max) == 35 and min(act_max) >= 4.0 and max(act_max) <= 6.0
    assert reader.get_tensor("BoxPredictor_0/ClassPredictor/act_quant/min") < -5.0


@pytest.fixture(scope="module")
def quantized_converted(
    quantized_zoo: Path, coco_tiny: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("quantized_converted") / "converted"
    report = convert(
        quantized_zoo,
        out,
        verify_images=coco_tiny / "val2017",
        max_verify_images=2,
        progress=False,
    )
    return out, report


def test_quantized_v1_reproduces_the_tf1_fake_quant_graph(
    quantized_converted: tuple[Path, dict], coco_tiny: Path
) -> None:
    """Parity against the real TF 1.9 eval graph (folded BatchNorm, FakeQuantWithMinMaxVars on
    the folded weights and after each relu6 / box predictor BiasAdd) on 2 COCO images, and the
    converted model's outputs lie on its quantization grids."""
    import tensorflow as tf

    from pipeline.modeling.preprocessing import preprocess
    from pipeline.tf1.graph_runner import iter_images

    out, report = quantized_converted
    parity = report["parity"]
    assert parity["passed"], parity["diagnosis"]
    assert parity["detections_checked"] == 100 == parity["detections_matched"]
    assert report["complete"] and report["tf1"]["mapped"] == 387
    assert report["source"]["quantization"] == dataclasses.asdict(ZOO_QUANTIZATION)
    assert "fake quantization of 8-bit weights" in (out / "conversion_report.md").read_text()
    model, spec = load_converted(out)
    assert spec.quantization == ZOO_QUANTIZATION
    (_, image), *_ = iter_images(coco_tiny / "val2017", 1)
    outputs = model(preprocess(tf.constant(image[None]), spec), training=False)
    for level, logits in outputs["cls_outputs"].items():
        # 8-bit fake quantization: at most 256 distinct values per box predictor output.
        assert np.unique(logits.numpy()).size <= 256, level


def test_quantized_sample_configs_parse(od_api_configs: Path) -> None:
    for name, architecture in (
        ("ssd_mobilenet_v1_quantized_300x300_coco14_sync.config", "ssd_mobilenet_v1"),
        ("ssd_mobilenet_v2_quantized_300x300_coco.config", "ssd_mobilenet_v2"),
    ):
        spec = ssd_spec_from_config(od_api_configs / name)
        assert spec.architecture == architecture and spec.quantization is not None


def test_other_quantized_architectures_are_refused_in_one_line(
    od_api_configs: Path, tmp_path: Path
) -> None:
    name = "ssd_mobilenet_v1_fpn_shared_box_predictor_640x640_coco14_sync.config"
    text = (od_api_configs / name).read_text()
    path = tmp_path / "pipeline.config"
    path.write_text(text + "graph_rewriter {\n  quantization {\n    delay: 48000\n  }\n}\n")
    with pytest.raises(PipelineError, match=r"graph_rewriter\.quantization is set") as error:
        ssd_spec_from_config(path)
    message = str(error.value)
    assert "\n" not in message and "ssd_mobilenet_v1_fpn" in message
    assert "ssd_mobilenet_v1, ssd_mobilenet_v2" in message


def test_quantization_aware_fine_tuning_is_refused(tf1_zoo_dir: Path, tmp_path: Path) -> None:
    from pipeline.training.task import load_spec

    spec = ssd_spec_from_config(tf1_zoo_dir / V1Q)
    (tmp_path / "model_spec.json").write_text(json.dumps(spec.to_dict()))
    with pytest.raises(PipelineError, match="quantization-aware fine-tuning is not supported"):
        load_spec(tmp_path)


def test_parity_counts_the_elements_a_flipped_bucket_moves() -> None:
    """A fake-quant bucket flipped upstream moves outputs by whole quanta: the raw comparison
    counts the elements beyond tolerance (reported as `*_num_differing`)."""
    from pipeline.conversion.parity import compare_raw

    quantum = 15.0 / 255.0
    tf1 = np.round(np.random.default_rng(0).normal(0, 3, size=(100, 91)) / quantum) * quantum
    tf2 = tf1.copy()
    tf2[[3, 40], [1, 7]] += quantum
    result = compare_raw(tf1, tf2)
    assert not result.passed and result.num_differing == 2
    assert compare_raw(tf1, tf1).num_differing == 0


def test_config_and_checkpoint_disagreeing_on_quantization_name_the_field(
    tf1_zoo_dir: Path,
) -> None:
    """A quantized checkpoint with a float config (or the reverse) is one error naming
    graph_rewriter.quantization."""
    spec = ssd_spec_from_config(tf1_zoo_dir / V1Q)
    float_spec = dataclasses.replace(spec, quantization=None)
    with pytest.raises(PipelineError, match=r"graph_rewriter\.quantization \(not set\)"):
        plan_mapping(build_ssd_model(float_spec), float_spec, TF1Checkpoint(tf1_zoo_dir / V1Q))
    float_dir = tf1_zoo_dir / "ssd_mobilenet_v1_coco_2018_01_28"
    float_zoo = ssd_spec_from_config(float_dir)
    quantized = dataclasses.replace(float_zoo, quantization=spec.quantization)
    with pytest.raises(PipelineError, match=r"graph_rewriter\.quantization \(set"):
        plan_mapping(build_ssd_model(quantized), quantized, TF1Checkpoint(float_dir))


def test_uint8_tflite_export_from_the_learned_ranges(
    quantized_converted: tuple[Path, dict], coco_tiny: Path, tmp_path: Path
) -> None:
    """The converted quantized model as a fully quantized (uint8) TFLite model: its kernels
    round differently from fake quantization, so detections agree loosely, not exactly."""
    import tensorflow as tf

    from pipeline.inference.tflite import compare_tflite, export_tflite

    path = export_tflite(quantized_converted[0], tmp_path / "model.tflite", "uint8")
    interpreter = tf.lite.Interpreter(model_path=str(path))
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    # Fully quantized: uint8 weights and activations, int32 biases of the 47 convs.
    dtypes = [d["dtype"] for d in interpreter.get_tensor_details()]
    assert set(dtypes) == {np.uint8, np.int32} and dtypes.count(np.int32) == 47
    comparison = compare_tflite(path, quantized_converted[0], coco_tiny / "val2017", 2)
    loose = comparison["detections"][-1]
    assert loose["checked"] == 100 and loose["matched"] >= 95
    assert comparison["class_logits"]["mean_abs_diff"] < 0.1


def test_quantized_frozen_graph_converts_and_passes_parity(
    quantized_zoo: Path, coco_tiny: Path, tmp_path: Path
) -> None:
    """A frozen quantized export (the ranges as constants) converts to the same model."""
    import shutil

    from pipeline.tf1.graph_runner import write_frozen_graph

    frozen = tmp_path / "frozen"
    frozen.mkdir()
    shutil.copyfile(quantized_zoo / "pipeline.config", frozen / "pipeline.config")
    write_frozen_graph(quantized_zoo, frozen / "frozen_inference_graph.pb")
    report = convert(
        frozen,
        tmp_path / "out",
        verify_images=coco_tiny / "val2017",
        max_verify_images=1,
        progress=False,
    )
    assert report["source"]["form"] == "frozen_graph" and report["tf1"]["mapped"] == 387
    assert report["parity"]["passed"] and report["parity"]["tf1_graph"] == "frozen"


def test_class_count_change_of_a_quantized_model_is_refused(tf1_zoo_dir: Path) -> None:
    from pipeline.conversion.convert import target_spec

    spec = ssd_spec_from_config(tf1_zoo_dir / V1Q)
    assert target_spec(spec, 90) is spec
    with pytest.raises(PipelineError, match=r"^--num-classes: 3 differs from the quantized") as e:
        target_spec(spec, 3)
    assert "\n" not in str(e.value)
