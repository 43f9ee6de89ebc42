"""The experiments report, fed by the flat rows `dvc.api.exp_show()` returns."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.experiments import collect_rows, write_report
from pipeline.experiments.report import (
    CONVERTED_AP_KEY,
    FINETUNED_AP_KEY,
    LEARNING_RATE_KEY,
    TF1_AP_KEY,
    render_markdown,
)


def _row(name, rev, lr, ap, freeze="backbone", tf1_ap=0.20004):
    return {
        "Experiment": name,
        "rev": rev,
        LEARNING_RATE_KEY: lr,
        "train.freeze.name": freeze,
        "train.optimizer.type": "sgd",
        TF1_AP_KEY: tf1_ap,
        CONVERTED_AP_KEY: 0.20,
        FINETUNED_AP_KEY: ap,
    }


def test_report_ranks_experiments_and_plots(tmp_path: Path) -> None:
    rows = [
        {"rev": "workspace", LEARNING_RATE_KEY: 9.0},
        _row(None, "main", 0.01, 0.31),
        _row("lr-high", "aaaaaaa1", 0.1, 0.12),
        _row("lr-low", "bbbbbbb2", 0.001, 0.42),
    ]
    report = write_report(rows, tmp_path / "reports")
    text = report.read_text()
    table = [line for line in text.splitlines() if line.startswith("| ")][1:]
    assert [line.split("|")[1].strip() for line in table] == ["lr-low", "main", "lr-high"]
    assert "Best fine-tuned AP: **0.4200** (lr-low" in text
    assert "| 0.22 |" in text  # gain of lr-low over the converted model
    assert "| sgd | 0.001 | backbone | 0.2 | 0.2 | 0.42 | 0.22 |" in text  # TF1, converted, tuned
    assert "converted model reproduces the TF1 graph's AP" in text
    assert "= 4e-05 over 3 row(s)" in text
    assert (tmp_path / "reports" / "ap_vs_learning_rate.png").stat().st_size > 1000


def test_workspace_row_is_ignored_and_missing_values_stay_missing() -> None:
    rows = collect_rows([{"rev": "workspace"}, {"rev": "main", LEARNING_RATE_KEY: "n/a"}])
    assert len(rows) == 1
    assert rows[0].learning_rate is None and rows[0].finetuned_ap is None


def test_no_experiments_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="dvc repro"):
        write_report([{"rev": "workspace"}], tmp_path / "reports")
    assert not (tmp_path / "reports").exists()


def test_conversion_line_flags_a_tf1_ap_the_conversion_misses() -> None:
    rows = collect_rows([_row("a", "aaaaaaa1", 0.01, 0.3), _row("b", "b", 0.1, 0.3, tf1_ap=0.25)])
    text = render_markdown(rows, None)
    assert "does NOT reproduce the TF1 graph's AP" in text and "= 0.05 over 2 row(s)" in text
    # Without a TF1 evaluation (an older commit) the column and the line stay empty.
    rows = collect_rows([{**_row("a", "aaaaaaa1", 0.01, 0.3), TF1_AP_KEY: None}])
    text = render_markdown(rows, None)
    assert "| - | 0.2 | 0.3 |" in text and "Conversion:" not in text
