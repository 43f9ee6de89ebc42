"""The `checkpoint` state file of a TF2 checkpoint directory, without timestamps.

`tf.train.CheckpointManager` records wall-clock timestamps in the state file
(`all_model_checkpoint_timestamps`, `last_preserved_timestamp`), so two runs on the same inputs
would give cached outputs with different hashes. Only the paths matter to readers
(`tf.train.latest_checkpoint`, Model Garden's `initialize`, a resuming CheckpointManager, which
falls back to "now" for checkpoints without a timestamp), so the file is rewritten with the
paths alone.
"""

from __future__ import annotations

import os
from pathlib import Path


def drop_checkpoint_timestamps(directory: str | os.PathLike[str]) -> None:
    """Rewrite `directory`'s state file with its checkpoint paths only (no-op without one)."""
    import tensorflow as tf

    directory = Path(directory)
    state = tf.train.get_checkpoint_state(str(directory))
    if state is None:
        return

    def relative(path: str) -> str:
        # The manager writes absolute paths; relative ones keep the directory relocatable.
        return os.path.relpath(path, directory) if os.path.isabs(path) else path

    tf.compat.v1.train.update_checkpoint_state(
        str(directory),
        relative(state.model_checkpoint_path),
        [relative(p) for p in state.all_model_checkpoint_paths],
    )
