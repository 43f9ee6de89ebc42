"""Layer freezing by module and by variable-path pattern, and BatchNorm statistics freezing.

Two independent switches, as in TF1 (`freeze_variables` vs `freeze_batchnorm`):
- which weights the optimizer updates: chosen per variable from its checkpoint path (see
  `pipeline.training.variables`), by top-level module (`backbone`, `decoder`, `head`) and regexes.
  Frozen weights are simply left out of the gradient/optimizer/EMA variable list, so they stay bit
  for bit what was restored. Keras' `layer.trainable = False` is not used for this because it also
  switches BatchNorm layers to inference mode, coupling the two switches.
- whether BatchNorm layers update their moving statistics: with `freeze_batch_norm` every BN layer
  runs in inference mode even when the model is called with `training=True`, while its gamma/beta
  still train unless frozen by the first switch (TF1 OD API's `FreezableBatchNorm(training=False)`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from pipeline.training.variables import checkpoint_items, variable_paths


@dataclasses.dataclass(frozen=True)
class FreezeSettings:
    name: str = "none"
    modules: tuple[str, ...] = ()  # top-level checkpoint items (backbone, decoder, head)
    patterns: tuple[str, ...] = ()  # regexes over variable paths to freeze
    trainable_patterns: tuple[str, ...] = ()  # regexes that stay trainable (override the above)
    freeze_batch_norm: bool = True


@dataclasses.dataclass(frozen=True)
class FreezePlan:
    trainable: list[tf.Variable]  # in the model's order
    trainable_paths: list[str]  # aligned with `trainable`
    trained_paths: list[str]  # sorted
    frozen_paths: list[str]
    non_trainable_paths: list[str]  # BN moving statistics and other non-trainable state


def _compile(patterns: Sequence[str], what: str) -> list[re.Pattern[str]]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            raise ValueError(f"train.freeze.{what}: bad regex {pattern!r}: {error}") from error
    return compiled


def plan_freezing(model: Any, settings: FreezeSettings) -> FreezePlan:
    """Split the model's trainable variables into trained and frozen ones."""
    items = checkpoint_items(model)
    unknown = [m for m in settings.modules if m not in items]
    if unknown:
        raise ValueError(
            f"train.freeze.modules: {unknown} not in the model's modules {sorted(items)}"
        )
    frozen_res = _compile(settings.patterns, "patterns")
    keep_res = _compile(settings.trainable_patterns, "trainable_patterns")
    paths = variable_paths(items)
    trainable_ids = {id(v) for v in model.trainable_variables}
    trainable: list[tf.Variable] = []
    trained_paths, frozen_paths, other_paths = [], [], []
    for key, (path, variable) in sorted(paths.items(), key=lambda kv: kv[1][0]):
        if key not in trainable_ids:
            other_paths.append(path)
            continue
        frozen = path.split("/", 1)[0] in settings.modules or any(
            r.search(path) for r in frozen_res
        )
        if frozen and any(r.search(path) for r in keep_res):
            frozen = False
        if frozen:
            frozen_paths.append(path)
        else:
            trained_paths.append(path)
            trainable.append(variable)
    missing = trainable_ids - set(paths)
    if missing:
        raise RuntimeError(f"{len(missing)} trainable variables are not tracked by the checkpoint")
    # Keep the model's own order (optimizer slot creation order, deterministic).
    order = {id(v): i for i, v in enumerate(model.trainable_variables)}
    trainable.sort(key=lambda v: order[id(v)])
    trainable_paths = [paths[id(v)][0] for v in trainable]
    return FreezePlan(trainable, trainable_paths, trained_paths, frozen_paths, other_paths)


def batch_norm_layers(model: Any) -> list[tf_keras.layers.Layer]:
    layers = [m for m in model.submodules if isinstance(m, tf_keras.layers.BatchNormalization)]
    return list({id(layer): layer for layer in layers}.values())


def freeze_batch_norm(model: Any) -> int:
    """Run every BatchNorm layer of `model` in inference mode (moving statistics frozen).

    The layer keeps its class behaviour otherwise; its instance `call` is wrapped to force
    `training=False`, like TF1's FreezableBatchNorm. Returns the number of layers changed.
    """
    layers = batch_norm_layers(model)
    for layer in layers:
        if getattr(layer, "_pipeline_bn_frozen", False):
            continue
        original_call = layer.call

        def call(inputs, training=None, _original=original_call, **kwargs):
            return _original(inputs, training=False, **kwargs)

        layer.call = call
        layer._pipeline_bn_frozen = True
    return len(layers)


def unfreeze_batch_norm(model: Any) -> None:
    """Undo `freeze_batch_norm` (before saving: SavedModel tracing expects the class's `call`)."""
    for layer in batch_norm_layers(model):
        if getattr(layer, "_pipeline_bn_frozen", False):
            del layer.call
            layer._pipeline_bn_frozen = False
