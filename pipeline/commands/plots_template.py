"""`python -m pipeline plots-template`: (re)write the offline page template for `dvc plots`."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.experiments.offline_plots import TEMPLATE_PATH, offline_page, write_offline_page

NAME = "plots-template"
HELP = "write the `dvc plots` page template that inlines Vega (plots render offline)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=TEMPLATE_PATH)
    parser.add_argument(
        "--check", action="store_true", help="fail if the file differs from what would be written"
    )


def run(args: argparse.Namespace) -> int:
    if args.check:
        if not args.out.is_file() or args.out.read_text(encoding="utf-8") != offline_page():
            raise PipelineError(
                f"{args.out}: missing or stale; run `python -m pipeline plots-template`"
            )
        print(f"{args.out} is current")
        return 0
    print(f"wrote {write_offline_page(args.out)}")
    return 0
