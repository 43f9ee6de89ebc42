"""Turn `dvc exp show` into a compact markdown report with a plot of AP against learning rate.

The rows come from `dvc.api.exp_show()`, which flattens every experiment into one dict: params as
dotted keys (`train.optimizer.learning_rate`) and metrics as `<file>:<key>`
(`data/eval/finetuned/metrics.json:AP`). Each row puts three APs side by side: the original TF1
graph (`evaluate-coco-map@tf1`), its conversion and the fine-tuned model, all scored by the same
evaluator on the same validation TFRecords.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_directory, atomic_file
from pipeline.errors import PipelineError

LEARNING_RATE_KEY = "train.optimizer.learning_rate"
FREEZE_KEY = "train.freeze.name"
OPTIMIZER_KEY = "train.optimizer.type"
TF1_AP_KEY = "data/eval/tf1/metrics.json:AP"
CONVERTED_AP_KEY = "data/eval/converted/metrics.json:AP"
FINETUNED_AP_KEY = "data/eval/finetuned/metrics.json:AP"
CONVERSION_AP_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExperimentRow:
    name: str
    rev: str
    learning_rate: float | None
    freeze: str | None
    optimizer: str | None
    tf1_ap: float | None
    converted_ap: float | None
    finetuned_ap: float | None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def collect_rows(raw_rows: Iterable[Mapping[str, Any]]) -> list[ExperimentRow]:
    """Keep the committed baselines and finished experiments; skip the dirty workspace."""
    rows = []
    for raw in raw_rows:
        if raw.get("rev") == "workspace":
            continue
        rows.append(
            ExperimentRow(
                name=str(raw.get("Experiment") or raw.get("rev")),
                rev=str(raw.get("rev")),
                learning_rate=_number(raw.get(LEARNING_RATE_KEY)),
                freeze=raw.get(FREEZE_KEY),
                optimizer=raw.get(OPTIMIZER_KEY),
                tf1_ap=_number(raw.get(TF1_AP_KEY)),
                converted_ap=_number(raw.get(CONVERTED_AP_KEY)),
                finetuned_ap=_number(raw.get(FINETUNED_AP_KEY)),
            )
        )
    return rows


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def render_markdown(rows: list[ExperimentRow], plot_name: str | None) -> str:
    ranked = sorted(rows, key=lambda r: -1.0 if r.finetuned_ap is None else r.finetuned_ap)[::-1]
    lines = [
        "# Experiments",
        "",
        "| experiment | rev | optimizer | learning rate | freeze "
        "| AP TF1 | AP converted | AP fine-tuned | gain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in ranked:
        gain = (
            row.finetuned_ap - row.converted_ap
            if row.finetuned_ap is not None and row.converted_ap is not None
            else None
        )
        lines.append(
            f"| {row.name} | {row.rev[:7]} | {row.optimizer or '-'} | {_fmt(row.learning_rate)} "
            f"| {row.freeze or '-'} | {_fmt(row.tf1_ap)} | {_fmt(row.converted_ap)} "
            f"| {_fmt(row.finetuned_ap)} "
            f"| {_fmt(gain)} |"
        )
    best = next((r for r in ranked if r.finetuned_ap is not None), None)
    if best is not None:
        lines += [
            "",
            f"Best fine-tuned AP: **{best.finetuned_ap:.4f}** ({best.name}, learning rate "
            f"{_fmt(best.learning_rate)}, freeze {best.freeze or '-'}).",
        ]
    lines += _conversion_lines(rows)
    if plot_name:
        lines += ["", f"![AP against learning rate]({plot_name})"]
    return "\n".join(lines) + "\n"


def _conversion_lines(rows: list[ExperimentRow]) -> list[str]:
    """How far the converted model's AP is from the TF1 graph's (the conversion's end-to-end
    check: the two should agree to 1e-4)."""
    pairs = [(r.tf1_ap, r.converted_ap) for r in rows if None not in (r.tf1_ap, r.converted_ap)]
    if not pairs:
        return []
    worst = max(abs(converted - tf1) for tf1, converted in pairs)
    verdict = "reproduces" if worst <= CONVERSION_AP_TOLERANCE else "does NOT reproduce"
    return [
        "",
        f"Conversion: the converted model {verdict} the TF1 graph's AP (max |AP converted - AP "
        f"TF1| = {worst:.2g} over {len(pairs)} row(s); tolerance {CONVERSION_AP_TOLERANCE:g}).",
    ]


def plot_ap_vs_learning_rate(rows: list[ExperimentRow], target: Path) -> bool:
    """Plot fine-tuned AP against learning rate, one series per freezing choice."""
    points = [r for r in rows if r.learning_rate and r.finetuned_ap is not None]
    if not points:
        return False
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for freeze in sorted({r.freeze or "-" for r in points}):
        series = sorted(
            (r for r in points if (r.freeze or "-") == freeze), key=lambda r: r.learning_rate
        )
        axes.plot(
            [r.learning_rate for r in series],
            [r.finetuned_ap for r in series],
            marker="o",
            label=f"freeze: {freeze}",
        )
    converted = [r.converted_ap for r in points if r.converted_ap is not None]
    if converted:
        axes.axhline(converted[0], color="grey", linestyle="--", label="converted (no fine-tune)")
    axes.set_xscale("log")
    # Label exactly the learning rates that were tried; log-axis minor labels collide.
    rates = sorted({r.learning_rate for r in points})
    axes.set_xticks(rates, [f"{rate:g}" for rate in rates])
    axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes.set_xlabel("learning rate")
    axes.set_ylabel("COCO AP (fine-tuned)")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic_file(target, "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)
    return True


def write_report(raw_rows: Iterable[Mapping[str, Any]], out_dir: Path) -> Path:
    rows = collect_rows(raw_rows)
    if not rows:
        raise PipelineError(
            "dvc exp show: no committed baseline or experiment found; run `dvc repro` and "
            "commit, or `dvc exp run`, first"
        )
    with atomic_directory(out_dir) as staging:
        has_plot = plot_ap_vs_learning_rate(rows, staging / "ap_vs_learning_rate.png")
        markdown = render_markdown(rows, "ap_vs_learning_rate.png" if has_plot else None)
        (staging / "experiments.md").write_text(markdown, encoding="utf-8")
    return out_dir / "experiments.md"
