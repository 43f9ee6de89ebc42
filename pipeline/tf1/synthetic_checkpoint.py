"""Synthetic weights with the exact layout of a real TF1 checkpoint.

The real zoo weights cannot be downloaded here, but a zoo directory's `model.ckpt.index` lists
every variable's name, dtype and shape. Writing a data file with that exact layout lets the real
TF1 inference graph (`model.ckpt.meta`) run, so the conversion can be proven on the real
architecture (see DESIGN.md, "Proving the conversion").

Values are chosen by the variable's role so that activations stay alive through ~60 layers and the
detector's scores differ between classes and anchors: He-scaled conv kernels, BatchNorm close to
identity, small box-regression outputs and class biases spread around the sigmoid's steep part.
Every value is drawn from a generator seeded by (seed, crc32(name)), so a variable's value does
not depend on which other variables exist or the order they are listed in.
"""

from __future__ import annotations

import os
import re
import shutil
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_directory
from pipeline.tf1.checkpoint import checkpoint_prefix

CHECKPOINT_PREFIX = "model.ckpt"
_CHECKPOINT_STATE = (
    f'model_checkpoint_path: "{CHECKPOINT_PREFIX}"\n'
    f'all_model_checkpoint_paths: "{CHECKPOINT_PREFIX}"\n'
)
_SHADOW = "/ExponentialMovingAverage"
# Optimizer slots by suffix: `RMSProp` (mean square, positive), `RMSProp_1` / `Momentum` / `Adam`
# (running gradients, small); `Adam_1` (second moment, positive).
_SLOT = re.compile(r"/(RMSProp(_1)?|Momentum|Adam(_1)?|Adagrad|Ftrl(_1)?)$")
_POSITIVE_SLOTS = ("RMSProp", "Adam_1", "Adagrad", "Ftrl")


def read_checkpoint_layout(path: str | os.PathLike[str]) -> dict[str, tuple[tuple[int, ...], str]]:
    """{variable name: (shape, numpy dtype name)} as listed by the checkpoint index."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(checkpoint_prefix(path)))
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    return {
        name: (tuple(int(d) for d in shapes[name]), dtypes[name].as_numpy_dtype.__name__)
        for name in sorted(shapes)
    }


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def synthetic_value(name: str, shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    """A value for one TF1 variable, chosen by its role (the last name components).

    Training checkpoints hold more than the model: a moving-average shadow
    (`<var>/ExponentialMovingAverage`) gets a value of its variable's role, drawn independently,
    so shadows differ from the raw weights as after real training; optimizer slots get values
    of their kind (positive mean squares, small running gradients).
    """
    np_dtype = np.dtype(dtype)
    if not np.issubdtype(np_dtype, np.floating):
        # global_step and other counters: a fresh checkpoint's value.
        return np.zeros(shape, dtype=np_dtype)
    rng = _rng(seed, name)
    slot = _SLOT.search(name)
    if slot:
        if slot.group(1) in _POSITIVE_SLOTS:
            return rng.uniform(1e-4, 1e-2, size=shape).astype(np_dtype)
        return rng.normal(0.0, 1e-3, size=shape).astype(np_dtype)
    name = name.removesuffix(_SHADOW)
    leaf = name.rsplit("/", 1)[-1]
    # Per-level SSD heads: BoxPredictor_i/BoxEncodingPredictor; weight-shared ones:
    # WeightSharedConvolutionalBoxPredictor/BoxPredictor.
    in_box_predictor = "BoxEncodingPredictor" in name or "BoxPredictor/BoxPredictor/" in name
    in_class_predictor = "ClassPredictor" in name

    if leaf == "weights" and len(shape) == 4:
        fan_in = shape[0] * shape[1] * shape[2]
        # He scaling preserves the activations' second moment through conv + relu6; a linear
        # bottleneck (MobileNetV2 `project`, no activation) preserves it with gain 1. He there
        # doubles the residual stream per block and amplifies float32 noise ~20x end to end.
        std = np.sqrt((1.0 if "/project/" in name else 2.0) / fan_in)
        if "/bottleneck_v1/" in name and ("/conv3/" in name or "/shortcut/" in name):
            # ResNet v1 adds a linear conv3 branch to a shortcut in every unit: at He gain the
            # stream grows ~1.5x per unit (~1e4 in magnitude after resnet_v1_50's block4, every
            # softmax saturated, proposal scores tied). Damped branch and projection keep the
            # block3 features ~1 and the RPN logits < 10.
            std = np.sqrt((0.0625 if "/conv3/" in name else 0.5) / fan_in)
        if re.search(r"resnet_v1_\d+/conv1/weights$", name):
            # ResNet v1 reads 0..255 images minus the channel means (std ~60), not [-1, 1].
            std /= 64.0
        if in_box_predictor or in_class_predictor:
            # Heads are linear; `calibrate_heads` rescales them to a target output spread.
            std = np.sqrt(1.0 / fan_in)
        value = rng.normal(0.0, std, size=shape)
    elif leaf == "pointwise_weights" and len(shape) == 4:
        # The 1x1 half of a fused separable conv (slim separable_conv2d with num_outputs).
        value = rng.normal(0.0, np.sqrt(2.0 / shape[2]), size=shape)
    elif leaf == "depthwise_weights" and len(shape) == 4:
        value = rng.normal(0.0, np.sqrt(2.0 / (shape[0] * shape[1])), size=shape)
    elif leaf == "gamma":
        value = rng.uniform(0.8, 1.2, size=shape)
    elif leaf == "beta":
        # Slightly positive so relu6 passes most channels.
        value = rng.normal(0.1, 0.05, size=shape)
    elif leaf == "moving_mean":
        value = rng.normal(0.0, 0.05, size=shape)
    elif leaf == "moving_variance":
        value = rng.uniform(0.8, 1.2, size=shape)
    elif leaf == "biases" and in_class_predictor:
        value = _class_biases(rng, shape)
    elif leaf == "biases":
        value = rng.normal(0.0, 0.1, size=shape)
    else:
        value = rng.normal(0.0, 0.05, size=shape)
    return value.astype(np_dtype)


def _class_biases(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Biases below zero with a modest spread: the weights then decide which class wins at which
    anchor (many classes among the top detections), a few percent of anchor-class pairs pass a
    typical 0.3 score threshold, and scores stay off the sigmoid's flat ends."""
    return rng.normal(-3.5, 0.5, size=shape)


def synthetic_weights(
    layout: Mapping[str, tuple[tuple[int, ...], str]], seed: int = 0
) -> dict[str, np.ndarray]:
    """Synthetic values for every variable of a checkpoint layout (with the fake-quant ranges of
    a quantized graph derived from them: `quantization_ranges`)."""
    weights = {
        name: synthetic_value(name, shape, dtype, seed) for name, (shape, dtype) in layout.items()
    }
    return quantization_ranges(weights, seed)


# A fake-quant range variable of a TF1 quantized graph (tf.contrib.quantize).
_QUANT_RANGE = re.compile(r"^(?P<scope>.+)/(?P<kind>weights_quant|act_quant)/(?P<end>min|max)$")
# Initial range of the box predictor outputs (no activation), before `calibrate_heads`.
_HEAD_ACT_RANGE = (-8.0, 8.0)
_BN_EPSILON = 1e-3


def _folded_kernel(scope: str, weights: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The kernel of the layer of quantization op scope `scope` with its BatchNorm folded in, as
    contrib.quantize's FoldBatchNorms computes it. The MobileNet v1 base's op scope repeats
    `MobilenetV1` (`FeatureExtractor/MobilenetV1/MobilenetV1/Conv2d_0`); its variables don't."""
    for layer in (scope, re.sub(r"(^|/)([^/]+)/\2(?=/|$)", r"\1\2", scope)):
        for leaf in ("weights", "depthwise_weights"):
            kernel = weights.get(f"{layer}/{leaf}")
            if kernel is None:
                continue
            variance = weights.get(f"{layer}/BatchNorm/moving_variance")
            if variance is None:
                return np.asarray(kernel)
            multiplier = weights.get(f"{layer}/BatchNorm/gamma", 1.0) / np.sqrt(
                variance + _BN_EPSILON
            )
            if leaf == "depthwise_weights":
                multiplier = np.reshape(multiplier, (-1, 1))
            return np.asarray(kernel) * multiplier
    return None


def quantization_ranges(weights: Mapping[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible fake-quant ranges for a quantized graph's `.../weights_quant/{min,max}` and
    `.../act_quant/{min,max}`: weights as LastValueQuantize leaves them (the folded kernel's
    min and max, widened to include 0), activations [0, U(4, 6)] after relu6 (an EMA of batch
    ranges, seeded per layer so that a range mapped to the wrong layer shows) and
    `_HEAD_ACT_RANGE` for the box predictors (set from their outputs by `calibrate_heads`)."""
    result = dict(weights)
    for name in weights:
        match = _QUANT_RANGE.match(name)
        if match is None:
            continue
        scope, kind, end = match.group("scope", "kind", "end")
        dtype = np.asarray(weights[name]).dtype
        if kind == "weights_quant":
            kernel = _folded_kernel(scope, weights)
            if kernel is None:
                raise ValueError(f"{name}: no kernel found for the quantization scope {scope}")
            value = min(float(kernel.min()), 0.0) if end == "min" else max(float(kernel.max()), 0.0)
        elif "BoxPredictor" in scope:
            value = _HEAD_ACT_RANGE[0 if end == "min" else 1]
        else:
            value = 0.0 if end == "min" else float(_rng(seed, scope).uniform(4.0, 6.0))
        result[name] = np.asarray(value, dtype=dtype)
    return result


def training_checkpoint(
    weights: Mapping[str, np.ndarray],
    shadows: Mapping[str, np.ndarray],
    slots: Sequence[str] = ("RMSProp", "RMSProp_1"),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The tensors of a TF1 training checkpoint of a model: its raw `weights` (global_step
    included), `<var>/ExponentialMovingAverage` holding `shadows[var]` for each shadowed
    (trainable) variable, and the optimizer's `slots` of those variables (TF1's default
    RMSProp: `RMSProp`, `RMSProp_1`), as the OD API's training leaves them."""
    tensors = dict(weights)
    for name, value in shadows.items():
        if name not in weights:
            raise ValueError(f"shadow for {name}, which is not a variable of the checkpoint")
        tensors[name + _SHADOW] = np.asarray(value, dtype=np.asarray(weights[name]).dtype)
        for slot in slots:
            slot_name = f"{name}/{slot}"
            tensors[slot_name] = synthetic_value(
                slot_name, np.shape(weights[name]), np.asarray(weights[name]).dtype.name, seed
            )
    return tensors


def write_tf1_checkpoint(prefix: str | os.PathLike[str], tensors: Mapping[str, np.ndarray]) -> None:
    """Write a TF1 name-based checkpoint (`<prefix>.index` + data file) holding `tensors`.

    Runs SaveV2 in its own graph and session so it works whether or not eager execution is on.
    """
    import tensorflow as tf

    names = sorted(tensors)
    graph = tf.Graph()
    with graph.as_default():
        placeholders = [
            tf.compat.v1.placeholder(tf.as_dtype(np.asarray(tensors[n]).dtype), name=f"in_{i}")
            for i, n in enumerate(names)
        ]
        save = tf.raw_ops.SaveV2(
            prefix=str(prefix),
            tensor_names=names,
            shape_and_slices=[""] * len(names),
            tensors=placeholders,
        )
    with tf.compat.v1.Session(graph=graph) as session:
        feed = {p: np.asarray(tensors[n]) for p, n in zip(placeholders, names, strict=True)}
        session.run(save, feed)


def write_checkpoint_state(directory: str | os.PathLike[str]) -> None:
    """The `checkpoint` file TF1 tools read to find `model.ckpt`."""
    Path(directory, "checkpoint").write_text(_CHECKPOINT_STATE, encoding="utf-8")


# Spread of the head outputs (before bias) after calibration: box encodings ~N(0, 0.7) decode to
# plausible boxes; class logits with std 1.5 around biases of -3.5 put a few percent of
# anchor-class pairs above a 0.3 score threshold, with distinct scores.
_HEAD_TARGET_STD = {"BoxEncodingPredictor": 0.7, "ClassPredictor": 1.5}


def calibration_image(seed: int = 0, size: tuple[int, int] = (300, 300)) -> np.ndarray:
    """A deterministic uint8 RGB image with structure at several scales (smooth blobs + edges)."""
    rng = np.random.default_rng([seed, 7])
    height, width = size
    image = np.zeros((height, width, 3))
    for cells in (2, 5, 13, 37):
        coarse = rng.uniform(0, 255, size=(cells, cells, 3))
        rows = np.minimum((np.arange(height) * cells) // height, cells - 1)
        cols = np.minimum((np.arange(width) * cells) // width, cells - 1)
        image += coarse[rows][:, cols] / 4
    return np.clip(image, 0, 255).astype(np.uint8)


def _head_variable(op_scope: str, layout: Mapping[str, object]) -> str | None:
    """`BoxPredictor_1/ClassPredictor` -> its `weights` variable; weight-shared heads create
    numbered op scopes (`..._1`) over one variable, so the numbering is dropped as a fallback."""
    candidates = [op_scope, re.sub(r"_\d+(?=/|$)", "", op_scope)]
    for scope in candidates:
        if f"{scope}/weights" in layout:
            return f"{scope}/weights"
    return None


def calibrate_heads(
    zoo_dir: Path, weights: dict[str, np.ndarray], seed: int = 0
) -> dict[str, np.ndarray]:
    """Rescale the box/class predictor kernels so their outputs have the target spread.

    How large the feature maps are depends on the whole backbone, which no per-tensor rule can
    know; the heads are linear, so one run of the real graph tells by how much to scale them.
    """
    from pipeline.tf1.graph_runner import TF1GraphRunner

    with TF1GraphRunner(zoo_dir, graph="meta") as runner:
        heads = runner.run(calibration_image(seed), with_heads=True)["heads"]
    spread: dict[str, list[np.ndarray]] = {}
    for op_scope, value in heads.items():
        variable = _head_variable(op_scope, weights)
        if variable is None:
            continue
        bias = weights.get(variable.rsplit("/", 1)[0] + "/biases", 0.0)
        spread.setdefault(variable, []).append((value - bias).ravel())
    calibrated = dict(weights)
    scales = {}
    for variable, values in spread.items():
        kind = "ClassPredictor" if "ClassPredictor" in variable else "BoxEncodingPredictor"
        std = float(np.concatenate(values).std())
        if std > 0:
            scales[variable] = _HEAD_TARGET_STD[kind] / std
            calibrated[variable] = (weights[variable] * scales[variable]).astype(
                weights[variable].dtype
            )
    # A quantized graph: the rescaled kernels' weight ranges, the heads' output ranges.
    calibrated = quantization_ranges(calibrated, seed)
    for variable, scale in scales.items():
        _calibrate_head_ranges(calibrated, variable, heads, scale)
    return calibrated


# Headroom of a quantized box predictor's output range over the calibration image's outputs.
_HEAD_RANGE_MARGIN = 1.25


def _calibrate_head_ranges(
    weights: dict[str, np.ndarray], variable: str, heads: Mapping[str, np.ndarray], scale: float
) -> None:
    """A quantized graph's box predictor output range (`act_quant`): the rescaled outputs' range
    on the calibration image, with headroom."""
    scope = variable.rsplit("/", 1)[0]
    low_name, high_name = f"{scope}/act_quant/min", f"{scope}/act_quant/max"
    if low_name not in weights or scope not in heads:
        return
    bias = weights.get(f"{scope}/biases", 0.0)
    outputs = (heads[scope] - bias) * scale + bias
    dtype = np.asarray(weights[low_name]).dtype
    weights[low_name] = np.asarray(min(float(outputs.min()), 0.0) * _HEAD_RANGE_MARGIN, dtype)
    weights[high_name] = np.asarray(max(float(outputs.max()), 0.0) * _HEAD_RANGE_MARGIN, dtype)


def make_synthetic_zoo_dir(
    src_zoo_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    calibrate: bool = True,
) -> Path:
    """Write a model directory like `src_zoo_dir` whose checkpoint holds synthetic weights.

    The layout (names, dtypes, shapes) is exactly the source index's, optimizer slots and
    moving-average shadows included, under the source's checkpoint name (`model.ckpt`, or a
    training dir's newest `model.ckpt-N`); its `.meta` graph, `checkpoint` state file and
    `*.config` files are copied. A source `frozen_inference_graph.pb` is not copied: its
    constants are the real weights, which would disagree with the synthetic checkpoint. With
    `calibrate`, the head kernels are rescaled after one run of the graph (`calibrate_heads`).
    """
    src = Path(src_zoo_dir)
    prefix = checkpoint_prefix(src)
    layout = read_checkpoint_layout(prefix)
    weights = synthetic_weights(layout, seed)
    out = Path(out_dir)
    meta = prefix.name + ".meta"
    with atomic_directory(out) as staging:
        write_tf1_checkpoint(staging / prefix.name, weights)
        copied = [meta, "checkpoint", *(p.name for p in src.glob("*.config"))]
        for name in copied:
            if (src / name).is_file():
                shutil.copyfile(src / name, staging / name)
        if not (staging / "checkpoint").is_file():
            write_checkpoint_state(staging)
        if calibrate and (staging / meta).is_file():
            weights = calibrate_heads(staging, weights, seed)
            write_tf1_checkpoint(staging / prefix.name, weights)
    return out
