"""Run with the TF1 reference venv's python (../shared/tf1_reference): which variables the TF1 OD
API's training graph L2-regularises, and with which weight. Prints JSON {variable: weight}.

    $VENV/bin/python regularized_weights.py TF1_REFERENCE_DIR PIPELINE_CONFIG

Each regularization loss is slim's `weight * sum(v^2) / 2`; the weight is recovered by evaluating
it on all-ones variables (sum(v^2) = size), so no value depends on initialisation.
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


def _variable_of(op):
    """The variable a regularization loss reads (slim names the loss after the layer's Keras
    attribute, e.g. .../Conv/kernel, not after the variable)."""
    stack, seen = [op], set()
    while stack:
        op = stack.pop()
        if op.type in ("VariableV2", "VarHandleOp"):
            return op.name
        if op.name not in seen:
            seen.add(op.name)
            stack.extend(tensor.op for tensor in op.inputs)
    raise ValueError(f"no variable behind {op.name}")


config = pipeline_pb2.TrainEvalPipelineConfig()
with open(sys.argv[2]) as handle:
    text_format.Merge(handle.read(), config)
graph = tf.Graph()
with graph.as_default():
    model = model_builder.build(config.model, is_training=True)
    height = config.model.ssd.image_resizer.fixed_shape_resizer.height
    width = config.model.ssd.image_resizer.fixed_shape_resizer.width
    images = tf.zeros([1, height, width, 3])
    prepared, shapes = model.preprocess(images)
    model.predict(prepared, shapes)
    losses = tf.compat.v1.losses.get_regularization_losses()
    by_op = {v.op.name: v for v in tf.compat.v1.global_variables()}
    with tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        for variable in by_op.values():
            if variable.dtype.base_dtype == tf.float32:
                variable.load(np.ones(variable.shape.as_list(), np.float32), session)
        values = session.run(losses)
    weights = {}
    for loss, value in zip(losses, values, strict=True):
        name = _variable_of(loss.op)
        size = int(np.prod(by_op[name].shape.as_list()))
        weights[name] = float(value) * 2.0 / size
json.dump(weights, sys.stdout, indent=1, sort_keys=True)
