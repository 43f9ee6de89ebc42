"""What the project ships so that the default pipeline runs offline.

- `pipeline.builtin.shapes`: a deterministic COCO-format "shapes" detection dataset, in two domains
  (plain backgrounds for pre-training the built-in model, textured ones as the fine-tuning target).
- `assets/<name>.tar.gz`: the built-in TF1-format zoo model, served by `builtin://<name>`
  through the same fetch path as a downloaded zoo tarball.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.errors import PipelineError

ASSETS_DIR = Path(__file__).resolve().parent / "assets"

# Asset names end up in a path: allow no separators or `..`.
_ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def asset_path(name: str) -> Path:
    """The tarball that `builtin://<name>` resolves to; error if it is not shipped."""
    if not _ASSET_NAME.match(name) or ".." in name:
        raise PipelineError(
            f"builtin://{name}: invalid built-in name; use letters, digits, '_', '-', '.' only"
        )
    path = ASSETS_DIR / f"{name}.tar.gz"
    if not path.is_file():
        shipped = sorted(p.name.removesuffix(".tar.gz") for p in ASSETS_DIR.glob("*.tar.gz"))
        available = ", ".join(shipped) if shipped else "none"
        raise PipelineError(
            f"builtin://{name}: not shipped (expected {path}); available: {available}. "
            "Reinstall the package or rebuild the built-in model"
        )
    return path
