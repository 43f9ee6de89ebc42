"""Read the composed configuration (`params.yaml`) that DVC tracks.

Stage code never composes Hydra itself: DVC's Hydra integration writes `params.yaml` on every
`dvc exp run`, and `dvc repro` reads the committed one. `compose` exists for the consistency check
and for `python -m pipeline params`.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.errors import PipelineError

DEFAULT_PARAMS = Path("params.yaml")
DEFAULT_CONF_DIR = Path("conf")


def load_params(path: str | Path = DEFAULT_PARAMS, section: str | None = None) -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(
            f"{path}: params file not found; run from the project root or regenerate it with "
            "`python -m pipeline params`"
        )
    params = OmegaConf.load(path)
    if section is None:
        return params
    if section not in params:
        raise PipelineError(f"{path}: no `{section}` section; regenerate it from conf/")
    return params[section]


def compose(
    conf_dir: str | Path = DEFAULT_CONF_DIR, overrides: list[str] | None = None
) -> DictConfig:
    """Compose `conf/config.yaml` exactly as `dvc exp run` does (DVC's own Hydra helper)."""
    import tempfile

    from dvc.utils.hydra import compose_and_dump

    config_dir = str(Path(conf_dir).resolve())
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "params.yaml"
        compose_and_dump(output, config_dir, None, "config", ".", overrides or [])
        return OmegaConf.load(output)
