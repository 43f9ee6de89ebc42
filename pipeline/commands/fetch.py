"""`python -m pipeline fetch`: the fetch-zoo-model stage."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.params import load_params
from pipeline.zoo import RetryPolicy, fetch_zoo
from pipeline.zoo.integrity import normalize_sha256

NAME = "fetch"
HELP = "fetch a TF1 zoo model (http(s)://, file://, builtin://, tarball or folder), verified"
DESCRIPTION = (
    "Download (resumable), sha256-verify and safely unpack a TF1 detection zoo model into --out, "
    "which then holds model.ckpt.*, pipeline.config and fetch_info.json. Give --url, or --params "
    "to read the `zoo` section (name, url, sha256, architecture) of params.yaml."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="http(s)://, file://, builtin://<name>, or a local path")
    source.add_argument("--params", type=Path, help="params file whose `zoo` section to fetch")
    parser.add_argument("--section", default="zoo", help="params section (default: zoo)")
    parser.add_argument("--sha256", help="expected sha256 of the archive (overrides params)")
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. data/zoo")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="where partial downloads wait to be resumed (default: <out>/../.cache/downloads)",
    )
    parser.add_argument("--retries", type=int, default=5, help="download attempts (default 5)")
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout, seconds")


def run(args: argparse.Namespace) -> int:
    name = architecture = None
    url, sha256 = args.url, args.sha256
    if args.params is not None:
        zoo = load_params(args.params, args.section)
        url = zoo.get("url")
        if not url:
            raise PipelineError(
                f"{args.params}: {args.section}.url is empty; set it in conf/zoo/<model>.yaml and "
                "run `python -m pipeline params`"
            )
        name, architecture = zoo.get("name"), zoo.get("architecture")
        if sha256 is None:
            sha256 = normalize_sha256(
                zoo.get("sha256"), field=f"{args.params}: {args.section}.sha256"
            )
    if args.retries < 1:
        raise PipelineError(f"--retries {args.retries}: must be at least 1")
    result = fetch_zoo(
        str(url),
        args.out,
        sha256=sha256,
        name=name,
        architecture=architecture,
        cache_dir=args.cache_dir,
        retry=RetryPolicy(attempts=args.retries, timeout_s=args.timeout),
    )
    label = f"{name} " if name else ""
    print(
        f"fetched {label}from {result.source} -> {result.path} "
        f"({result.num_files} files, {result.num_bytes / 1e6:.1f} MB; "
        f"{result.model.form.replace('_', ' ')} "
        f"{result.model.weights_file.relative_to(result.model.root)})"
    )
    if result.sha256 is not None:
        if result.pinned:
            print(f"sha256 {result.sha256} (verified)")
        else:
            where = _zoo_conf_file(args.params, name) if args.params else "--sha256"
            print(f"sha256 {result.sha256} (unpinned: add it to {where} to verify future fetches)")
    return 0


def _zoo_conf_file(params: Path, name: str | None) -> str:
    """The conf/zoo/*.yaml (beside params.yaml) that declares zoo `name`: file names are the Hydra
    choice (ssd_mobilenet_v2_coco.yaml), `name` the release (ssd_mobilenet_v2_coco_2018_03_29)."""
    import yaml

    for path in sorted((params.parent / "conf" / "zoo").glob("*.yaml")):
        try:
            declared = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("name")
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        if name and declared == name:
            return f"`sha256:` in {path.relative_to(params.parent)}"
    return "`sha256:` in the conf/zoo/*.yaml of this model"
