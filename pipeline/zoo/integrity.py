"""sha256 pinning of fetched archives."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from pipeline.errors import PipelineError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def normalize_sha256(value: str | None, *, field: str = "sha256") -> str | None:
    """Lower-case hex digest, or None when unpinned; reject anything else up front."""
    if value is None:
        return None
    text = str(value).strip().lower().removeprefix("sha256:")
    if not text or text in ("null", "none"):
        return None
    if not _HEX64.match(text):
        raise PipelineError(
            f"{field}: {value!r} is not a sha256 digest (64 hex characters); "
            "fix it or leave it empty and copy the digest that fetch prints"
        )
    return text


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str | None, *, display: str) -> str:
    """Return the file's digest; raise if it differs from `expected` (when given)."""
    actual = file_sha256(path)
    if expected is not None and actual != expected:
        raise PipelineError(
            f"{display}: sha256 mismatch (expected {expected}, got {actual}); the file is "
            "corrupt or not the pinned release: fetch it again, or update zoo.sha256 if you "
            "deliberately changed the model"
        )
    return actual
