"""COCO JSON + image folder -> sharded TFRecords, streamed.

Images are read, checked and serialised by a thread pool (Pillow, file I/O and hashing release the
GIL) through a bounded window, and written in input order as they arrive: memory holds a few
images at a time whatever the dataset size (Model Garden's `create_coco_tf_record` keeps every
serialised example in RAM through `pool.starmap`). Example i of the written images goes to shard
i mod N, so shards differ by at most one example and the output depends only on the input and N.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pipeline.atomic import atomic_directory, write_json
from pipeline.datasets.coco import FAIL, SKIP, BadInput, CocoDataset, ImageTask, load_coco
from pipeline.datasets.images import EncodedImage, ImageProblem, load_image
from pipeline.datasets.reports import write_class_balance
from pipeline.datasets.tfrecord import TFRecordWriter, serialize_example
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def shard_names(prefix: str, shards: int) -> list[str]:
    """Model Garden's naming: `<prefix>-00000-of-00004.tfrecord`."""
    return [f"{prefix}-{index:05d}-of-{shards:05d}.tfrecord" for index in range(shards)]


@dataclass(frozen=True)
class BuildConfig:
    annotations: Path
    images: Path
    out: Path
    shards: int = 4
    prefix: str = "coco"
    on_bad_input: str = SKIP
    label_map: Path | None = None
    workers: int | None = None  # default: the CPUs this process may use
    progress: bool = True


@dataclass
class _Encoded:
    task: ImageTask
    path: Path
    record: bytes | None = None
    image: EncodedImage | None = None
    problem: ImageProblem | None = None


def ordered_map(
    function: Callable[[T], R], items: Iterable[T], workers: int, window: int
) -> Iterator[R]:
    """`map` over a thread pool, in input order, with at most `window` items in flight.

    `Executor.map` submits every item up front (futures and results pile up for large inputs);
    this keeps memory bounded by `window` results.
    """
    if workers <= 1:
        yield from map(function, items)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tfrecords")
    try:
        iterator = iter(items)
        pending = deque(pool.submit(function, item) for item in itertools.islice(iterator, window))
        while pending:
            result = pending.popleft().result()
            for item in iterator:
                pending.append(pool.submit(function, item))
                break
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _features(
    task: ImageTask, image: EncodedImage, names: dict[int, bytes]
) -> dict[str, list[Any]]:
    record = task.record
    height, width = record["height"], record["width"]
    boxes = task.boxes
    return {
        "image/encoded": [image.data],
        "image/format": [image.format.encode()],
        "image/filename": [record["file_name"].encode("utf-8")],
        "image/source_id": [str(record["id"]).encode()],
        "image/key/sha256": [hashlib.sha256(image.data).hexdigest().encode()],
        "image/height": [height],
        "image/width": [width],
        "image/object/bbox/xmin": [b.x / width for b in boxes],
        "image/object/bbox/xmax": [(b.x + b.w) / width for b in boxes],
        "image/object/bbox/ymin": [b.y / height for b in boxes],
        "image/object/bbox/ymax": [(b.y + b.h) / height for b in boxes],
        "image/object/class/label": [b.label for b in boxes],
        "image/object/class/text": [names[b.label] for b in boxes],
        "image/object/area": [b.area for b in boxes],
        "image/object/is_crowd": [b.iscrowd for b in boxes],
    }


def build_tfrecords(config: BuildConfig) -> dict[str, Any]:
    """Write the TFRecords, stats.json, label_map.json, annotations.json and the class balance
    report into `config.out` (atomically); return the stats."""
    if config.shards < 1:
        raise PipelineError(f"--shards: {config.shards} must be at least 1")
    if not config.images.is_dir():
        raise PipelineError(f"{config.images}: image directory not found; check --images")
    bad = BadInput(config.on_bad_input, config.annotations)
    dataset = load_coco(config.annotations, bad, config.label_map)
    names = {entry.id: entry.name.encode("utf-8") for entry in dataset.label_map}
    if config.shards > len(dataset.images):
        log.warning(
            "%d shards for %d images: some shards will be empty",
            config.shards,
            len(dataset.images),
        )

    def encode(task: ImageTask) -> _Encoded:
        path = config.images / task.record["file_name"]
        try:
            image = load_image(path, task.record["height"], task.record["width"])
        except ImageProblem as problem:
            return _Encoded(task, path, problem=problem)
        return _Encoded(task, path, serialize_example(_features(task, image, names)), image)

    workers = config.workers or _available_cpus()
    written_images: list[dict[str, Any]] = []
    written_annotations: list[dict[str, Any]] = []
    tally = _Tally(dataset)
    with atomic_directory(config.out) as staging, contextlib.ExitStack() as stack:
        writers = [
            stack.enter_context(TFRecordWriter(staging / name))
            for name in shard_names(config.prefix, config.shards)
        ]
        # closing(): on failure, stop the pool now rather than when the traceback is freed.
        results = stack.enter_context(
            contextlib.closing(ordered_map(encode, dataset.images, workers, 4 * workers))
        )
        for result in _progress(results, len(dataset.images), config.progress):
            task = result.task
            if result.problem is not None:
                problem = result.problem
                bad.report(
                    "images",
                    problem.reason,
                    f"id={task.id}",
                    problem.field,
                    problem.detail,
                    file=result.path,
                )
                bad.counts["annotations"]["image_skipped"] += len(task.boxes)
                continue
            shard = tally.images % config.shards
            writers[shard].write(result.record)
            tally.add(task, result.image, shard, len(result.record))
            written_images.append(task.record)
            written_annotations.extend(box.to_coco(task.id) for box in task.boxes)
        stack.close()  # shards complete before the reports are written
        stats = tally.stats(config, bad)
        write_json(staging / "stats.json", stats)
        write_json(staging / "label_map.json", [e.to_dict() for e in dataset.label_map])
        _write_annotations(
            staging / "annotations.json", dataset, written_images, written_annotations
        )
        write_class_balance(staging, stats)
    return stats


def _available_cpus() -> int:
    affinity = getattr(os, "sched_getaffinity", None)  # Linux: honours taskset / cgroup pins
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def _write_annotations(
    path: Path,
    dataset: CocoDataset,
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
) -> None:
    """The ground truth evaluation must use: exactly the written images and boxes (clipped), with
    the source category ids, limited to the categories the label map keeps."""
    payload = {
        **dataset.extra,
        "images": images,
        "annotations": annotations,
        "categories": dataset.categories,
    }
    with open(path, "w", encoding="utf-8") as handle:
        # dumps, not dump: dump streams through the pure-Python encoder, ~5x slower.
        handle.write(json.dumps(payload, separators=(",", ":")))


def _progress(items: Iterable[T], total: int, enabled: bool) -> Iterable[T]:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc="build-tfrecords", unit="img", mininterval=1.0)


class _Tally:
    """Counts for stats.json, updated as examples are written."""

    def __init__(self, dataset: CocoDataset) -> None:
        self.dataset = dataset
        self.images = 0
        self.annotations = 0
        self.crowd = 0
        self.empty = 0
        self.bytes = 0
        self.reencoded: Counter[str] = Counter()
        self.per_shard: Counter[int] = Counter()
        self.boxes: Counter[int] = Counter()
        self.crowd_boxes: Counter[int] = Counter()
        self.images_with: Counter[int] = Counter()

    def add(self, task: ImageTask, image: EncodedImage, shard: int, size: int) -> None:
        self.images += 1
        self.bytes += size
        self.per_shard[shard] += 1
        if image.reencoded_from:
            self.reencoded[image.reencoded_from] += 1
        if not task.boxes:
            self.empty += 1
        for box in task.boxes:
            self.annotations += 1
            self.boxes[box.label] += 1
            if box.iscrowd:
                self.crowd += 1
                self.crowd_boxes[box.label] += 1
        for label in {box.label for box in task.boxes}:
            self.images_with[label] += 1

    def stats(self, config: BuildConfig, bad: BadInput) -> dict[str, Any]:
        dataset = self.dataset
        per_category = {
            entry.name: {
                "id": entry.id,
                "source_id": entry.source_id,
                "boxes": self.boxes[entry.id],
                "crowd_boxes": self.crowd_boxes[entry.id],
                "images": self.images_with[entry.id],
            }
            for entry in dataset.label_map
        }
        return {
            "images": self.images,
            "annotations": self.annotations,
            "crowd_boxes": self.crowd,
            "empty_images": self.empty,
            "clipped_boxes": dataset.clipped_boxes,
            "reencoded_images": sum(self.reencoded.values()),
            "reencoded_from": dict(self.reencoded),
            "annotations_not_in_label_map": dataset.annotations_not_in_label_map,
            "num_classes": max(entry.id for entry in dataset.label_map),
            "categories": len(dataset.label_map),
            "skipped_images": bad.skipped("images"),
            "skipped_annotations": bad.skipped("annotations"),
            "skipped_categories": bad.skipped("categories"),
            "shards": config.shards,
            "examples_per_shard": [self.per_shard[i] for i in range(config.shards)],
            "tfrecord_bytes": self.bytes,
            "on_bad_input": bad.policy,
            "source": {
                "annotations": str(config.annotations),
                "images": str(config.images),
                "label_map": str(config.label_map) if config.label_map else None,
            },
            "per_category": per_category,
            "problems": bad.examples,
        }


__all__ = ["FAIL", "SKIP", "BuildConfig", "build_tfrecords", "shard_names"]
