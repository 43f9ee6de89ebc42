"""Run a detector over a folder of images and write COCO-format results.

Each result is `{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}` with
the box in absolute pixels of the original image. The image id is the file name's stem as an
integer (COCO files are named `000000005001.jpg` -> 5001). Category ids are the model's class
ids, or the dataset's through a `label_map.json` written by `build-tfrecords`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_files(images_dir: str | os.PathLike[str], max_images: int | None = None) -> list[Path]:
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise PipelineError(f"{images_dir}: not a directory; pass a folder of JPEG/PNG images")
    paths = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise PipelineError(f"{images_dir}: no .jpg/.jpeg/.png images found")
    return paths[:max_images] if max_images else paths


def image_id(path: Path) -> int:
    try:
        return int(path.stem)
    except ValueError:
        raise PipelineError(
            f"{path}: file name stem is not an integer image id; name images by their COCO id "
            "(e.g. 000000005001.jpg)"
        ) from None


def read_image(path: Path) -> np.ndarray:
    """uint8 RGB [H, W, 3] (grayscale and RGBA converted, as COCO loaders do)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except OSError as error:
        raise PipelineError(f"{path}: cannot be decoded as an image ({error})") from error


def read_label_map(path: str | os.PathLike[str]) -> dict[int, int]:
    """label_map.json (list of {"id", "name", "source_id"}) -> {model class id: category id}."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        return {int(e["id"]): int(e.get("source_id", e["id"])) for e in entries}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PipelineError(
            f"{path}: not a label_map.json (a list of {{id, name, source_id}}): {error}"
        ) from error


def coco_results(
    outputs: Mapping[str, np.ndarray],
    image_id_value: int,
    height: int,
    width: int,
    label_map: Mapping[int, int] | None = None,
    min_score: float = 0.0,
) -> list[dict[str, Any]]:
    """One image's detector outputs (batch of 1) -> COCO result dicts."""
    count = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
    boxes = np.asarray(outputs["detection_boxes"])[0][:count]
    scores = np.asarray(outputs["detection_scores"])[0][:count]
    classes = np.asarray(outputs["detection_classes"])[0][:count]
    results = []
    for (ymin, xmin, ymax, xmax), score, cls in zip(boxes, scores, classes, strict=True):
        if score < min_score:
            continue
        category = round(float(cls))
        if label_map is not None:
            if category not in label_map:
                continue
            category = label_map[category]
        x, y = float(xmin) * width, float(ymin) * height
        results.append(
            {
                "image_id": image_id_value,
                "category_id": category,
                "bbox": [x, y, float(xmax) * width - x, float(ymax) * height - y],
                "score": float(score),
            }
        )
    return results


def predict_images(
    detector: Any,
    images_dir: str | os.PathLike[str],
    label_map: Mapping[int, int] | None = None,
    max_images: int | None = None,
    min_score: float = 0.0,
    progress: bool = True,
) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """(image path, its COCO results) for each image of a folder, in name order."""
    from tqdm import tqdm

    paths = image_files(images_dir, max_images)
    for path in tqdm(paths, desc="predict", unit="img", disable=not progress):
        ident = image_id(path)
        image = read_image(path)
        outputs = detector(image[None])
        yield path, coco_results(outputs, ident, *image.shape[:2], label_map, min_score)
