"""Read one image file, check it decodes and has the size the annotations claim.

JPEG (RGB or greyscale) and 8-bit PNG are passed through byte for byte: TensorFlow's
`decode_image`, which Model Garden's TfExampleDecoder and the OD API decoders use, reads both.
Anything else Pillow can read (CMYK JPEG, 16-bit PNG, GIF, BMP, TIFF, WebP) is re-encoded
losslessly as RGB PNG: GIF would otherwise decode to a 4-D tensor, and the others are not read by
every TensorFlow decoder.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

_PASS_THROUGH = {"JPEG": ("jpeg", {"RGB", "L"}), "PNG": ("png", {"RGB", "RGBA", "L", "LA", "P"})}


class ImageProblem(Exception):
    """An image that cannot go into the TFRecords; `reason` is the stats.json key."""

    def __init__(self, reason: str, field: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.field = field
        self.detail = detail


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    format: str  # 'jpeg' | 'png', the `image/format` feature
    reencoded_from: str | None  # Pillow's format name when the bytes are not the file's own


def load_image(path: Path, height: int, width: int) -> EncodedImage:
    """Return the bytes to store for `path`, or raise ImageProblem."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageProblem("missing_image_file", "file_name", f"{path} does not exist") from None
    except OSError as error:
        raise ImageProblem(
            "unreadable_image_file", "file_name", f"cannot read {path}: {error}"
        ) from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            file_width, file_height = image.size
            if (file_height, file_width) != (height, width):
                raise ImageProblem(
                    "image_size_mismatch",
                    "height/width",
                    f"the annotations say {height}x{width} (HxW) but {path} is "
                    f"{file_height}x{file_width}",
                )
            source_format, mode = image.format, image.mode
            if source_format == "JPEG":
                # Decoding greyscale at 1/8 scale still entropy-decodes every byte, so truncated
                # or broken files fail as they would in TensorFlow, at a fraction of the cost.
                image.draft("L", (max(1, file_width // 8), max(1, file_height // 8)))
            image.load()
            kind, modes = _PASS_THROUGH.get(source_format, (None, set()))
            if kind is not None and mode in modes:
                return EncodedImage(data, kind, None)
            if source_format == "JPEG":  # the draft above must not shrink the re-encoded copy
                image = Image.open(io.BytesIO(data))
                image.load()
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG", compress_level=3)
            return EncodedImage(buffer.getvalue(), "png", source_format)
    except ImageProblem:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        # Pillow reports undecodable, truncated or unknown files as OSError (incl.
        # UnidentifiedImageError) and some malformed headers as SyntaxError/ValueError.
        raise ImageProblem(
            "corrupt_image", "file_name", f"{path} cannot be decoded: {error}"
        ) from None
