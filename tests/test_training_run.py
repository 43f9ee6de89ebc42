"""Fine-tune runs on a small converted SSD MobileNet v2 and real COCO images (issue 5 proof).

One uninterrupted run is shared by most checks: loss decreases, frozen weights bit-identical,
trained ones moved, the logged learning rate equals the schedule; an interrupted + resumed run must
end exactly where it ended. Further short runs: divergence, a different class count, the CLI,
MirroredStrategy on two logical CPUs (subprocess) and the SavedModel export.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from test_training_support import (
    assert_same_weights,
    checkpoint_values,
    dataset_loss,
    interrupted_run,
    small_spec,
    train_params,
    write_converted,
    write_tfrecords,
)

from pipeline.training.actions import TrainingDivergedError
from pipeline.training.finetune import finetune

# The converted zoo weights (graph builder + converter) diverge under SGD at 0.05 within 12 steps.
STEPS, WARMUP, LR = 12, 3, 0.01


def _params(**overrides):
    base = {
        "steps": STEPS,
        "checkpoint_every_steps": 4,
        "optimizer.learning_rate": LR,
        "schedule": {"type": "cosine", "warmup_steps": WARMUP, "alpha": 0.0},
    }
    base.update(overrides)
    return train_params(**base)


def _short(**overrides):
    return _params(steps=2, schedule={"type": "constant", "warmup_steps": 0}, **overrides)


def _expected_lr(step: int) -> float:
    if step < WARMUP:
        return LR * step / WARMUP
    return 0.5 * LR * (1 + math.cos(math.pi * (step - WARMUP) / (STEPS - WARMUP)))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, coco_tiny):
    root = tmp_path_factory.mktemp("finetune")
    write_converted(root / "converted")
    records = write_tfrecords(root / "train.tfrecord", coco_tiny, limit=16)
    return {
        "root": root,
        "converted": root / "converted",
        "records": str(records),
    }


@pytest.fixture(scope="module")
def baseline(workspace):
    out = workspace["root"] / "baseline"
    result = finetune(_params(), workspace["converted"], workspace["records"], out, export=False)
    return out, result.summary


def _read_tsv(path: Path) -> dict[int, float]:
    with open(path) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    name = path.stem
    return {int(row["step"]): float(row[name]) for row in rows}


def test_frozen_weights_bit_identical_and_trained_moved(baseline, workspace):
    out, summary = baseline
    before = checkpoint_values(
        tf.train.latest_checkpoint(str(workspace["converted"] / "checkpoint"))
    )
    after = checkpoint_values(tf.train.latest_checkpoint(str(out / "checkpoint")))
    frozen = [
        line.split("\t")[0] for line in (out / "frozen_variables.txt").read_text().splitlines()
    ]
    trained = [
        line.split("\t")[0] for line in (out / "trained_variables.txt").read_text().splitlines()
    ]
    assert frozen and trained and all(p.startswith("backbone/") for p in frozen)
    assert not any(p.startswith("backbone/") for p in trained)
    for path in frozen:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    # BN moving statistics are frozen too (inference mode).
    moving = [p for p in before if "moving_" in p]
    assert moving and all(np.array_equal(after[p], before[p]) for p in moving)
    moved = [p for p in trained if not np.array_equal(after[p], before[p])]
    assert len(moved) == len(trained), set(trained) - set(moved)
    assert summary["steps"] == STEPS and summary["freeze"]["frozen_variables"] == len(frozen)


def test_logged_learning_rate_equals_schedule(baseline):
    out, _ = baseline
    logged = _read_tsv(out / "dvclive" / "plots" / "metrics" / "train" / "learning_rate.tsv")
    assert sorted(logged) == list(range(1, STEPS + 1))
    for step, value in logged.items():
        assert value == pytest.approx(_expected_lr(step), rel=1e-5, abs=1e-8), step
    losses = _read_tsv(out / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv")
    assert len(losses) == STEPS and all(math.isfinite(v) for v in losses.values())


def _loss(workspace, checkpoint: str | None) -> float:
    return dataset_loss(
        _params(),
        workspace["converted"],
        workspace["records"],
        checkpoint,
        ("cls_loss", "box_loss"),
    )


def test_loss_decreases(baseline, workspace):
    out, _ = baseline
    before = _loss(workspace, None)
    after = _loss(workspace, tf.train.latest_checkpoint(str(out / "checkpoint")))
    assert after < 0.9 * before, (before, after)


def test_resume_equals_uninterrupted(baseline, workspace, monkeypatch):
    out = workspace["root"] / "resumed"
    saved_step = interrupted_run(
        _params(), workspace["converted"], workspace["records"], out, 6, monkeypatch
    )
    assert 0 < saved_step < 6  # Orbit checkpoints at the first step, then every 4
    assert not (out / "train_summary.json").exists()

    result = finetune(_params(), workspace["converted"], workspace["records"], out, export=False)
    assert result.summary["resumed"] and result.summary["steps"] == STEPS
    assert_same_weights(baseline[0], out)
    metrics = Path("dvclive/plots/metrics/train")
    for name in ("learning_rate", "loss"):
        base = _read_tsv(baseline[0] / metrics / f"{name}.tsv")
        resumed = _read_tsv(out / metrics / f"{name}.tsv")
        for step in range(saved_step + 1, STEPS + 1):
            assert resumed[step] == pytest.approx(base[step], rel=1e-5), (name, step)

    with pytest.raises(Exception, match="different settings"):
        finetune(
            _params(steps=STEPS + 4),
            workspace["converted"],
            workspace["records"],
            out,
            export=False,
        )


# Runs `python -m pipeline ...` in this process after arranging a real SIGINT to itself right after
# step 6 is logged (checkpoints are at steps 1, 4, 8, 12: 6 is between two).
INTERRUPTING_CLI = """
import os, signal, sys
from pipeline.cli import main
from pipeline.training.actions import DVCLiveAction
original = DVCLiveAction.__call__
def interrupt(self, output):
    original(self, output)
    if int(self._global_step.numpy()) == 6:
        os.kill(os.getpid(), signal.SIGINT)
DVCLiveAction.__call__ = interrupt
sys.exit(main(sys.argv[1:]))
"""


def test_cli_interrupted_mid_interval_resumes_in_a_new_process_to_the_same_result(
    baseline, workspace, tmp_path
):
    """Two processes, as a user's Ctrl-C and rerun: the resumed process must replay the same
    batches (data order, augmentation draws) from the last checkpoint and log each step once."""
    from omegaconf import OmegaConf

    params = tmp_path / "params.yaml"
    OmegaConf.save(OmegaConf.create({"train": _params()}), params)
    out = tmp_path / "out"
    args = ["fine-tune", "--params", str(params), "--converted", str(workspace["converted"])]
    args += ["--train-tfrecords", workspace["records"], "--out", str(out), "--no-export"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(Path.cwd())}
    interrupted = subprocess.run(
        [sys.executable, "-c", INTERRUPTING_CLI, *args], capture_output=True, text=True, env=env
    )
    assert interrupted.returncode != 0, interrupted.stdout[-2000:]
    assert 0 < int(tf.train.latest_checkpoint(str(out / "checkpoint")).rsplit("-", 1)[1]) < 6
    resumed = subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "train_summary.json").read_text())["resumed"] is True

    expected = checkpoint_values(tf.train.latest_checkpoint(str(baseline[0] / "checkpoint")))
    actual = checkpoint_values(tf.train.latest_checkpoint(str(out / "checkpoint")))
    for path in expected:
        np.testing.assert_allclose(actual[path], expected[path], rtol=1e-6, atol=1e-7, err_msg=path)
    metrics = Path("dvclive/plots/metrics/train")
    for name in ("learning_rate", "loss"):
        with open(out / metrics / f"{name}.tsv") as handle:
            steps = [int(row["step"]) for row in csv.DictReader(handle, delimiter="\t")]
        assert steps == list(range(1, STEPS + 1)), (name, steps)
        base = _read_tsv(baseline[0] / metrics / f"{name}.tsv")
        logged = _read_tsv(out / metrics / f"{name}.tsv")
        for step in range(1, STEPS + 1):
            assert logged[step] == pytest.approx(base[step], rel=1e-5), (name, step)


def test_divergence_stops_with_clear_error_and_keeps_good_checkpoint(workspace):
    out = workspace["root"] / "diverged"
    params = _params(
        steps=8,
        checkpoint_every_steps=1,
        gradient_clip_norm=None,
        schedule={"type": "constant", "warmup_steps": 0},
        optimizer={"type": "sgd", "learning_rate": 1e30, "momentum": 0.9},
    )
    with pytest.raises(TrainingDivergedError, match="training diverged") as caught:
        finetune(params, workspace["converted"], workspace["records"], out, export=False)
    latest = tf.train.latest_checkpoint(str(out / "checkpoint"))
    if latest is not None:
        assert latest in str(caught.value)
        assert all(
            np.isfinite(v).all() for v in checkpoint_values(latest).values() if v.dtype.kind == "f"
        )
    assert not (out / "train_summary.json").exists()


def test_other_class_count_with_ema_and_validation(workspace):
    out = workspace["root"] / "five_classes"
    result = finetune(
        _short(num_classes=5, ema_decay=0.9, validation_every_steps=1),
        workspace["converted"],
        workspace["records"],
        out,
        workspace["records"],
        export=False,
    )
    assert result.summary["ema"] and result.summary["steps"] == 2
    eval_losses = _read_tsv(out / "dvclive" / "plots" / "metrics" / "eval" / "total_loss.tsv")
    assert sorted(eval_losses) == [1, 2] and all(math.isfinite(v) for v in eval_losses.values())
    assert math.isfinite(result.summary["eval"]["total_loss"])
    restore = result.summary["restore"]
    assert restore["reinitialized"]
    assert all(p.startswith("head/_classifier") for p in restore["reinitialized"])
    spec = json.loads((workspace["converted"] / "model_spec.json").read_text())
    assert spec["num_classes"] == 3


def test_cli_runs_from_params_yaml(workspace, tmp_path):
    from omegaconf import OmegaConf

    from pipeline.cli import main

    params = tmp_path / "params.yaml"
    OmegaConf.save(OmegaConf.create({"train": _short()}), params)
    out = tmp_path / "out"
    args = [
        "fine-tune",
        "--params",
        str(params),
        "--converted",
        str(workspace["converted"]),
        "--train-tfrecords",
        workspace["records"],
        "--out",
        str(out),
    ]
    assert main([*args, "--no-export"]) == 0  # the export has its own test
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2
    assert (out / "dvclive" / "metrics.json").is_file()
    assert (
        main(
            [
                "fine-tune",
                "--params",
                str(params),
                "--converted",
                str(tmp_path / "missing"),
                "--train-tfrecords",
                workspace["records"],
                "--out",
                str(tmp_path / "o2"),
            ]
        )
        == 2
    )


def test_exported_saved_model_matches_trained_model(workspace, coco_tiny, tmp_path):
    from pipeline.inference import load_detector

    out = tmp_path / "exported"
    finetune(_short(), workspace["converted"], workspace["records"], out)
    # The trained weights as a converted-model directory, run through the same detector API.
    trained = tmp_path / "trained_as_converted"
    trained.mkdir()
    (trained / "model_spec.json").write_text(
        (workspace["converted"] / "model_spec.json").read_text()
    )
    from test_training_support import build_model

    from pipeline.modeling import load_converted  # noqa: F401  (API check)

    model = build_model(small_spec())
    tf.train.Checkpoint(**model.checkpoint_items).read(
        tf.train.latest_checkpoint(str(out / "checkpoint"))
    ).expect_partial()
    tf.train.Checkpoint(**model.checkpoint_items).save(str(trained / "checkpoint" / "ckpt"))
    images = [
        tf.io.decode_jpeg(p.read_bytes()).numpy()
        for p in sorted((coco_tiny / "val2017").glob("*.jpg"))[:2]
    ]
    saved = load_detector(str(out / "saved_model"))
    reference = load_detector(str(trained))
    for image in images:
        got = saved(image[None])
        want = reference(image[None])
        for key in ("detection_boxes", "detection_scores", "detection_classes", "num_detections"):
            np.testing.assert_allclose(
                np.asarray(got[key]), np.asarray(want[key]), atol=1e-5, err_msg=key
            )


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    sys.path.insert(0, sys.argv[4])
    from test_training_support import train_params
    from pipeline.training.finetune import finetune
    converted, records, out = sys.argv[1:4]
    results = {}
    for name, strategy in [
        ("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
        ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])),
    ]:
        params = train_params(steps=3, **{"augmentation.skip": ["random_horizontal_flip"]})
        r = finetune(params, converted, records, f"{out}/{name}", strategy=strategy, export=False)
        rows = open(f"{out}/{name}/dvclive/plots/metrics/train/loss.tsv").read().split()
        results[name] = {"replicas": r.summary["num_replicas"], "tsv": rows}
    print("RESULT" + json.dumps(results))
    """
)


def test_mirrored_two_cpus_gives_single_device_loss(workspace, tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(Path.cwd())}
    run = subprocess.run(
        [
            sys.executable,
            str(script),
            str(workspace["converted"]),
            workspace["records"],
            str(tmp_path),
            str(Path(__file__).parent),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.split("RESULT", 1)[1])
    assert results["one"]["replicas"] == 1 and results["mirrored"]["replicas"] == 2

    def losses(rows):  # "step loss" header, then pairs
        return [float(v) for v in rows[3::2]]

    one, mirrored = losses(results["one"]["tsv"]), losses(results["mirrored"]["tsv"])
    assert len(one) == 3
    np.testing.assert_allclose(mirrored, one, rtol=2e-5)
