"""params.yaml (read by `dvc repro`) must equal conf/ composed (as `dvc exp run` does)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from pipeline.params import compose

ROOT = Path(__file__).resolve().parents[1]


def test_committed_params_equal_the_composition_of_conf() -> None:
    composed = compose(ROOT / "conf")
    committed = OmegaConf.load(ROOT / "params.yaml")
    assert OmegaConf.to_container(composed) == OmegaConf.to_container(committed), (
        "params.yaml is out of sync with conf/: run `python -m pipeline params`"
    )


def test_overrides_reach_the_composition() -> None:
    composed = compose(ROOT / "conf", ["train.optimizer.learning_rate=0.123"])
    assert composed.train.optimizer.learning_rate == 0.123


def test_every_stage_param_exists_in_params_yaml() -> None:
    """A stage that names a param missing from params.yaml fails only at `dvc repro` time."""
    import yaml

    params = OmegaConf.load(ROOT / "params.yaml")
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        for entry in body.get("params", []):
            keys = entry if isinstance(entry, str) else None
            if keys is None:
                continue
            missing = object()
            found = OmegaConf.select(params, keys, default=missing)
            assert found is not missing, f"stage {name}: param {keys} missing from params.yaml"
