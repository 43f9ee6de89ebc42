"""Stable names for model variables: their object-graph paths in the model's checkpoint.

Keras variable names are uniquified per process (`conv2d_17/kernel:0`), so freezing patterns, the
trained/frozen lists and partial restores key on the path that
`tf.train.Checkpoint(**checkpoint_items)` stores each variable under (e.g.
`head/_classifier/0/kernel`), which only depends on the architecture.
"""

from __future__ import annotations

import collections
from typing import Any

import tensorflow as tf

_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def checkpoint_items(model: Any) -> dict[str, Any]:
    items = getattr(model, "checkpoint_items", None)
    return dict(items) if items else {"model": model}


def _escape(name: str) -> str:
    # Same escaping as TensorFlow's checkpoint keys (trackable_utils.escape_local_name).
    return name.replace(".", "..").replace("/", ".S")


def variable_paths(items: dict[str, Any]) -> dict[int, tuple[str, tf.Variable]]:
    """id(variable) -> (path, variable) for every variable reachable from `items`.

    Breadth-first with the children in tracking order, as the checkpoint writer names objects, so a
    variable reachable along several paths gets the one the checkpoint stores it under.
    """
    found: dict[int, tuple[str, tf.Variable]] = {}
    seen: set[int] = set()
    queue: collections.deque[tuple[str, Any]] = collections.deque(
        (_escape(name), obj) for name, obj in items.items()
    )
    for _, obj in list(queue):
        seen.add(id(obj))
    while queue:
        path, obj = queue.popleft()
        if isinstance(obj, tf.Variable):  # includes tf.distribute's mirrored variables
            found.setdefault(id(obj), (path, obj))
            continue
        for name, child in tf.train.TrackableView(obj).children(obj).items():
            if id(child) in seen:
                continue
            seen.add(id(child))
            queue.append((f"{path}/{_escape(name)}", child))
    return found


def path_of(items: dict[str, Any]) -> dict[int, str]:
    return {key: path for key, (path, _) in variable_paths(items).items()}


def checkpoint_key(path: str) -> str:
    return path + _VALUE_SUFFIX


def checkpoint_shapes(checkpoint: str) -> dict[str, list[int]]:
    """Object path -> shape of every variable value stored in a TF2 object-based checkpoint."""
    reader = tf.train.load_checkpoint(checkpoint)
    return {
        key[: -len(_VALUE_SUFFIX)]: shape
        for key, shape in reader.get_variable_to_shape_map().items()
        if key.endswith(_VALUE_SUFFIX)
    }
