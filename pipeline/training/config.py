"""The fine-tune experiment as Model Garden configs, translated from the Hydra `train` group.

`tf1_ssd_finetune` and `tf1_faster_rcnn_finetune` (same fields, chosen by the converted model's
family) are registered with Model Garden's experiment factory; their task configs are registered
(in `pipeline.training.task` / `pipeline.training.faster_rcnn.task`) with the task factory, so the
stock
`train_lib.run_experiment` / Orbit machinery runs it. `experiment_from_params` maps the project's
Hydra keys (`train.optimizer.*`, `train.schedule.*`, `train.freeze.*`, ...) onto Model Garden's
`OptimizationConfig` (optimizer + learning-rate schedule + linear warmup + EMA), `TrainerConfig`
and `RuntimeConfig`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from official.core import config_definitions as cfg
from official.core import exp_factory
from official.modeling import hyperparams
from official.modeling.optimization.configs import optimization_config

from pipeline.errors import PipelineError

EXPERIMENT = "tf1_ssd_finetune"
FASTER_RCNN_EXPERIMENT = "tf1_faster_rcnn_finetune"


@dataclasses.dataclass
class SSDDataConfig(cfg.DataConfig):
    input_path: str = ""
    global_batch_size: int = 8
    is_training: bool = True
    shuffle_buffer_size: int = 256
    seed: int = 0
    # train.augmentation: TF1 data_augmentation_options (pipeline.training.augmentation), applied
    # when is_training.
    augmentation_from_pipeline_config: bool = True
    augmentation_options: list[str] = dataclasses.field(default_factory=list)
    augmentation_skip: list[str] = dataclasses.field(default_factory=list)
    skip_crowd: bool = False
    drop_remainder: bool = True
    cache_decoded_max_mb: int = 0


@dataclasses.dataclass
class FreezeConfig(hyperparams.Config):
    name: str = "none"
    modules: list[str] = dataclasses.field(default_factory=list)
    patterns: list[str] = dataclasses.field(default_factory=list)
    trainable_patterns: list[str] = dataclasses.field(default_factory=list)
    freeze_batch_norm: bool = True


@dataclasses.dataclass
class SSDFinetuneTaskConfig(cfg.TaskConfig):
    # Converted model directory (model_spec.json + checkpoint/), written by `pipeline convert`.
    converted_dir: str = ""
    # Defaults to <converted_dir>/checkpoint.
    init_checkpoint: str = ""
    # 0: the converted model's class count; otherwise class predictors are re-initialised.
    num_classes: int = 0
    # < 0: TF1's L2 weights (pipeline.modeling.regularization); >= 0 replaces each of them.
    l2_weight_decay: float = -1.0
    # Quantized models: the step from which fake quantization applies in training; < 0: the
    # converted model's graph_rewriter.quantization.delay.
    quantization_delay: int = -1
    freeze: FreezeConfig = dataclasses.field(default_factory=FreezeConfig)
    train_data: SSDDataConfig = dataclasses.field(default_factory=SSDDataConfig)
    validation_data: SSDDataConfig = dataclasses.field(
        default_factory=lambda: SSDDataConfig(
            is_training=False, drop_remainder=False, augmentation_from_pipeline_config=False
        )
    )


@dataclasses.dataclass
class FasterRCNNFinetuneTaskConfig(SSDFinetuneTaskConfig):
    """The same fields; a class of its own so that the task factory builds the two-stage task."""


def _experiment(task: SSDFinetuneTaskConfig) -> cfg.ExperimentConfig:
    return cfg.ExperimentConfig(
        task=task,
        trainer=cfg.TrainerConfig(
            train_steps=100,
            steps_per_loop=1,
            summary_interval=1,
            checkpoint_interval=50,
            max_to_keep=3,
            validation_interval=50,
            validation_steps=-1,
            # The project's DivergenceGuard action reports NaN/Inf; Model Garden's recovery
            # (reload and retry) would hide it.
            recovery_max_trials=-1,
            optimizer_config=optimization_config.OptimizationConfig(
                {
                    "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9}},
                    "learning_rate": {"type": "constant", "constant": {"learning_rate": 0.01}},
                }
            ),
        ),
        runtime=cfg.RuntimeConfig(distribution_strategy="one_device"),
    )


@exp_factory.register_config_factory(EXPERIMENT)
def tf1_ssd_finetune() -> cfg.ExperimentConfig:
    return _experiment(SSDFinetuneTaskConfig())


@exp_factory.register_config_factory(FASTER_RCNN_EXPERIMENT)
def tf1_faster_rcnn_finetune() -> cfg.ExperimentConfig:
    return _experiment(FasterRCNNFinetuneTaskConfig())


FAMILIES = ("ssd", "faster_rcnn")
_SELECTION_KEYS = ("modules", "patterns", "trainable_patterns")


def model_family(converted_dir: str) -> str:
    """The converted model's family (model_spec.json `family`; SSD specs carry none)."""
    path = Path(converted_dir) / "model_spec.json"
    if not path.is_file():
        return "ssd"
    data = json.loads(path.read_text(encoding="utf-8"))
    return str(data.get("family", "ssd")) if isinstance(data, dict) else "ssd"


def experiment_name(converted_dir: str) -> str:
    """The registered experiment for the converted model's family."""
    return FASTER_RCNN_EXPERIMENT if model_family(converted_dir) == "faster_rcnn" else EXPERIMENT


def freeze_selection(freeze: Any, family: str, source: str = "params.yaml") -> dict[str, Any]:
    """train.freeze for a model family: the top-level modules / patterns / trainable_patterns,
    with a `<family>:` block replacing any of them; `families:` lists where the choice applies
    (default: every family)."""
    name = str(_get(freeze, "name", "custom"))
    families = [str(f) for f in _get(freeze, "families", None) or FAMILIES]
    if family not in families:
        raise PipelineError(
            f"{source}: train.freeze {name!r} does not apply to {family} models "
            f"(train.freeze.families: {', '.join(families)})"
        )
    override = _get(freeze, family, None) or {}
    unknown = sorted(set(_plain(override)) - set(_SELECTION_KEYS))
    if unknown:
        raise PipelineError(
            f"{source}: train.freeze.{family} has unknown keys {unknown}; "
            f"allowed: {', '.join(_SELECTION_KEYS)}"
        )
    selection = {
        key: [str(v) for v in _get(override, key, _get(freeze, key, []))] for key in _SELECTION_KEYS
    }
    return {
        "name": name,
        **selection,
        "freeze_batch_norm": bool(_get(freeze, "freeze_batch_norm", True)),
    }


_OPTIMIZER_KEYS = {
    "sgd": {"momentum", "nesterov"},
    "adam": {"beta_1", "beta_2", "epsilon", "amsgrad"},
    "adamw": {
        "beta_1",
        "beta_2",
        "epsilon",
        "amsgrad",
        "weight_decay_rate",
        "include_in_weight_decay",
        "exclude_from_weight_decay",
    },
    "rmsprop": {"rho", "momentum", "epsilon", "centered"},
}


def _plain(node: Any) -> dict[str, Any]:
    """OmegaConf / mapping -> plain dicts and lists (Model Garden configs reject OmegaConf)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node)


def _quantization_delay(train: Any, source: str) -> int:
    delay = _get(train, "quantization_delay", -1)
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < -1:
        raise PipelineError(
            f"{source}: train.quantization_delay is {delay!r}; use null (the converted model's "
            "graph_rewriter.quantization.delay) or a step count >= 0 (0: quantization-aware from "
            "the first step)"
        )
    return delay


def _get(node: Any, key: str, default: Any = None) -> Any:
    value = node.get(key, default) if hasattr(node, "get") else getattr(node, key, default)
    return default if value is None else value


def optimization_from_params(train: Any, source: str = "params.yaml") -> dict[str, Any]:
    """Model Garden `OptimizationConfig` dict from the `train` section."""
    train = _plain(train)
    optimizer = _get(train, "optimizer", {})
    kind = str(_get(optimizer, "type", "sgd"))
    if kind not in _OPTIMIZER_KEYS:
        raise PipelineError(
            f"{source}: train.optimizer.type {kind!r} is not supported; use one of "
            f"{sorted(_OPTIMIZER_KEYS)}"
        )
    try:
        learning_rate = float(optimizer["learning_rate"])
    except (AttributeError, TypeError, ValueError, KeyError) as error:
        raise PipelineError(
            f"{source}: train.optimizer.learning_rate missing or not a number; set it, e.g. "
            "`-S train.optimizer.learning_rate=1e-3`"
        ) from error
    options = {
        k: v for k, v in dict(optimizer).items() if k in _OPTIMIZER_KEYS[kind] and v is not None
    }
    unknown = set(dict(optimizer)) - _OPTIMIZER_KEYS[kind] - {"type", "learning_rate", "name"}
    if unknown:
        raise PipelineError(
            f"{source}: train.optimizer has keys {sorted(unknown)} that {kind} does not take; "
            f"allowed: {sorted(_OPTIMIZER_KEYS[kind])}"
        )
    clip = _get(train, "gradient_clip_norm")
    if kind == "adamw":
        # Model Garden's AdamWeightDecay clips by global norm itself (0 disables).
        options["gradient_clip_norm"] = float(clip or 0.0)
    elif clip:
        options["global_clipnorm"] = float(clip)

    steps = int(train["steps"])
    schedule = _get(train, "schedule", {})
    warmup_steps = int(_get(schedule, "warmup_steps", 0))
    if warmup_steps >= steps and warmup_steps > 0:
        raise PipelineError(
            f"{source}: train.schedule.warmup_steps ({warmup_steps}) must be below "
            f"train.steps ({steps})"
        )
    schedule_type = str(_get(schedule, "type", "constant"))
    if schedule_type == "constant":
        lr = {"type": "constant", "constant": {"learning_rate": learning_rate}}
    elif schedule_type == "cosine":
        lr = {
            "type": "cosine",
            "cosine": {
                "initial_learning_rate": learning_rate,
                "decay_steps": steps - warmup_steps,
                "alpha": float(_get(schedule, "alpha", 0.0)),
                "offset": warmup_steps,
            },
        }
    elif schedule_type == "step":
        milestones = [float(m) for m in _get(schedule, "milestones", [])]
        if any(not 0.0 < m < 1.0 for m in milestones) or milestones != sorted(milestones):
            raise PipelineError(
                f"{source}: train.schedule.milestones must be increasing fractions of train.steps "
                f"in (0, 1); got {milestones}"
            )
        gamma = float(_get(schedule, "gamma", 0.1))
        boundaries = [max(1, round(m * steps)) for m in milestones]
        lr = {
            "type": "stepwise",
            "stepwise": {
                "boundaries": boundaries,
                "values": [learning_rate * gamma**i for i in range(len(boundaries) + 1)],
            },
        }
    else:
        raise PipelineError(
            f"{source}: train.schedule.type {schedule_type!r} is not supported; use constant, "
            "cosine or step"
        )
    config: dict[str, Any] = {
        "optimizer": {"type": kind, kind: options},
        "learning_rate": lr,
    }
    if warmup_steps:
        config["warmup"] = {
            "type": "linear",
            "linear": {
                "warmup_steps": warmup_steps,
                "warmup_learning_rate": float(_get(schedule, "warmup_learning_rate", 0.0)),
            },
        }
    ema = _get(train, "ema_decay")
    if ema:
        config["ema"] = {"average_decay": float(ema), "trainable_weights_only": True}
    return config


AUGMENTATION_KEYS = ("from_pipeline_config", "options", "skip")


def augmentation_from_params(train: Any, source: str = "params.yaml") -> dict[str, Any]:
    """train.augmentation -> the training data config's augmentation fields."""
    augmentation = _get(train, "augmentation", {})
    unknown = sorted(set(dict(augmentation)) - set(AUGMENTATION_KEYS))
    if unknown:
        raise PipelineError(
            f"{source}: train.augmentation has keys {unknown}; allowed: "
            f"{', '.join(AUGMENTATION_KEYS)} (the TF1 options come from the converted model's "
            "pipeline.config, or from train.augmentation.options as PreprocessingStep text, "
            "e.g. 'random_horizontal_flip {}')"
        )
    for key in ("options", "skip"):
        value = _get(augmentation, key, [])
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise PipelineError(f"{source}: train.augmentation.{key} must be a list, got {value!r}")
    return {
        "augmentation_from_pipeline_config": bool(_get(augmentation, "from_pipeline_config", True)),
        "augmentation_options": [str(o) for o in _get(augmentation, "options", [])],
        "augmentation_skip": [str(o) for o in _get(augmentation, "skip", [])],
    }


def experiment_from_params(
    train: Any,
    converted_dir: str,
    train_tfrecords: str,
    val_tfrecords: str | None = None,
    source: str = "params.yaml",
) -> cfg.ExperimentConfig:
    """The registered experiment overridden by the Hydra `train` section and the stage's paths."""
    experiment = exp_factory.get_exp_config(experiment_name(converted_dir))
    train = _plain(train)
    try:
        steps = int(train["steps"])
        batch_size = int(train["batch_size"])
    except (KeyError, TypeError, ValueError) as error:
        raise PipelineError(
            f"{source}: train.steps / train.batch_size missing or not integers"
        ) from error
    if steps <= 0 or batch_size <= 0:
        raise PipelineError(f"{source}: train.steps and train.batch_size must be positive")
    log_every = max(1, int(_get(train, "log_every_steps", 1)))
    checkpoint_every = max(1, int(_get(train, "checkpoint_every_steps", steps)))
    validate_every = int(_get(train, "validation_every_steps", 0))
    freeze = _get(train, "freeze", {})
    seed = int(_get(train, "seed", 0))
    data_common = {
        "global_batch_size": batch_size,
        "shuffle_buffer_size": int(_get(train, "shuffle_buffer_size", 256)),
        "seed": seed,
        "skip_crowd": bool(_get(train, "skip_crowd", False)),
        "cache_decoded_max_mb": int(_get(train, "cache_decoded_max_mb", 0)),
    }
    runtime = _get(train, "runtime", {})
    overrides = {
        "task": {
            "converted_dir": str(converted_dir),
            "num_classes": int(_get(train, "num_classes", 0)),
            "l2_weight_decay": float(_get(train, "l2_weight_decay", -1.0)),
            "quantization_delay": _quantization_delay(train, source),
            "freeze": freeze_selection(freeze, model_family(converted_dir), source),
            "train_data": {
                **data_common,
                "input_path": str(train_tfrecords),
                "is_training": True,
                **augmentation_from_params(train, source),
            },
            "validation_data": {
                **data_common,
                "input_path": str(val_tfrecords or ""),
                "is_training": False,
                "augmentation_from_pipeline_config": False,
                "drop_remainder": False,
            },
        },
        "trainer": {
            "train_steps": steps,
            "steps_per_loop": log_every,
            "summary_interval": log_every,
            "checkpoint_interval": checkpoint_every,
            "validation_interval": validate_every or steps,
        },
        "runtime": {
            "distribution_strategy": str(_get(runtime, "distribution_strategy", "one_device")),
            "num_gpus": int(_get(runtime, "num_gpus", 0)),
            "tpu": _get(runtime, "tpu", None),
            "worker_hosts": _get(runtime, "worker_hosts", None),
            "task_index": int(_get(runtime, "task_index", -1)),
            "mixed_precision_dtype": _get(runtime, "mixed_precision_dtype", None),
        },
    }
    experiment.override(overrides, is_strict=True)
    # Assigned whole: a partial override cannot switch the oneof types or fill `ema` (None).
    experiment.trainer.optimizer_config = optimization_config.OptimizationConfig(
        optimization_from_params(train, source)
    )
    experiment.validate()
    return experiment
