"""Read a COCO instances JSON and validate every record before anything is written.

Policy for bad input (`on_bad_input`): `skip` drops the record, counts it under a reason in
stats.json and logs it; `fail` stops at the first one with a PipelineError naming the file, the
record id and the field. Decisions (documented in the README of the data stage):
- Duplicate ids (image, annotation, category): the first record wins, later ones are bad input.
- Annotations pointing to an unknown image or category are bad input; annotations of a category
  the label map leaves out are dropped on purpose and counted as `annotations_not_in_label_map`.
- Boxes: `[x, y, w, h]` must be four finite numbers (`invalid_bbox`) with w > 0 and h > 0
  (`degenerate_box`). A box that extends past the image border is clipped to the image and counted
  (`clipped_boxes`): annotation tools routinely let boxes overhang by a pixel or two and the
  visible part is the object. A box with no part inside the image is bad input
  (`box_outside_image`).
- `area` defaults to the (clipped) box area and `iscrowd` to 0 when missing; malformed values are
  bad input.
- Images without annotations are kept: they are valid negatives (counted as `empty_images`).
Image files are checked later, in parallel, by `pipeline.datasets.images`.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.datasets.label_map import LabelMapEntry, identity_label_map, resolve_label_map
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

SKIP, FAIL = "skip", "fail"
POLICIES = (SKIP, FAIL)

IMAGE_REASONS = (
    "invalid_image_record",
    "duplicate_image_id",
    "missing_image_file",
    "unreadable_image_file",
    "corrupt_image",
    "image_size_mismatch",
)
ANNOTATION_REASONS = (
    "invalid_annotation_record",
    "duplicate_annotation_id",
    "unknown_image_id",
    "unknown_category_id",
    "invalid_bbox",
    "degenerate_box",
    "box_outside_image",
    "image_skipped",  # the annotation was fine but its image was skipped
)
CATEGORY_REASONS = ("invalid_category_record", "duplicate_category_id")
_SECTIONS = {"images": IMAGE_REASONS, "annotations": ANNOTATION_REASONS}
_SECTIONS["categories"] = CATEGORY_REASONS
_LOGGED_PER_REASON = 5
_KEPT_EXAMPLES = 100


class BadInput:
    """Apply the bad-input policy: raise (fail) or count, log and keep a few examples (skip)."""

    def __init__(self, policy: str, annotations_path: Path) -> None:
        if policy not in POLICIES:
            raise PipelineError(f"on_bad_input: {policy!r} is not one of {', '.join(POLICIES)}")
        self.policy = policy
        self.annotations_path = annotations_path
        self.counts = {section: Counter() for section in _SECTIONS}
        self.examples: list[dict[str, Any]] = []

    def report(
        self,
        section: str,
        reason: str,
        record: Any,
        field: str,
        detail: str,
        file: Path | None = None,
        count: int = 1,
    ) -> None:
        assert reason in _SECTIONS[section], reason
        where = f"{section}[{record}].{field}"
        file = file or self.annotations_path
        if self.policy == FAIL:
            raise PipelineError(
                f"{file}: {where}: {detail}; fix or remove the record, or rerun with "
                "--on-bad-input skip to skip and count such records"
            )
        self.counts[section][reason] += count
        if self.counts[section][reason] <= _LOGGED_PER_REASON:
            log.warning("skipping %s (%s): %s: %s", where, reason, file, detail)
        if len(self.examples) < _KEPT_EXAMPLES:
            self.examples.append(
                {
                    "section": section,
                    "reason": reason,
                    "record": where,
                    "file": str(file),
                    "detail": detail,
                }
            )

    def skipped(self, section: str) -> dict[str, int]:
        counts = {reason: self.counts[section][reason] for reason in _SECTIONS[section]}
        return {"total": sum(counts.values()), **counts}


@dataclass(frozen=True)
class Box:
    """A validated annotation, in the dataset's pixel coordinates (clipped to the image)."""

    annotation_id: int
    label: int  # model class id
    source_id: int  # COCO category id
    x: float
    y: float
    w: float
    h: float
    area: float
    iscrowd: int

    def to_coco(self, image_id: int) -> dict[str, Any]:
        return {
            "id": self.annotation_id,
            "image_id": image_id,
            "category_id": self.source_id,
            "bbox": [self.x, self.y, self.w, self.h],
            "area": self.area,
            "iscrowd": self.iscrowd,
        }


@dataclass
class ImageTask:
    record: dict[str, Any]  # the image's own JSON record
    boxes: list[Box]

    @property
    def id(self) -> int:
        return self.record["id"]


@dataclass
class CocoDataset:
    path: Path
    images: list[ImageTask]
    categories: list[dict[str, Any]]  # source categories the label map keeps, by id
    label_map: list[LabelMapEntry]
    extra: dict[str, Any] = field(default_factory=dict)  # info / licenses, copied through
    annotations_not_in_label_map: int = 0
    clipped_boxes: int = 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise PipelineError(f"{path}: annotations file not found; check --annotations")
    try:
        with open(path, "rb") as handle:
            data = json.load(handle)
    except (ValueError, UnicodeDecodeError) as error:
        raise PipelineError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a COCO object with images/annotations/categories")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise PipelineError(f"{path}: `{key}` list is missing; is this a COCO instances file?")
    if not isinstance(data.get("annotations", []), list):
        raise PipelineError(f"{path}: `annotations` must be a list")
    return data


def _file_name_problem(file_name: Any) -> str | None:
    if not isinstance(file_name, str) or not file_name:
        return "file_name must be a non-empty string"
    relative = PurePosixPath(file_name.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts:
        return f"file_name {file_name!r} must be relative to the image directory, without '..'"
    return None


def load_coco(path: Path, bad: BadInput, label_map_path: Path | None = None) -> CocoDataset:
    """Validate `path` and return the images to write, each with its boxes, in JSON order."""
    data = read_json(path)

    categories: dict[int, dict[str, Any]] = {}
    for index, record in enumerate(data["categories"]):
        ident = record.get("id") if isinstance(record, Mapping) else None
        label = f"id={ident}" if _is_int(ident) else f"#{index}"
        if not _is_int(ident) or not isinstance(record.get("name"), str) or not record["name"]:
            bad.report(
                "categories",
                "invalid_category_record",
                label,
                "id/name",
                "a category needs an integer id and a non-empty name",
            )
        elif ident in categories:
            bad.report(
                "categories",
                "duplicate_category_id",
                label,
                "id",
                f"category id {ident} appears more than once",
            )
        else:
            categories[ident] = dict(record)
    if not categories:
        raise PipelineError(f"{path}: no valid categories; the `categories` list is empty")

    if label_map_path is not None:
        label_map = resolve_label_map(label_map_path, categories.values())
    else:
        label_map = identity_label_map(categories.values(), str(path))
    label_by_source = {entry.source_id: entry for entry in label_map}

    images: dict[int, ImageTask] = {}
    declared_image_ids: set[int] = set()
    for index, record in enumerate(data["images"]):
        ident = record.get("id") if isinstance(record, Mapping) else None
        label = f"id={ident}" if _is_int(ident) else f"#{index}"
        if _is_int(ident):
            declared_image_ids.add(ident)
        if not isinstance(record, Mapping) or not _is_int(ident):
            bad.report(
                "images",
                "invalid_image_record",
                label,
                "id",
                "an image needs an integer id (it becomes image/source_id)",
            )
            continue
        if ident in images:
            bad.report(
                "images",
                "duplicate_image_id",
                label,
                "id",
                f"image id {ident} appears more than once; the first record is kept",
            )
            continue
        problem = _file_name_problem(record.get("file_name"))
        if problem:
            bad.report("images", "invalid_image_record", label, "file_name", problem)
            continue
        height, width = record.get("height"), record.get("width")
        if not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
            bad.report(
                "images",
                "invalid_image_record",
                label,
                "height/width",
                f"height {height!r} and width {width!r} must be positive integers",
            )
            continue
        images[ident] = ImageTask(record=dict(record), boxes=[])

    seen_annotation_ids: set[int] = set()
    not_in_label_map = 0
    clipped = 0
    for index, record in enumerate(data.get("annotations", [])):
        ident = record.get("id") if isinstance(record, Mapping) else None
        label = f"id={ident}" if _is_int(ident) else f"#{index}"
        if not isinstance(record, Mapping) or not _is_int(ident):
            bad.report(
                "annotations",
                "invalid_annotation_record",
                label,
                "id",
                "an annotation needs an integer id",
            )
            continue
        if ident in seen_annotation_ids:
            bad.report(
                "annotations",
                "duplicate_annotation_id",
                label,
                "id",
                f"annotation id {ident} appears more than once; the first is kept",
            )
            continue
        seen_annotation_ids.add(ident)
        image_id = record.get("image_id")
        task = images.get(image_id) if _is_int(image_id) else None
        if task is None:
            if _is_int(image_id) and image_id in declared_image_ids:
                bad.counts["annotations"]["image_skipped"] += 1
            else:
                bad.report(
                    "annotations",
                    "unknown_image_id",
                    label,
                    "image_id",
                    f"image_id {image_id!r} is not in `images`",
                )
            continue
        category_id = record.get("category_id")
        if not _is_int(category_id) or category_id not in categories:
            bad.report(
                "annotations",
                "unknown_category_id",
                label,
                "category_id",
                f"category_id {category_id!r} is not in `categories`",
            )
            continue
        entry = label_by_source.get(category_id)
        if entry is None:
            not_in_label_map += 1
            continue
        box = _check_box(record, label, task.record, bad)
        if box is None:
            continue
        x, y, w, h, was_clipped = box
        clipped += was_clipped
        iscrowd = record.get("iscrowd", 0)
        if iscrowd not in (0, 1):  # also accepts False/True
            bad.report(
                "annotations",
                "invalid_annotation_record",
                label,
                "iscrowd",
                f"iscrowd {iscrowd!r} must be 0 or 1",
            )
            continue
        area = record.get("area", w * h)
        if not _is_number(area) or area < 0:
            bad.report(
                "annotations",
                "invalid_annotation_record",
                label,
                "area",
                f"area {area!r} must be a finite number >= 0",
            )
            continue
        task.boxes.append(Box(ident, entry.id, category_id, x, y, w, h, float(area), int(iscrowd)))

    kept_sources = sorted(label_by_source)
    extra = {key: data[key] for key in ("info", "licenses") if key in data}
    return CocoDataset(
        path=path,
        images=list(images.values()),
        categories=[categories[source] for source in kept_sources],
        label_map=label_map,
        extra=extra,
        annotations_not_in_label_map=not_in_label_map,
        clipped_boxes=clipped,
    )


def _check_box(
    record: Mapping[str, Any], label: str, image: Mapping[str, Any], bad: BadInput
) -> tuple[float, float, float, float, bool] | None:
    bbox = record.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(map(_is_number, bbox)):
        bad.report(
            "annotations",
            "invalid_bbox",
            label,
            "bbox",
            f"bbox {bbox!r} must be [x, y, width, height] with four finite numbers",
        )
        return None
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        bad.report(
            "annotations",
            "degenerate_box",
            label,
            "bbox",
            f"bbox {bbox!r} has zero or negative width/height",
        )
        return None
    width, height = image["width"], image["height"]
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(width)), min(y + h, float(height))
    if x1 <= x0 or y1 <= y0:
        bad.report(
            "annotations",
            "box_outside_image",
            label,
            "bbox",
            f"bbox {bbox!r} lies entirely outside the {height}x{width} (HxW) image "
            f"id={image['id']}",
        )
        return None
    if (x0, y0, x1, y1) == (x, y, x + w, y + h):
        return x, y, w, h, False
    return x0, y0, x1 - x0, y1 - y0, True
