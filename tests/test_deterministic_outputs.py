"""The same inputs give byte-identical stage outputs (issue 12): each stage's command runs twice,
in a fresh process each time and at the same path (as `dvc repro` on two clones would), and every
file DVC caches must hash the same. Timings and timestamps belong to uncached metrics and logs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_training_support import train_params, write_converted, write_tfrecords

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _hashes(*paths: Path) -> dict[str, str]:
    files = [p for path in paths for p in ([path] if path.is_file() else sorted(path.rglob("*")))]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def _run_twice(args: list[str], cached: list[Path], cleanup: list[Path]) -> dict[str, str]:
    """Run `python -m pipeline ARGS` twice; return the cached files' hashes after the first run
    and assert the second gives the same."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(PROJECT_ROOT)}
    results = []
    for _ in range(2):
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(
                missing_ok=True
            )
        run = subprocess.run(
            [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env
        )
        assert run.returncode == 0, run.stderr[-3000:]
        results.append(_hashes(*cached))
    first, second = results
    assert first, "no output files"
    differ = sorted(
        name for name in first.keys() | second.keys() if first.get(name) != second.get(name)
    )
    assert not differ, f"outputs differ between two runs on the same inputs: {differ}"
    return first


def test_convert_is_byte_identical(builtin_zoo: Path, coco_tiny: Path, tmp_path: Path) -> None:
    out, metrics = tmp_path / "converted", tmp_path / "conversion.json"
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((coco_tiny / "val2017").glob("*.jpg"))[:1]:
        shutil.copyfile(path, images / path.name)
    args = ["convert", "--tf1-dir", str(builtin_zoo), "--out", str(out), "--verify-images",
            str(images), "--metrics", str(metrics), "--no-progress"]  # fmt: skip
    hashes = _run_twice(args, [out], [out, metrics])
    assert str(out / "checkpoint" / "checkpoint") in hashes
    state = (out / "checkpoint" / "checkpoint").read_text()
    assert "timestamp" not in state and str(tmp_path) not in state
    # Timings still reach the uncached metrics file.
    assert '"seconds_build_model"' in metrics.read_text()


def test_build_tfrecords_is_byte_identical(coco_tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "records"
    args = ["build-tfrecords", "--annotations", str(coco_tiny / "annotations" /
            "instances_val2017.json"), "--images", str(coco_tiny / "val2017"), "--out", str(out),
            "--shards", "2", "--no-progress"]  # fmt: skip
    assert len(_run_twice(args, [out], [out])) >= 3


@pytest.mark.slow
def test_fine_tune_and_evaluate_are_byte_identical(coco_tiny: Path, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    write_converted(tmp_path / "converted")
    records = write_tfrecords(tmp_path / "train.tfrecord", coco_tiny, limit=8)
    params = tmp_path / "params.yaml"
    short = train_params(steps=2, schedule={"type": "constant", "warmup_steps": 0})
    OmegaConf.save(OmegaConf.create({"train": short}), params)
    out = tmp_path / "finetuned"
    args = ["fine-tune", "--params", str(params), "--converted", str(tmp_path / "converted"),
            "--train-tfrecords", str(records), "--out", str(out)]  # fmt: skip
    # dvc.yaml's cached fine-tune outputs (dvclive/ and train_summary.json are uncached).
    cached = [out / "checkpoint", out / "saved_model", out / "trained_variables.txt",
              out / "frozen_variables.txt"]  # fmt: skip
    hashes = _run_twice(args, cached, [out])
    assert any(name.endswith("saved_model.pb") for name in hashes)

    # Evaluation reads records with their annotations.json (build-tfrecords writes both); the
    # 3-class model on COCO's ids is a plumbing check here, hence --allow-class-mismatch.
    val = tmp_path / "val_records"
    annotations = coco_tiny / "annotations" / "instances_val2017.json"
    args = ["build-tfrecords", "--annotations", str(annotations), "--images",
            str(coco_tiny / "val2017"), "--out", str(val), "--no-progress"]  # fmt: skip
    from pipeline.cli import main

    assert main(args) == 0
    evaluation = tmp_path / "eval"
    args = ["evaluate", "--model", str(out / "saved_model"), "--tfrecords",
            str(val / "*.tfrecord"), "--out", str(evaluation), "--max-images", "4",
            "--allow-class-mismatch", "--no-progress"]  # fmt: skip
    _run_twice(args, [evaluation / "detections.json"], [evaluation])
