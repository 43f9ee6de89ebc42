"""`python -m pipeline params`: compose conf/ into params.yaml, as `dvc exp run` does."""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from pipeline.atomic import atomic_file
from pipeline.errors import PipelineError
from pipeline.params import DEFAULT_CONF_DIR, DEFAULT_PARAMS, compose

NAME = "params"
HELP = "compose conf/ (Hydra) into params.yaml, or check that they agree"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. zoo=ssd_mobilenet_v2_coco"
    )
    parser.add_argument("--conf-dir", type=Path, default=DEFAULT_CONF_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_PARAMS)
    parser.add_argument(
        "--check", action="store_true", help="fail if params.yaml differs from the composition"
    )


def run(args: argparse.Namespace) -> int:
    composed = compose(args.conf_dir, args.overrides)
    if args.check:
        current = OmegaConf.load(args.out) if args.out.is_file() else None
        if current != composed:
            raise PipelineError(
                f"{args.out}: out of sync with {args.conf_dir}/; run `python -m pipeline params`"
            )
        print(f"{args.out} agrees with {args.conf_dir}/")
        return 0
    with atomic_file(args.out) as handle:
        handle.write(OmegaConf.to_yaml(composed))
    print(f"wrote {args.out}")
    return 0
