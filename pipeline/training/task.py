"""The fine-tune tasks, registered with Model Garden's task factory.

`FinetuneTask` is a `base_task.Task` like Model Garden's `RetinaNetTask` / `MaskRCNNTask` with
what every converted TF1 detector shares: restore with re-initialised resized class predictors
(`pipeline.training.restore`), freezing (`pipeline.training.freezing`), the EMA over the trained
variables, the resumable input stream and the train / validation steps. `SSDFinetuneTask` adds the
SSD model (`pipeline.modeling`), its TF1 input path and targets (`pipeline.training.inputs`) and
TF1 losses with hard example mining (`pipeline.training.losses`); Faster R-CNN's task is
`pipeline.training.faster_rcnn.task`. Everything else (trainer, optimizer/schedule factory,
checkpoint manager, strategies, Orbit loop) is Model Garden's.

Losses are normalised by the number of matches summed over all replicas and the replicas' losses
are summed (not averaged), so a multi-replica step computes exactly the single-device TF1 loss.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import tensorflow as tf
import tf_keras
from official.core import base_task, task_factory
from official.modeling import optimization, performance
from official.vision.losses import loss_utils

from pipeline.errors import PipelineError
from pipeline.training import inputs as inputs_lib
from pipeline.training.config import SSDDataConfig, SSDFinetuneTaskConfig
from pipeline.training.freezing import FreezePlan, FreezeSettings, freeze_batch_norm, plan_freezing
from pipeline.training.losses import ssd_losses
from pipeline.training.restore import RestoreReport, restore_model
from pipeline.training.settings import loss_settings, matcher_settings
from pipeline.training.targets import TF1TargetAssigner

log = logging.getLogger(__name__)

LOSS_METRICS = ("total_loss", "cls_loss", "box_loss", "l2_loss", "num_matches")


def load_spec(converted_dir: str | Path, num_classes: int = 0) -> Any:
    """The converted model's SSDSpec or FasterRCNNSpec (with `num_classes` if given)."""
    from pipeline.modeling.builder import read_spec

    spec = read_spec(converted_dir)
    if num_classes and num_classes != spec.num_classes:
        spec = spec.with_num_classes(num_classes)
    return spec


def check_quantized_training(spec: Any, freeze_batch_norm: bool) -> None:
    """Quantization-aware fine-tuning folds BatchNorm with its moving statistics (the eval fold,
    which is contrib.quantize's training fold when the statistics are frozen)."""
    if getattr(spec, "quantization", None) is not None and not freeze_batch_norm:
        raise PipelineError(
            f"train.freeze.freeze_batch_norm: false with a quantized {spec.architecture}; "
            "contrib.quantize's BatchNorm fold with batch statistics is not reproduced: keep "
            "BatchNorm statistics frozen (true) for quantization-aware fine-tuning"
        )


class FinetuneTask(base_task.Task):
    """What fine-tuning a converted TF1 detector shares across families: restore, freezing,
    optimizer (EMA over the trained variables only), data stream position (resume), metrics and
    the train / validation steps. Families provide the network (`_build_network`), the inputs and
    `compute_losses` (the per-replica share of the TF1 loss, whose `total_loss` is minimised)."""

    loss_metrics: tuple[str, ...] = ()
    # Loss terms that are per-replica shares of the global loss (summed over replicas for logs).
    summed_losses: tuple[str, ...] = ()

    def __init__(self, params: SSDFinetuneTaskConfig, logging_dir: str | None = None, name=None):
        super().__init__(params, logging_dir=logging_dir, name=name)
        self.spec = load_spec(params.converted_dir, params.num_classes)
        self.freeze_plan: FreezePlan | None = None
        self.restore_report: RestoreReport | None = None
        self._regularized: list[tuple[tf.Variable, float]] = []

    # ---- model, restore, optimizer ----------------------------------------------------------

    def _build_network(self) -> tf_keras.Model:
        """The family's model with every variable created."""
        raise NotImplementedError

    def _l2_weights(self, model: tf_keras.Model) -> list[tuple[tf.Variable, float]]:
        """(variable, weight) of the trained weights L2-regularized (0.5 * w * sum(v^2))."""
        raise NotImplementedError

    def build_model(self) -> tf_keras.Model:
        model = self._build_network()
        freeze = self.task_config.freeze
        check_quantized_training(self.spec, freeze.freeze_batch_norm)
        if freeze.freeze_batch_norm:
            freeze_batch_norm(model)
        self.freeze_plan = plan_freezing(
            model,
            FreezeSettings(
                name=freeze.name,
                modules=tuple(freeze.modules),
                patterns=tuple(freeze.patterns),
                trainable_patterns=tuple(freeze.trainable_patterns),
                freeze_batch_norm=freeze.freeze_batch_norm,
            ),
        )
        self._regularized = self._l2_weights(model)
        return model

    def _trained(self) -> set:
        assert self.freeze_plan is not None
        return {variable.ref() for variable in self.freeze_plan.trainable}

    def l2_loss(self) -> tf.Tensor:
        if not self._regularized:
            return tf.constant(0.0)
        return tf.add_n([0.5 * w * tf.reduce_sum(tf.square(v)) for v, w in self._regularized])

    def initialize(self, model: tf_keras.Model) -> None:
        """Restore the converted checkpoint (Orbit calls this only without a run checkpoint)."""
        checkpoint = self.task_config.init_checkpoint or str(
            Path(self.task_config.converted_dir) / "checkpoint"
        )
        try:
            self.restore_report = restore_model(model, checkpoint)
        except (FileNotFoundError, tf.errors.NotFoundError) as error:
            raise PipelineError(
                f"{checkpoint}: no converted checkpoint ({error}); run `python -m pipeline convert`"
            ) from error
        log.info("restored %d variables from %s", len(self.restore_report.restored), checkpoint)

    def create_optimizer(self, optimizer_config, runtime_config=None):
        """Model Garden's optimizer factory; the EMA (if any) shadows only the trained variables."""
        factory = optimization.OptimizerFactory(optimizer_config)
        optimizer = factory.build_optimizer(factory.build_learning_rate())
        if runtime_config:
            optimizer = performance.configure_optimizer(
                optimizer,
                use_float16=runtime_config.mixed_precision_dtype == "float16",
                loss_scale=runtime_config.loss_scale,
            )
        if isinstance(optimizer, optimization.ExponentialMovingAverage) and self.freeze_plan:
            optimizer.shadow_copy(_Trainable(self.freeze_plan.trainable))
        # The step counter seeds sampling inside the replica function: create it here (the
        # strategy's scope), not lazily inside a replica's step.
        _ = optimizer.iterations
        return optimizer

    # ---- data --------------------------------------------------------------------------------

    def _consumed_examples(self, params: SSDDataConfig) -> int:
        """Examples of the (global, unsharded) stream the checkpointed steps of this run already
        consumed (resume)."""
        if not params.is_training or not self.logging_dir:
            return 0
        latest = tf.train.latest_checkpoint(self.logging_dir)
        if latest is None:
            return 0
        reader = tf.train.load_checkpoint(latest)
        step = int(reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE"))
        return step * params.global_batch_size

    def augmentation_steps(self, params: SSDDataConfig) -> tuple:
        """The TF1 data_augmentation_options this run applies (train.augmentation)."""
        from pipeline.training.augmentation import resolve_steps

        return resolve_steps(
            self.task_config.converted_dir,
            params.augmentation_from_pipeline_config,
            params.augmentation_options,
            params.augmentation_skip,
        )

    def input_settings(self, params: SSDDataConfig, input_context=None) -> inputs_lib.InputSettings:
        """The shared input stream's settings for `params` (train or validation data)."""
        if input_context is not None:
            batch_size = input_context.get_per_replica_batch_size(params.global_batch_size)
        else:
            batch_size = params.global_batch_size
        return inputs_lib.InputSettings(
            file_pattern=params.input_path,
            batch_size=batch_size,
            is_training=bool(params.is_training),
            shuffle_buffer_size=params.shuffle_buffer_size,
            seed=params.seed,
            augmentation=self.augmentation_steps(params) if params.is_training else (),
            skip_crowd=params.skip_crowd,
            skip_examples=self._consumed_examples(params),
            drop_remainder=params.drop_remainder,
            cache_decoded_max_bytes=params.cache_decoded_max_mb * 2**20,
        )

    def build_metrics(self, training: bool = True) -> list[tf_keras.metrics.Metric]:
        del training
        return [tf_keras.metrics.Mean(name, dtype=tf.float32) for name in self.loss_metrics]

    def _global(self, losses: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The batch's values, identical on every replica (for logging)."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return losses
        summed = {
            k: context.all_reduce(tf.distribute.ReduceOp.SUM, losses[k]) for k in self.summed_losses
        }
        return {**losses, **summed}

    def quantization_delay(self) -> int:
        """The step from which a quantized model fake-quantizes in training:
        train.quantization_delay, else its pipeline.config's graph_rewriter.quantization.delay."""
        configured = self.task_config.quantization_delay
        return configured if configured >= 0 else self.spec.quantization.delay

    def _schedule_quantization(self, model: tf_keras.Model, optimizer: Any) -> None:
        """Quantized models: fake quantization in training follows the optimizer's step counter
        (contrib.quantize's delay against TF 1.9's global_step: step k of the run is k)."""
        if getattr(self.spec, "quantization", None) is None:
            return
        from pipeline.modeling.quantization import QuantizationClock, set_quantization_clock

        clock = QuantizationClock(optimizer.iterations, self.quantization_delay())
        set_quantization_clock(model, clock)

    def train_step(self, inputs, model, optimizer, metrics=None) -> dict[str, tf.Tensor]:
        assert self.freeze_plan is not None, "build_model() first"
        self._schedule_quantization(model, optimizer)
        variables = self.freeze_plan.trainable
        with tf.GradientTape() as tape:
            losses = self.compute_losses(model, inputs, True, optimizer.iterations)
            loss = losses["total_loss"]
            scaled = loss
            if isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
                scaled = optimizer.get_scaled_loss(loss)
        grads = tape.gradient(scaled, variables)
        if isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
            grads = optimizer.get_unscaled_gradients(grads)
        optimizer.apply_gradients(list(zip(grads, variables, strict=True)))
        return self._log(losses, metrics)

    def validation_step(self, inputs, model, metrics=None) -> dict[str, tf.Tensor]:
        # Validation draws its samples (two-stage models) with a fixed step: the same every time.
        return self._log(
            self.compute_losses(model, inputs, False, tf.constant(-1, tf.int64)), metrics
        )

    def compute_losses(
        self, model: tf_keras.Model, inputs: Any, training: bool, step: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """The per-replica share of the TF1 loss for one batch (`step` seeds any sampling)."""
        raise NotImplementedError

    def _log(self, losses: dict[str, tf.Tensor], metrics) -> dict[str, tf.Tensor]:
        losses = self._global(losses)
        logs = {self.loss: losses["total_loss"]}
        for metric in metrics or []:
            metric.update_state(losses[metric.name])
            logs[metric.name] = metric.result()
        return logs


@task_factory.register_task_cls(SSDFinetuneTaskConfig)
class SSDFinetuneTask(FinetuneTask):
    """Fine-tunes a converted TF1 SSD detector with TF1's targets and losses."""

    loss_metrics = LOSS_METRICS
    summed_losses = ("total_loss", "cls_loss", "box_loss")

    def __init__(self, params: SSDFinetuneTaskConfig, logging_dir: str | None = None, name=None):
        super().__init__(params, logging_dir=logging_dir, name=name)
        from pipeline.modeling import anchors as anchors_lib
        from pipeline.modeling.spec import SSDSpec

        if not isinstance(self.spec, SSDSpec):
            raise PipelineError(
                f"{params.converted_dir}: a converted {self.spec.family} model is not an SSD"
            )
        self.losses = loss_settings(self.spec)
        self.box_coder_scales = tuple(float(s) for s in self.spec.box_coder.scales)
        self.anchors = tf.constant(anchors_lib.tf1_anchor_boxes(self.spec), tf.float32)

    def _build_network(self) -> tf_keras.Model:
        from pipeline.modeling.builder import build_ssd_model

        model = build_ssd_model(self.spec)
        height, width = self.spec.image_size
        model(tf.zeros([1, height, width, 3]), training=False)  # create the variables
        return model

    def _l2_weights(self, model: tf_keras.Model) -> list[tuple[tf.Variable, float]]:
        """The trained weights TF1 would L2-regularize, with TF1's weights
        (`pipeline.modeling.regularization`); train.l2_weight_decay >= 0 replaces the weight."""
        from pipeline.modeling.regularization import tf1_l2_weights

        uniform = self.task_config.l2_weight_decay
        trained = self._trained()
        weights = []
        for variable, weight in tf1_l2_weights(model, self.spec).values():
            if variable.ref() in trained:
                weights.append((variable, float(uniform) if uniform >= 0 else weight))
        return [(variable, weight) for variable, weight in weights if weight > 0]

    def build_inputs(self, params: SSDDataConfig, input_context=None) -> tf.data.Dataset:
        from pipeline.modeling.preprocessing import preprocess

        spec = self.spec
        assigner = TF1TargetAssigner(self.anchors, matcher_settings(spec), self.box_coder_scales)
        return inputs_lib.build_dataset(
            self.input_settings(params, input_context),
            lambda images: preprocess(images, spec),
            assigner,
            spec.num_classes,
            input_context,
        )

    # ---- losses and steps -------------------------------------------------------------------

    def build_losses(self, outputs, labels, aux_losses=None) -> dict[str, tf.Tensor]:
        """Per-replica share of the TF1 loss (sums over replicas to the single-device loss)."""
        del aux_losses  # L2 comes from the pipeline.config / train.l2_weight_decay, not Keras
        cls_outputs = loss_utils.multi_level_flatten(
            outputs["cls_outputs"], last_dim=self.spec.num_class_slots
        )
        box_outputs = loss_utils.multi_level_flatten(outputs["box_outputs"], last_dim=4)
        context = tf.distribute.get_replica_context()
        num_matches = tf.reduce_sum(labels["box_weights"])
        num_replicas = 1
        if context is not None and context.num_replicas_in_sync > 1:
            num_matches = context.all_reduce(tf.distribute.ReduceOp.SUM, num_matches)
            num_replicas = context.num_replicas_in_sync
        losses = ssd_losses(
            tf.cast(cls_outputs, tf.float32),
            tf.cast(box_outputs, tf.float32),
            labels,
            self.anchors,
            self.losses,
            self.box_coder_scales,
            num_matches=num_matches,
        )
        l2 = self.l2_loss()
        losses["l2_loss"] = l2
        losses["total_loss"] = losses["cls_loss"] + losses["box_loss"] + l2 / num_replicas
        return losses

    def compute_losses(
        self, model: tf_keras.Model, inputs: Any, training: bool, step: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        del step  # SSD targets are assigned in the input pipeline
        images, labels = inputs
        return self.build_losses(model(images, training=training), labels)


class _Trainable:
    """What `ExponentialMovingAverage.shadow_copy` reads from a model: its trained variables."""

    def __init__(self, variables: list[tf.Variable]):
        self.trainable_variables = list(variables)
        self.variables = list(variables)
