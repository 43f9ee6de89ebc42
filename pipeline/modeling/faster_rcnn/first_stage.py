"""Model Garden factory registration shared by the TF1 Faster R-CNN first stages.

`register_first_stage` puts a first stage (a `TF1FunctionalModel`) into Model Garden's backbone
factory under a type whose config fields are the model's own constructor arguments.
"""

from __future__ import annotations

from typing import Any

import tf_keras
from official.modeling import hyperparams
from official.vision.modeling.backbones import factory

from pipeline.modeling.functional import TF1FunctionalModel


def register_first_stage(backbone_type: str, model_class: type[TF1FunctionalModel]) -> Any:
    """Register `model_class` with Model Garden's backbone factory as `backbone_type`.

    `factory.build_backbone` then builds it from the one-of config's chosen fields (passed as
    keyword arguments), the norm-activation config's momentum and epsilon, and the L2
    regularizer."""

    @factory.register_backbone_builder(backbone_type)
    def build(
        input_specs: tf_keras.layers.InputSpec,
        backbone_config: hyperparams.Config,
        norm_activation_config: hyperparams.Config,
        l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
    ) -> tf_keras.Model:
        if backbone_config.type != backbone_type:
            raise ValueError(f"backbone type {backbone_config.type!r} is not {backbone_type!r}")
        return model_class(
            input_specs=input_specs,
            norm_momentum=norm_activation_config.norm_momentum,
            norm_epsilon=norm_activation_config.norm_epsilon,
            kernel_regularizer=l2_regularizer,
            **backbone_config.get().as_dict(),
        )

    return build
