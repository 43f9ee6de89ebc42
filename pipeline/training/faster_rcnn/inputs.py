"""Faster R-CNN training input: the shared augmented stream (`pipeline.training.inputs`), the
model's keep_aspect_ratio preprocessing, ground truth padded to a fixed count.

Targets are not assigned here (unlike SSD): the second stage's depend on the proposals, so
`losses.training_losses` assigns both stages' in the train step. Images of one batch may resize to
different sizes; they are zero-padded at the bottom/right to the batch's largest (TF1 needs
batch_size 1 or pad_to_max_dimension for that) and `image_shape` keeps each true size: boxes are
made absolute with it and proposals are clipped to it, as TF1's true_image_shapes.
"""

from __future__ import annotations

import tensorflow as tf

from pipeline.modeling.faster_rcnn.model import preprocess
from pipeline.modeling.faster_rcnn.spec import FasterRCNNSpec
from pipeline.training.inputs import InputSettings, augmented_examples

# TF1 input_reader.max_number_of_boxes default: boxes beyond it are dropped.
MAX_BOXES = 100


def build_dataset(
    settings: InputSettings,
    spec: FasterRCNNSpec,
    input_context: tf.distribute.InputContext | None = None,
    max_boxes: int = MAX_BOXES,
) -> tf.data.Dataset:
    """(images [B, H, W, 3] float32, {boxes [B, M, 4], classes [B, M], num_boxes [B],
    image_shape [B, 2]}) batches."""

    def prepare(
        image: tf.Tensor, boxes: tf.Tensor, classes: tf.Tensor
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        model_input, image_shape = preprocess(image[None], spec)
        boxes, classes = boxes[:max_boxes], classes[:max_boxes]
        count = tf.shape(boxes)[0]
        return model_input[0], {
            "boxes": tf.pad(boxes, [[0, max_boxes - count], [0, 0]]),
            "classes": tf.pad(classes, [[0, max_boxes - count]]),
            "num_boxes": count,
            "image_shape": image_shape[0],
        }

    dataset = augmented_examples(settings, spec.num_classes, input_context).map(
        prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    dataset = dataset.padded_batch(
        settings.batch_size,
        padded_shapes=(
            [None, None, 3],
            {"boxes": [max_boxes, 4], "classes": [max_boxes], "num_boxes": [], "image_shape": [2]},
        ),
        drop_remainder=settings.drop_remainder,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)
