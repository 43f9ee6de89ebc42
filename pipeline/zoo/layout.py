"""What a usable TF1 zoo model folder contains: weights in one of the forms TF1 leaves (a
checkpoint, a frozen graph, a SavedModel) and the pipeline config they were trained with.

The rules are `pipeline.tf1.model_dir`'s, so a folder `fetch` accepts is one `convert` reads.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.tf1.model_dir import PIPELINE_CONFIG, TF1ModelDir, resolve_tf1_dir

# The fetched folder is described by the same record the converter resolves.
ZooModelDir = TF1ModelDir

__all__ = [
    "PIPELINE_CONFIG",
    "ZooModelDir",
    "config_architecture",
    "find_checkpoint_prefix",
    "validate_zoo_dir",
]


def validate_zoo_dir(root: str | Path, *, display: str | None = None) -> ZooModelDir:
    """Check `root` holds a complete TF1 model; `display` names the source in errors."""
    return resolve_tf1_dir(root, display=display)


def find_checkpoint_prefix(root: Path, *, display: str | None = None) -> Path:
    """The checkpoint prefix in `root` (the newest; see `pipeline.tf1.model_dir`)."""
    model = resolve_tf1_dir(root, display=display)
    if model.checkpoint_prefix is None:
        raise PipelineError(
            f"{display or root}: no checkpoint (model.ckpt.index not found); the weights are "
            f"a {model.form.replace('_', ' ')}"
        )
    return model.checkpoint_prefix


_FEATURE_EXTRACTOR_TYPE = re.compile(r"feature_extractor\s*\{[^{}]*?\btype:\s*[\"']([\w.-]+)[\"']")


def config_architecture(pipeline_config: Path) -> str | None:
    """The feature extractor type a TF1 pipeline.config declares (e.g. 'ssd_mobilenet_v2')."""
    match = _FEATURE_EXTRACTOR_TYPE.search(pipeline_config.read_text(errors="replace"))
    return match.group(1) if match else None
