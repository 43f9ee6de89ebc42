"""Run a fine-tune experiment end to end: Model Garden training, then the run's artefacts.

Output directory:
  checkpoint/             TF2 training checkpoints (Model Garden's CheckpointManager) + params.yaml;
                          an interrupted run with the same settings resumes from the newest one
  dvclive/                DVCLive metrics: plots/metrics/train/*.tsv (loss, learning_rate, ...),
                          plots/metrics/eval/*.tsv when validation TFRecords are given, metrics.json
  saved_model/            exported SavedModel (TF1-like `serving_default` signature)
  trained_variables.txt   variables the optimizer updated (checkpoint path, shape)
  frozen_variables.txt    trainable variables kept frozen
  train_summary.json      steps, final losses, throughput, freezing and restore summary
Everything but checkpoint/ and dvclive/ is written atomically at the end; train_summary.json is
written last and marks a completed run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from official.common import distribute_utils
from official.core import task_factory, train_lib, train_utils
from official.modeling import optimization, performance

from pipeline.atomic import atomic_directory, atomic_file, write_json
from pipeline.errors import PipelineError
from pipeline.reproducible_outputs import drop_checkpoint_timestamps
from pipeline.training import task as _task  # noqa: F401  (registers the task with the factory)
from pipeline.training.actions import (
    DivergenceGuard,
    DVCLiveAction,
    ProgressAction,
    trim_history,
)
from pipeline.training.augmentation import resolve_steps
from pipeline.training.config import experiment_from_params
from pipeline.training.faster_rcnn import task as _two_stage_task  # noqa: F401  (same)
from pipeline.training.freezing import unfreeze_batch_norm
from pipeline.training.task import check_quantized_training, load_spec

log = logging.getLogger(__name__)


@dataclasses.dataclass
class FinetuneResult:
    out_dir: Path
    summary: dict[str, Any]


@contextlib.contextmanager
def _quiet_orbit() -> Iterator[None]:
    """Orbit prints a line per train loop; the progress bar and DVCLive replace it."""
    import orbit.controller

    original = orbit.controller._log
    orbit.controller._log = lambda message: log.debug(message)
    try:
        yield
    finally:
        orbit.controller._log = original


def make_strategy(runtime: Any) -> tf.distribute.Strategy:
    """The strategy named by train.runtime (Model Garden's distribute_utils)."""
    try:
        if runtime.worker_hosts:  # multi-worker without TF_CONFIG: build it from the config
            distribute_utils.configure_cluster(runtime.worker_hosts, runtime.task_index)
        return distribute_utils.get_distribution_strategy(
            distribution_strategy=runtime.distribution_strategy,
            num_gpus=runtime.num_gpus,
            tpu_address=runtime.tpu,
            all_reduce_alg=runtime.all_reduce_alg,
            num_packs=runtime.num_packs,
        )
    except ValueError as error:
        raise PipelineError(f"params.yaml: train.runtime.distribution_strategy: {error}") from error


RUN_FINGERPRINT = "run_fingerprint.json"


def run_fingerprint(experiment: Any, converted_dir: str | Path, train_tfrecords: str) -> dict:
    """What a checkpoint in --out was trained from: the settings, and the content of the converted
    model and of the training TFRecords (paths alone stay the same when DVC swaps their content)."""
    from pipeline.training.inputs import list_files

    def digest(paths: list[Path]) -> str:
        sha = hashlib.sha256()
        for path in paths:
            sha.update(path.name.encode() + b"\0")
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    sha.update(chunk)
        return sha.hexdigest()

    settings = json.dumps(experiment.as_dict(), sort_keys=True, default=str).encode()
    converted = sorted(p for p in Path(converted_dir).rglob("*") if p.is_file())
    return {
        "settings": hashlib.sha256(settings).hexdigest(),
        "converted": digest(converted),
        "train_tfrecords": digest([Path(f) for f in list_files(train_tfrecords)]),
    }


def _check_resume(
    model_dir: Path, fingerprint: dict, restart: bool, restart_if_changed: bool
) -> bool:
    """True when resuming. A checkpoint from other settings or inputs is refused, or discarded
    with `restart_if_changed` (the DVC stage: DVC reruns it only when something changed)."""
    if restart and model_dir.exists():
        shutil.rmtree(model_dir)
    if tf.train.latest_checkpoint(str(model_dir)) is None:
        return False
    saved = model_dir / RUN_FINGERPRINT
    previous = json.loads(saved.read_text()) if saved.is_file() else {}
    changed = sorted(key for key in fingerprint if previous.get(key) != fingerprint[key])
    if not changed:
        return True
    if restart_if_changed:
        log.info("%s: %s changed since its checkpoint; starting over", model_dir, changed)
        shutil.rmtree(model_dir)
        return False
    raise PipelineError(
        f"{model_dir}: holds a checkpoint of a run with different {' and '.join(changed)}; "
        "rerun with --restart (or another --out) to start over"
    )


def _checkpoint_step(model_dir: Path) -> int:
    latest = tf.train.latest_checkpoint(str(model_dir))
    reader = tf.train.load_checkpoint(latest)
    return int(reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE"))


def check_class_ids(
    tfrecords: list[str | None], num_classes: int, converted_dir: str | Path, source: str
) -> None:
    """Refuse, before any work, TFRecords whose label map (label_map.json beside them, as
    build-tfrecords writes it) disagrees with the class count the model is trained with. TFRecords
    without one are checked per batch by the input pipeline."""
    from pipeline.datasets.label_map import LABEL_MAP_FILE, class_mismatch, load_label_map_json

    for pattern in tfrecords:
        label_map = Path(pattern).parent / LABEL_MAP_FILE if pattern else None
        if label_map is None or not label_map.is_file():
            continue
        entries = load_label_map_json(label_map)
        problem = class_mismatch(entries, num_classes)
        if problem:
            wanted = max(entry.id for entry in entries)
            raise PipelineError(
                f"{label_map}: {problem}, fine-tuning {converted_dir} with {num_classes} "
                f"classes; set train.num_classes: {wanted} in {source} to train "
                f"{wanted}-class predictors from scratch, or rebuild the TFRecords with a label "
                f"map of the model's {num_classes} classes (data.label_map)"
            )


def _variable_lines(paths: list[str], shapes: dict[str, list[int]]) -> str:
    return "".join(f"{path}\t{shapes.get(path, '?')}\n" for path in paths)


def finetune(
    train_params: Any,
    converted_dir: str | Path,
    train_tfrecords: str,
    out_dir: str | Path,
    val_tfrecords: str | None = None,
    *,
    restart: bool = False,
    restart_if_changed: bool = False,
    strategy: tf.distribute.Strategy | None = None,
    source: str = "params.yaml",
    export: bool = True,
) -> FinetuneResult:
    """Fine-tune the converted model in `converted_dir` on `train_tfrecords` into `out_dir`."""
    from dvclive import Live

    started = time.perf_counter()
    experiment = experiment_from_params(
        train_params, str(converted_dir), train_tfrecords, val_tfrecords, source
    )
    # The augmentation list, before any other work: an option not implemented stops here.
    train_data = experiment.task.train_data
    augmentation = resolve_steps(
        converted_dir,
        train_data.augmentation_from_pipeline_config,
        train_data.augmentation_options,
        train_data.augmentation_skip,
        source,
    )
    log.info("augmentation: %s", ", ".join(step.name for step in augmentation) or "none")
    spec = load_spec(converted_dir, experiment.task.num_classes)
    check_quantized_training(spec, experiment.task.freeze.freeze_batch_norm)
    num_classes = spec.num_classes
    check_class_ids([train_tfrecords, val_tfrecords], num_classes, converted_dir, source)
    out = Path(out_dir)
    model_dir = out / "checkpoint"
    fingerprint = run_fingerprint(experiment, converted_dir, train_tfrecords)
    resuming = _check_resume(model_dir, fingerprint, restart, restart_if_changed)
    # Also when resuming: the global seed is part of every seeded op's stream (the shuffle order
    # above all), so a resumed process must set the same one to replay the same batches.
    tf.keras.utils.set_random_seed(experiment.task.train_data.seed)
    if resuming:
        trim_history(out / "dvclive", _checkpoint_step(model_dir))
    if experiment.runtime.mixed_precision_dtype:
        performance.set_mixed_precision_policy(experiment.runtime.mixed_precision_dtype)
    strategy = strategy or make_strategy(experiment.runtime)
    mode = "train_and_eval" if val_tfrecords else "train"

    with strategy.scope():
        task = task_factory.get_task(experiment.task, logging_dir=str(model_dir))
        trainer = train_utils.create_trainer(
            experiment, task, train=True, evaluate=bool(val_tfrecords)
        )
    train_utils.serialize_config(experiment, str(model_dir))
    write_json(model_dir / RUN_FINGERPRINT, fingerprint)
    quantization = _quantization_record(task, experiment.trainer.train_steps)

    live = Live(dir=str(out / "dvclive"), resume=resuming, save_dvc_exp=False, dvcyaml=None)
    batch_size = experiment.task.train_data.global_batch_size
    progress = ProgressAction(trainer.global_step, experiment.trainer.train_steps, batch_size)
    guard = DivergenceGuard(trainer.global_step, None)
    train_actions = [guard, DVCLiveAction(live, trainer.global_step, "train"), progress]
    eval_actions = [DVCLiveAction(live, trainer.global_step, "eval")]
    with _quiet_orbit():
        runner = train_lib.OrbitExperimentRunner(
            distribution_strategy=strategy,
            task=task,
            mode=mode,
            params=experiment,
            model_dir=str(model_dir),
            save_summary=False,
            train_actions=train_actions,
            eval_actions=eval_actions,
            trainer=trainer,
        )
        guard._manager = runner.checkpoint_manager
        restore = _restore_record(model_dir, task.restore_report)
        progress.begin()
        try:
            model, _ = runner.run()
        finally:
            progress.close()
            live.end()
            drop_checkpoint_timestamps(model_dir)
    train_seconds = time.perf_counter() - started

    plan = task.freeze_plan
    assert plan is not None
    optimizer = trainer.optimizer
    ema = isinstance(optimizer, optimization.ExponentialMovingAverage)
    if ema:  # export the averaged weights, as Model Garden's EMA checkpoints do
        with strategy.scope():
            optimizer.swap_weights()

    shapes = {
        path: variable.shape.as_list()
        for path, variable in zip(plan.trainable_paths, plan.trainable, strict=True)
    }
    all_shapes = {**shapes, **_frozen_shapes(model, plan.frozen_paths)}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "trained_variables.txt") as handle:
        handle.write(_variable_lines(plan.trained_paths, all_shapes))
    with atomic_file(out / "frozen_variables.txt") as handle:
        handle.write(_variable_lines(plan.frozen_paths, all_shapes))

    if export:
        from pipeline.inference import export_saved_model

        unfreeze_batch_norm(model)  # inference never updates BN statistics anyway
        with atomic_directory(out / "saved_model") as staging:
            export_saved_model(model, task.spec, str(staging))

    final = live.summary if hasattr(live, "summary") else {}
    rates = progress.images_per_second[1:] or progress.images_per_second
    summary = {
        "steps": int(trainer.global_step.numpy()),
        "resumed": resuming,
        "num_replicas": strategy.num_replicas_in_sync,
        "distribution_strategy": type(strategy).__name__,
        "global_batch_size": experiment.task.train_data.global_batch_size,
        "images_per_second": float(np.median(rates)) if rates else None,
        "wall_seconds": round(train_seconds, 2),
        "ema": ema,
        "augmentation": [step.name for step in augmentation],
        "freeze": {
            "name": experiment.task.freeze.name,
            "freeze_batch_norm": experiment.task.freeze.freeze_batch_norm,
            "trained_variables": len(plan.trained_paths),
            "frozen_variables": len(plan.frozen_paths),
            "trained_parameters": int(sum(np.prod(s) for s in shapes.values())),
        },
        "restore": restore,
        "quantization": quantization,
        "final": {"train": final.get("train", {})},
        # Last validation (train_and_eval evaluates every validation_every_steps and at the end).
        "eval": final.get("eval", {}),
        "saved_model": "saved_model" if export else None,
    }
    write_json(out / "train_summary.json", summary)
    return FinetuneResult(out, summary)


def _quantization_record(task: Any, steps: int) -> dict[str, Any] | None:
    """A quantized model's fine-tune: from which step it is quantization-aware (logged)."""
    if getattr(task.spec, "quantization", None) is None:
        return None
    delay = task.quantization_delay()
    log.info("quantization-aware fine-tuning: fake quantization from step %d of %d", delay, steps)
    if delay >= steps:
        log.warning(
            "quantization delay %d is not below train.steps (%d): this run trains unquantized "
            "weights (the fake-quant ranges still follow them), as TF1 would with "
            "graph_rewriter.quantization.delay; set train.quantization_delay=0 to fine-tune "
            "quantization-aware",
            delay,
            steps,
        )
    return {"delay": delay, "quantized_steps": max(0, steps - delay)}


def _restore_record(model_dir: Path, report: Any) -> dict[str, Any] | None:
    """What the first session restored (a resumed session restores the run's own checkpoint)."""
    path = model_dir / "restore_report.json"
    if report is not None:
        write_json(path, report.to_dict())
        return report.to_dict()
    if path.is_file():
        import json

        return json.loads(path.read_text())
    return None


def _frozen_shapes(model: Any, frozen: list[str]) -> dict[str, list[int]]:
    from pipeline.training.variables import checkpoint_items, variable_paths

    wanted = set(frozen)
    return {
        path: variable.shape.as_list()
        for path, variable in variable_paths(checkpoint_items(model)).values()
        if path in wanted
    }
