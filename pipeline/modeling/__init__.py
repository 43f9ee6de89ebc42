"""The TF2 (Model Garden) SSD model that a TF1 zoo checkpoint converts into.

Public API (imported lazily so that `pipeline.modeling.spec` does not pull in TensorFlow):
- `build_ssd_model(spec) -> RetinaNetModel`
- `preprocess(images_uint8, spec) -> float32 [N, H, W, 3]`
- `load_converted(directory) -> (model, spec)`
- `pipeline.modeling.anchors.tf1_anchor_boxes(spec) -> np.ndarray [N, 4]`
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "build_ssd_model": "pipeline.modeling.builder",
    "preprocess": "pipeline.modeling.preprocessing",
    "load_converted": "pipeline.modeling.builder",
    "SSDSpec": "pipeline.modeling.spec",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
