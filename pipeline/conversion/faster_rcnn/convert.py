"""The Faster R-CNN conversion family (`pipeline.conversion.family`): its spec, model, mapping
and stage-by-stage parity. The flow (model directory forms, weights, atomic output, report) is
`pipeline.conversion.convert`'s, shared with SSD; model_spec.json says `family: faster_rcnn`.
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.conversion.family import ConversionFamily
from pipeline.conversion.faster_rcnn.mapping import plan_faster_rcnn_mapping
from pipeline.modeling.faster_rcnn.spec import FasterRCNNSpec
from pipeline.tf1.faster_rcnn_config import faster_rcnn_spec_from_config


def _build(spec: FasterRCNNSpec) -> Any:
    from pipeline.modeling.faster_rcnn.model import build_faster_rcnn_model

    return build_faster_rcnn_model(spec)


def _parity(
    root: os.PathLike[str],
    model: Any,
    spec: FasterRCNNSpec,
    images_dir: str | os.PathLike[str],
    max_images: int | None,
    progress: bool,
    graph: dict[str, Any],
) -> dict[str, Any]:
    from pipeline.conversion.faster_rcnn.parity import verify_faster_rcnn

    return verify_faster_rcnn(root, model, images_dir, max_images, **graph)


FASTER_RCNN = ConversionFamily(
    name="faster_rcnn",
    spec_from_config=lambda config, source: faster_rcnn_spec_from_config(config, source),
    build_model=_build,
    plan_mapping=plan_faster_rcnn_mapping,
    parity=_parity,
    target_model="official.vision.modeling.maskrcnn_model.MaskRCNNModel (masks off)",
    input_size=lambda spec: f"keep_aspect_ratio {spec.min_dimension}..{spec.max_dimension}",
)
