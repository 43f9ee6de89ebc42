"""What differs between detector families in a conversion; `pipeline.conversion.convert` runs the
one flow (resolve the model directory, open its weights, map, write atomically, verify, report)
for each of them.

A new family (R-FCN, Mask R-CNN, ...) adds one `ConversionFamily` next to its modeling code and
one line in `pipeline.conversion.convert.family_of`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from pipeline.conversion.mapping import MappingPlan

# Parity of a converted model with the TF1 graph: (model root, model, spec, images dir,
# max images, progress, graph) -> the JSON report, where `graph` chooses the TF1 graph and the
# weights it is restored with (`pipeline.tf1.graph_runner.TF1GraphRunner`'s graph,
# checkpoint_prefix, restore_name).
Parity = Callable[
    [os.PathLike[str], Any, Any, str | os.PathLike[str], int | None, bool, dict[str, Any]],
    dict[str, Any],
]


@dataclasses.dataclass(frozen=True)
class ConversionFamily:
    name: str
    # (parsed pipeline.config, its path for messages) -> the spec (SSDSpec, FasterRCNNSpec, ...)
    spec_from_config: Callable[[Any, str], Any]
    build_model: Callable[[Any], Any]
    # (model, spec, weights, fresh class predictors, config path) -> MappingPlan
    plan_mapping: Callable[[Any, Any, Any, bool, str], MappingPlan]
    parity: Parity
    # The Model Garden class the converted model is, for the report.
    target_model: str
    # How the model sizes its input, for the report; None: the spec's fixed image_size.
    input_size: Callable[[Any], str | None] = lambda spec: None
