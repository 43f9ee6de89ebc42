"""Run a detector over eval TFRecords and turn its outputs into a COCO results list.

The detector is anything with the TF1 frozen-graph interface (`pipeline.inference.load_detector`):
`detector(images_uint8 [N, H, W, 3]) -> {detection_boxes [N, K, 4] normalised (ymin, xmin, ymax,
xmax) on the image it was given, detection_scores [N, K], detection_classes [N, K] (model class
ids, float), num_detections [N]}`. Images are fed at their original size (the model resizes), so
boxes scale back with the `image/height` and `image/width` features; class ids go back to the
dataset's category ids through label_map.json; `image/source_id` is the COCO image id.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.datasets.label_map import LabelMapEntry
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

Detector = Callable[[np.ndarray], Mapping[str, Any]]
_OUTPUT_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


@dataclass
class DetectionRun:
    results: list[dict[str, Any]]  # COCO results list
    image_ids: list[int]  # every image the detector saw, in TFRecord order
    dropped_classes: Counter[int] = field(default_factory=Counter)  # model ids not in label map


def tfrecord_files(pattern: str) -> list[str]:
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise PipelineError(f"{pattern}: no TFRecord files match; check --tfrecords")
    return files


def _decoded_examples(files: list[str]) -> Iterator[dict[str, Any]]:
    """(image uint8 [H, W, 3], source_id, height, width) per example, in file order, decoded by
    Model Garden's TfExampleDecoder (the decoder training uses)."""
    import tensorflow as tf
    from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder

    decoder = TfExampleDecoder()

    def decode(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        decoded = decoder.decode(serialized)
        return {key: decoded[key] for key in ("image", "source_id", "height", "width")}

    dataset = tf.data.TFRecordDataset(files).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    yield from dataset.prefetch(4).as_numpy_iterator()


def _batches(examples: Iterator[dict[str, Any]], batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """Consecutive examples of equal image shape, up to batch_size (the model takes one size per
    batch; padding would shift the normalised boxes)."""
    batch: list[dict[str, Any]] = []
    for example in examples:
        if batch and (
            len(batch) == batch_size or example["image"].shape != batch[0]["image"].shape
        ):
            yield batch
            batch = []
        batch.append(example)
    if batch:
        yield batch


def _image_id(source_id: bytes, where: str) -> int:
    try:
        return int(source_id.decode())
    except (UnicodeDecodeError, ValueError):
        raise PipelineError(
            f"{where}: image/source_id {source_id!r} is not an integer COCO image id; rebuild the "
            "TFRecords with build-tfrecords"
        ) from None


def detect(
    detector: Detector,
    tfrecords: str,
    label_map: list[LabelMapEntry],
    *,
    batch_size: int = 1,
    max_images: int | None = None,
    progress: bool = True,
    expected_images: int | None = None,
) -> DetectionRun:
    """Run `detector` on every example of the `tfrecords` glob."""
    files = tfrecord_files(tfrecords)
    source_of = {entry.id: entry.source_id for entry in label_map}
    run = DetectionRun(results=[], image_ids=[])
    examples = _decoded_examples(files)
    if max_images is not None:
        examples = itertools.islice(examples, max_images)
        expected_images = min(expected_images or max_images, max_images)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=expected_images, desc="evaluate", unit="img", mininterval=1.0)
    try:
        for batch in _batches(examples, max(1, batch_size)):
            images = np.stack([example["image"] for example in batch])
            outputs = detector(images)
            missing = [key for key in _OUTPUT_KEYS if key not in outputs]
            if missing:
                raise PipelineError(
                    f"detector outputs lack {missing}; it must return the TF1 detection outputs "
                    f"{list(_OUTPUT_KEYS)}"
                )
            arrays = {key: np.asarray(outputs[key]) for key in _OUTPUT_KEYS}
            for i, example in enumerate(batch):
                image_id = _image_id(example["source_id"], tfrecords)
                run.image_ids.append(image_id)
                _append_results(
                    run, image_id, example, {k: v[i] for k, v in arrays.items()}, source_of
                )
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    if run.dropped_classes:
        log.warning(
            "dropped %d detections of model classes absent from the label map: %s",
            sum(run.dropped_classes.values()),
            dict(sorted(run.dropped_classes.items())),
        )
    return run


def _append_results(
    run: DetectionRun,
    image_id: int,
    example: Mapping[str, Any],
    outputs: Mapping[str, np.ndarray],
    source_of: Mapping[int, int],
) -> None:
    count = int(outputs["num_detections"])
    height, width = float(example["height"]), float(example["width"])
    boxes = outputs["detection_boxes"][:count].astype(np.float64)
    scores = outputs["detection_scores"][:count].astype(np.float64)
    classes = np.rint(outputs["detection_classes"][:count]).astype(np.int64)
    for (ymin, xmin, ymax, xmax), score, class_id in zip(boxes, scores, classes, strict=True):
        source_id = source_of.get(int(class_id))
        if source_id is None:
            run.dropped_classes[int(class_id)] += 1
            continue
        run.results.append(
            {
                "image_id": image_id,
                "category_id": source_id,
                "bbox": [
                    xmin * width,
                    ymin * height,
                    (xmax - xmin) * width,
                    (ymax - ymin) * height,
                ],
                "score": float(score),
            }
        )


def expected_image_count(tfrecords: str) -> int | None:
    """The image count from stats.json beside the TFRecords, for the progress bar."""
    stats = Path(tfrecords).parent / "stats.json"
    try:
        return int(json.loads(stats.read_text(encoding="utf-8"))["images"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
