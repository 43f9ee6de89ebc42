"""Run converted / fine-tuned detectors with the TF1 frozen graph's interface.

- `load_detector(path)`: converted model directory, SavedModel, or a TF1 export (directory,
  frozen graph, TF1 SavedModel) -> callable detector.
- `model_num_classes(path)`: that model's class count, from its description, without loading it.
- `export_saved_model(model, spec, out)`: SavedModel with a TF1-like `serving_default` signature.
- `pipeline.inference.predict`: a folder of images -> COCO results.
TensorFlow is imported only when these are used.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "load_detector": "pipeline.inference.detector",
    "model_num_classes": "pipeline.inference.detector",
    "export_saved_model": "pipeline.inference.detector",
    "predict_images": "pipeline.inference.predict",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
