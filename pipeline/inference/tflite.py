"""TFLite export of a converted SSD, and its outputs in the converter's TF1 layout.

The TFLite model computes the raw head outputs (the box and class predictor maps of every level)
from the preprocessed image ([1, H, W, 3] float32, `x * 2/255 - 1`); the TF1 post-processing
(anchors, box decoding, per-class NMS) stays the converted model's own, so the TFLite model's
detections are comparable one for one with the TF model's or its SavedModel's.

- `float`: TFLite's float kernels (a quantized model keeps its fake quantization as float ops).
- `uint8`: a converted TF1 quantized graph (graph_rewriter.quantization) fully quantized from its
  learned fake-quant ranges, as the TF1 zoo's quantized models were meant to be deployed: the
  legacy converter path (`inference_type` uint8, asymmetric per-tensor weights; TFLite's int8
  kernels need symmetric weights, which TF1's ranges are not). The input is uint8 with scale
  1/127.5 and zero point 128 (`x * 2/255 - 1` needs 127.5, which a zero point cannot hold): half
  a step off, where the OD API's own TFLite instructions (running_on_mobile_tensorflowlite.md:
  `--mean_values=128 --std_values=128`) are half a step off too and scale by 1/128.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from pipeline.atomic import atomic_file
from pipeline.errors import PipelineError
from pipeline.modeling.builder import load_converted
from pipeline.modeling.preprocessing import preprocess
from pipeline.modeling.spec import SSDSpec

KINDS = ("float", "uint8")
# uint8 input of a fully quantized export: real = (q - 128) / 127.5.
_INPUT_STATS = (127.5, 127.5)


def raw_outputs_function(model: Any, spec: SSDSpec) -> Any:
    """The model's backbone, decoder and head as a concrete function: preprocessed image ->
    [box maps of each level (ascending), class maps of each level]."""
    height, width = spec.image_size

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32, name="x")])
    def raw(images: tf.Tensor) -> list[tf.Tensor]:
        scores, boxes, *_ = model.head(model.decoder(model.backbone(images)))
        return [boxes[k] for k in sorted(boxes, key=int)] + [
            scores[k] for k in sorted(scores, key=int)
        ]

    return raw.get_concrete_function()


def _uint8_model(function: Any) -> bytes:
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(function)
    inputs = [t.name.split(":")[0] for t in frozen.inputs]
    outputs = [t.name.split(":")[0] for t in frozen.outputs]
    with tempfile.TemporaryDirectory() as tmp:
        tf.io.write_graph(frozen.graph.as_graph_def(), tmp, "frozen.pb", as_text=False)
        converter = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
            str(Path(tmp) / "frozen.pb"),
            inputs,
            outputs,
            {inputs[0]: frozen.inputs[0].shape.as_list()},
        )
        converter.inference_type = tf.uint8
        converter.quantized_input_stats = {inputs[0]: _INPUT_STATS}
        return converter.convert()


def export_tflite(
    converted_dir: str | os.PathLike[str], out: str | os.PathLike[str], kind: str = "float"
) -> Path:
    """Write the TFLite model (`kind` 'float' | 'uint8') of a converted SSD directory."""
    if kind not in KINDS:
        raise PipelineError(f"TFLite kind {kind!r}: use one of {', '.join(KINDS)}")
    model, spec = load_converted(converted_dir)
    if not isinstance(spec, SSDSpec):
        raise PipelineError(f"{converted_dir}: TFLite export supports converted SSDs only")
    if kind == "uint8" and spec.quantization is None:
        raise PipelineError(
            f"{converted_dir}: a uint8 TFLite export needs a converted quantized graph "
            "(graph_rewriter.quantization); export this float model with kind 'float'"
        )
    function = raw_outputs_function(model, spec)
    if kind == "uint8":
        data = _uint8_model(function)
    else:
        data = tf.lite.TFLiteConverter.from_concrete_functions([function], model).convert()
    out = Path(out)
    with atomic_file(out, "wb") as handle:
        handle.write(data)
    return out


def tflite_outputs_fn(path: str | os.PathLike[str], model: Any, spec: SSDSpec) -> Callable:
    """image (uint8 [H, W, 3]) -> the TFLite model's raw outputs and the converted model's TF1
    post-processing of them, in TF1 layout (`pipeline.conversion.parity.OutputsFn`)."""
    from pipeline.conversion.parity import tf1_layout_outputs

    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (input_detail,) = interpreter.get_input_details()
    levels = sorted(model.anchor_boxes, key=int)
    # Which output is which: its spatial size names the level, its depth boxes (4 per anchor,
    # the anchors' own depth) or classes.
    where: dict[tuple[int, int, int], tuple[str, str]] = {}
    for level in levels:
        height, width, box_depth = (int(d) for d in model.anchor_boxes[level].shape)
        where[(height, width, box_depth)] = ("box_outputs", level)
        class_depth = box_depth // 4 * spec.num_class_slots
        where[(height, width, class_depth)] = ("cls_outputs", level)
    outputs = [(where[tuple(int(d) for d in o["shape"][1:])], o) for o in
               interpreter.get_output_details()]  # fmt: skip

    def run(image: np.ndarray) -> dict[str, Any]:
        x = preprocess(tf.constant(np.asarray(image)[None]), spec).numpy()
        if input_detail["dtype"] == np.uint8:
            scale, zero_point = input_detail["quantization"]
            x = np.clip(np.round(x / scale + zero_point), 0, 255).astype(np.uint8)
        interpreter.set_tensor(input_detail["index"], x)
        interpreter.invoke()
        raw: dict[str, dict[str, tf.Tensor]] = {"box_outputs": {}, "cls_outputs": {}}
        for (key, level), detail in outputs:
            value = interpreter.get_tensor(detail["index"]).astype(np.float32)
            scale, zero_point = detail["quantization"]
            raw[key][level] = tf.constant((value - zero_point) * scale if scale else value)
        anchors = {level: model.anchor_boxes[level][None] for level in levels}
        detections = model.detection_generator(raw["box_outputs"], raw["cls_outputs"], anchors)
        return tf1_layout_outputs({**raw, **detections}, spec.num_class_slots)

    return run


# Looser detection criteria for a TFLite model: its kernels round differently, so fake-quant
# buckets flip and exact parity is not expected; (IoU, |score difference|) pairs.
TFLITE_CRITERIA = ((0.9, 0.05), (0.5, 0.1))


def compare_tflite(
    path: str | os.PathLike[str],
    converted_dir: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    max_images: int | None = 5,
) -> dict[str, Any]:
    """The TFLite model against the converted TF model on the same images: raw output
    differences, and how many of the TF model's top-50 detections the TFLite model reproduces
    under the conversion's criteria and under `TFLITE_CRITERIA`."""
    from pipeline.conversion.parity import (
        IOU_THRESHOLD,
        SCORE_TOLERANCE,
        TOP_K,
        compare_detections,
        compare_raw,
        model_outputs_fn,
    )
    from pipeline.tf1.graph_runner import iter_images

    model, spec = load_converted(converted_dir)
    reference, tflite = model_outputs_fn(model, spec), tflite_outputs_fn(path, model, spec)
    pairs = [(reference(image), tflite(image)) for _, image in iter_images(images_dir, max_images)]
    result: dict[str, Any] = {"tflite": str(path), "num_images": len(pairs)}
    for key in ("box_encodings", "class_logits"):
        raw = [compare_raw(a[key], b[key]) for a, b in pairs]
        result[key] = {
            "max_abs_diff": max(r.max_abs_diff for r in raw),
            "mean_abs_diff": float(np.mean([np.abs(a[key] - b[key]).mean() for a, b in pairs])),
            "num_differing": sum(r.num_differing for r in raw),
            "num_elements": sum(int(np.size(a[key])) for a, _ in pairs),
        }
    result["detections"] = []
    for iou, score in ((IOU_THRESHOLD, SCORE_TOLERANCE), *TFLITE_CRITERIA):
        found = [compare_detections(a, b, TOP_K, iou, score) for a, b in pairs]
        result["detections"].append(
            {
                "iou_threshold": iou,
                "score_tolerance": score,
                "matched": sum(d.matched for d in found),
                "checked": sum(d.checked for d in found),
            }
        )
    return result
