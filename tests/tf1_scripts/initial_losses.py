"""Run with the TF1 reference venv's python (../shared/tf1_reference): the TF1 OD API's own
training losses of an SSD or Faster R-CNN (legacy trainer recipe: model_builder with is_training,
provide_groundtruth, predict, loss, slim regularization losses) on one batch, with the weights of
a TF1 checkpoint.
Prints JSON {loss name: value}.

    $VENV/bin/python initial_losses.py TF1_REFERENCE_DIR PIPELINE_CONFIG CHECKPOINT_PREFIX BATCH.npz

BATCH.npz: images uint8 [B, H, W, 3], boxes float32 [B, M, 4] normalised, classes int32 [B, M]
(1-based, 0 = padding), num_boxes int32 [B].
"""

import json
import sys

sys.path.insert(0, sys.argv[1])
import boot  # must precede tensorflow / object_detection

tf = boot.tf
import numpy as np  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from object_detection.builders import model_builder  # noqa: E402
from object_detection.protos import pipeline_pb2  # noqa: E402

config_path, checkpoint, batch_path = sys.argv[2:5]
config = pipeline_pb2.TrainEvalPipelineConfig()
with open(config_path) as handle:
    text_format.Merge(handle.read(), config)
num_classes = getattr(config.model, config.model.WhichOneof("model")).num_classes
data = np.load(batch_path)
images, boxes, classes, counts = data["images"], data["boxes"], data["classes"], data["num_boxes"]
graph = tf.Graph()
with graph.as_default():
    tf.compat.v1.train.get_or_create_global_step()
    model = model_builder.build(config.model, is_training=True)
    one_hot = np.eye(num_classes, dtype=np.float32)
    model.provide_groundtruth(
        [tf.constant(boxes[i, : counts[i]]) for i in range(len(images))],
        [tf.constant(one_hot[classes[i, : counts[i]] - 1]) for i in range(len(images))],
    )
    prepared, shapes = model.preprocess(tf.constant(images.astype(np.float32)))
    losses = model.loss(model.predict(prepared, shapes), shapes)
    regularization = tf.add_n([tf.constant(0.0), *tf.compat.v1.losses.get_regularization_losses()])
    fetches = {**losses, "regularization": regularization}
    fetches["total"] = tf.add_n(list(fetches.values()))
    names = {v.op.name: v for v in tf.compat.v1.global_variables() if v.op.name != "global_step"}
    with tf.compat.v1.Session() as session:
        tf.compat.v1.train.Saver(names).restore(session, checkpoint)
        values = session.run(fetches)
json.dump({k: float(v) for k, v in values.items()}, sys.stdout, indent=1, sort_keys=True)
