"""Fetch TF1 Object Detection zoo models: download (resumable), verify, unpack safely, validate.

Public API:
- `fetch_zoo_model(url, out_dir, sha256=None, ...) -> Path`: the folder with the TF1 model
  (checkpoint, frozen graph or SavedModel + pipeline config), replaced atomically; `fetch_zoo`
  returns details.
- `validate_zoo_dir(path) -> ZooModelDir`: the weights' form and file, the pipeline config,
  the graphs present (`pipeline.tf1.model_dir`).
- `find_checkpoint_prefix(path) -> Path`.
Sources: http(s)://, file://, a local tarball or folder, builtin://<name> (shipped in the package).
"""

from __future__ import annotations

from pipeline.zoo.download import RetryPolicy
from pipeline.zoo.fetch import FETCH_INFO, FetchResult, fetch_zoo, fetch_zoo_model
from pipeline.zoo.integrity import file_sha256
from pipeline.zoo.layout import ZooModelDir, find_checkpoint_prefix, validate_zoo_dir
from pipeline.zoo.sources import Source, SourceKind, parse_source

__all__ = [
    "FETCH_INFO",
    "FetchResult",
    "RetryPolicy",
    "Source",
    "SourceKind",
    "ZooModelDir",
    "fetch_zoo",
    "fetch_zoo_model",
    "file_sha256",
    "find_checkpoint_prefix",
    "parse_source",
    "validate_zoo_dir",
]
