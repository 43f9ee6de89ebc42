"""TensorFlow outputs made byte-reproducible: the same inputs give the same cached stage outputs.

Two sources of run-to-run noise in TensorFlow's writers:

- `tf.train.CheckpointManager` records wall-clock timestamps in the state file
(`all_model_checkpoint_timestamps`, `last_preserved_timestamp`), so two runs on the same inputs
would give cached outputs with different hashes. Only the paths matter to readers
(`tf.train.latest_checkpoint`, Model Garden's `initialize`, a resuming CheckpointManager, which
falls back to "now" for checkpoints without a timestamp), so the file is rewritten with the
paths alone.
- `tf.saved_model.save` writes `fingerprint.pb` with a random `uuid`; the other fields are hashes
  of the content. The uuid is replaced by one derived from those hashes, so it still tells
  different SavedModels apart.
"""

from __future__ import annotations

import hashlib
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


def pin_saved_model_uuid(saved_model_dir: str | os.PathLike[str]) -> None:
    """Replace the random `uuid` of `saved_model_dir/fingerprint.pb` with a content-derived one."""
    from tensorflow.core.protobuf import fingerprint_pb2

    path = Path(saved_model_dir) / "fingerprint.pb"
    if not path.exists():
        return
    fingerprint = fingerprint_pb2.FingerprintDef.FromString(path.read_bytes())
    fingerprint.ClearField("uuid")
    digest = hashlib.sha256(fingerprint.SerializeToString(deterministic=True)).digest()
    # The same form as TensorFlow's own: a decimal 128-bit number.
    fingerprint.uuid = str(int.from_bytes(digest[:16], "big"))
    path.write_bytes(fingerprint.SerializeToString(deterministic=True))
