"""`python -m pipeline make-shapes`: write the built-in COCO-format shapes dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from pipeline.builtin.shapes import DOMAINS, ShapesConfig, write_dataset
from pipeline.errors import PipelineError
from pipeline.params import load_params

NAME = "make-shapes"
HELP = "generate the built-in shapes detection dataset (COCO format, deterministic)"
DESCRIPTION = (
    "Write <out>/<split>/<image_id:012d>.jpg and <out>/annotations/instances_<split>.json for each "
    "--split, from the flags or from the `data.shapes` section of --params. The same settings give "
    "byte-identical output. Domains: plain (pre-training of the built-in model), textured (the "
    "default fine-tuning target)."
)
CONFIG_KEYS = ("domain", "image_size", "seed", "min_objects", "max_objects", "jpeg_quality")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="dataset folder (replaced)")
    parser.add_argument(
        "--params", type=Path, help="read settings and splits from this params file instead"
    )
    parser.add_argument("--section", default="data.shapes", help="params section (data.shapes)")
    parser.add_argument(
        "--split",
        action="append",
        metavar="NAME[=N]",
        help="split to write (train, val, test), N images each (default --num-images); repeat",
    )
    parser.add_argument("--num-images", type=int, default=200, help="images per split (200)")
    parser.add_argument("--domain", choices=sorted(DOMAINS), default="textured")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-objects", type=int, default=1)
    parser.add_argument("--max-objects", type=int, default=4)
    parser.add_argument("--jpeg-quality", type=int, default=92)


def run(args: argparse.Namespace) -> int:
    if args.params is not None:
        config, splits = _from_params(args.params, args.section)
    else:
        config = ShapesConfig(**{key: getattr(args, key) for key in CONFIG_KEYS})
        splits = _parse_splits(args.split or ["train", "val"], args.num_images)
    summary = write_dataset(args.out, splits, config)
    parts = ", ".join(
        f"{split} {summary.images[split]} images / {summary.annotations[split]} boxes"
        for split in splits
    )
    print(f"wrote {config.domain} shapes (seed {config.seed}) to {summary.out_dir}: {parts}")
    return 0


def _parse_splits(items: list[str], default_count: int) -> dict[str, int]:
    splits: dict[str, int] = {}
    for item in items:
        name, _, count = item.partition("=")
        try:
            splits[name] = int(count) if count else default_count
        except ValueError:
            raise PipelineError(f"--split {item}: N must be an integer, e.g. train=400") from None
    return splits


def _from_params(path: Path, section: str) -> tuple[ShapesConfig, dict[str, int]]:
    params = load_params(path)
    node = OmegaConf.select(params, section)
    if node is None:
        raise PipelineError(f"{path}: no `{section}` section; regenerate it from conf/")
    settings = OmegaConf.to_container(node, resolve=True)
    if not isinstance(settings, dict):
        raise PipelineError(f"{path}: `{section}` must be a mapping")
    unknown = set(settings) - set(CONFIG_KEYS) - {"splits"}
    if unknown:
        raise PipelineError(
            f"{path}: {section} has unknown key(s) {sorted(unknown)}; known: "
            f"{', '.join((*CONFIG_KEYS, 'splits'))}"
        )
    splits = settings.pop("splits", None)
    if not isinstance(splits, dict) or not splits:
        raise PipelineError(f"{path}: {section}.splits must map split names to image counts")
    try:
        return ShapesConfig(**settings), {str(k): int(v) for k, v in splits.items()}
    except (TypeError, ValueError) as error:
        raise PipelineError(f"{path}: {section}: {error}") from None
