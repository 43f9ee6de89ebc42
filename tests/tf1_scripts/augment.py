"""Run with the TF1 reference venv's python (../shared/tf1_reference): apply PreprocessingSteps with
the TF1 OD API's own `preprocessor.preprocess` (the builder's functions and arguments), its random
values taken from the given draws through `preprocess_vars_cache`.

    $VENV/bin/python augment.py TF1_REFERENCE_DIR IN.npz OUT.npz [IN.npz OUT.npz ...]

IN.npz: image [H, W, 3] float32, boxes [N, 4], labels [N], and `spec`, a JSON string
{"steps": [PreprocessingStep text, ...], "cache": [[function_id, key, [array name, ...]], ...]};
key "*" stands for any key. A draw the steps ask for that is not given is an error, so TF1 never
draws a random value of its own; "uniform" names an array that `tf.random.uniform` returns instead
of drawing (random_jitter_boxes draws that way, outside the cache). Without "cache", TF1 draws its
own values and the steps run `repeat` times (OUT.npz then holds per run: height, width,
num_boxes, mean). OUT.npz: image, boxes, labels.
"""

import json
import sys

sys.path.insert(0, sys.argv[1])
import boot  # must precede tensorflow / object_detection

tf = boot.tf
import numpy as np  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from object_detection.builders import preprocessor_builder  # noqa: E402
from object_detection.core import preprocessor  # noqa: E402
from object_detection.core import standard_fields as fields  # noqa: E402
from object_detection.protos import preprocessor_pb2  # noqa: E402

UNIFORM = preprocessor.tf.random.uniform


class GivenDraws:
    """A PreprocessorCache whose values are the given draws."""

    def __init__(self, entries):
        self.entries = entries

    def get(self, function_id, key):
        for wanted in (str(key), "*"):
            if (function_id, wanted) in self.entries:
                return self.entries[(function_id, wanted)]
        raise KeyError(f"no draw given for {function_id!r} key {key!r}")

    def update(self, function_id, key, value):
        raise AssertionError("every draw is given")


def run(source, target):
    data = np.load(source)
    spec = json.loads(str(data["spec"]))
    entries = {}
    for function_id, key, names in spec.get("cache", []):
        values = tuple(tf.constant(data[name]) for name in names)
        entries[(function_id, str(key))] = values[0] if len(values) == 1 else values
    # The preprocessor's `tf` is tensorflow.compat.v1; each job sets (or undoes) the patch.
    if "uniform" in spec:
        given = tf.constant(data[spec["uniform"]])
        preprocessor.tf.random.uniform = lambda *args, **kwargs: given
    else:
        preprocessor.tf.random.uniform = UNIFORM
    steps = []
    for text in spec["steps"]:
        message = preprocessor_pb2.PreprocessingStep()
        text_format.Parse(text, message)
        steps.append(preprocessor_builder.build(message))
    tensors = {
        fields.InputDataFields.image: tf.constant(data["image"][None]),
        fields.InputDataFields.groundtruth_boxes: tf.constant(data["boxes"]),
        fields.InputDataFields.groundtruth_classes: tf.constant(data["labels"]),
        fields.InputDataFields.groundtruth_weights: tf.ones([len(data["labels"])], tf.float32),
    }
    out = preprocessor.preprocess(
        tensors,
        steps,
        func_arg_map=preprocessor.get_default_func_arg_map(include_label_weights=True),
        preprocess_vars_cache=GivenDraws(entries) if "cache" in spec else None,
    )
    fetches = {
        "image": out[fields.InputDataFields.image][0],
        "boxes": out[fields.InputDataFields.groundtruth_boxes],
        "labels": out[fields.InputDataFields.groundtruth_classes],
    }
    with tf.compat.v1.Session() as session:
        if "cache" in spec:
            np.savez(target, **session.run(fetches))
            return
        stats = {"height": [], "width": [], "num_boxes": [], "mean": []}
        for _ in range(int(spec["repeat"])):
            result = session.run(fetches)
            stats["height"].append(result["image"].shape[0])
            stats["width"].append(result["image"].shape[1])
            stats["num_boxes"].append(len(result["boxes"]))
            stats["mean"].append(float(result["image"].mean()))
        np.savez(target, **{k: np.array(v) for k, v in stats.items()})


for source, target in zip(sys.argv[2::2], sys.argv[3::2], strict=True):
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(0)
        run(source, target)
