"""Run with the TF1 reference venv's python (../shared/tf1_reference): the variables the TF1 OD API
builds for each pipeline.config, in one process. Prints JSON {config path: {name: shape}}.

    $VENV/bin/python list_variables.py TF1_REFERENCE_DIR CONFIG [CONFIG ...]

Each model is built as `make_zoo_dir.py --list-variables` builds it (`model_builder.build` with
is_training=False, preprocess + predict + postprocess on a [1, None, None, 3] input, and the
global step), each in its own graph.
"""

import json
import sys

sys.path.insert(0, sys.argv[1])
import boot  # must precede tensorflow / object_detection

tf = boot.tf
from google.protobuf import text_format  # noqa: E402
from object_detection.builders import model_builder  # noqa: E402
from object_detection.protos import pipeline_pb2  # noqa: E402

listing = {}
for path in sys.argv[2:]:
    config = pipeline_pb2.TrainEvalPipelineConfig()
    with open(path) as handle:
        text_format.Merge(handle.read(), config)
    with tf.Graph().as_default():
        model = model_builder.build(config.model, is_training=False)
        image = tf.compat.v1.placeholder(tf.float32, [1, None, None, 3])
        prep, shapes = model.preprocess(image)
        model.postprocess(model.predict(prep, shapes), shapes)
        tf.compat.v1.train.get_or_create_global_step()
        listing[path] = {v.op.name: v.shape.as_list() for v in tf.compat.v1.global_variables()}
json.dump(listing, sys.stdout)
