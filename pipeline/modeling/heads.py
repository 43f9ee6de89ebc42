"""TF1 SSD box predictors as a Model Garden `RetinaNetHead`.

TF1's `convolutional_box_predictor` with `num_layers_before_predictor: 0` is, per feature map, a
box-encoding conv and a class conv with bias, no BatchNorm and no activation: exactly
`RetinaNetHead(num_convs=0, share_level_convs=False)` with per-level anchor counts. Two TF1
options need a small subclass:
- `kernel_size`: RetinaNetHead hard-codes 3x3 predictors; TF1 configs use 1 (v1) or 3 (v2).
- `use_depthwise` (SSDLite): each predictor is a 3x3 depthwise conv + BatchNorm + activation
  followed by a 1x1 conv with bias (`*_depthwise` + `*Predictor` in TF1). Model Garden's
  `use_separable_conv` has no BatchNorm/activation between the two convs, so the head builds
  `DepthwisePredictor` layers instead.
Output channel layout is TF1's: anchor-major, then (ty, tx, th, tw) or class slots (background
first), which is also the layout Model Garden's detection generator reshapes.
"""

from __future__ import annotations

import functools
from typing import Any

import tensorflow as tf
import tf_keras
from official.modeling import tf_utils
from official.vision.modeling.heads.dense_prediction_heads import RetinaNetHead

from pipeline.modeling.quantization import QuantizedConv2D
from pipeline.modeling.tf1_layout import TF1Layout, bn_implied


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class DepthwisePredictor(tf_keras.layers.Layer):
    """SSDLite predictor: depthwise kxk + BatchNorm + activation, then a 1x1 conv with bias."""

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        activation: str = "relu6",
        norm_momentum: float = 0.9997,
        norm_epsilon: float = 0.001,
        kernel_initializer: Any = "glorot_uniform",
        kernel_regularizer: Any = None,
        bias_initializer: Any = "zeros",
        bias_regularizer: Any = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("padding", None)
        super().__init__(**kwargs)
        self._config_dict = {
            "filters": filters,
            "kernel_size": kernel_size,
            "activation": activation,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
        }
        self.depthwise = tf_keras.layers.DepthwiseConv2D(
            kernel_size=kernel_size, padding="same", depth_multiplier=1, use_bias=False
        )
        self.norm = tf_keras.layers.BatchNormalization(momentum=norm_momentum, epsilon=norm_epsilon)
        self.activation_layer = tf_utils.get_activation(activation, use_keras_layer=True)
        self.pointwise = tf_keras.layers.Conv2D(
            filters=filters,
            kernel_size=1,
            padding="same",
            kernel_initializer=kernel_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_initializer=bias_initializer,
            bias_regularizer=bias_regularizer,
        )

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x = self.depthwise(inputs)
        x = self.norm(x, training=training)
        return self.pointwise(self.activation_layer(x))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._config_dict}


def _use_tf1_predictors(
    head: RetinaNetHead, kernel_size: int, class_prediction_bias_init: float, **config: Any
) -> None:
    """TF1's predictor kernel size (RetinaNetHead hard-codes 3x3) and class bias: a freshly
    initialised class predictor starts where TF1's would, at the config's
    class_prediction_bias_init (0 in the zoo SSD configs, -4.6 in the RetinaNet-style ones), not
    Model Garden's 0.01 prior. Records the TF1 options in the head's config, gives it a layout."""
    head._config_dict.update(
        kernel_size=kernel_size, class_prediction_bias_init=class_prediction_bias_init, **config
    )
    head._classifier_kwargs["kernel_size"] = kernel_size
    head._box_regressor_kwargs["kernel_size"] = kernel_size
    head._classifier_kwargs["bias_initializer"] = tf_keras.initializers.Constant(
        class_prediction_bias_init
    )
    head.tf1_layout = TF1Layout("head", quantized=config.get("weight_bits", 0) > 0)


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class SSDHead(RetinaNetHead):
    """RetinaNetHead with TF1 predictor kernel size, SSDLite predictors and a TF1 layout."""

    def __init__(
        self,
        min_level: int,
        max_level: int,
        num_classes: int,
        num_anchors_per_location: dict[str, int],
        kernel_size: int = 1,
        use_depthwise: bool = False,
        depthwise_activation: str = "relu6",
        class_prediction_bias_init: float = 0.0,
        batch_norm_scale: bool = True,
        batch_norm_center: bool = True,
        norm_momentum: float = 0.9997,
        norm_epsilon: float = 0.001,
        kernel_regularizer: Any = None,
        weight_bits: int = 0,
        activation_bits: int = 0,
        **kwargs: Any,
    ) -> None:
        if weight_bits > 0 and use_depthwise:
            raise ValueError("quantized SSD heads with depthwise predictors are not supported")
        for fixed in ("num_convs", "share_level_convs", "use_separable_conv", "num_filters"):
            kwargs.pop(fixed, None)
        super().__init__(
            min_level=min_level,
            max_level=max_level,
            num_classes=num_classes,
            num_anchors_per_location=num_anchors_per_location,
            num_convs=0,
            share_level_convs=False,
            norm_momentum=norm_momentum,
            norm_epsilon=norm_epsilon,
            kernel_regularizer=kernel_regularizer,
            **kwargs,
        )
        _use_tf1_predictors(
            self,
            kernel_size,
            class_prediction_bias_init,
            batch_norm_scale=batch_norm_scale,
            batch_norm_center=batch_norm_center,
            use_depthwise=use_depthwise,
            depthwise_activation=depthwise_activation,
            weight_bits=weight_bits,
            activation_bits=activation_bits,
        )

    def build(self, input_shape: Any) -> None:
        config = self._config_dict
        conv_op = None
        if config["use_depthwise"]:
            conv_op = functools.partial(
                DepthwisePredictor,
                activation=config["depthwise_activation"],
                norm_momentum=config["norm_momentum"],
                norm_epsilon=config["norm_epsilon"],
            )
        elif config["weight_bits"] > 0:
            conv_op = functools.partial(
                QuantizedConv2D,
                weight_bits=config["weight_bits"],
                activation_bits=config["activation_bits"],
            )
        if conv_op is not None:
            bn_op = tf_keras.layers.BatchNormalization
            self._cls_convs, self._cls_norms, self._classifier = self._build_prediction_tower(
                "classnet", "scores", conv_op, bn_op, self._classifier_kwargs
            )
            self._box_convs, self._box_norms, self._box_regressor = self._build_prediction_tower(
                "boxnet", "boxes", conv_op, bn_op, self._box_regressor_kwargs
            )
            tf_keras.layers.Layer.build(self, input_shape)
        else:
            super().build(input_shape)
        self._record_tf1_layout()

    def _record_tf1_layout(self) -> None:
        layout = self.tf1_layout
        layout.records.clear()
        implied = bn_implied(
            self._config_dict["batch_norm_scale"], self._config_dict["batch_norm_center"]
        )
        for index, (box, cls) in enumerate(zip(self._box_regressor, self._classifier, strict=True)):
            for predictor, name, class_dependent in (
                (box, "BoxEncodingPredictor", False),
                (cls, "ClassPredictor", True),
            ):
                scope = f"BoxPredictor_{index}/{name}"
                if isinstance(predictor, DepthwisePredictor):
                    layout.add(f"{scope}_depthwise", "depthwise", predictor, "depthwise")
                    layout.add(
                        f"{scope}_depthwise", "batch_norm", predictor, "norm", implied=implied
                    )
                    layout.add(scope, "conv_bias", predictor, "pointwise", class_dependent)
                else:
                    layout.add(scope, "conv_bias", predictor, None, class_dependent)
                if isinstance(predictor, QuantizedConv2D):
                    layout.fake_quant(scope, predictor, class_dependent=class_dependent)

    def get_config(self) -> dict[str, Any]:
        return dict(self._config_dict)


WEIGHT_SHARED_SCOPE = "WeightSharedConvolutionalBoxPredictor"


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class WeightSharedHead(RetinaNetHead):
    """TF1 `WeightSharedConvolutionalBoxPredictor` as Model Garden's RetinaNetHead with
    `share_level_convs=True`: per tower (box, class) `num_convs` kxk convs shared across levels,
    each followed by a BatchNorm of its own per level and relu6 (TF1 applies tf.nn.relu6 whatever
    the conv_hyperparams activation), then one box and one class predictor conv (with bias)
    shared across levels. TF1's tower convs have no bias (BatchNorm follows), hence
    `use_bias=False`; the class predictor starts at `class_prediction_bias_init` as TF1's does.
    With `share_prediction_tower` TF1 builds one tower (`PredictionTower`) whose output feeds
    both predictors: the class tower is then the box tower's layers, computed once per level
    (so that training updates each BatchNorm's moving averages once per step, as TF1 does)."""

    def __init__(
        self,
        min_level: int,
        max_level: int,
        num_classes: int,
        num_anchors_per_location: int,
        num_convs: int = 4,
        num_filters: int = 256,
        kernel_size: int = 3,
        class_prediction_bias_init: float = 0.0,
        batch_norm_scale: bool = True,
        batch_norm_center: bool = True,
        norm_momentum: float = 0.9997,
        norm_epsilon: float = 0.001,
        kernel_regularizer: Any = None,
        share_prediction_tower: bool = False,
        **kwargs: Any,
    ) -> None:
        for fixed in ("share_level_convs", "use_separable_conv", "activation"):
            kwargs.pop(fixed, None)
        super().__init__(
            min_level=min_level,
            max_level=max_level,
            num_classes=num_classes,
            num_anchors_per_location=num_anchors_per_location,
            num_convs=num_convs,
            num_filters=num_filters,
            share_level_convs=True,
            activation="relu6",
            norm_momentum=norm_momentum,
            norm_epsilon=norm_epsilon,
            kernel_regularizer=kernel_regularizer,
            **kwargs,
        )
        _use_tf1_predictors(
            self,
            kernel_size,
            class_prediction_bias_init,
            batch_norm_scale=batch_norm_scale,
            batch_norm_center=batch_norm_center,
            share_prediction_tower=share_prediction_tower,
        )
        self._conv_kwargs.update(kernel_size=kernel_size, use_bias=False)
        self._bn_kwargs.update(scale=batch_norm_scale, center=batch_norm_center)

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        shared = self._config_dict["share_prediction_tower"]
        if shared:
            # The class tower's own layers are dropped before they are ever called (no weights).
            self._cls_convs, self._cls_norms = self._box_convs, self._box_norms
        layout = self.tf1_layout
        layout.records.clear()
        implied = bn_implied(
            self._config_dict["batch_norm_scale"], self._config_dict["batch_norm_center"], ""
        )
        for tower, convs, norms, predictor, name, class_dependent in (
            ("PredictionTower" if shared else "BoxPredictionTower", self._box_convs,
             self._box_norms, self._box_regressor, "BoxPredictor", False),
            ("ClassPredictionTower", [] if shared else self._cls_convs, self._cls_norms,
             self._classifier, "ClassPredictor", True),
        ):  # fmt: skip
            for index, conv in enumerate(convs):
                scope = f"{WEIGHT_SHARED_SCOPE}/{tower}/conv2d_{index}"
                layout.add(scope, "conv", conv)
                for feature, level_norms in enumerate(norms):
                    layout.add(
                        f"{scope}/BatchNorm/feature_{feature}",
                        "norm",
                        level_norms[index],
                        implied=implied,
                    )
            layout.add(f"{WEIGHT_SHARED_SCOPE}/{name}", "conv_bias", predictor, None,
                       class_dependent)  # fmt: skip

    def _apply_prediction_tower(self, features: tf.Tensor, convs: Any, norms: Any) -> tf.Tensor:
        """RetinaNetHead.call asks for the class tower, then the box tower, of each level; with
        a shared tower both are the same layers on the same features: the second request gets
        the first's output."""
        cached = getattr(self, "_shared_tower_output", None)
        if cached is not None and cached[0] is features and cached[1] is norms:
            object.__setattr__(self, "_shared_tower_output", None)
            return cached[2]
        x = super()._apply_prediction_tower(features, convs, norms)
        if self._config_dict["share_prediction_tower"]:
            # Not a tracked attribute: a transient of one call.
            object.__setattr__(self, "_shared_tower_output", (features, norms, x))
        return x

    def get_config(self) -> dict[str, Any]:
        return dict(self._config_dict)
