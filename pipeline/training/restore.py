"""Restore the converted checkpoint into the model, re-initialising what changed shape.

Model Garden's `Task.initialize` reads `tf.train.Checkpoint(**model.checkpoint_items)` and fails on
any shape mismatch. When the fine-tuning model has a different class count than the converted one,
the class predictors (and only they) differ in shape: those variables keep their fresh
initialisation and everything else is restored. TensorFlow's object-based restore has no
"skip these variables" switch, so the restore goes through a proxy object graph that mirrors the
model's but leaves the mismatched variables out.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import tensorflow as tf

from pipeline.training.variables import checkpoint_items, checkpoint_shapes, variable_paths

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RestoreReport:
    checkpoint: str
    restored: list[str]
    reinitialized: list[str]  # present in the checkpoint with another shape
    not_in_checkpoint: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "restored": len(self.restored),
            "reinitialized": self.reinitialized,
            "not_in_checkpoint": self.not_in_checkpoint,
        }


def resolve_checkpoint(path: str) -> str:
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:  # written with Checkpoint.write(): no `checkpoint` state file
            indexes = sorted(tf.io.gfile.glob(f"{path}/*.index"))
            if len(indexes) != 1:
                raise FileNotFoundError(f"{path}: no TF2 checkpoint in this directory")
            latest = indexes[0][: -len(".index")]
        return latest
    return path


def _proxy(obj: Any, path: str, skip: set[str]) -> Any:
    """`obj`, or a stand-in tracking the same children minus the variables at `skip` paths."""
    if not any(s.startswith(path + "/") for s in skip):
        return obj
    proxy = tf.Module()
    for name, child in tf.train.TrackableView(obj).children(obj).items():
        child_path = f"{path}/{name.replace('.', '..').replace('/', '.S')}"
        if child_path in skip:
            continue
        setattr(proxy, name, _proxy(child, child_path, skip))
    return proxy


def restore_model(model: Any, checkpoint: str) -> RestoreReport:
    """Restore `checkpoint` (file prefix or directory) into `model`; see the module docstring."""
    checkpoint = resolve_checkpoint(checkpoint)
    items = checkpoint_items(model)
    stored = checkpoint_shapes(checkpoint)
    restored, reinitialized, absent = [], [], []
    for path, variable in sorted(variable_paths(items).values(), key=lambda pv: pv[0]):
        if path not in stored:
            absent.append(path)
        elif list(stored[path]) != variable.shape.as_list():
            reinitialized.append(path)
        else:
            restored.append(path)
    skip = set(reinitialized)
    root_items = {name: _proxy(obj, name, skip) for name, obj in items.items()}
    status = tf.train.Checkpoint(**root_items).read(checkpoint).expect_partial()
    if not absent:
        status.assert_existing_objects_matched()
    if reinitialized:
        log.info(
            "restored %d variables from %s; re-initialised %d with a different shape: %s",
            len(restored),
            checkpoint,
            len(reinitialized),
            ", ".join(reinitialized),
        )
    return RestoreReport(checkpoint, restored, reinitialized, absent)
