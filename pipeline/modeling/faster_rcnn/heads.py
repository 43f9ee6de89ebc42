"""TF1 Faster R-CNN heads as the `rpn_head` and `detection_head` of a Model Garden MaskRCNNModel.

Model Garden's `RPNHead` puts BatchNorm (or not) and a ReLU after its shared conv and predicts one
sigmoid logit per anchor; TF1's first stage is `Conv` (3x3, 512, bias, ReLU6, dilated by
`first_stage_atrous_rate`) followed by two 1x1
convs with bias: `FirstStageBoxPredictor/BoxEncodingPredictor` (4 per anchor) and
`FirstStageBoxPredictor/ClassPredictor` (2 per anchor, background first, softmax). Both logits are
kept, so the objectness is TF1's softmax exactly. Model Garden's `DetectionHead` (convs + FCs on
ROI-aligned features) cannot host TF1's second stage, which runs the backbone's last blocks
(Inception v2 Mixed_5a-c, ResNet v1 block4, Inception-ResNet v2 Mixed_7a-Conv2d_7b;
`extractors.py`) on every crop, averages
spatially and predicts with two FC layers
(`SecondStageBoxPredictor/{BoxEncodingPredictor,ClassPredictor}`). Outputs keep TF1's layouts:
box encodings per class *without* a background slot ([B, N, num_classes * 4]) and class logits
with background first ([B, N, num_classes + 1]).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tf_keras

from pipeline.modeling.faster_rcnn.extractors import feature_extractor
from pipeline.modeling.faster_rcnn.spec import FasterRCNNSpec
from pipeline.modeling.tf1_layout import TF1Layout


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1RPNHead(tf_keras.layers.Layer):
    """{level: features} -> ({level: [B, H, W, A * 2] logits}, {level: [B, H, W, A * 4]})."""

    def __init__(
        self,
        num_anchors_per_location: int,
        depth: int = 512,
        kernel_size: int = 3,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        dilation_rate: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._config_dict = {
            "num_anchors_per_location": num_anchors_per_location,
            "depth": depth,
            "kernel_size": kernel_size,
            "kernel_regularizer": kernel_regularizer,
            "dilation_rate": dilation_rate,
        }
        common = {"padding": "same", "kernel_regularizer": kernel_regularizer}
        # `first_stage_atrous_rate`: TF1's `Conv` is slim.conv2d(rate=...), 'SAME'.
        self.conv = tf_keras.layers.Conv2D(
            depth, kernel_size, activation=tf.nn.relu6, dilation_rate=dilation_rate, **common
        )
        self.box_predictor = tf_keras.layers.Conv2D(num_anchors_per_location * 4, 1, **common)
        self.class_predictor = tf_keras.layers.Conv2D(num_anchors_per_location * 2, 1, **common)
        layout = TF1Layout("rpn_head")
        layout.add("Conv", "conv_bias", self.conv)
        layout.add("FirstStageBoxPredictor/BoxEncodingPredictor", "conv_bias", self.box_predictor)
        layout.add("FirstStageBoxPredictor/ClassPredictor", "conv_bias", self.class_predictor)
        self.tf1_layout = layout

    def call(
        self, features: Mapping[str, tf.Tensor]
    ) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        scores, boxes = {}, {}
        for level, feature in features.items():
            x = self.conv(feature)
            scores[level] = self.class_predictor(x)
            boxes[level] = self.box_predictor(x)
        return scores, boxes

    def get_config(self) -> dict[str, Any]:
        return dict(self._config_dict)


@tf_keras.utils.register_keras_serializable(package="Pipeline")
class TF1BoxClassifierHead(tf_keras.layers.Layer):
    """[B, N, h, w, C] cropped features -> (class logits [B, N, K + 1], boxes [B, N, K * 4])."""

    def __init__(
        self,
        spec: FasterRCNNSpec,
        in_channels: int,
        norm_momentum: float = 0.9997,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        num_classes = spec.num_classes
        self._config_dict = {
            "spec": spec.to_dict(),
            "in_channels": in_channels,
            "norm_momentum": norm_momentum,
            "kernel_regularizer": kernel_regularizer,
        }
        self._num_classes = num_classes
        layout = TF1Layout("detection_head")
        self.extractor = feature_extractor(spec).second_stage(
            in_channels, layout, spec, norm_momentum, kernel_regularizer
        )
        self.box_predictor = tf_keras.layers.Dense(
            num_classes * 4, kernel_regularizer=kernel_regularizer
        )
        self.class_predictor = tf_keras.layers.Dense(
            num_classes + 1, kernel_regularizer=kernel_regularizer
        )
        layout.add("SecondStageBoxPredictor/BoxEncodingPredictor", "conv_bias", self.box_predictor,
                   class_dependent=True)  # fmt: skip
        layout.add("SecondStageBoxPredictor/ClassPredictor", "conv_bias", self.class_predictor,
                   class_dependent=True)  # fmt: skip
        self.tf1_layout = layout

    def call(self, roi_features: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        shape = tf.shape(roi_features)
        batch, num_rois = shape[0], shape[1]
        crops = tf.reshape(roi_features, tf.concat([[-1], shape[2:]], axis=0))
        features = self.extractor(crops)
        # SecondStageBoxPredictor/AvgPool: a spatial mean, then flatten.
        pooled = tf.reduce_mean(features, axis=[1, 2])
        classes = self.class_predictor(pooled)
        boxes = self.box_predictor(pooled)
        return (
            tf.reshape(classes, [batch, num_rois, self._num_classes + 1]),
            tf.reshape(boxes, [batch, num_rois, self._num_classes * 4]),
        )

    def get_config(self) -> dict[str, Any]:
        return dict(self._config_dict)
