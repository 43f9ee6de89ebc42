"""Shared test fixtures.

`../shared/fixtures` holds real public data (TF1 zoo graphs, COCO subset); tests that need it use
the fixtures below and skip cleanly where it is absent.
"""

from __future__ import annotations

import os
import re
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


@pytest.fixture(scope="session")
def builtin_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in TF1 zoo model (the default pipeline's), fetched through the pipeline's own
    sha256-verified fetch: model.ckpt.*, frozen_inference_graph.pb, pipeline.config (read-only)."""
    import yaml

    from pipeline.builtin import zoo_model
    from pipeline.zoo import fetch_zoo_model

    conf = yaml.safe_load((PROJECT_ROOT / "conf" / "zoo" / f"{zoo_model.NAME}.yaml").read_text())
    out = tmp_path_factory.mktemp("builtin_zoo") / "zoo"
    return fetch_zoo_model(conf["url"], out, sha256=conf["sha256"])


@pytest.fixture(scope="session")
def builtin_converted(builtin_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`convert` of the built-in model, without verification (read-only)."""
    from pipeline.conversion.convert import convert

    out = tmp_path_factory.mktemp("builtin_converted") / "converted"
    convert(builtin_zoo, out, progress=False)
    return out


TF1_REFERENCE = Path(os.environ.get("TF1_REFERENCE", SHARED_FIXTURES.parent / "tf1_reference"))


@pytest.fixture(scope="session")
def tf1_reference_dir() -> Path:
    """`../shared/tf1_reference` (its scripts and `boot.py`, run with `tf1_reference_python`)."""
    return _require(TF1_REFERENCE)


@pytest.fixture(scope="session")
def tf1_reference_python() -> Path:
    """Python of the TF1 OD API reference venv (`../shared/tf1_reference`), built by its own
    setup.sh when absent (about a minute with a warm pip cache). Never import it here: it runs in
    subprocesses only, since it switches its whole process to TF1 behaviour."""
    import subprocess

    setup = _require(TF1_REFERENCE / "setup.sh")
    result = subprocess.run(
        ["bash", str(setup)], capture_output=True, text=True, check=False, timeout=1800
    )
    if result.returncode != 0:
        pytest.fail(f"{setup} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    venv = Path(result.stdout.strip().splitlines()[-1])
    return venv / "bin" / "python"


@pytest.fixture(scope="session")
def tf1_reference_export(tf1_reference_python: Path, tmp_path_factory: pytest.TempPathFactory):
    """make_zoo_dir(pipeline_config, seed=0, checkpoint=None) -> a zoo directory exported by the
    TF1 OD API's own exporter (frozen graph, model.ckpt.*, saved_model/, pipeline.config), cached
    per session; with `checkpoint` (a TF1 checkpoint prefix) its weights instead of seeded ones.
    Treat the result as read-only: copy it before changing it."""
    import subprocess

    made: dict[tuple[str, int, str], Path] = {}

    def make_zoo_dir(pipeline_config: Path, seed: int = 0, checkpoint: Path | None = None) -> Path:
        key = (str(Path(pipeline_config).resolve()), seed, str(checkpoint))
        if key not in made:
            out = tmp_path_factory.mktemp("tf1_export") / Path(pipeline_config).stem
            command = [
                str(tf1_reference_python),
                str(TF1_REFERENCE / "make_zoo_dir.py"),
                "--pipeline-config",
                str(pipeline_config),
                "--out",
                str(out),
                "--seed",
                str(seed),
                *(["--checkpoint", str(checkpoint)] if checkpoint else []),
            ]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                pytest.fail(f"make_zoo_dir.py failed:\n{result.stderr[-3000:]}")
            made[key] = out
        return made[key]

    return make_zoo_dir


@pytest.fixture
def two_coco_images(coco_tiny: Path, tmp_path: Path) -> Path:
    """A folder holding the first 2 coco_tiny val2017 images (sorted by name)."""
    import shutil

    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((coco_tiny / "val2017").glob("*.jpg"))[:2]:
        shutil.copyfile(path, images / path.name)
    return images


def check_faster_rcnn_parity(parity: dict, num_images: int = 2) -> None:
    """A Faster R-CNN parity report passed every stage within the tolerances, top-50 matched."""
    assert parity["passed"] is True and parity["num_images"] == num_images, parity["diagnosis"]
    for stage in ("rpn_box_encodings", "rpn_objectness", "proposals", "box_encodings",
                  "class_logits"):  # fmt: skip
        figures = parity[stage]
        assert figures["max_abs_diff"] <= 1e-4 * max(1.0, figures["max_abs_tf1"]), stage
    assert parity["detections_checked"] == parity["detections_matched"] == 50 * num_images
    assert parity["detections_min_iou"] >= 0.999 and parity["detections_max_score_diff"] <= 1e-4


@pytest.fixture(scope="session")
def faster_rcnn_parity_check():
    """`check_faster_rcnn_parity(parity, num_images=2)` (test modules cannot import conftest)."""
    return check_faster_rcnn_parity


@pytest.fixture(scope="session")
def small_faster_rcnn_config(tf1_zoo_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """small_faster_rcnn_config(zoo name, min_dimension=320, max_dimension=512,
    max_proposals=None) -> a copy of that zoo model's pipeline.config with keep_aspect_ratio
    min..max (fast on 2 cores), second-stage score threshold 0 (random weights score low) and,
    given max_proposals, that first_stage_max_proposals; one file per arguments and session
    (read-only)."""
    root = tmp_path_factory.mktemp("small_configs")

    def write(
        name: str, min_dimension: int = 320, max_dimension: int = 512,
        max_proposals: int | None = None,
    ) -> Path:  # fmt: skip
        path = root / f"{name}_{min_dimension}_{max_dimension}_{max_proposals}.config"
        if path.exists():
            return path
        text = (tf1_zoo_dir / name / "pipeline.config").read_text()
        replacements = [
            ("min_dimension: 600", f"min_dimension: {min_dimension}"),
            ("max_dimension: 1024", f"max_dimension: {max_dimension}"),
            ("score_threshold: 0.300000011921", "score_threshold: 0.0"),
        ]
        if max_proposals is not None:
            old = re.search(r"first_stage_max_proposals: \d+", text)
            assert old, f"{name}/pipeline.config has no first_stage_max_proposals"
            replacements.append((old.group(0), f"first_stage_max_proposals: {max_proposals}"))
        for old, new in replacements:
            assert old in text, f"{name}/pipeline.config has no `{old}`"
            text = text.replace(old, new)
        path.write_text(text)
        return path

    return write
