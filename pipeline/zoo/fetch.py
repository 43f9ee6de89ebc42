"""Fetch a TF1 zoo model into a folder: resolve the source, download, verify, unpack, validate."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import requests

from pipeline.atomic import atomic_directory, write_json
from pipeline.errors import PipelineError
from pipeline.zoo.download import RetryPolicy, download
from pipeline.zoo.extract import copy_model_tree, flatten_single_root, safe_extract, single_root
from pipeline.zoo.integrity import normalize_sha256, verify_sha256
from pipeline.zoo.layout import (
    PIPELINE_CONFIG,
    ZooModelDir,
    config_architecture,
    validate_zoo_dir,
)
from pipeline.zoo.sources import Source, SourceKind, parse_source

log = logging.getLogger(__name__)

FETCH_INFO = "fetch_info.json"


@dataclass(frozen=True)
class FetchResult:
    model: ZooModelDir
    source: str
    # Digest of the archive that was unpacked; None when the source was a folder.
    sha256: str | None
    pinned: bool
    num_files: int
    num_bytes: int

    @property
    def path(self) -> Path:
        return self.model.root


def default_cache_dir(out_dir: Path) -> Path:
    # Beside the output, never inside it: the output folder is replaced wholesale.
    return out_dir.parent / ".cache" / "downloads"


def fetch_zoo(
    url: str,
    out_dir: str | Path,
    *,
    sha256: str | None = None,
    name: str | None = None,
    architecture: str | None = None,
    cache_dir: str | Path | None = None,
    retry: RetryPolicy | None = None,
    session: requests.Session | None = None,
) -> FetchResult:
    """Fetch the zoo model at `url` into `out_dir` (replaced only on success)."""
    out_dir = Path(out_dir)
    expected = normalize_sha256(sha256, field="zoo.sha256")
    _refuse_foreign_output(out_dir)
    source = parse_source(url)
    downloaded: Path | None = None
    try:
        if source.kind is SourceKind.HTTP:
            cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(out_dir)
            downloaded = download(
                source.url or url, _cache_file(cache, source), policy=retry, session=session
            )
            archive: Path | None = downloaded
        else:
            archive = source.path if source.kind is SourceKind.ARCHIVE else None
        return _unpack(source, archive, out_dir, expected, name, architecture)
    finally:
        # Only an interrupted download is worth keeping (to resume); a complete one has been
        # unpacked or rejected.
        if downloaded is not None:
            downloaded.unlink(missing_ok=True)


def fetch_zoo_model(url: str, out_dir: str | Path, sha256: str | None = None, **kwargs) -> Path:
    """Fetch, verify and unpack a TF1 zoo model; return the folder holding its files."""
    return fetch_zoo(url, out_dir, sha256=sha256, **kwargs).path


def _unpack(
    source: Source,
    archive: Path | None,
    out_dir: Path,
    expected: str | None,
    name: str | None,
    architecture: str | None,
) -> FetchResult:
    digest = None
    if archive is not None:
        digest = verify_sha256(archive, expected, display=source.display)
    elif expected is not None:
        raise PipelineError(
            f"{source.display}: zoo.sha256 pins an archive but this is a folder; point at the "
            "tarball, or unpin it (zoo.sha256=null / no --sha256)"
        )
    with atomic_directory(out_dir) as staging:
        if archive is not None:
            safe_extract(archive, staging, display=source.display)
            flatten_single_root(staging)
        else:
            assert source.path is not None
            root = source.path
            if not (root / PIPELINE_CONFIG).exists():
                root = single_root(root)
            copy_model_tree(root, staging, display=source.display)
        model = validate_zoo_dir(staging, display=source.display)
        _check_architecture(model, architecture, source.display)
        files = [p for p in staging.rglob("*") if p.is_file()]
        write_json(
            staging / FETCH_INFO,
            {
                "name": name,
                "architecture": architecture or config_architecture(model.pipeline_config),
                "sha256": digest,
                "weights": model.form,
                "weights_file": str(model.weights_file.relative_to(staging)),
                "checkpoint_prefix": model.checkpoint_prefix and model.checkpoint_prefix.name,
                "files": sorted(str(p.relative_to(staging)) for p in files),
            },
        )
    final = validate_zoo_dir(out_dir, display=source.display)
    return FetchResult(
        model=final,
        source=source.display,
        sha256=digest,
        pinned=expected is not None,
        num_files=len(files),
        num_bytes=sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file()),
    )


def _check_architecture(model: ZooModelDir, declared: str | None, display: str) -> None:
    if not declared:
        return
    found = config_architecture(model.pipeline_config)
    if found is not None and found != declared:
        raise PipelineError(
            f"{display}: zoo.architecture is '{declared}' but its pipeline.config says "
            f"feature_extractor type '{found}'; fix zoo.architecture in conf/zoo/ or the URL"
        )


def _cache_file(cache: Path, source: Source) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    ignore = cache / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# partial zoo downloads, kept to resume\n*\n")
    # Keyed by URL so that two models with the same file name never resume into each other.
    key = hashlib.sha256((source.url or "").encode()).hexdigest()[:12]
    return cache / f"{key}-{source.basename}"


def _refuse_foreign_output(out_dir: Path) -> None:
    # The output is replaced wholesale; never do that to a folder this command did not write
    # (a mistyped `--out data` must not wipe the data folder).
    if out_dir.is_file() or out_dir.is_symlink():
        raise PipelineError(f"{out_dir}: exists and is not a folder; choose another --out")
    ours = (out_dir / FETCH_INFO).is_file() or (out_dir / PIPELINE_CONFIG).is_file()
    if out_dir.is_dir() and any(out_dir.iterdir()) and not ours:
        raise PipelineError(
            f"{out_dir}: exists and does not hold a fetched zoo model; refusing to replace "
            "it, choose another --out (e.g. data/zoo) or remove it"
        )
