"""Which TF1 model a directory holds, in whichever form it arrived: a training dir, an export, a
frozen graph or a SavedModel; and which pipeline config describes it.

Only files are looked at here (no TensorFlow import), so `fetch` can validate a download cheaply
and `convert` can refuse a bad directory before any work. The forms, in the order they are used
when several are present (an export holds all three):

- `checkpoint`: a name-based checkpoint, `model.ckpt` (exports, zoo tarballs) or `model.ckpt-N`
  (training dirs; the newest one: the `checkpoint` state file's, else the highest N), with its
  `.meta` graph when present;
- `frozen_graph`: `frozen_inference_graph.pb`, every weight a Const named like its variable;
- `saved_model`: `saved_model/saved_model.pb` (the TF1 exporter's is the frozen graph plus a
  `serving_default` signature; a SavedModel with `variables/` works too).

The config is `pipeline.config`, else the directory's one `*.config` (training dirs are often
left with the sample's name, e.g. `ssd_mobilenet_v1_coco.config`); `pipeline_config=` chooses.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Literal

from pipeline.errors import PipelineError

PIPELINE_CONFIG = "pipeline.config"
CHECKPOINT_STATE = "checkpoint"
DEFAULT_PREFIX = "model.ckpt"
FROZEN_GRAPH = "frozen_inference_graph.pb"
SAVED_MODEL_DIR = "saved_model"
SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_VARIABLES = "variables/variables"

Form = Literal["checkpoint", "frozen_graph", "saved_model"]
FORMS: tuple[Form, ...] = ("checkpoint", "frozen_graph", "saved_model")
NEEDED = (
    "a TF1 model needs its pipeline config plus its weights as a checkpoint "
    "(model.ckpt[-N].index + .data-*), frozen_inference_graph.pb or saved_model/saved_model.pb"
)
_STEP = re.compile(r"^(?P<prefix>.+-(?P<step>\d+))\.index$")


@dataclasses.dataclass(frozen=True)
class TF1ModelDir:
    """What a TF1 model directory holds and which of it the converter uses (and why)."""

    root: Path
    pipeline_config: Path
    config_reason: str
    form: Form
    # The checkpoint the weights come from (form "checkpoint"), with why it was chosen.
    checkpoint_prefix: Path | None
    checkpoint_reason: str
    # Graphs present in the directory (used for parity; the meta graph is the checkpoint's).
    meta_graph: Path | None
    frozen_graph: Path | None
    saved_model: Path | None

    @property
    def weights_file(self) -> Path:
        """The file the weights are read from, for messages and the report."""
        if self.form == "checkpoint":
            assert self.checkpoint_prefix is not None
            return self.checkpoint_prefix.with_name(self.checkpoint_prefix.name + ".index")
        if self.form == "frozen_graph":
            assert self.frozen_graph is not None
            return self.frozen_graph
        assert self.saved_model is not None
        return self.saved_model / SAVED_MODEL_PB

    def describe(self) -> str:
        """One line: the form and the file, e.g. for the CLI and the report."""
        reason = f" ({self.checkpoint_reason})" if self.form == "checkpoint" else ""
        return f"{self.form.replace('_', ' ')} {self.weights_file}{reason}"


def resolve_tf1_dir(
    root: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    pipeline_config: str | os.PathLike[str] | None = None,
    require_data: bool = True,
    display: str | None = None,
) -> TF1ModelDir:
    """Find the config and the weights in `root`; raise PipelineError with one clear line.

    `checkpoint`: a prefix (`model.ckpt-5000`, a path, or its `.index`) to use instead of the
    newest; `pipeline_config`: the config file to use. `require_data=False` accepts an index
    without its data file (enough to read the variable layout). `display` names the directory in
    errors (e.g. the URL it was fetched from).
    """
    root = Path(root)
    where = display or str(root)
    if not root.is_dir():
        raise PipelineError(f"{where}: not a directory; pass the TF1 model directory")
    saved_model = _saved_model_dir(root)
    config, config_reason = _find_config(root, pipeline_config, where, saved_model)
    prefix, prefix_reason = find_checkpoint(root, checkpoint, where)
    frozen = root / FROZEN_GRAPH if (root / FROZEN_GRAPH).is_file() else None
    form: Form
    if prefix is not None:
        form = "checkpoint"
        if require_data:
            check_data_shards(prefix, where)
    elif frozen is not None:
        form = "frozen_graph"
    elif saved_model is not None:
        form = "saved_model"
    else:
        raise PipelineError(f"{where}: no weights found ({_found(root)}); {NEEDED}")
    for path in (config, frozen, prefix and prefix.with_name(prefix.name + ".index")):
        if path is not None and path.stat().st_size == 0:
            raise PipelineError(f"{where}: {path.name} is empty; fetch or copy the model again")
    meta = prefix.with_name(prefix.name + ".meta") if prefix is not None else None
    return TF1ModelDir(
        root=root,
        pipeline_config=config,
        config_reason=config_reason,
        form=form,
        checkpoint_prefix=prefix,
        checkpoint_reason=prefix_reason,
        meta_graph=meta if meta is not None and meta.is_file() else None,
        frozen_graph=frozen,
        saved_model=saved_model,
    )


def _found(root: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    if not names:
        return "the directory is empty"
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} entries)" if len(names) > 8 else "")
    return f"found: {shown}"


def _saved_model_dir(root: Path) -> Path | None:
    for candidate in (root / SAVED_MODEL_DIR, root):
        if (candidate / SAVED_MODEL_PB).is_file():
            return candidate
    return None


def _find_config(
    root: Path, chosen: str | os.PathLike[str] | None, where: str, saved_model: Path | None
) -> tuple[Path, str]:
    if chosen is not None:
        path = Path(chosen)
        if not path.is_file():
            raise PipelineError(f"{path}: --pipeline-config not found; pass an existing file")
        return path, "--pipeline-config"
    if (root / PIPELINE_CONFIG).is_file():
        return root / PIPELINE_CONFIG, PIPELINE_CONFIG
    # A SavedModel passed directly sits in the export dir, next to the export's pipeline.config.
    if saved_model == root and (root.parent / PIPELINE_CONFIG).is_file():
        return root.parent / PIPELINE_CONFIG, f"../{PIPELINE_CONFIG} (beside the SavedModel)"
    configs = sorted(p for p in root.glob("*.config") if p.is_file())
    if len(configs) == 1:
        return configs[0], f"the directory's only *.config ({configs[0].name})"
    if configs:
        listed = ", ".join(p.name for p in configs)
        raise PipelineError(
            f"{where}: no {PIPELINE_CONFIG} and several configs ({listed}); pass the one the "
            "model was trained with as --pipeline-config"
        )
    raise PipelineError(
        f"{where}: no {PIPELINE_CONFIG} or other *.config ({_found(root)}); the converter needs "
        "the pipeline config the model was trained or exported with: copy it into the directory "
        "or pass --pipeline-config"
    )


def find_checkpoint(
    root: Path, chosen: str | os.PathLike[str] | None = None, where: str | None = None
) -> tuple[Path | None, str]:
    """The checkpoint prefix to read in `root` and why; (None, '') when there is none.

    `chosen` (a prefix name or path) wins; else the one the `checkpoint` state file names, else
    the only one, else the highest `*-N` step.
    """
    where = where or str(root)
    if chosen is not None:
        path = Path(chosen)
        if not path.is_absolute() and not Path(f"{path}.index").is_file():
            path = root / path
        if path.suffix == ".index":
            path = path.with_suffix("")
        if not Path(f"{path}.index").is_file():
            available = ", ".join(p.stem for p in _indexes(root)) or "none"
            raise PipelineError(
                f"{path}.index: --checkpoint not found (checkpoints in {where}: {available})"
            )
        return path, "--checkpoint"
    indexes = _indexes(root)
    if not indexes:
        return None, ""
    named = _state_file_prefix(root)
    if named is not None and (root / f"{named}.index").is_file():
        if len(indexes) == 1:
            return root / named, "the only checkpoint, named by the `checkpoint` file"
        return root / named, "the newest, named by the `checkpoint` file"
    if len(indexes) == 1:
        return indexes[0].with_suffix(""), "the only checkpoint"
    steps = {int(m["step"]): m["prefix"] for p in indexes if (m := _STEP.match(p.name))}
    if not steps:
        listed = ", ".join(p.stem for p in indexes)
        raise PipelineError(
            f"{where}: several checkpoints ({listed}) and no `checkpoint` file naming one; "
            "choose one with --checkpoint"
        )
    newest = steps[max(steps)]
    missing = f" (the `checkpoint` file names {named}, which is absent)" if named else ""
    return root / newest, f"the highest step present{missing}"


def _indexes(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*.index") if p.is_file())


def _state_file_prefix(root: Path) -> str | None:
    # The `checkpoint` file is a text CheckpointState proto; only the main path matters here.
    # Training machines write absolute paths of their own: only the file name is kept.
    state = root / CHECKPOINT_STATE
    if not state.is_file():
        return None
    text = state.read_text(encoding="utf-8", errors="replace")
    match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', text, re.M)
    return re.split(r"[\\/]", match.group(1))[-1] if match else None


def check_data_shards(prefix: Path, where: str) -> None:
    """A checkpoint's data files are all present (`<prefix>.data-0000i-of-0000n`)."""
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
