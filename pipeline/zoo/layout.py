"""What a usable TF1 zoo model folder contains: a name-based checkpoint and its pipeline.config."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError

PIPELINE_CONFIG = "pipeline.config"
EXPECTED = (
    "a TF1 zoo model holds pipeline.config and a checkpoint (model.ckpt.index + "
    "model.ckpt.data-00000-of-00001), usually inside one top-level folder"
)


@dataclass(frozen=True)
class ZooModelDir:
    root: Path
    checkpoint_prefix: Path  # e.g. <root>/model.ckpt, as tf.train.load_checkpoint expects
    pipeline_config: Path
    meta_graph: Path | None
    frozen_graph: Path | None


def validate_zoo_dir(root: str | Path, *, display: str | None = None) -> ZooModelDir:
    """Check `root` holds a complete zoo model; `display` names the source in errors."""
    root = Path(root)
    where = display or str(root)
    config = root / PIPELINE_CONFIG
    if not config.is_file():
        raise PipelineError(f"{where}: no {PIPELINE_CONFIG}; {EXPECTED}")
    if config.stat().st_size == 0:
        raise PipelineError(f"{where}: {PIPELINE_CONFIG} is empty; fetch the model again")
    prefix = find_checkpoint_prefix(root, display=where)
    meta = prefix.with_name(prefix.name + ".meta")
    frozen = root / "frozen_inference_graph.pb"
    return ZooModelDir(
        root=root,
        checkpoint_prefix=prefix,
        pipeline_config=config,
        meta_graph=meta if meta.is_file() else None,
        frozen_graph=frozen if frozen.is_file() else None,
    )


def find_checkpoint_prefix(root: Path, *, display: str | None = None) -> Path:
    """The checkpoint prefix in `root`: the only `*.index`, else the one `checkpoint` names."""
    where = display or str(root)
    indexes = sorted(p for p in root.glob("*.index") if p.is_file())
    if not indexes:
        raise PipelineError(f"{where}: no checkpoint (model.ckpt.index not found); {EXPECTED}")
    if len(indexes) == 1:
        prefix = indexes[0].with_suffix("")
    else:
        named = _checkpoint_state_prefix(root)
        if named is None or not (root / f"{named}.index").is_file():
            listed = ", ".join(p.name for p in indexes)
            raise PipelineError(
                f"{where}: several checkpoints ({listed}) and no `checkpoint` file naming one; "
                "keep only the one to convert"
            )
        prefix = root / named
    _check_data_shards(prefix, where)
    if prefix.with_name(prefix.name + ".index").stat().st_size == 0:
        raise PipelineError(f"{where}: {prefix.name}.index is empty; fetch the model again")
    return prefix


def _check_data_shards(prefix: Path, where: str) -> None:
    pattern = re.compile(rf"^{re.escape(prefix.name)}\.data-(\d{{5}})-of-(\d{{5}})$")
    shards: dict[int, set[int]] = {}
    for path in prefix.parent.iterdir():
        match = pattern.match(path.name)
        if match and path.is_file():
            shards.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    if not shards:
        raise PipelineError(
            f"{where}: checkpoint {prefix.name} has an index but no data file "
            f"({prefix.name}.data-00000-of-00001); the archive is incomplete, fetch it again"
        )
    if len(shards) > 1:
        raise PipelineError(f"{where}: checkpoint {prefix.name} mixes data-file sets; fetch again")
    count, present = next(iter(shards.items()))
    missing = sorted(set(range(count)) - present)
    if missing:
        raise PipelineError(
            f"{where}: checkpoint {prefix.name} lacks data shard(s) {missing} of {count}; "
            "the archive is incomplete, fetch it again"
        )


def _checkpoint_state_prefix(root: Path) -> str | None:
    # The `checkpoint` file is a text CheckpointState proto; only the main path matters here.
    state = root / "checkpoint"
    if not state.is_file():
        return None
    match = re.search(
        r'^model_checkpoint_path:\s*"([^"]+)"', state.read_text(errors="replace"), re.M
    )
    return Path(match.group(1)).name if match else None


_FEATURE_EXTRACTOR_TYPE = re.compile(r"feature_extractor\s*\{[^{}]*?\btype:\s*[\"']([\w.-]+)[\"']")


def config_architecture(pipeline_config: Path) -> str | None:
    """The feature extractor type a TF1 pipeline.config declares (e.g. 'ssd_mobilenet_v2')."""
    match = _FEATURE_EXTRACTOR_TYPE.search(pipeline_config.read_text(errors="replace"))
    return match.group(1) if match else None
