"""The Keras side every TF1-layout backbone and decoder shares (SSD and Faster R-CNN)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras

from pipeline.modeling.tf1_layout import TF1Layout


class TF1FunctionalModel(tf_keras.Model):
    """A functional backbone or decoder: {level: features}, `output_specs` as Model Garden's
    have them, its constructor arguments as config, and `tf1_layout` recording its TF1 scopes.

    Subclasses build their graph on `tf_keras.Input`s and call `_finish(inputs, endpoints,
    layout, config)` in place of `Model.__init__`."""

    def _finish(
        self,
        inputs: tf.Tensor,
        endpoints: dict[str, tf.Tensor],
        layout: TF1Layout,
        config: dict[str, Any],
        **kwargs: Any,
    ) -> None:
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)
        self._config_dict = config
        self._output_specs = {level: t.get_shape() for level, t in endpoints.items()}
        self.tf1_layout = layout

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        return self._output_specs

    def get_config(self) -> dict[str, Any]:
        return dict(self._config_dict)

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Any:
        return cls(**config)
