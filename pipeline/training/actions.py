"""Orbit actions for the fine-tune run: DVCLive logging, progress with throughput, divergence guard.

Orbit calls each train action with the outputs of every train loop (`trainer.steps_per_loop`
steps), and each eval action with the evaluation results; Keras callbacks never fire under Orbit,
so DVCLive is driven from here.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from pipeline.errors import PipelineError


def _scalars(output: Mapping[str, Any]) -> dict[str, float]:
    values = {}
    for name, value in (output or {}).items():
        array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        if array.shape == () and np.issubdtype(array.dtype, np.number):
            values[name] = float(array)
    return values


class DVCLiveAction:
    """Logs every scalar of the loop output (loss, learning rate, ...) at the global step.

    Model Garden's `training_loss` / `validation_loss` (the mean total loss) is logged as `loss`.
    """

    RENAME: ClassVar[dict[str, str]] = {"training_loss": "loss", "validation_loss": "loss"}

    def __init__(self, live: Any, global_step: tf.Variable, prefix: str):
        self._live = live
        self._global_step = global_step
        self._prefix = prefix

    def __call__(self, output: Mapping[str, Any]) -> None:
        self._live.step = int(self._global_step.numpy())
        for name, value in _scalars(output).items():
            self._live.log_metric(f"{self._prefix}/{self.RENAME.get(name, name)}", value)
        self._live.make_summary()


def trim_history(live_dir: Path, step: int) -> None:
    """Drop DVCLive rows logged after `step` (the checkpoint a resumed run restarts from), so the
    replayed steps are logged once, not twice. DVCLive plots are `timestamp step <metric>` TSVs."""
    from pipeline.atomic import atomic_file

    for path in sorted((live_dir / "plots" / "metrics").rglob("*.tsv")):
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
        if not rows or "step" not in rows[0]:
            continue
        column = rows[0].index("step")
        kept = [rows[0]] + [row for row in rows[1:] if int(row[column]) <= step]
        if len(kept) != len(rows):
            with atomic_file(path) as handle:
                csv.writer(handle, delimiter="\t", lineterminator="\n").writerows(kept)


class ProgressAction:
    """A tqdm bar over the training steps, with images/s and the last loss."""

    def __init__(self, global_step: tf.Variable, total_steps: int, global_batch_size: int):
        self._global_step = global_step
        self._batch = global_batch_size
        self._total = total_steps
        self._bar: tqdm | None = None
        self.images_per_second: list[float] = []

    def begin(self) -> None:
        """Start the bar at the current (possibly restored) step."""
        start = int(self._global_step.numpy())
        self._bar = tqdm(total=self._total, initial=start, desc="fine-tune", unit="step")
        self._last_step = start
        self._last_time = time.perf_counter()

    def __call__(self, output: Mapping[str, Any]) -> None:
        if self._bar is None:
            self.begin()
        assert self._bar is not None
        step = int(self._global_step.numpy())
        now = time.perf_counter()
        done = step - self._last_step
        rate = done * self._batch / max(now - self._last_time, 1e-9)
        self.images_per_second.append(rate)
        values = _scalars(output)
        self._bar.set_postfix(
            loss=f"{values.get('training_loss', float('nan')):.4f}", img_s=f"{rate:.1f}"
        )
        self._bar.update(done)
        self._last_step, self._last_time = step, now

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class TrainingDivergedError(PipelineError):
    """The loss became NaN or infinite."""


class DivergenceGuard:
    """Stops the run when the loop's loss is NaN/Inf, before Orbit saves a checkpoint of it.

    Orbit runs train actions before `_maybe_save_checkpoint`, so the newest checkpoint on disk is
    the last one taken with a finite loss.
    """

    def __init__(self, global_step: tf.Variable, checkpoint_manager: tf.train.CheckpointManager):
        self._global_step = global_step
        self._manager = checkpoint_manager

    def __call__(self, output: Mapping[str, Any]) -> None:
        values = _scalars(output)
        bad = {k: v for k, v in values.items() if k.endswith("loss") and not math.isfinite(v)}
        if not bad:
            return
        step = int(self._global_step.numpy())
        latest = self._manager.latest_checkpoint if self._manager else None
        kept = f"last good checkpoint kept: {latest}" if latest else "no checkpoint was saved yet"
        raise TrainingDivergedError(
            f"training diverged: {', '.join(f'{k}={v}' for k, v in bad.items())} by step {step}; "
            f"{kept}; lower train.optimizer.learning_rate or set train.gradient_clip_norm"
        )
