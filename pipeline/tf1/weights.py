"""Where the TF1 weights come from: one interface over checkpoints, frozen graphs and SavedModels,
raw or moving-average values.

The mapping (`pipeline.conversion.mapping`) asks a `WeightSource` for the TF1 variables it offers
(`shapes`, by TF1 variable name) and their values (`read`); what the file holds besides them
(optimizer slots, step counters, unused shadows) is listed in `unused`, counted in the report.

Moving averages follow the TF1 exporter (object_detection/exporter.py,
`replace_variable_values_with_moving_averages`): with `eval_config.use_moving_averages` it
restores every trainable variable from `<name>/ExponentialMovingAverage`
(`tf.train.ExponentialMovingAverage.variables_to_restore()`) and the others (BatchNorm moving
statistics) from their own names; a shadow it needs and does not find stops the export.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.errors import PipelineError
from pipeline.tf1.checkpoint import TF1Checkpoint, is_bookkeeping
from pipeline.tf1.graph_facts import read_graph_def
from pipeline.tf1.model_dir import SAVED_MODEL_PB, SAVED_MODEL_VARIABLES, TF1ModelDir

WeightsChoice = Literal["auto", "raw", "moving_average"]
WEIGHTS_CHOICES: tuple[str, ...] = ("auto", "raw", "moving_average")
SHADOW_SUFFIX = "/ExponentialMovingAverage"
# Variables TF1 creates non-trainable, so the exporter never averages them (BatchNorm statistics;
# the fake-quant ranges `.../{weights,act}_quant/{min,max}` of quantized graphs and their
# moving averages' zero-debias state).
_NOT_TRAINABLE_LEAVES = ("moving_mean", "moving_variance", "min", "max", "biased", "local_step")
# The variables slim layers create (conv, depthwise conv, BatchNorm), by last name component.
_VARIABLE_LEAVES = (
    "weights",
    "biases",
    "depthwise_weights",
    "gamma",
    "beta",
    "moving_mean",
    "moving_variance",
)
SLOTS = "optimizer slots and step counters"
UNUSED_SHADOWS = "moving-average shadows not used"


def is_averaged(name: str) -> bool:
    """Whether the TF1 exporter restores `name` from its shadow (trainable variables only)."""
    return name.rsplit("/", 1)[-1] not in _NOT_TRAINABLE_LEAVES


class WeightSource:
    """TF1 variables by name, from one file; see the module docstring."""

    form: str
    location: str
    shapes: dict[str, tuple[int, ...]]
    unused: dict[str, list[str]]
    # 'raw' | 'moving_average' | 'as_exported' (a graph holds one set of values), and why.
    weights: str
    reason: str
    # A frozen graph keeps only the variables that reach its outputs.
    pruned_to_outputs: bool = False

    def read(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def stored_name(self, name: str) -> str:
        """The name the value of variable `name` is stored under (its shadow, when averaged)."""
        return name

    def require_data(self) -> None:
        """Raise PipelineError when the values cannot be read (checked before any work)."""

    @property
    def unused_names(self) -> list[str]:
        return sorted(name for names in self.unused.values() for name in names)

    @property
    def total(self) -> int:
        """Every entry of the file: offered variables, unused entries, shadows read instead."""
        return len(self.shapes) + len(self.unused_names) + len(self.replaced_by_shadows)

    @property
    def replaced_by_shadows(self) -> list[str]:
        """Raw values not used because their moving average is."""
        return []

    def describe(self) -> dict[str, Any]:
        """The report's `weights` section."""
        return {
            "form": self.form,
            "file": self.location,
            "weights": self.weights,
            "reason": self.reason,
            "moving_average_shadows_used": len(self.replaced_by_shadows),
            "unused": {why: len(names) for why, names in self.unused.items() if names},
        }


class CheckpointWeights(WeightSource):
    """A name-based TF1 checkpoint, raw values or moving averages."""

    def __init__(
        self,
        checkpoint: TF1Checkpoint,
        moving_average: bool,
        reason: str,
        form: str = "checkpoint",
    ) -> None:
        self.checkpoint = checkpoint
        self.form = form
        self.location = f"{checkpoint.prefix}.index"
        self.weights = "moving_average" if moving_average else "raw"
        self.reason = reason
        names = checkpoint.shapes
        self.shapes = {n: shape for n, shape in names.items() if not is_bookkeeping(n)}
        shadows = {n for n in names if n.endswith(SHADOW_SUFFIX)}
        self._averaged: set[str] = set()
        if moving_average:
            self._averaged = {n for n in self.shapes if is_averaged(n)}
            missing = sorted(n for n in self._averaged if n + SHADOW_SUFFIX not in shadows)
            if missing:
                raise PipelineError(
                    f"{self.location}: moving averages requested ({reason}) but "
                    f"{len(missing)} of {len(self._averaged)} trainable variables have no "
                    f"{SHADOW_SUFFIX[1:]} shadow (first: {missing[0]}); the model was not "
                    "trained with optimizer.use_moving_average, or these are already the "
                    "exported averages: convert with --weights raw"
                )
        used_shadows = {n + SHADOW_SUFFIX for n in self._averaged}
        self.unused = {
            SLOTS: sorted(n for n in names if is_bookkeeping(n) and n not in shadows),
            UNUSED_SHADOWS: sorted(shadows - used_shadows),
        }

    @property
    def replaced_by_shadows(self) -> list[str]:
        return sorted(self._averaged)

    def stored_name(self, name: str) -> str:
        return name + SHADOW_SUFFIX if name in self._averaged else name

    def require_data(self) -> None:
        self.checkpoint.require_data()

    def read(self, name: str) -> np.ndarray:
        return self.checkpoint.read(self.stored_name(name))


class GraphConstantWeights(WeightSource):
    """The weights a frozen graph holds as constants, by variable name.

    Freezing turns each variable `X` into a Const `X` that its reader still consumes: the
    Identity `X/read` (a reference variable, as in the TF1 exporter's graphs) or an Identity
    `.../ReadVariableOp` (a resource variable); other constants (shapes, anchors, thresholds)
    have no such reader. BatchNorm parameters stay separate
    constants whether the graph uses FusedBatchNorm or the decomposed ops.
    """

    pruned_to_outputs = True

    def __init__(self, graph_def: Any, location: str, form: str) -> None:
        self.form = form
        self.location = location
        self.weights = "as_exported"
        self.reason = (
            "a frozen graph holds one set of values, the ones its exporter wrote (the moving "
            "averages when the export had eval_config.use_moving_averages)"
        )
        consts = [node for node in graph_def.node if node.op == "Const"]
        readers = {
            node.input[0]
            for node in graph_def.node
            if node.op == "Identity"
            and node.input
            and (node.name == f"{node.input[0]}/read" or node.name.endswith("/ReadVariableOp"))
        }
        self._nodes = {node.name: node for node in consts if node.name in readers}
        if not self._nodes:
            # Rewrites such as optimize_for_inference drop the `X/read` identities; the variable
            # constants keep their variables' names.
            self._nodes = {
                node.name: node
                for node in consts
                if node.name.rsplit("/", 1)[-1] in _VARIABLE_LEAVES
            }
        self.shapes = {
            name: tuple(int(d.size) for d in node.attr["value"].tensor.tensor_shape.dim)
            for name, node in self._nodes.items()
        }
        self.unused = {}
        if not self.shapes:
            raise PipelineError(
                f"{location}: no variable constants (a Const `X` read by `X/read`, or named like "
                "a slim variable) in the graph; "
                "expected a graph frozen by the TF1 exporter (export_inference_graph.py)"
            )

    def read(self, name: str) -> np.ndarray:
        import tensorflow as tf

        return tf.make_ndarray(self._nodes[name].attr["value"].tensor)


def open_weights(
    model: TF1ModelDir,
    weights: WeightsChoice = "auto",
    use_moving_averages: bool = False,
) -> WeightSource:
    """The weight source of a resolved model directory.

    `weights`: 'auto' follows `use_moving_averages` (the config's
    eval_config.use_moving_averages, what the TF1 exporter follows); 'raw' / 'moving_average'
    override it. Graph forms hold one set of values: an explicit choice there is an error.
    """
    if weights not in WEIGHTS_CHOICES:
        raise PipelineError(f"--weights {weights}: use one of {', '.join(WEIGHTS_CHOICES)}")
    if model.form == "checkpoint":
        assert model.checkpoint_prefix is not None
        return _checkpoint_weights(
            TF1Checkpoint(model.checkpoint_prefix),
            weights,
            use_moving_averages,
            str(model.pipeline_config),
            "checkpoint",
        )
    if weights != "auto":
        raise PipelineError(
            f"{model.weights_file}: --weights {weights} applies to checkpoints; a "
            f"{model.form.replace('_', ' ')} holds the one set of values its exporter wrote"
        )
    if model.form == "frozen_graph":
        assert model.frozen_graph is not None
        graph_def, _ = read_graph_def(model.frozen_graph)
        return GraphConstantWeights(graph_def, str(model.frozen_graph), "frozen_graph")
    assert model.saved_model is not None
    if Path(f"{model.saved_model / SAVED_MODEL_VARIABLES}.index").is_file():
        # A SavedModel with variables keeps them in a name-based checkpoint of its own.
        return _checkpoint_weights(
            TF1Checkpoint(model.saved_model / SAVED_MODEL_VARIABLES),
            weights,
            use_moving_averages,
            str(model.pipeline_config),
            "saved_model",
        )
    location = model.saved_model / SAVED_MODEL_PB
    graph_def, _ = read_graph_def(location)
    return GraphConstantWeights(graph_def, str(location), "saved_model")


def _checkpoint_weights(
    checkpoint: TF1Checkpoint,
    weights: WeightsChoice,
    use_moving_averages: bool,
    config: str,
    form: str,
) -> CheckpointWeights:
    shadows = sum(n.endswith(SHADOW_SUFFIX) for n in checkpoint.shapes)
    flag = f"{config}: eval_config.use_moving_averages is {str(use_moving_averages).lower()}"
    if weights == "auto":
        moving_average = use_moving_averages
        if moving_average:
            reason = f"{flag}: the TF1 exporter would restore the moving averages"
        else:
            reason = f"{flag}: the TF1 exporter would write the raw weights"
            if shadows:
                reason += f" (the {shadows} shadows are unused; --weights moving_average)"
    else:
        moving_average = weights == "moving_average"
        reason = f"--weights {weights} ({flag})"
    return CheckpointWeights(checkpoint, moving_average, reason, form)


def as_weight_source(source: WeightSource | TF1Checkpoint | str | os.PathLike[str]) -> WeightSource:
    """Accept a weight source, a TF1Checkpoint or a checkpoint path (raw values)."""
    if isinstance(source, WeightSource):
        return source
    if not isinstance(source, TF1Checkpoint):
        source = TF1Checkpoint(source)
    return CheckpointWeights(source, moving_average=False, reason="raw checkpoint values")
