"""Which weights TF1 L2-regularizes while training an SSD, and with which weight.

TF1 attaches slim `l2_regularizer(w)` (w * sum(k^2) / 2) through arg scopes, so the set is not
"every conv kernel": the base network is built under its slim net's own arg scope
(`BASE_ARG_SCOPES`) unless `override_base_feature_extractor_hyperparams`; the extra layers use
the feature extractor's conv_hyperparams (conv, depthwise and pointwise kernels); the box
predictors use the box predictor's conv_hyperparams. Biases, BatchNorm and everything else are
never regularized. Checked against the TF1 OD API's own training graph in
tests/test_regularization.py.
"""

from __future__ import annotations

from typing import Any

from pipeline.modeling import resnet_v1
from pipeline.modeling.spec import RESNET_FPN_DEPTHS, SSDSpec
from pipeline.modeling.tf1_layout import LayerRecord, model_records

_KERNEL_LEAVES = ("weights", "depthwise_weights", "pointwise_weights")
# (weight decay, depthwise kernels regularized?) of the slim arg scope each OD API SSD feature
# extractor builds its base network under: the nets' defaults, since the extractors pass none.
# mobilenet_v1_arg_scope(regularize_depthwise=True); mobilenet_v2/v3 `training_scope` sets
# separable_conv2d's regularizer to None; resnet_arg_scope(weight_decay=0.0001) for the ResNet
# FPNs (no depthwise kernels). ssd_inception_v2 has no base arg scope (TF1 requires
# override_base_feature_extractor_hyperparams), so the config's hyperparameters apply there.
BASE_ARG_SCOPES = {
    "ssd_mobilenet_v1": (0.00004, True),
    "ssd_mobilenet_v1_fpn": (0.00004, True),
    "ssd_mobilenet_v1_ppn": (0.00004, True),
    "ssd_mobilenet_v2": (0.00004, False),
    "ssd_mobilenet_v3_large": (0.00004, False),
    "ssd_mobilenet_v3_small": (0.00004, False),
    **{name: (resnet_v1.WEIGHT_DECAY, True) for name in RESNET_FPN_DEPTHS},
}
CONFIG_HYPERPARAMS_BASES = ("ssd_inception_v2",)


def tf1_l2_weight(record: LayerRecord, tf1_name: str, spec: SSDSpec) -> float:
    """The slim L2 weight TF1 gives variable `tf1_name` of layer `record` (0: not regularized)."""
    leaf = tf1_name.rsplit("/", 1)[-1]
    if leaf not in _KERNEL_LEAVES:
        return 0.0
    extractor = spec.feature_extractor
    if record.module == "head":
        return spec.box_predictor.l2_weight
    if (
        record.module == "decoder"
        or extractor.override_base_feature_extractor_hyperparams
        or spec.architecture in CONFIG_HYPERPARAMS_BASES
    ):
        return extractor.l2_weight
    if spec.architecture not in BASE_ARG_SCOPES:
        raise ValueError(f"{spec.architecture}: no TF1 base-network L2 rule in BASE_ARG_SCOPES")
    weight_decay, depthwise = BASE_ARG_SCOPES[spec.architecture]
    return 0.0 if leaf == "depthwise_weights" and not depthwise else weight_decay


def tf1_l2_weights(model: Any, spec: SSDSpec) -> dict[str, tuple[Any, float]]:
    """{TF1 variable name: (TF2 variable, weight)} for every weight TF1 regularizes."""
    weights = {}
    for record in model_records(model):
        for tf1_name, variable, _ in record.variables():
            weight = tf1_l2_weight(record, tf1_name, spec)
            if weight > 0:
                weights[tf1_name] = (variable, weight)
    return weights
