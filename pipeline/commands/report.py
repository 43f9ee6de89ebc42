"""`python -m pipeline report`: a compact markdown comparison of DVC experiments."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "report"
HELP = "write a markdown report (with an AP-vs-learning-rate plot) from `dvc exp show`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("reports"), help="output directory")
    parser.add_argument(
        "--num", type=int, default=1, help="how many commits back from HEAD to include"
    )


def run(args: argparse.Namespace) -> int:
    import dvc.api

    from pipeline.experiments import write_report

    rows = dvc.api.exp_show(num=args.num)
    report = write_report(rows, args.out)
    print(report.read_text(encoding="utf-8"))
    print(f"wrote {report}")
    return 0
