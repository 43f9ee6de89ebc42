"""The two-stage fine-tune task, registered with Model Garden's task factory.

`FinetuneTask` (`pipeline.training.task`) brings what all families share (restore, freezing,
optimizer, resume, steps); this adds the converted Faster R-CNN (`build_faster_rcnn_model`), its
input pipeline (`inputs.py`) and TF1's two-stage losses (`losses.py`), computed in the train step
because the second stage's targets depend on the proposals. Sampling is seeded by
(train.seed, optimizer step, image index in the global batch), so a resumed or multi-replica run
draws what a single uninterrupted run draws.

The four terms are per-replica shares of TF1's batch averages (normalised by the global batch), so
the replicas' sums are the single-device loss.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras
from official.core import task_factory

from pipeline.errors import PipelineError
from pipeline.modeling.faster_rcnn.spec import FasterRCNNSpec
from pipeline.training.config import FasterRCNNFinetuneTaskConfig, SSDDataConfig
from pipeline.training.faster_rcnn import inputs as inputs_lib
from pipeline.training.faster_rcnn.losses import (
    LOSS_NAMES,
    GroundTruth,
    training_losses,
    two_stage_loss_settings,
)
from pipeline.training.task import FinetuneTask

_KERNEL = "kernel"  # kernel, depthwise_kernel, pointwise_kernel: what TF1 calls weights


@task_factory.register_task_cls(FasterRCNNFinetuneTaskConfig)
class FasterRCNNFinetuneTask(FinetuneTask):
    """Fine-tunes a converted TF1 Faster R-CNN with TF1's two-stage targets and losses."""

    loss_metrics = ("total_loss", *LOSS_NAMES, "l2_loss", "num_proposals")
    summed_losses = ("total_loss", *LOSS_NAMES)

    def __init__(
        self, params: FasterRCNNFinetuneTaskConfig, logging_dir: str | None = None, name=None
    ):
        super().__init__(params, logging_dir=logging_dir, name=name)
        if not isinstance(self.spec, FasterRCNNSpec):
            raise PipelineError(
                f"{params.converted_dir}: a converted SSD model is not a Faster R-CNN"
            )
        self.settings = two_stage_loss_settings(self.spec)
        regularized = self.spec.training.regularized_fields
        if regularized and params.l2_weight_decay < 0:
            raise PipelineError(
                f"pipeline.config: {regularized[0]} has a non-zero regularizer weight; TF1's "
                "per-layer L2 is not reproduced for two-stage models: set train.l2_weight_decay"
            )

    def _build_network(self) -> tf_keras.Model:
        from pipeline.modeling.faster_rcnn.model import build_faster_rcnn_model

        return build_faster_rcnn_model(self.spec)

    def _l2_weights(self, model: tf_keras.Model) -> list[tuple[tf.Variable, float]]:
        """train.l2_weight_decay on every trained kernel (TF1's zoo configs set weight 0.0 and
        none of the supported extractors regularizes its base: no L2 when unset)."""
        del model
        assert self.freeze_plan is not None
        weight = float(self.task_config.l2_weight_decay)
        if weight <= 0:
            return []
        plan = self.freeze_plan
        return [
            (variable, weight)
            for variable, path in zip(plan.trainable, plan.trainable_paths, strict=True)
            if path.endswith(_KERNEL)
        ]

    def build_inputs(self, params: SSDDataConfig, input_context=None) -> tf.data.Dataset:
        return inputs_lib.build_dataset(
            self.input_settings(params, input_context), self.spec, input_context
        )

    def compute_losses(
        self, model: tf_keras.Model, inputs: Any, training: bool, step: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        images, labels = inputs
        truth = GroundTruth(
            labels["boxes"], labels["classes"], labels["num_boxes"], labels["image_shape"]
        )
        batch = tf.shape(images)[0]
        first_image, num_replicas = tf.constant(0), 1
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            num_replicas = context.num_replicas_in_sync
            first_image = context.replica_id_in_sync_group * batch
        seed = tf.stack(
            [tf.constant(self.task_config.train_data.seed, tf.int64), tf.cast(step, tf.int64)]
        )
        losses = training_losses(
            model,
            images,
            truth,
            self.settings,
            seed,
            training=training,
            batch_size=batch * num_replicas,
            first_image=first_image,
        )
        l2 = self.l2_loss()
        total = tf.add_n([losses[name] for name in LOSS_NAMES])
        return {
            **{name: losses[name] for name in LOSS_NAMES},
            "num_proposals": tf.reduce_mean(tf.cast(losses["num_proposals"], tf.float32)),
            "l2_loss": l2,
            "total_loss": total + l2 / num_replicas,
        }
