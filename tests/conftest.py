"""Shared test fixtures.

`../shared/fixtures` holds real public data (TF1 zoo graphs, COCO subset); tests that need it use
the fixtures below and skip cleanly where it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = Path(
    os.environ.get("SHARED_FIXTURES", PROJECT_ROOT.parent / "shared" / "fixtures")
)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared fixture not available: {path}")
    return path


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    return _require(SHARED_FIXTURES)


@pytest.fixture(scope="session")
def tf1_zoo_dir(shared_fixtures: Path) -> Path:
    return _require(shared_fixtures / "tf1_zoo")


@pytest.fixture(scope="session")
def coco_tiny(shared_fixtures: Path) -> Path:
    return _require(shared_fixtures / "coco" / "coco_tiny")


@pytest.fixture(scope="session")
def od_api_configs(shared_fixtures: Path) -> Path:
    return _require(shared_fixtures / "od_api" / "sample_configs")


@pytest.fixture(scope="session")
def synthetic_zoos(tmp_path_factory: pytest.TempPathFactory, tf1_zoo_dir: Path) -> dict[str, Path]:
    """{name: TF1 zoo directory}: the real ssd_mobilenet_v2/v1 zoo graphs with synthetic weights
    of their exact checkpoint layout (read-only: copy a directory before changing it)."""
    from pipeline.tf1.synthetic_checkpoint import make_synthetic_zoo_dir

    root = tmp_path_factory.mktemp("zoo")
    names = ("ssd_mobilenet_v2_coco_2018_03_29", "ssd_mobilenet_v1_coco_2018_01_28")
    return {name: make_synthetic_zoo_dir(tf1_zoo_dir / name, root / name) for name in names}
