"""A detector with the TF1 frozen graph's interface, from a converted directory or a SavedModel.

`detector(images_uint8 [N, H, W, 3]) -> {detection_boxes [N, K, 4] normalized (ymin, xmin, ymax,
xmax), detection_scores [N, K], detection_classes [N, K] (float, 1..num_classes),
num_detections [N] (float)}` — what `image_tensor` -> `detection_*` computes in a TF1 export,
including the padding of unused slots (zeros; class 1.0 as TF1's `classes + 1`). Images are
resized inside, so any size works; one size per call.

`tf1_detector` gives the same interface for the original TF1 graph (any form a TF1 export comes
in), so the TF1 model is evaluated by the same code as its conversion.

`export_saved_model` writes the same interface as a SavedModel `serving_default` signature
(input `image_tensor`), so TF1-era serving code keeps working.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from pipeline.errors import PipelineError
from pipeline.modeling.builder import SPEC_FILE, load_converted, read_spec
from pipeline.modeling.faster_rcnn.spec import FasterRCNNSpec
from pipeline.modeling.preprocessing import preprocess
from pipeline.modeling.spec import SSDSpec
from pipeline.reproducible_outputs import pin_saved_model_uuid

OUTPUT_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
INPUT_KEY = "image_tensor"
SIGNATURE = "serving_default"

Detector = Callable[[np.ndarray], dict[str, np.ndarray]]


def detection_outputs(
    model: Any, spec: SSDSpec | FasterRCNNSpec, images: tf.Tensor
) -> dict[str, tf.Tensor]:
    """uint8 images -> the four TF1 detection outputs (float32, TF1 dtypes)."""
    if isinstance(spec, FasterRCNNSpec):
        from pipeline.modeling.faster_rcnn import model as faster_rcnn

        return faster_rcnn.detection_outputs(model, images)
    outputs = model(preprocess(images, spec), training=False)
    return {
        "detection_boxes": tf.cast(outputs["detection_boxes"], tf.float32),
        "detection_scores": tf.cast(outputs["detection_scores"], tf.float32),
        "detection_classes": tf.cast(outputs["detection_classes"], tf.float32),
        "num_detections": tf.cast(outputs["num_detections"], tf.float32),
    }


class _ServingModule(tf.Module):
    def __init__(self, model: Any, spec: SSDSpec) -> None:
        super().__init__()
        self.model = model
        self._spec = spec

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def serve(self, image_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
        return detection_outputs(self.model, self._spec, image_tensor)


def export_saved_model(model: Any, spec: SSDSpec, out: str | os.PathLike[str]) -> Path:
    """Write a SavedModel whose `serving_default` maps `image_tensor` (uint8 [N, H, W, 3]) to
    detection_boxes / detection_scores / detection_classes / num_detections. `out` must be absent
    or empty (callers wanting atomicity pass a staging directory). model_spec.json is written
    next to saved_model.pb for reference."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise PipelineError(f"{out}: not empty; export the SavedModel into a new directory")
    module = _ServingModule(model, spec)
    signature = module.serve.get_concrete_function()
    tf.saved_model.save(module, str(out), signatures={SIGNATURE: signature})
    pin_saved_model_uuid(out)
    (out / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2) + "\n", encoding="utf-8")
    return out


def _numpy(outputs: dict[str, tf.Tensor]) -> dict[str, np.ndarray]:
    return {key: np.asarray(outputs[key]) for key in OUTPUT_KEYS}


def tf1_detector(path: str | os.PathLike[str]) -> Detector:
    """The original TF1 graph (export dir, frozen graph file or TF1 SavedModel), run in a
    `tf.compat.v1` session of its own (`pipeline.tf1.graph_runner`), so TF2 code in the same
    process is unaffected."""
    from pipeline.tf1.graph_runner import TF1GraphRunner

    runner = TF1GraphRunner(path, raw_outputs=False)

    def tf1_graph_detector(images: np.ndarray) -> dict[str, np.ndarray]:
        return runner.detect(images)

    tf1_graph_detector.runner = runner  # kind, session
    return tf1_graph_detector


def model_num_classes(path: str | os.PathLike[str]) -> int | None:
    """The class count of the model `load_detector(path)` loads, read from its description
    (model_spec.json, or a TF1 model's pipeline.config) without loading it; None when unknown."""
    from pipeline.tf1.graph_runner import SAVED_MODEL_DIR, tf1_model_kind

    path = Path(path)
    if tf1_model_kind(path) is not None:
        from pipeline.tf1.pipeline_config import read_pipeline_config

        folder = path if path.is_dir() else path.parent
        folders = [folder, folder.parent] if folder.name == SAVED_MODEL_DIR else [folder]
        for config in (f / "pipeline.config" for f in folders):
            if config.is_file():
                model = read_pipeline_config(config).model
                kind = model.WhichOneof("model")
                count = int(getattr(getattr(model, kind), "num_classes", 0)) if kind else 0
                return count or None
        return None
    spec = path / SPEC_FILE
    if spec.is_file():
        return read_spec(path).num_classes
    return None


def load_detector(path: str | os.PathLike[str]) -> Detector:
    """A converted model directory (model_spec.json + checkpoint/), a SavedModel exported here, or
    a TF1 model: an export/zoo directory (model.ckpt.meta + checkpoint, or
    frozen_inference_graph.pb), a frozen graph `.pb` file, or a TF1 SavedModel directory."""
    from pipeline.tf1.graph_runner import tf1_model_kind

    path = Path(path)
    if tf1_model_kind(path) is not None:
        return tf1_detector(path)
    if (path / "saved_model.pb").is_file():
        loaded = tf.saved_model.load(str(path))
        if SIGNATURE not in loaded.signatures:
            raise PipelineError(
                f"{path}: SavedModel has no `{SIGNATURE}` signature; export it with "
                "pipeline.inference.export_saved_model"
            )
        signature = loaded.signatures[SIGNATURE]

        def saved_model_detector(images: np.ndarray) -> dict[str, np.ndarray]:
            outputs = signature(**{INPUT_KEY: tf.convert_to_tensor(images, tf.uint8)})
            return _numpy(outputs)

        saved_model_detector.loaded = loaded  # keep the SavedModel's resources alive
        return saved_model_detector
    if (path / SPEC_FILE).is_file():
        model, spec = load_converted(path)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
        def run(images: tf.Tensor) -> dict[str, tf.Tensor]:
            return detection_outputs(model, spec, images)

        def converted_detector(images: np.ndarray) -> dict[str, np.ndarray]:
            return _numpy(run(tf.convert_to_tensor(images, tf.uint8)))

        converted_detector.model = model
        converted_detector.spec = spec
        return converted_detector
    raise PipelineError(
        f"{path}: neither a converted model directory ({SPEC_FILE} + checkpoint/), a SavedModel "
        "(saved_model.pb) nor a TF1 model (model.ckpt.meta + model.ckpt, "
        "frozen_inference_graph.pb, a .pb file or a TF1 saved_model/); pass the output of "
        "`python -m pipeline convert`, an exported model or a TF1 export"
    )
