"""Which TF1 variable each TF2 weight corresponds to, recorded per layer object.

While the backbone, decoder and head are assembled, every Keras layer that holds weights is
registered here together with the TF1 variable scope it reproduces (derived from the same spec
that decides the architecture, e.g. `FeatureExtractor/MobilenetV2/expanded_conv_3/expand`). The
converter then walks these records; it never looks at Keras variable names, which Keras
uniquifies per process (`conv2d_17/kernel:0`).

Model Garden blocks create their sub-layers in `build()`, so a record holds the block and the
attribute naming the sub-layer (`_conv0`, `_norm0`, ...) and resolves it when asked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

# The zero-debias state of a TF1 moving-average range (`assign_moving_average`'s `biased` and
# `local_step`, scoped by the range's own name). Exported checkpoints and graphs lack it; TF1 then
# starts it at 0 when training, as the model does.
_DEBIAS_STATE = tuple(
    (f"{{scope}}/{end}/{leaf}", f"{end}_{leaf}")
    for end in ("min", "max")
    for leaf in ("biased", "local_step")
)
_OPTIONAL = {leaf: 0.0 for leaf, _ in _DEBIAS_STATE}

# kind -> ((TF1 leaf name, Keras attribute), ...)
_VARIABLES = {
    "conv": (("weights", "kernel"),),
    "conv_bias": (("weights", "kernel"), ("biases", "bias")),
    "depthwise": (("depthwise_weights", "depthwise_kernel"),),
    # slim separable_conv2d with num_outputs: the fused depthwise + pointwise pair.
    "separable": (
        ("depthwise_weights", "depthwise_kernel"),
        ("pointwise_weights", "pointwise_kernel"),
    ),
    "batch_norm": (
        ("BatchNorm/gamma", "gamma"),
        ("BatchNorm/beta", "beta"),
        ("BatchNorm/moving_mean", "moving_mean"),
        ("BatchNorm/moving_variance", "moving_variance"),
    ),
    # slim batch_norm with scale=False (Inception-ResNet v2's arg scope): no gamma, and the
    # Keras BatchNormalization(scale=False) has none either.
    "batch_norm_no_scale": (
        ("BatchNorm/beta", "beta"),
        ("BatchNorm/moving_mean", "moving_mean"),
        ("BatchNorm/moving_variance", "moving_variance"),
    ),
    # A BatchNorm whose scope is given in full: the weight-shared box predictor's per-level
    # `.../conv2d_i/BatchNorm/feature_j/{gamma,...}`.
    "norm": (
        ("gamma", "gamma"),
        ("beta", "beta"),
        ("moving_mean", "moving_mean"),
        ("moving_variance", "moving_variance"),
    ),
    # A weight range of TF1's quantized graphs (`.../weights_quant`;
    # pipeline.modeling.quantization.FakeQuant).
    "fake_quant": (("min", "range_min"), ("max", "range_max")),
    # An activation range (`.../act_quant`, `.../post_activation_bypass_quant`): a moving
    # average, with the zero-debias state TF1 keeps under `<scope>/<scope>/{min,max}/`.
    "moving_average_quant": (
        ("min", "range_min"),
        ("max", "range_max"),
        *_DEBIAS_STATE,
    ),
}


@dataclasses.dataclass(frozen=True)
class LayerRecord:
    """One TF1 layer scope and the Keras layer holding its weights."""

    scope: str  # TF1 variable scope, e.g. 'BoxPredictor_0/ClassPredictor'
    # 'conv' | 'conv_bias' | 'depthwise' | 'separable' | 'batch_norm' | 'norm' | 'fake_quant' |
    # 'moving_average_quant'
    kind: str
    owner: Any  # a Keras layer, or the Model Garden block that owns it
    attribute: str | None = None  # the block's attribute naming the Keras layer
    # 'backbone' | 'decoder' | 'head' (the `checkpoint_items` entry holding the layer)
    module: str = "backbone"
    # Class predictors depend on the class count; the converter may leave them fresh.
    class_dependent: bool = False
    # TF1 variables that may legitimately be absent, with the value that reproduces their
    # absence (BatchNorm without scale has no gamma: gamma = 1; without center: beta = 0).
    implied: tuple[tuple[str, float], ...] = ()
    # False for a layer TF1 builds (its variables are in checkpoints) but whose output the
    # detections never read: freezing prunes it, so a frozen graph may lack its variables.
    read_by_outputs: bool = True

    @property
    def layer(self) -> Any:
        return getattr(self.owner, self.attribute) if self.attribute else self.owner

    def variables(self) -> Iterator[tuple[str, Any, float | None]]:
        """(TF1 variable name, TF2 variable, implied value or None) for each weight."""
        implied = dict(self.implied)
        layer = self.layer
        for leaf, attribute in _VARIABLES[self.kind]:
            name = f"{self.scope}/{leaf.format(scope=self.scope)}"
            yield name, getattr(layer, attribute), implied.get(leaf, _OPTIONAL.get(leaf))


class TF1Layout:
    """The records of one module. A plain object on purpose: Keras does not track it, so it adds
    nothing to the module's checkpoint."""

    def __init__(
        self, module: str, bn_implied: tuple[tuple[str, float], ...] = (), quantized: bool = False
    ) -> None:
        self.module = module
        # A TF1 quantized graph's module: `fake_quant` records its layers' ranges.
        self.quantized = quantized
        # Default for BatchNorm records: what the module's TF1 layers lack (no scale / center).
        self.bn_implied = bn_implied
        self.records: list[LayerRecord] = []

    def add(
        self,
        scope: str,
        kind: str,
        owner: Any,
        attribute: str | None = None,
        class_dependent: bool = False,
        implied: tuple[tuple[str, float], ...] = (),
    ) -> None:
        self.records.append(
            LayerRecord(scope, kind, owner, attribute, self.module, class_dependent, implied)
        )

    def mark_unread(self, first: int) -> None:
        """Records `first`.. are layers the model's outputs never read (see LayerRecord)."""
        self.records[first:] = [
            dataclasses.replace(record, read_by_outputs=False) for record in self.records[first:]
        ]

    def conv_bn(
        self,
        scope: str,
        block: Any,
        conv: str,
        norm: str,
        depthwise: bool = False,
        implied: tuple[tuple[str, float], ...] | None = None,
        norm_kind: str = "batch_norm",
    ) -> None:
        """A slim conv (or depthwise conv) with BatchNorm, held by a Model Garden block."""
        self.add(scope, "depthwise" if depthwise else "conv", block, conv)
        implied = self.bn_implied if implied is None else implied
        self.add(scope, norm_kind, block, norm, implied=implied)

    def fake_quant(
        self, scope: str, owner: Any, suffix: str = "", class_dependent: bool = False
    ) -> None:
        """The `weights_quant` / `act_quant` ranges of a quantized layer (TF1 op scope `scope`),
        held by `owner` as `_weights_quant{suffix}` / `_act_quant{suffix}` (or `weights_quant` /
        `act_quant` without a suffix: the box predictor convs). Nothing for a float module."""
        if not self.quantized:
            return
        prefix = "_" if suffix else ""
        for name, kind in (("weights_quant", "fake_quant"), ("act_quant", "moving_average_quant")):
            self.add(f"{scope}/{name}", kind, owner, f"{prefix}{name}{suffix}", class_dependent)


def bn_implied(
    scale: bool, center: bool, prefix: str = "BatchNorm/"
) -> tuple[tuple[str, float], ...]:
    """The BatchNorm variables a TF1 layer lacks when built without scale / center (leaf names
    under `prefix`: '' for 'norm' records)."""
    implied = []
    if not scale:
        implied.append((f"{prefix}gamma", 1.0))
    if not center:
        implied.append((f"{prefix}beta", 0.0))
    return tuple(implied)


def model_records(model: Any) -> list[LayerRecord]:
    """All records of a model built by `pipeline.modeling.build_ssd_model`, in build order."""
    records: list[LayerRecord] = []
    for module in (model.backbone, model.decoder, model.head):
        layout = getattr(module, "tf1_layout", None)
        if layout is None:
            raise ValueError(f"{type(module).__name__} carries no TF1 layout")
        records.extend(layout.records)
    return records
