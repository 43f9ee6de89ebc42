"""Map every TF1 checkpoint variable onto the TF2 model, layer object by layer object.

The TF1 side is a `pipeline.tf1.weights.WeightSource` (a checkpoint, raw or moving averages, a
frozen graph or a SavedModel), so the same mapping serves every form a model arrives in.
The TF2 model records, for each Keras layer holding weights, the TF1 scope it reproduces
(`pipeline.modeling.tf1_layout`); those scopes are derived from the same spec that decided the
architecture, so the mapping follows whatever pipeline.config describes (depth multiplier, SSDLite
heads, depthwise extra layers, kernel sizes, number of feature maps) rather than a list written
for two files. Anything that does not line up — a shape, a variable the model needs that the
checkpoint lacks, a checkpoint variable the model has no place for — means pipeline.config does
not describe the checkpoint, and is reported as one error naming the config fields to fix.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.modeling.backbones import SCOPES
from pipeline.modeling.spec import SSDSpec
from pipeline.modeling.tf1_layout import LayerRecord, model_records
from pipeline.tf1.checkpoint import TF1Checkpoint
from pipeline.tf1.weights import WeightSource, as_weight_source

_FE = "model.ssd.feature_extractor"
_BP = "model.ssd.box_predictor.convolutional_box_predictor"
_WS_BP = "model.ssd.box_predictor.weight_shared_convolutional_box_predictor"
# A fake-quant range of a TF1 quantized graph.
_QUANT_RANGE = re.compile(r"_quant/(min|max)$")


@dataclasses.dataclass
class MappingPlan:
    """Which TF1 variable initialises which TF2 variable, and what is left over."""

    # (TF1 name, TF2 variable, record)
    assignments: list[tuple[str, Any, LayerRecord]]
    # (TF1 name it stands for, TF2 variable, value): TF1 layers without BatchNorm scale/center.
    implied: list[tuple[str, Any, float]]
    # Layers left at their initial values (class predictors after a class-count change).
    fresh: list[LayerRecord]
    # TF1 variables not used because their layer starts fresh.
    tf1_replaced: list[str]
    # TF1 step counters, optimizer slots, moving-average shadows not used.
    tf1_ignored: list[str]
    # Problems; a plan with any of these is never applied.
    tf1_unmapped: list[str]
    tf2_uninitialised: list[str]
    # (TF1 name, TF2 variable, record): variables of layers the outputs never read, absent from a
    # frozen graph (freezing keeps only what reaches the outputs); set to 0.
    pruned: list[tuple[str, Any, LayerRecord]] = dataclasses.field(default_factory=list)

    @property
    def tf1_mapped(self) -> list[str]:
        return [name for name, _, _ in self.assignments]

    @property
    def fresh_layers(self) -> list[str]:
        return sorted({record.scope for record in self.fresh})

    @property
    def pruned_layers(self) -> list[str]:
        return sorted({record.scope for _, _, record in self.pruned})

    @property
    def complete(self) -> bool:
        return not self.tf1_unmapped and not self.tf2_uninitialised


def _shape_str(shape: Iterable[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def _depth_fields(spec: SSDSpec) -> str:
    fe = spec.feature_extractor
    return (
        f"{_FE}.depth_multiplier ({fe.depth_multiplier:g}) / {_FE}.min_depth ({fe.min_depth}) / "
        f"{_FE}.type ({spec.architecture})"
    )


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _blame_shape(
    record: LayerRecord, tf1_shape: tuple[int, ...], tf2_shape: tuple[int, ...], spec: SSDSpec
) -> str:
    """The pipeline.config field(s) that decide the disagreeing dimension."""
    spatial = len(tf1_shape) == 4 and tf1_shape[:2] != tf2_shape[:2]
    predictor = spec.box_predictor
    if record.module == "head":
        box_predictor = _WS_BP if predictor.weight_shared else _BP
        if spatial:
            return f"{box_predictor}.kernel_size ({predictor.kernel_size})"
        if tf1_shape[-1] != tf2_shape[-1] and record.kind in ("conv_bias",):
            generator = "multiscale" if spec.anchors.multiscale else "ssd"
            anchors = (
                f"model.ssd.anchor_generator.{generator}_anchor_generator (anchors per location)"
            )
            if record.class_dependent:
                return f"model.ssd.num_classes ({spec.num_classes}) / {anchors}"
            return anchors
        if predictor.weight_shared:
            return f"{box_predictor}.depth ({predictor.depth}) / {_depth_fields(spec)}"
        return _depth_fields(spec)
    if record.module == "decoder" and spatial:
        return f"{_FE}.use_depthwise ({_bool(spec.feature_extractor.use_depthwise)})"
    return _depth_fields(spec)


def _blame_missing(record: LayerRecord, spec: SSDSpec, weights: WeightSource) -> str:
    if record.kind == "fake_quant":
        return "graph_rewriter.quantization (set: the config describes a quantized graph)"
    layer_present = any(
        f"{record.scope}/{leaf}" in weights.shapes for leaf in ("weights", "depthwise_weights")
    )
    if record.kind == "batch_norm" and layer_present:
        return f"{_FE}.conv_hyperparams.batch_norm (scale / center)"
    if record.scope.endswith("_depthwise"):
        if record.module == "head":
            return f"{_BP}.use_depthwise ({_bool(spec.box_predictor.use_depthwise)})"
        return f"{_FE}.use_depthwise ({_bool(spec.feature_extractor.use_depthwise)})"
    return f"{_FE}.type ({spec.architecture}) / {_FE}.num_layers"


def _blame_unmapped(name: str, spec: SSDSpec) -> str:
    if _QUANT_RANGE.search(name):
        state = "set" if spec.quantization else "not set"
        return f"graph_rewriter.quantization ({state})"
    if "_depthwise/" in name:
        if name.startswith("BoxPredictor"):
            return f"{_BP}.use_depthwise ({_bool(spec.box_predictor.use_depthwise)})"
        return f"{_FE}.use_depthwise ({_bool(spec.feature_extractor.use_depthwise)})"
    if name.startswith("WeightSharedConvolutionalBoxPredictor/"):
        layers = spec.box_predictor.num_layers_before_predictor
        return f"{_WS_BP}.num_layers_before_predictor ({layers})"
    if name.startswith("BoxPredictor"):
        layers = spec.anchors.num_layers
        return f"model.ssd.anchor_generator.ssd_anchor_generator.num_layers ({layers})"
    return f"{_FE}.type ({spec.architecture})"


def plan_mapping(
    model: Any,
    spec: SSDSpec,
    weights: WeightSource | TF1Checkpoint | str,
    fresh_class_predictors: bool = False,
    config_source: str = "pipeline.config",
) -> MappingPlan:
    """Pair TF1 variables with the model's variables; raise PipelineError on any disagreement.

    `weights`: a WeightSource, or a checkpoint (its raw values).

    With `fresh_class_predictors` (the class count changed), class predictor layers are left at
    their initial values and their TF1 variables are listed as replaced.
    """
    weights = as_weight_source(weights)
    shapes = weights.shapes
    where = weights.form.replace("_", " ")
    _check_feature_extractor_scope(spec, weights, config_source)
    records = model_records(model)
    assignments: list[tuple[str, Any, LayerRecord]] = []
    implied: list[tuple[str, Any, float]] = []
    fresh: list[LayerRecord] = []
    replaced: list[str] = []
    problems: dict[str, list[str]] = {}
    covered: set[int] = set()
    pruned: list[tuple[str, Any, LayerRecord]] = []

    def problem(field: str, text: str) -> None:
        problems.setdefault(field, []).append(text)

    for record in records:
        for name, variable, implied_value in record.variables():
            covered.add(id(variable))
            tf2_shape = tuple(int(d) for d in variable.shape)
            if record.class_dependent and fresh_class_predictors:
                fresh.append(record)
                if name in shapes:
                    replaced.append(name)
                continue
            if name not in shapes:
                if implied_value is not None:
                    implied.append((name, variable, implied_value))
                elif weights.pruned_to_outputs and not record.read_by_outputs:
                    pruned.append((name, variable, record))
                else:
                    problem(
                        _blame_missing(record, spec, weights),
                        f"{name} {_shape_str(tf2_shape)} is required by the config but missing "
                        f"from the {where}",
                    )
                continue
            tf1_shape = shapes[name]
            if tf1_shape != tf2_shape:
                problem(
                    _blame_shape(record, tf1_shape, tf2_shape, spec),
                    f"{name} is {_shape_str(tf1_shape)} in the {where} but "
                    f"{_shape_str(tf2_shape)} in the model the config describes",
                )
                continue
            assignments.append((name, variable, record))

    used = {name for name, _, _ in assignments} | set(replaced)
    unmapped = sorted(n for n in shapes if n not in used)
    # A record may be missing only because of an earlier shape problem; report the variable once.
    problem_names = {text.split(" ", 1)[0] for texts in problems.values() for text in texts}
    for name in unmapped:
        if name not in problem_names:
            problem(
                _blame_unmapped(name, spec),
                f"{name} {_shape_str(shapes[name])} is in the {where} "
                "but has no place in the model the config describes",
            )
    uninitialised = [
        variable.name
        for module in model.checkpoint_items.values()
        for variable in module.variables
        if id(variable) not in covered
    ]
    if problems:
        raise PipelineError(_problem_message(config_source, weights, problems))
    if uninitialised:
        raise PipelineError(
            f"{config_source}: the model has {len(uninitialised)} weights with no TF1 counterpart "
            f"(first: {uninitialised[0]}); this is a converter bug for {spec.architecture}, "
            "please report it with the pipeline.config"
        )
    return MappingPlan(
        assignments=assignments,
        implied=implied,
        fresh=_unique(fresh),
        tf1_replaced=sorted(replaced),
        tf1_ignored=weights.unused_names,
        tf1_unmapped=[],
        tf2_uninitialised=[],
        pruned=pruned,
    )


def _check_feature_extractor_scope(
    spec: SSDSpec, weights: WeightSource, config_source: str
) -> None:
    """Fail early, with the clearest message, when the checkpoint is another architecture."""
    expected = SCOPES[spec.architecture]
    found = sorted(
        {"/".join(n.split("/")[:2]) for n in weights.shapes if n.startswith("FeatureExtractor/")}
    )
    if found and expected not in found:
        raise PipelineError(
            f"{config_source}: {_FE}.type is {spec.architecture} (variables under {expected}/) "
            f"but {weights.location} holds {', '.join(f + '/' for f in found)}; "
            "use the pipeline.config shipped with the checkpoint"
        )


def _unique(records: list[LayerRecord]) -> list[LayerRecord]:
    seen: set[tuple[str, str]] = set()
    result = []
    for record in records:
        key = (record.scope, record.kind)
        if key not in seen:
            seen.add(key)
            result.append(record)
    return result


def _problem_message(
    config_source: str, weights: WeightSource, problems: dict[str, list[str]]
) -> str:
    parts = []
    for field, texts in problems.items():
        more = f" (+{len(texts) - 1} more)" if len(texts) > 1 else ""
        parts.append(f"{field}: {texts[0]}{more}")
    return (
        f"{config_source}: does not describe the weights {weights.location}: "
        + "; ".join(parts)
        + "; fix these fields (use the pipeline.config shipped with the checkpoint)"
    )


def apply_plan(
    plan: MappingPlan, weights: WeightSource | TF1Checkpoint | str, progress: bool = False
) -> None:
    """Copy the TF1 values into the TF2 variables (and the implied constants)."""
    from tqdm import tqdm

    weights = as_weight_source(weights)
    weights.require_data()
    for name, variable, _ in tqdm(
        plan.assignments, desc="tf1 -> tf2", unit="var", disable=not progress, leave=False
    ):
        value = weights.read(name)
        variable.assign(value.astype(variable.dtype.as_numpy_dtype, copy=False))
    for _, variable, value in plan.implied:
        variable.assign(np.full(variable.shape, value, variable.dtype.as_numpy_dtype))
    for _, variable, _ in plan.pruned:
        variable.assign(np.zeros(variable.shape, variable.dtype.as_numpy_dtype))


def load_tf1_weights(
    model: Any,
    spec: SSDSpec,
    checkpoint: WeightSource | TF1Checkpoint | str,
    source_num_classes: int | None = None,
    config_source: str = "pipeline.config",
    progress: bool = False,
) -> MappingPlan:
    """Initialise `model` (built from `spec`) from a TF1 checkpoint; return the plan applied.

    `source_num_classes`: the class count the checkpoint was trained with (pipeline.config's);
    when it differs from spec.num_classes the class predictors start fresh.
    """
    checkpoint = as_weight_source(checkpoint)
    fresh = source_num_classes is not None and source_num_classes != spec.num_classes
    plan = plan_mapping(model, spec, checkpoint, fresh, config_source)
    apply_plan(plan, checkpoint, progress)
    return plan


def model_variables(model: Any) -> list[Any]:
    """Every variable the model's checkpoint items hold (an item may be a list of modules)."""
    variables = []
    for item in model.checkpoint_items.values():
        for module in item if isinstance(item, list | tuple) else [item]:
            variables.extend(module.variables)
    return variables
