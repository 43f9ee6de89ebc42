"""Quantized SSDs (`graph_rewriter { quantization {} }`, TF1's tf.contrib.quantize): the real
zoo indexes map completely (float weights and fake-quant ranges), the converted v1 model
reproduces the real TF 1.9 fake-quant graph (synthetic weights and ranges of its exact layout),
its fake-quant layers train as contrib.quantize's training graph does (quantization-aware
fine-tuning), unsupported combinations are refused in one line."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.conversion.convert import convert
from pipeline.conversion.mapping import plan_mapping
from pipeline.errors import PipelineError
from pipeline.modeling.builder import build_ssd_model, load_converted
from pipeline.modeling.preprocessing import preprocess
from pipeline.modeling.spec import QuantizationSpec
from pipeline.modeling.tf1_layout import model_records
from pipeline.tf1.checkpoint import TF1Checkpoint
from pipeline.tf1.graph_runner import iter_images
from pipeline.tf1.pipeline_config import ssd_spec_from_config
from pipeline.tf1.weights import CheckpointWeights

V1Q = "ssd_mobilenet_v1_quantized_300x300_coco14_sync_2018_07_18"
V2Q = "ssd_mobilenet_v2_quantized_300x300_coco_2019_01_03"
QUANT_RANGE = re.compile(r"_quant/(min|max)$")
ZOO_QUANTIZATION = QuantizationSpec(delay=48000, weight_bits=8, activation_bits=8)


@pytest.mark.parametrize(
    ("name", "moving_average", "ranges", "debias_state", "bookkeeping", "shadows", "residuals"),
    [
        # The exported v1 checkpoint has no zero-debias state: TF1 starts it at 0 (implied).
        (V1Q, False, 188, 0, 1, 0, []),
        # MobileNet v2's 10 stride-1 blocks that keep their depth add a residual, quantized by
        # TF1's `post_activation_bypass_quant`.
        (V2Q, True, 308, 328, 410, 204, [2, 4, 5, 7, 8, 9, 11, 12, 14, 15]),
    ],
)
def test_quantized_index_maps_fully(
    tf1_zoo_dir: Path,
    name: str,
    moving_average: bool,
    ranges: int,
    debias_state: int,
    bookkeeping: int,
    shadows: int,
    residuals: list[int],
) -> None:
    """Every float weight, every `weights_quant` / `act_quant` / `post_activation_bypass_quant`
    range and every activation range's zero-debias state (`.../min/biased`, `.../local_step`) of
    the real index has its TF2 variable, and the other way round; step counters, slots and
    shadows are the only leftovers."""
    spec = ssd_spec_from_config(tf1_zoo_dir / name)
    assert spec.quantization == ZOO_QUANTIZATION
    model = build_ssd_model(spec)
    checkpoint = TF1Checkpoint(tf1_zoo_dir / name)
    weights = CheckpointWeights(checkpoint, moving_average, "test")
    plan = plan_mapping(model, spec, weights)
    assert plan.complete and not plan.fresh
    assert sorted(plan.tf1_mapped) == sorted(weights.shapes)
    quant = [n for n in plan.tf1_mapped if QUANT_RANGE.search(n)]
    assert len(quant) == ranges
    records = model_records(model)
    activation_ranges = [r for r in records if r.kind == "moving_average_quant"]
    debias = [n for n in plan.tf1_mapped if re.search(r"_quant/(min|max)/(biased|local_step)$", n)]
    assert len(debias) == debias_state
    # Mapped where the checkpoint has it, else started at 0 as TF1 starts it.
    assert len(debias) + len(plan.implied) == 4 * len(activation_ranges)
    assert {value for _, _, value in plan.implied} <= {0.0}
    assert len(weights.unused_names) == bookkeeping
    assert len(weights.replaced_by_shadows) == shadows
    assert len(plan.tf1_mapped) + bookkeeping + shadows == len(checkpoint.shapes)
    fake_quant = [r for r in records if r.kind in ("fake_quant", "moving_average_quant")]
    assert len(fake_quant) * 2 == ranges
    bypass = [r.scope.split("/")[-2] for r in fake_quant if "bypass" in r.scope]
    assert sorted(int(scope.rsplit("_", 1)[1]) for scope in bypass) == residuals
    all_variables = {id(v) for m in model.checkpoint_items.values() for v in m.variables}
    initialised = [v for _, v, _ in plan.assignments] + [v for _, v, _ in plan.implied]
    assert {id(v) for v in initialised} == all_variables


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


def _contrib_training_quant(moving_average: bool, start: dict[str, float], batches, delay: int):
    """contrib.quantize's training-graph quant op, composed from its quant_ops.py (TF 1.9-1.15)
    and TF's own graph-mode ops: MovingAvgQuantize = `assign_moving_average` (zero-debiased, the
    default) of the batch range; LastValueQuantize = `assign`; `delayed_quant` = a cond on the
    step. Returns, per batch: output, gradient of sum(output * batch) w.r.t. the batch, and the
    range (and debias state) after the step."""
    import tensorflow as tf
    from tensorflow.python.training import moving_averages

    results = []
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf.compat.v1.placeholder(tf.float32, batches[0].shape)
        step = tf.compat.v1.placeholder(tf.int64, [])
        with tf.compat.v1.variable_scope("act_quant"):
            min_var = tf.compat.v1.get_variable("min", initializer=start["min"], trainable=False)
            max_var = tf.compat.v1.get_variable("max", initializer=start["max"], trainable=False)
        batch_min = tf.minimum(tf.reduce_min(inputs), 0.0)
        batch_max = tf.maximum(tf.reduce_max(inputs), 0.0)
        if moving_average:
            assign_min = moving_averages.assign_moving_average(min_var, batch_min, 0.999)
            assign_max = moving_averages.assign_moving_average(max_var, batch_max, 0.999)
        else:
            assign_min = tf.compat.v1.assign(min_var, batch_min)
            assign_max = tf.compat.v1.assign(max_var, batch_max)
        quant = tf.quantization.fake_quant_with_min_max_vars(
            inputs, assign_min, assign_max, num_bits=8, narrow_range=not moving_average
        )
        output = tf.cond(step >= delay, lambda: quant, lambda: inputs) if delay else quant
        (gradient,) = tf.gradients(tf.reduce_sum(output * inputs), [inputs])
        state = {v.op.name.split("act_quant/", 1)[-1]: v for v in tf.compat.v1.global_variables()}
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for name, value in start.items():
                state[name].load(value, session)
            for index, batch in enumerate(batches):
                out, grad = session.run([output, gradient], {inputs: batch, step: index})
                results.append((out, grad, session.run(state)))
    return results


@pytest.mark.parametrize(
    ("moving_average", "start", "delay"),
    [
        # A weight range (LastValueQuantize): the batch's range, every step.
        (False, {"min": -6.0, "max": 6.0}, 0),
        # An activation range of an exported checkpoint: no debias state, TF1 starts it at 0.
        (True, {"min": -0.5, "max": 5.5}, 0),
        # An activation range of a training checkpoint (the v2 zoo index): the average goes on.
        (
            True,
            {
                "min": -0.25,
                "max": 5.0,
                "min/biased": -0.2,
                "min/local_step": 700.0,
                "max/biased": 2.5,
                "max/local_step": 700.0,
            },
            0,
        ),
        # graph_rewriter.quantization.delay: unquantized before step 2, ranges updating anyway.
        (True, {"min": -0.5, "max": 5.5}, 2),
    ],
)
def test_fake_quant_trains_as_contrib_quantize(
    moving_average: bool, start: dict[str, float], delay: int
) -> None:
    """Five training steps of our FakeQuant layer against contrib.quantize's ops in a TF1 graph:
    outputs, gradients (the fake-quant op's straight-through gradient, none through the range)
    and the stored range (and zero-debias state) equal bit for bit."""
    import tensorflow as tf

    from pipeline.modeling.quantization import FakeQuant, QuantizationClock

    rng = np.random.default_rng(0)
    batches = [
        (rng.normal(0.5, scale, size=(2, 5, 5, 3)) + shift).astype(np.float32)
        for scale, shift in ((1.0, 0.0), (3.0, 1.0), (0.5, -0.3), (2.0, 2.0), (1.5, 0.0))
    ]
    reference = _contrib_training_quant(moving_average, start, batches, delay)

    layer = FakeQuant(num_bits=8, narrow_range=not moving_average, moving_average=moving_average)
    layer.build(batches[0].shape)
    attributes = {
        "min": "range_min",
        "max": "range_max",
        "min/biased": "min_biased",
        "min/local_step": "min_local_step",
        "max/biased": "max_biased",
        "max/local_step": "max_local_step",
    }
    for name, value in start.items():
        getattr(layer, attributes[name]).assign(value)
    step = tf.Variable(0, dtype=tf.int64)
    layer.clock = QuantizationClock(step, delay)

    @tf.function
    def train(batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(batch)
            output = layer(batch, training=True)
            objective = tf.reduce_sum(output * batch)
        return output, tape.gradient(objective, batch)

    for index, (batch, (tf1_output, tf1_gradient, tf1_state)) in enumerate(
        zip(batches, reference, strict=True)
    ):
        output, gradient = train(tf.constant(batch))
        np.testing.assert_array_equal(output.numpy(), tf1_output, err_msg=f"step {index}")
        np.testing.assert_array_equal(gradient.numpy(), tf1_gradient, err_msg=f"step {index}")
        for name, value in tf1_state.items():
            ours = getattr(layer, attributes[name]).numpy()
            assert ours == value, f"step {index}: {name} {ours} != TF1 {value}"
        quantized = index >= delay
        assert np.array_equal(output.numpy(), batch) != quantized, f"step {index}"
        step.assign_add(1)
    # Eval mode reads the stored range; the ranges moved from their start.
    assert layer.range_min.numpy() != start["min"]
    np.testing.assert_array_equal(
        layer(tf.constant(batches[0]), training=False).numpy(),
        tf.quantization.fake_quant_with_min_max_vars(
            batches[0], layer.range_min, layer.range_max, narrow_range=not moving_average
        ).numpy(),
    )


def test_quantization_delay_comes_from_the_config_unless_set(
    quantized_converted: tuple[Path, dict],
) -> None:
    from test_training_support import train_params

    from pipeline.training.config import experiment_from_params
    from pipeline.training.task import SSDFinetuneTask

    converted = str(quantized_converted[0])
    default = experiment_from_params(train_params(), converted, "train.tfrecord")
    assert SSDFinetuneTask(default.task).quantization_delay() == 48000  # the zoo config's
    zero = experiment_from_params(train_params(quantization_delay=0), converted, "x")
    assert SSDFinetuneTask(zero.task).quantization_delay() == 0
    for bad in (-2, 1.5, "soon", True):
        with pytest.raises(PipelineError, match=r"^params\.yaml: train\.quantization_delay is"):
            experiment_from_params(train_params(quantization_delay=bad), converted, "x")


@pytest.mark.slow
def test_quantization_aware_fine_tuning(
    quantized_converted: tuple[Path, dict], coco_tiny: Path, tmp_path: Path
) -> None:
    """Two quantization-aware steps of the converted v1 model (backbone frozen): training mode
    reaches every fake-quant layer (each of the 47 activation ranges took two zero-debiased
    steps from the exported checkpoint's state), frozen weights stay, the SavedModel is the
    quantized eval model of the trained weights and exports to a uint8 TFLite model; BatchNorm
    statistics training is refused in one line."""
    import tensorflow as tf
    from test_training_support import checkpoint_values, train_params, write_tfrecords

    from pipeline.inference import load_detector
    from pipeline.inference.tflite import compare_tflite, export_tflite
    from pipeline.modeling.quantization import fake_quant_layers
    from pipeline.training.finetune import finetune
    from pipeline.training.variables import checkpoint_items, variable_paths

    converted, _ = quantized_converted
    records = write_tfrecords(tmp_path / "train.tfrecord", coco_tiny, limit=4, num_classes=90)
    params = train_params(
        steps=2, batch_size=2, checkpoint_every_steps=2, quantization_delay=0,
        **{"optimizer.learning_rate": 1e-3},
    )  # fmt: skip
    out = tmp_path / "finetuned"
    result = finetune(params, converted, str(records), out)
    assert result.summary["quantization"] == {"delay": 0, "quantized_steps": 2}

    latest = tf.train.latest_checkpoint(str(out / "checkpoint"))
    before = checkpoint_values(str(converted / "checkpoint" / "ckpt-0"))
    after = checkpoint_values(latest)
    model, spec = load_converted(converted)
    paths = {id(v): path for path, v in variable_paths(checkpoint_items(model)).values()}
    activation_ranges = [layer for layer in fake_quant_layers(model) if layer.moving_average]
    assert len(activation_ranges) == 47
    for layer in activation_ranges:
        assert before[paths[id(layer.min_local_step)]] == 0.0
        assert after[paths[id(layer.min_local_step)]] == 2.0
        assert after[paths[id(layer.max_biased)]] != 0.0
    trained = (out / "trained_variables.txt").read_text().split()
    frozen = (out / "frozen_variables.txt").read_text().split()
    assert any(p.startswith("backbone") for p in frozen)
    assert all(np.array_equal(after[p], before[p]) for p in frozen if p in after)
    assert any(not np.array_equal(after[p], before[p]) for p in trained if p in after)

    # The trained weights as a converted-model directory, through the same detector API.
    as_converted = tmp_path / "trained_as_converted"
    (as_converted / "checkpoint").mkdir(parents=True)
    (as_converted / "model_spec.json").write_text((converted / "model_spec.json").read_text())
    tf.train.Checkpoint(**model.checkpoint_items).read(latest).expect_partial()
    tf.train.Checkpoint(**model.checkpoint_items).save(str(as_converted / "checkpoint" / "ckpt"))
    (_, image), *_ = iter_images(coco_tiny / "val2017", 1)
    got = load_detector(str(out / "saved_model"))(image[None])
    want = load_detector(str(as_converted))(image[None])
    for key in ("detection_boxes", "detection_scores", "detection_classes", "num_detections"):
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]), err_msg=key)
    outputs = model(preprocess(tf.constant(image[None]), spec), training=False)
    assert all(np.unique(v.numpy()).size <= 256 for v in outputs["cls_outputs"].values())
    # The fine-tuned SavedModel's weights are the trained checkpoint's; its uint8 TFLite model.
    exported, _ = load_converted(out / "saved_model")
    assert all(
        np.array_equal(a.numpy(), b.numpy())
        for a, b in zip(exported.variables, model.variables, strict=True)
    )
    tflite = export_tflite(out / "saved_model", tmp_path / "finetuned.tflite", "uint8")
    comparison = compare_tflite(tflite, out / "saved_model", coco_tiny / "val2017", 1)
    assert comparison["detections"][-1]["matched"] >= 45

    unfrozen = train_params(steps=1, batch_size=2, **{"freeze.freeze_batch_norm": False})
    with pytest.raises(PipelineError, match=r"^train\.freeze\.freeze_batch_norm: false") as error:
        finetune(unfrozen, converted, str(records), tmp_path / "unfrozen", export=False)
    assert "\n" not in str(error.value)


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
