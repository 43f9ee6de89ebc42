"""TF1-faithful training input: TFRecords -> (preprocessed images, SSD targets).

`augmented_examples` is the stream all families share; `build_dataset` finishes it for SSD
(Faster R-CNN: `pipeline.training.faster_rcnn.inputs`).

Per example, in TF1's order (`inputs.transform_input_data`): decode (Model Garden's
`TfExampleDecoder`, the keys the data stage writes), augmentation (the pipeline.config's
`data_augmentation_options` in its order, as TF1's preprocessor computes them:
`pipeline.training.augmentation`), the model's preprocessing (TF1 legacy bilinear resize to the
input size, then `x * 2/255 - 1`), then target assignment against the TF1-ordered anchors. Model
Garden's `retinanet_input.Parser` is not used: it normalises with ImageNet mean/std, pads to keep
the aspect ratio and labels Model Garden's own multi-level anchors.

The stream is a pure function of its position: files are read in sorted order, shuffled with a
fixed seed and every random choice is a stateless function of (seed, example index). A resumed run
skips the examples the checkpointed steps consumed and then sees exactly what an uninterrupted run
would have seen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import tensorflow as tf
from official.vision.dataloaders import tf_example_decoder

from pipeline.errors import PipelineError
from pipeline.training import augmentation as augmentation_lib
from pipeline.training.targets import TF1TargetAssigner

PreprocessFn = Callable[[tf.Tensor], tf.Tensor]
"""uint8 [1, H, W, 3] -> float32 [1, h, w, 3] model input (resize + value scaling): the model's
`pipeline.modeling.preprocessing.preprocess` bound to its spec."""


@dataclasses.dataclass(frozen=True)
class InputSettings:
    file_pattern: str
    batch_size: int  # per input pipeline (per replica times replicas fed by this pipeline)
    is_training: bool = True
    shuffle_buffer_size: int = 1024
    seed: int = 0
    # TF1 data_augmentation_options, applied in order when is_training.
    augmentation: tuple[augmentation_lib.Step, ...] = augmentation_lib.DEFAULT_STEPS
    skip_crowd: bool = False  # TF1 trains on crowd boxes too
    skip_examples: int = 0  # examples already consumed (resume)
    drop_remainder: bool = True
    # Keep decoded images in memory when the TFRecords total at most this many bytes (0: never).
    cache_decoded_max_bytes: int = 0


def list_files(pattern: str) -> list[str]:
    parts = [part.strip() for part in pattern.split(",") if part.strip()]
    files = sorted({path for part in parts for path in tf.io.gfile.glob(part)})
    if not files:
        raise PipelineError(
            f"{pattern}: no TFRecord files match; build them with `python -m pipeline "
            "build-tfrecords` or fix the --train-tfrecords/--val-tfrecords glob"
        )
    return files


def augmented_examples(
    settings: InputSettings,
    num_classes: int,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """(image uint8 [H, W, 3], boxes [G, 4] normalized, classes [G]) per example, augmented:
    the stream every family's input pipeline shares (shuffle, resume skip, sharding, seeds)."""
    files = list_files(settings.file_pattern)
    decoder = tf_example_decoder.TfExampleDecoder()
    records = tf.data.Dataset.from_tensor_slices(files)
    records = records.interleave(
        tf.data.TFRecordDataset, cycle_length=1, num_parallel_calls=1, deterministic=True
    )

    def decode(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        decoded = decoder.decode(serialized)
        boxes = tf.cast(decoded["groundtruth_boxes"], tf.float32)
        classes = tf.cast(decoded["groundtruth_classes"], tf.int32)
        if settings.skip_crowd:
            keep = tf.logical_not(tf.cast(decoded["groundtruth_is_crowd"], tf.bool))
            boxes = tf.boolean_mask(boxes, keep)
            classes = tf.boolean_mask(classes, keep)
        return decoded["image"], boxes, classes

    cache = settings.cache_decoded_max_bytes > 0 and (
        sum(tf.io.gfile.stat(f).length for f in files) <= settings.cache_decoded_max_bytes
    )
    if cache:
        # JPEG decoding dominates the input cost on small CPUs; small datasets keep the decoded
        # images in memory after the first epoch (augmentation still runs every time).
        records = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE).cache()
    if settings.is_training:
        records = records.shuffle(
            settings.shuffle_buffer_size, seed=settings.seed, reshuffle_each_iteration=True
        ).repeat()
    records = records.enumerate()
    if settings.skip_examples:
        records = records.skip(settings.skip_examples)
    if input_context is not None and input_context.num_input_pipelines > 1:
        # Every pipeline (one per worker) reads the same seeded stream and keeps every n-th
        # example: together their batches are exactly the one-pipeline global batch, so n workers
        # train as one (sharding files instead would change which examples meet in a batch).
        pipelines = input_context.num_input_pipelines
        pipeline_id = input_context.input_pipeline_id
        records = records.filter(lambda index, _: index % pipelines == pipeline_id)

    def parse(index: tf.Tensor, element: Any) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        image, boxes, classes = element if cache else decode(element)
        tf.debugging.assert_less_equal(
            classes,
            num_classes,
            message=f"TFRecord class/label exceeds the model's num_classes ({num_classes})",
        )
        if settings.is_training and settings.augmentation:
            seed = tf.stack([tf.constant(settings.seed, tf.int64), index])
            image, boxes, classes = augmentation_lib.augment(
                settings.augmentation, seed, image, boxes, classes
            )
        return image, boxes, classes

    return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def build_dataset(
    settings: InputSettings,
    preprocess: PreprocessFn,
    assigner: TF1TargetAssigner,
    num_classes: int,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """SSD: (images [B, h, w, 3] float32, labels dict of [B, N, ...]) batches."""

    def prepare(
        image: tf.Tensor, boxes: tf.Tensor, classes: tf.Tensor
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        return preprocess(image[None])[0], assigner(boxes, classes)

    dataset = augmented_examples(settings, num_classes, input_context).map(
        prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    dataset = dataset.batch(settings.batch_size, drop_remainder=settings.drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)
