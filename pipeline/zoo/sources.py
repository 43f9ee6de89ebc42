"""Where a zoo model comes from: an http(s) URL, a file:// URL, a local tarball or folder, or a
tarball shipped inside the package (`builtin://<name>`)."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from pipeline.errors import PipelineError

SUPPORTED = "http(s)://, file://, builtin://<name> or a local tarball/folder path"


class SourceKind(enum.Enum):
    HTTP = "http"
    ARCHIVE = "archive"  # a local file: tarball from file://, a plain path or builtin://
    DIRECTORY = "directory"


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    # What the user wrote, used in every message so they can find it again.
    display: str
    # The URL for HTTP sources; the local path otherwise.
    url: str | None = None
    path: Path | None = None

    @property
    def basename(self) -> str:
        if self.path is not None:
            return self.path.name
        name = Path(urlparse(self.url or "").path).name
        return name or "download"


def parse_source(location: str | os.PathLike[str]) -> Source:
    """Classify `location`; local paths must exist."""
    text = os.fspath(location).strip()
    if not text:
        raise PipelineError(f"zoo source is empty; give one of {SUPPORTED}")
    parsed = urlparse(text)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        if not parsed.netloc:
            raise PipelineError(f"{text}: URL has no host; write it as {scheme}://host/path")
        return Source(SourceKind.HTTP, display=text, url=text)
    if scheme == "builtin":
        from pipeline.builtin import asset_path

        name = (parsed.netloc + parsed.path).strip("/")
        return _local(asset_path(name), display=text)
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise PipelineError(
                f"{text}: file:// URLs must be local (file:///abs/path); copy the file here first"
            )
        return _local(Path(url2pathname(unquote(parsed.path))), display=text)
    # A one-letter scheme is a Windows drive ("C:\..."), not a URL.
    if "://" in text and len(scheme) > 1:
        raise PipelineError(f"{text}: unsupported URL scheme '{scheme}'; use {SUPPORTED}")
    return _local(Path(text).expanduser(), display=text)


def _local(path: Path, display: str) -> Source:
    if path.is_dir():
        return Source(SourceKind.DIRECTORY, display=display, path=path)
    if path.is_file():
        return Source(SourceKind.ARCHIVE, display=display, path=path)
    if path.exists():
        raise PipelineError(f"{display}: not a regular file or folder; give a tarball or a folder")
    raise PipelineError(
        f"{display}: no such file or folder; check the path (relative to {os.getcwd()})"
    )
