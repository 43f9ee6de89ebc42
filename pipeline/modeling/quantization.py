"""TF1 quantization-aware SSDs (`graph_rewriter { quantization { ... } }`) as Keras layers.

TF1 builds these graphs with `tf.contrib.quantize.create_eval_graph` (the exporter) on top of the
float model. Read from the real `ssd_mobilenet_v1_quantized_300x300_coco14_sync_2018_07_18`
graph (TF 1.9), every conv layer becomes:

- BatchNorm folded into the conv (`fold_batch_norms`): `mul = gamma * rsqrt(moving_variance +
  epsilon)`, weights `mul_fold = weights * mul` (depthwise: `mul` reshaped to [C, 1]), bias
  `BatchNorm_Fold/bias = beta - moving_mean * mul`, added after the conv (`add_fold`, an Add);
- `weights_quant`: FakeQuantWithMinMaxVars on the (folded) weights, narrow_range true, with the
  stored `weights_quant/min|max` variables (LastValueQuantize: at eval the variables are read,
  not recomputed from the weights);
- `act_quant`: FakeQuantWithMinMaxVars after the activation (Relu6), or after the BiasAdd of the
  box predictor convs (no activation), narrow_range false, with the stored
  `act_quant/min|max` (MovingAvgQuantize's EMA of the batch ranges during training).

MobileNet v2 (`ssd_mobilenet_v2_quantized_300x300_coco_2019_01_03`, an index without a graph)
follows the same rules as contrib.quantize applies them to slim's `expanded_conv`: expansion,
depthwise and projection each folded and quantized (the projection's `act_quant` after its
`Identity` activation), the residual sum quantized by `<block>/post_activation_bypass_quant`.

The quantization op scopes of the MobileNet v1 base are `FeatureExtractor/MobilenetV1/MobilenetV1/
Conv2d_N_*` (the op name scope), its variables `FeatureExtractor/MobilenetV1/Conv2d_N_*`; the
extra layers and box predictors use their variable scope.

The layers here use `tf.quantization.fake_quant_with_min_max_vars`, the kernel TF1's graph runs,
with TF1's operation order, so equal inputs give equal quantization buckets.

Called with `training=True` they compute what contrib's `experimental_create_training_graph` adds
to the training graph (quantization-aware fine-tuning):

- `weights_quant` is LastValueQuantize: each step the range becomes [min(w, 0), max(w, 0)] of the
  folded weights (tensorflow-model-optimization's `quant_ops.LastValueQuantize`, a port of
  contrib's);
- `act_quant` / `post_activation_bypass_quant` are MovingAvgQuantize: the range is an
  exponential moving average (decay 0.999) of the batch's [min(x, 0), max(x, 0)], with the
  zero-debiasing of `tf.compat.v1.train.assign_moving_average` (its `biased` and `local_step`
  state are variables here, mapped from the TF1 checkpoint when it has them). tfmot's port of
  MovingAvgQuantize passes `zero_debias=False`, so it cannot continue a TF1 range: this part is
  written here;
- no gradient flows through a range (TF1 assigns it), the fake-quant op's own gradient passes
  the values inside the range;
- before step `delay` (`graph_rewriter.quantization.delay`, see `QuantizationClock`) the ranges
  update but the values pass unquantized, as contrib's `delayed_quant` cond.

The BatchNorm fold stays the eval graph's (moving statistics): contrib's training fold with batch
statistics and its corrections is not reproduced, so fine-tuning a quantized model keeps
BatchNorm statistics frozen (in which case TF1's training fold computes exactly the eval fold).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import tensorflow as tf
import tf_keras
from official.vision.modeling.backbones.mobilenet import Conv2DBNBlock
from official.vision.modeling.layers import nn_blocks

# contrib.quantize's initial range of both LastValueQuantize and MovingAvgQuantize variables.
_INIT_RANGE = (-6.0, 6.0)


class QuantizationClock:
    """When the fake-quant layers of a model start quantizing in training: from step `delay` of
    `step` (a step counter variable). A plain object, so that Keras does not track the counter as
    a weight of every layer."""

    def __init__(self, step: tf.Variable, delay: int) -> None:
        self.step = step
        self.delay = int(delay)


def _range_weight(layer: tf_keras.layers.Layer, name: str, value: float) -> tf.Variable:
    # Like BatchNorm statistics: each replica updates its copy, reads average them.
    return layer.add_weight(
        name=name,
        shape=(),
        initializer=tf_keras.initializers.Constant(value),
        trainable=False,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.MEAN,
    )


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class FakeQuant(tf_keras.layers.Layer):
    """`FakeQuantWithMinMaxVars` with a stored range: TF1's `<scope>/{weights,act}_quant`.

    `moving_average`: an activation range (MovingAvgQuantize) rather than a weight range
    (LastValueQuantize); they differ only in training (see the module docstring)."""

    def __init__(
        self,
        num_bits: int = 8,
        narrow_range: bool = False,
        moving_average: bool = False,
        ema_decay: float = 0.999,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_bits = int(num_bits)
        self.narrow_range = bool(narrow_range)
        self.moving_average = bool(moving_average)
        self.ema_decay = float(ema_decay)
        self.clock: QuantizationClock | None = None

    def build(self, input_shape: Any) -> None:
        self.range_min = _range_weight(self, "min", _INIT_RANGE[0])
        self.range_max = _range_weight(self, "max", _INIT_RANGE[1])
        if self.moving_average:
            # tf.compat.v1.train.assign_moving_average's zero-debias state, per range end.
            self.min_biased = _range_weight(self, "min_biased", 0.0)
            self.min_local_step = _range_weight(self, "min_local_step", 0.0)
            self.max_biased = _range_weight(self, "max_biased", 0.0)
            self.max_local_step = _range_weight(self, "max_local_step", 0.0)
        super().build(input_shape)

    def _quantize(self, inputs: tf.Tensor, range_min: Any, range_max: Any) -> tf.Tensor:
        return tf.quantization.fake_quant_with_min_max_vars(
            inputs,
            range_min,
            range_max,
            num_bits=self.num_bits,
            narrow_range=self.narrow_range,
        )

    def _debiased_average(
        self, average: tf.Variable, biased: tf.Variable, local_step: tf.Variable, value: tf.Tensor
    ) -> tf.Tensor:
        """`assign_moving_average(average, value, ema_decay, zero_debias=True)`, op for op."""
        rate = tf.constant(1.0 - self.ema_decay, tf.float32)
        update_biased = biased.assign_sub((biased - value) * rate)
        update_local_step = local_step.assign_add(1.0)
        bias_factor = 1.0 - tf.pow(1.0 - rate, update_local_step)
        return average.assign(update_biased / bias_factor)

    def _training_quantize(self, inputs: tf.Tensor) -> tf.Tensor:
        if not self.moving_average:
            from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

            return quant_ops.LastValueQuantize(
                inputs,
                self.range_min,
                self.range_max,
                per_channel=False,
                is_training=True,
                num_bits=self.num_bits,
                narrow_range=self.narrow_range,
                symmetric=False,
            )
        batch_min = tf.minimum(tf.reduce_min(inputs), 0.0)
        batch_max = tf.maximum(tf.reduce_max(inputs), 0.0)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            # assign_moving_average's merge_call: the replicas' mean, one average for all.
            batch_min, batch_max = (
                context.all_reduce(tf.distribute.ReduceOp.MEAN, value)
                for value in (batch_min, batch_max)
            )
        range_min = self._debiased_average(
            self.range_min, self.min_biased, self.min_local_step, batch_min
        )
        range_max = self._debiased_average(
            self.range_max, self.max_biased, self.max_local_step, batch_max
        )
        # TF1 reads the assigned variables: no gradient reaches the batch's min/max.
        return self._quantize(inputs, tf.stop_gradient(range_min), tf.stop_gradient(range_max))

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if not training:
            return self._quantize(inputs, self.range_min, self.range_max)
        quantized = self._training_quantize(inputs)
        clock = self.clock
        if clock is None or clock.delay <= 0:
            return quantized
        # contrib's delayed_quant: the ranges above update on every step, quantized or not.
        return tf.cond(clock.step >= clock.delay, lambda: quantized, lambda: inputs)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_bits": self.num_bits,
            "narrow_range": self.narrow_range,
            "moving_average": self.moving_average,
            "ema_decay": self.ema_decay,
        }


def fake_quant_layers(model: Any) -> list[FakeQuant]:
    layers = [m for m in model.submodules if isinstance(m, FakeQuant)]
    return list({id(layer): layer for layer in layers}.values())


def set_quantization_clock(model: Any, clock: QuantizationClock | None) -> int:
    """Make every fake-quant layer of `model` follow `clock` in training; returns their count."""
    layers = fake_quant_layers(model)
    for layer in layers:
        layer.clock = clock
    return len(layers)


def weights_quant(bits: int) -> FakeQuant:
    return FakeQuant(num_bits=bits, narrow_range=True, name="weights_quant")


def act_quant(bits: int, name: str = "act_quant") -> FakeQuant:
    return FakeQuant(num_bits=bits, narrow_range=False, moving_average=True, name=name)


class _QuantizationBits:
    """The fake-quant bit widths a quantized layer takes (and serializes) besides its float base
    class's arguments."""

    def __init__(self, weight_bits: int = 8, activation_bits: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._weight_bits = weight_bits
        self._activation_bits = activation_bits

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),  # type: ignore[misc]
            "weight_bits": self._weight_bits,
            "activation_bits": self._activation_bits,
        }


def build_conv_bn(conv: Any, norm: Any, input_shape: Any) -> tf.TensorShape:
    """Create the variables of a conv and its BatchNorm (which `folded_conv` reads instead of
    calling them); returns the conv's output shape."""
    input_shape = tf.TensorShape(input_shape)
    conv.build(input_shape)
    output_shape = conv.compute_output_shape(input_shape)
    norm.build(output_shape)
    return output_shape


def folded_conv(
    inputs: tf.Tensor,
    conv: tf_keras.layers.Layer,
    norm: tf_keras.layers.Layer,
    quantize_weights: FakeQuant,
    depthwise: bool = False,
) -> tf.Tensor:
    """contrib.quantize's eval-graph conv: BatchNorm folded into the weights, the folded weights
    fake-quantized, the folded bias added after the conv (`add_fold`)."""
    multiplier = tf.math.rsqrt(norm.moving_variance + norm.epsilon)
    if norm.gamma is not None:
        multiplier = norm.gamma * multiplier
    scaled_mean = norm.moving_mean * multiplier
    bias = -scaled_mean if norm.beta is None else norm.beta - scaled_mean
    if depthwise:
        kernel = conv.depthwise_kernel * tf.reshape(multiplier, [-1, 1])
        strides = (1, *conv.strides, 1)
        x = tf.nn.depthwise_conv2d(inputs, quantize_weights(kernel), strides, "SAME")
    else:
        kernel = quantize_weights(conv.kernel * multiplier)
        x = tf.nn.conv2d(inputs, kernel, conv.strides, conv.padding.upper())
    return x + bias


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class QuantizedConv2DBNBlock(_QuantizationBits, Conv2DBNBlock):
    """Model Garden's `Conv2DBNBlock` as TF1's quantized eval graph computes it."""

    def __init__(self, weight_bits: int = 8, activation_bits: int = 8, **kwargs: Any) -> None:
        if kwargs.get("use_explicit_padding"):
            raise ValueError("quantized blocks use 'SAME' padding only")
        super().__init__(weight_bits=weight_bits, activation_bits=activation_bits, **kwargs)

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        build_conv_bn(self._conv0, self._norm0, input_shape)
        self._weights_quant0 = weights_quant(self._weight_bits)
        self._act_quant0 = act_quant(self._activation_bits)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x = folded_conv(inputs, self._conv0, self._norm0, self._weights_quant0)
        return self._act_quant0(self._activation_layer(x))


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class QuantizedDepthwiseSeparableConvBlock(
    _QuantizationBits, nn_blocks.DepthwiseSeparableConvBlock
):
    """Model Garden's `DepthwiseSeparableConvBlock` (MobileNet v1's `Conv2d_N_depthwise` +
    `Conv2d_N_pointwise`) as TF1's quantized eval graph computes it: each half folded and
    fake-quantized."""

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        shape = build_conv_bn(self._dwconv0, self._norm0, input_shape)
        build_conv_bn(self._conv1, self._norm1, shape)
        self._weights_quant0 = weights_quant(self._weight_bits)
        self._act_quant0 = act_quant(self._activation_bits)
        self._weights_quant1 = weights_quant(self._weight_bits)
        self._act_quant1 = act_quant(self._activation_bits)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x = folded_conv(inputs, self._dwconv0, self._norm0, self._weights_quant0, depthwise=True)
        x = self._act_quant0(self._activation_fn(x))
        x = folded_conv(x, self._conv1, self._norm1, self._weights_quant1)
        return self._act_quant1(self._activation_fn(x))


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class QuantizedInvertedBottleneckBlock(_QuantizationBits, nn_blocks.InvertedBottleneckBlock):
    """Model Garden's `InvertedBottleneckBlock` (slim `expanded_conv`) as TF1's quantized eval
    graph computes it: expansion, depthwise and projection each folded and fake-quantized (the
    projection's `act_quant` follows its `Identity` activation), and a residual sum quantized by
    `post_activation_bypass_quant` (`_bypass_quant`)."""

    def __init__(self, weight_bits: int = 8, activation_bits: int = 8, **kwargs: Any) -> None:
        if kwargs.get("se_ratio") or kwargs.get("stochastic_depth_drop_rate"):
            raise ValueError("quantized inverted bottlenecks without squeeze-excite only")
        if not kwargs.get("use_depthwise", True):
            raise ValueError("quantized inverted bottlenecks with a depthwise conv only")
        super().__init__(weight_bits=weight_bits, activation_bits=activation_bits, **kwargs)

    @property
    def has_residual(self) -> bool:
        return self._use_residual and self._in_filters == self._out_filters and self._strides == 1

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        shape = tf.TensorShape(input_shape)
        if self._expand_ratio > 1:
            shape = build_conv_bn(self._conv0, self._norm0, shape)
            self._weights_quant0 = weights_quant(self._weight_bits)
            self._act_quant0 = act_quant(self._activation_bits)
        shape = build_conv_bn(self._conv1, self._norm1, shape)
        build_conv_bn(self._conv2, self._norm2, shape)
        for index in (1, 2):
            setattr(self, f"_weights_quant{index}", weights_quant(self._weight_bits))
            setattr(self, f"_act_quant{index}", act_quant(self._activation_bits))
        if self.has_residual:
            self._bypass_quant = act_quant(
                self._activation_bits, name="post_activation_bypass_quant"
            )

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x = inputs
        if self._expand_ratio > 1:
            x = folded_conv(x, self._conv0, self._norm0, self._weights_quant0)
            x = self._act_quant0(self._activation_layer(x))
        x = folded_conv(x, self._conv1, self._norm1, self._weights_quant1, depthwise=True)
        x = self._act_quant1(self._depthwise_activation_layer(x))
        x = self._act_quant2(folded_conv(x, self._conv2, self._norm2, self._weights_quant2))
        if self.has_residual:
            x = self._bypass_quant(x + inputs)
        return x


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class QuantizedConv2D(_QuantizationBits, tf_keras.layers.Conv2D):
    """A box predictor conv (with bias, no BatchNorm, no activation) as TF1's quantized graph
    computes it: fake-quantized weights, conv, BiasAdd, fake-quantized output."""

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.weights_quant = weights_quant(self._weight_bits)
        self.act_quant = act_quant(self._activation_bits)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        kernel = self.weights_quant(self.kernel)
        x = tf.nn.conv2d(inputs, kernel, self.strides, self.padding.upper())
        return self.act_quant(tf.nn.bias_add(x, self.bias))


class ConvBlocks(NamedTuple):
    """The Model Garden block classes of a float or a quantized model (same arguments)."""

    conv_bn: Any
    separable: Any
    inverted_bottleneck: Any


def conv_blocks(weight_bits: int, activation_bits: int) -> ConvBlocks:
    """The blocks of a float (bits 0) or quantized model, called with Model Garden's block
    arguments."""
    if weight_bits <= 0:
        return ConvBlocks(
            Conv2DBNBlock,
            nn_blocks.DepthwiseSeparableConvBlock,
            nn_blocks.InvertedBottleneckBlock,
        )
    bits = {"weight_bits": weight_bits, "activation_bits": activation_bits}
    return ConvBlocks(
        functools.partial(QuantizedConv2DBNBlock, **bits),
        functools.partial(QuantizedDepthwiseSeparableConvBlock, **bits),
        functools.partial(QuantizedInvertedBottleneckBlock, **bits),
    )
