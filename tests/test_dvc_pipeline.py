"""The whole default migration through DVC, as a user runs it (`dvc repro`), in a scratch clone.

Slow (a real pre-trained model is converted, fine-tuned and evaluated): run alone with
`python -m pytest -m slow`. CI runs it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = {
    "fetch-zoo-model",
    "generate-shapes",
    "convert-checkpoint",
    "build-tfrecords@train",
    "build-tfrecords@val",
    "fine-tune",
    "evaluate-coco-map@tf1",
    "evaluate-coco-map@converted",
    "evaluate-coco-map@finetuned",
}

pytestmark = pytest.mark.slow


def _project_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def _run(
    args: list[str], cwd: Path, extra_env: dict[str, str] | None = None, check: bool = True,
    **kwargs,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra_env or {})
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n{result.stdout[-4000:]}\n"
            f"{result.stderr[-4000:]}"
        )
    return result


def _ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A fresh clone of the working tree after one full `dvc repro`."""
    clone = tmp_path_factory.mktemp("clone")
    for name in _project_files():
        target = clone / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    for args in (
        ["git", "init", "-q"],
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"],
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "clone"],
    ):
        _run(args, clone)
    # A user's first run starts without a lock file from someone else's machine.
    (clone / "dvc.lock").unlink(missing_ok=True)
    result = _run(["dvc", "repro"], clone, timeout=30 * 60)
    return clone, result.stdout + result.stderr


def test_dvc_repro_runs_every_stage_and_fine_tuning_beats_the_converted_model(
    reproduced: tuple[Path, str],
) -> None:
    clone, output = reproduced
    assert _ran_stages(output) == STAGES
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    assert set(lock["stages"]) == STAGES

    report = json.loads((clone / "data/converted/conversion_report.json").read_text())
    assert report["parity"]["passed"] is True

    tf1 = json.loads((clone / "data/eval/tf1/metrics.json").read_text())
    converted = json.loads((clone / "data/eval/converted/metrics.json").read_text())
    finetuned = json.loads((clone / "data/eval/finetuned/metrics.json").read_text())
    for metrics in (tf1, converted, finetuned):
        assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"} <= set(metrics)
    assert converted["AP"] > 0.0, "the built-in model should detect something before fine-tuning"
    # The original TF1 graph, scored by the same evaluator: the conversion reproduces its AP.
    assert converted["AP"] == pytest.approx(tf1["AP"], abs=1e-4), (tf1["AP"], converted["AP"])
    assert finetuned["AP"] > converted["AP"] + 0.02, (converted["AP"], finetuned["AP"])

    rendered = json.loads(_run(["dvc", "plots", "show", "--json"], clone).stdout)
    assert not rendered.get("errors"), rendered.get("errors")
    expected = {
        "Training curves",
        "Learning rate",
        "Precision-recall (IoU .50:.95)",
        "data/eval/finetuned/plots/pr_curve.json",
    }
    assert expected <= set(rendered["data"]), sorted(rendered["data"])
    assert '"loss"' in json.dumps(rendered["data"]["Training curves"])


def test_second_repro_does_nothing_and_says_so(reproduced: tuple[Path, str]) -> None:
    clone, _ = reproduced
    started = time.perf_counter()
    result = _run(["dvc", "repro"], clone)
    elapsed = time.perf_counter() - started
    assert _ran_stages(result.stdout) == set()
    assert "Data and pipelines are up to date" in result.stdout
    print(f"no-op dvc repro: {elapsed:.2f} s")


def test_a_training_param_change_reruns_only_fine_tune_and_its_evaluation(
    reproduced: tuple[Path, str],
) -> None:
    clone, _ = reproduced
    params_path = clone / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["train"]["steps"] = 4
    params["train"]["schedule"]["warmup_steps"] = 0
    params["train"]["optimizer"]["learning_rate"] /= 3
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    result = _run(["dvc", "repro"], clone, timeout=15 * 60)
    assert _ran_stages(result.stdout) == {"fine-tune", "evaluate-coco-map@finetuned"}
    summary = json.loads((clone / "data/finetuned/train_summary.json").read_text())
    # The 600-step checkpoint persists, but the settings changed: a fresh run, not a resume.
    assert summary["steps"] == 4 and summary["resumed"] is False


# sitecustomize for the fine-tune process that `dvc repro` starts: a real SIGINT to itself right
# after the step PIPELINE_TEST_SIGINT_AT_STEP is logged (a user's Ctrl-C at a known step). It
# patches pipeline.training.actions when that module is first imported, so DVC's own process is
# untouched.
SIGINT_HOOK = """
import importlib.abc, importlib.util, os, signal, sys

class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "pipeline.training.actions" or "PIPELINE_TEST_SIGINT_AT_STEP" not in os.environ:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            original = module.DVCLiveAction.__call__
            at = int(os.environ["PIPELINE_TEST_SIGINT_AT_STEP"])

            def interrupt(self, output):
                original(self, output)
                if int(self._global_step.numpy()) == at:
                    os.kill(os.getpid(), signal.SIGINT)

            module.DVCLiveAction.__call__ = interrupt

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _Hook())
"""


def test_interrupted_repro_resumes_and_ends_as_an_uninterrupted_run(
    reproduced: tuple[Path, str], tmp_path: Path
) -> None:
    import numpy as np
    import tensorflow as tf

    clone, _ = reproduced
    params_path = clone / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    train = params["train"]
    train.update(steps=40, log_every_steps=5, checkpoint_every_steps=20)
    train["schedule"]["warmup_steps"] = 5
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SIGINT_HOOK)
    pythonpath = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    interrupted = _run(
        ["dvc", "repro"], clone, timeout=15 * 60, check=False,
        extra_env={"PYTHONPATH": pythonpath, "PIPELINE_TEST_SIGINT_AT_STEP": "30"},
    )  # fmt: skip
    assert interrupted.returncode != 0
    checkpoint_dir = clone / "data/finetuned/checkpoint"
    saved = int(tf.train.latest_checkpoint(str(checkpoint_dir)).rsplit("-", 1)[1])
    assert 0 < saved < 30  # interrupted between two checkpoints

    resumed = _run(["dvc", "repro"], clone, timeout=15 * 60)
    assert _ran_stages(resumed.stdout) == {"fine-tune", "evaluate-coco-map@finetuned"}
    summary = json.loads((clone / "data/finetuned/train_summary.json").read_text())
    assert summary["resumed"] is True and summary["steps"] == 40
    with open(clone / "data/finetuned/dvclive/plots/metrics/train/loss.tsv") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle, delimiter="\t")]
    assert steps == list(range(5, 41, 5)), steps

    reference = tmp_path / "reference"
    _run(
        ["python", "-m", "pipeline", "fine-tune", "--params", "params.yaml", "--converted",
         "data/converted", "--train-tfrecords", "data/tfrecords/train/*.tfrecord",
         "--val-tfrecords", "data/tfrecords/val/*.tfrecord", "--out", str(reference),
         "--no-export"],
        clone, timeout=15 * 60,
    )  # fmt: skip
    expected = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(reference / "checkpoint")))
    actual = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(checkpoint_dir)))
    names = [n for n in expected.get_variable_to_shape_map() if n.startswith("backbone")]
    names += [n for n in expected.get_variable_to_shape_map() if n.startswith("head")]
    assert names
    for name in names:
        np.testing.assert_allclose(
            actual.get_tensor(name), expected.get_tensor(name), rtol=1e-6, atol=1e-7, err_msg=name
        )


def test_readme_comparison_commands_fit_a_terminal(reproduced: tuple[Path, str]) -> None:
    """The README's side-by-side commands show learning rate, freezing and AP in 120 columns."""
    clone, _ = reproduced
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (exp_show,) = [line for line in readme.splitlines() if line.startswith("dvc exp show --drop")]
    env = {"COLUMNS": "120"}
    table = _run(["bash", "-c", exp_show + " --no-pager"], clone, env).stdout
    assert max(len(line) for line in table.splitlines()) <= 120, table
    for column in ("learning_rate", "freeze.name", "finetuned/metrics.json:AP"):
        assert column in table, table
    finetuned = json.loads((clone / "data/eval/finetuned/metrics.json").read_text())["AP"]
    assert f"{finetuned:.5f}"[:6] in table and "early_backbone" in table, table

    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "repro"], clone)
    report = _run([sys.executable, "-m", "pipeline", "report", "--out", "reports"], clone, env)
    rows = [line for line in report.stdout.splitlines() if line.startswith("|")]
    assert "learning rate | freeze | AP TF1 | AP converted | AP fine-tuned" in rows[0]
    assert max(len(line) for line in rows) <= 120, rows
    assert f"{finetuned:.4g}" in rows[2], rows
