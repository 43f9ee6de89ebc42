"""Human-readable class balance beside the TFRecords: a markdown table and DVC plot data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_file, write_json


def write_class_balance(out: Path, stats: dict[str, Any]) -> None:
    """`class_balance.md` (table) and `class_balance.json` (rows for `dvc plots`, e.g. with the
    `bar_horizontal` template, x: boxes, y: class)."""
    per_category = stats["per_category"]
    total = max(1, stats["annotations"])
    rows = sorted(per_category.items(), key=lambda item: (-item[1]["boxes"], item[1]["id"]))
    widest = max((c["boxes"] for _, c in rows), default=0) or 1
    lines = [
        "# Class balance",
        "",
        f"{stats['images']} images ({stats['empty_images']} without boxes), "
        f"{stats['annotations']} boxes ({stats['crowd_boxes']} crowd), "
        f"{stats['skipped_images']['total']} images and "
        f"{stats['skipped_annotations']['total']} annotations skipped.",
        "",
        "| id | class | source id | boxes | crowd | images | share | |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, counts in rows:
        bar = "#" * round(20 * counts["boxes"] / widest)
        lines.append(
            f"| {counts['id']} | {name} | {counts['source_id']} | {counts['boxes']} | "
            f"{counts['crowd_boxes']} | {counts['images']} | "
            f"{100 * counts['boxes'] / total:.1f}% | `{bar}` |"
        )
    with atomic_file(out / "class_balance.md") as handle:
        handle.write("\n".join(lines) + "\n")
    write_json(
        out / "class_balance.json",
        [
            {"class": name, "boxes": counts["boxes"], "images": counts["images"]}
            for name, counts in rows
        ],
    )
