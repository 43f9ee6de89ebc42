"""Map every TF1 Faster R-CNN checkpoint variable onto the TF2 model, layer object by layer object.

Same rules and result type as the SSD mapping (`pipeline.conversion.mapping.MappingPlan`, applied
by its `apply_plan`): the model's TF1 layout records name the TF1 variable of every weight; any
shape disagreement, variable missing from the checkpoint or checkpoint variable without a place
is one PipelineError naming the config fields to fix.
"""

from __future__ import annotations

from typing import Any

from pipeline.conversion.mapping import (
    MappingPlan,
    _problem_message,
    _shape_str,
    _unique,
    model_variables,
)
from pipeline.errors import PipelineError
from pipeline.modeling.faster_rcnn.extractors import feature_extractor
from pipeline.modeling.faster_rcnn.model import model_records
from pipeline.modeling.faster_rcnn.spec import FasterRCNNSpec
from pipeline.tf1.checkpoint import TF1Checkpoint
from pipeline.tf1.weights import WeightSource, as_weight_source

_FR = "model.faster_rcnn"


def _blame(name: str, spec: FasterRCNNSpec) -> str:
    if name.startswith("SecondStageBoxPredictor/"):
        return f"{_FR}.num_classes ({spec.num_classes})"
    if name.startswith("FirstStageBoxPredictor/"):
        return (
            f"{_FR}.first_stage_anchor_generator (anchors per location: "
            f"{spec.anchors.num_anchors_per_location})"
        )
    if name.startswith("Conv/"):
        return (
            f"{_FR}.first_stage_box_predictor_depth ({spec.first_stage_depth}) / "
            f"first_stage_box_predictor_kernel_size ({spec.first_stage_kernel_size})"
        )
    return f"{_FR}.feature_extractor.type ({spec.architecture})"


def plan_faster_rcnn_mapping(
    model: Any,
    spec: FasterRCNNSpec,
    weights: WeightSource | TF1Checkpoint | str,
    fresh_class_predictors: bool = False,
    config_source: str = "pipeline.config",
) -> MappingPlan:
    """Pair TF1 variables with the model's variables; raise PipelineError on any disagreement.

    `weights`: a WeightSource (`pipeline.tf1.weights`), or a checkpoint (its raw values).
    """
    weights = as_weight_source(weights)
    shapes = weights.shapes
    _check_feature_extractor_scope(spec, weights, config_source)
    assignments: list[tuple[str, Any, Any]] = []
    fresh, replaced = [], []
    problems: dict[str, list[str]] = {}
    covered: set[int] = set()
    for record in model_records(model):
        for name, variable, _ in record.variables():
            covered.add(id(variable))
            tf2_shape = tuple(int(d) for d in variable.shape)
            if record.class_dependent and fresh_class_predictors:
                fresh.append(record)
                if name in shapes:
                    replaced.append(name)
                continue
            if name not in shapes:
                problems.setdefault(_blame(name, spec), []).append(
                    f"{name} {_shape_str(tf2_shape)} is required by the config but missing "
                    "from the checkpoint"
                )
            elif shapes[name] != tf2_shape:
                problems.setdefault(_blame(name, spec), []).append(
                    f"{name} is {_shape_str(shapes[name])} in the checkpoint but "
                    f"{_shape_str(tf2_shape)} in the model the config describes"
                )
            else:
                assignments.append((name, variable, record))
    used = {name for name, _, _ in assignments} | set(replaced)
    flagged = {text.split(" ", 1)[0] for texts in problems.values() for text in texts}
    for name in sorted(shapes):
        if name not in used and name not in flagged:
            problems.setdefault(_blame(name, spec), []).append(
                f"{name} {_shape_str(shapes[name])} is in the checkpoint but has no "
                "place in the model the config describes"
            )
    if problems:
        raise PipelineError(_problem_message(config_source, weights, problems))
    uninitialised = [
        variable.name for variable in model_variables(model) if id(variable) not in covered
    ]
    if uninitialised:
        raise PipelineError(
            f"{config_source}: the model has {len(uninitialised)} weights with no TF1 counterpart "
            f"(first: {uninitialised[0]}); this is a converter bug for {spec.architecture}, "
            "please report it with the pipeline.config"
        )
    return MappingPlan(
        assignments=assignments,
        implied=[],
        fresh=_unique(fresh),
        tf1_replaced=sorted(replaced),
        tf1_ignored=weights.unused_names,
        tf1_unmapped=[],
        tf2_uninitialised=[],
    )


def _check_feature_extractor_scope(
    spec: FasterRCNNSpec, weights: WeightSource, config_source: str
) -> None:
    """Fail early, with the clearest message, when the checkpoint is another backbone."""
    found = sorted(
        {
            "/".join(n.split("/")[:2])
            for n in weights.shapes
            if n.startswith("FirstStageFeatureExtractor/")
        }
    )
    scope = feature_extractor(spec).first_stage_scope(spec)
    if found and scope not in found:
        raise PipelineError(
            f"{config_source}: {_FR}.feature_extractor.type is {spec.architecture} (variables "
            f"under {scope}/) but {weights.location} holds "
            f"{', '.join(f + '/' for f in found)}; use the pipeline.config shipped with the "
            "checkpoint"
        )
