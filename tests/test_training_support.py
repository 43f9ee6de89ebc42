"""Shared helpers for the training tests (no tests here).

- `small_spec()`: a small SSD MobileNet v2 spec (depth 0.35, 96x96, 3 classes) so runs stay fast.
- `install_model_standin()`: until `pipeline.modeling.builder` / `pipeline.modeling.preprocessing`
  exist, a tiny Model Garden RetinaNetModel with the same interface (TF1-ordered anchors, per-level
  cls/box outputs) stands in, inside the tests only.
- `write_converted(dir, spec)`: a converted-model directory (model_spec.json + checkpoint/).
- `write_tfrecords(path, coco_dir, ...)`: TFRecords with Model Garden's tf_example_decoder keys from
  the real COCO subset, classes folded onto 1..3.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras


def small_spec(num_classes: int = 3, image_size: int = 96):
    from pipeline.modeling.spec import (
        FeatureExtractorSpec,
        HardExampleMinerSpec,
        SSDSpec,
        TrainingSpec,
    )

    return SSDSpec(
        architecture="ssd_mobilenet_v2",
        num_classes=num_classes,
        image_size=(image_size, image_size),
        feature_extractor=FeatureExtractorSpec(
            depth_multiplier=0.35, min_depth=8, use_depthwise=True, l2_weight=4e-5
        ),
        training=TrainingSpec(
            hard_example_miner=HardExampleMinerSpec(
                num_hard_examples=3000,
                iou_threshold=0.99,
                loss_type="CLASSIFICATION",
                max_negatives_per_positive=3,
                min_negatives_per_image=3,
            )
        ),
    )


def _standin_build(spec):
    from official.vision.modeling import retinanet_model
    from official.vision.modeling.heads import dense_prediction_heads
    from official.vision.modeling.layers import detection_generator

    from pipeline.modeling import anchors

    levels = anchors.levels(spec)
    per_location = anchors.anchors_per_location(spec)
    height, width = spec.image_size

    def conv_bn(x, filters, name):
        x = tf_keras.layers.Conv2D(filters, 3, 2, "same", use_bias=False, name=f"{name}_conv")(x)
        x = tf_keras.layers.BatchNormalization(epsilon=1e-3, name=f"{name}_bn")(x)
        return tf_keras.layers.ReLU(6.0)(x)

    image = tf_keras.Input([height, width, 3])
    x = image
    for i in range(4):
        x = conv_bn(x, 8, f"stem{i}")
    features = {str(levels[0]): x}
    for level in levels[1:]:
        x = conv_bn(x, 8, f"level{level}")
        features[str(level)] = x
    backbone = tf_keras.Model(image, features, name="standin_backbone")
    head = dense_prediction_heads.RetinaNetHead(
        min_level=levels[0],
        max_level=levels[-1],
        num_classes=spec.num_class_slots,
        num_anchors_per_location={str(lv): a for lv, a in zip(levels, per_location, strict=True)},
        num_convs=0,
        num_filters=8,
        share_level_convs=False,
    )
    generator = detection_generator.MultilevelDetectionGenerator(
        apply_nms=True, pre_nms_top_k=100, max_num_detections=10, box_coder_weights=[10, 10, 5, 5]
    )
    boxes = {
        k: tf.constant(v * np.array([height, width] * 2 * (v.shape[-1] // 4)), tf.float32)
        for k, v in anchors.multilevel_anchor_boxes(spec).items()
    }
    return retinanet_model.RetinaNetModel(
        backbone,
        None,
        head,
        generator,
        anchor_boxes=boxes,
        min_level=levels[0],
        max_level=levels[-1],
    )


def _standin_preprocess(images, spec):
    resized = tf.compat.v1.image.resize_bilinear(
        tf.cast(images, tf.float32), spec.image_size, align_corners=False, half_pixel_centers=False
    )
    return resized * (2.0 / 255.0) - 1.0


def real_builder_available() -> bool:
    try:
        importlib.import_module("pipeline.modeling.builder")
        importlib.import_module("pipeline.modeling.preprocessing")
    except ImportError:
        return False
    return True


def install_model_standin() -> bool:
    """Install the stand-in modules when the real ones are missing; True if the stand-in is used."""
    if real_builder_available():
        return False
    builder = types.ModuleType("pipeline.modeling.builder")
    builder.build_ssd_model = _standin_build
    preprocess = types.ModuleType("pipeline.modeling.preprocessing")
    preprocess.preprocess = _standin_preprocess
    sys.modules["pipeline.modeling.builder"] = builder
    sys.modules["pipeline.modeling.preprocessing"] = preprocess
    return True


def build_model(spec):
    from pipeline.modeling.builder import build_ssd_model

    model = build_ssd_model(spec)
    model(tf.zeros([1, *spec.image_size, 3]), training=False)
    return model


def _keep_alive(model, seed: int) -> None:
    """Synthetic 'pre-trained' weights that keep activations alive (DESIGN.md's recipe): He-scaled
    kernels, gamma ~1, moving variance ~1, varied biases. Keras' fresh init (1e-5 head kernels,
    zero biases) leaves whole feature maps at zero, which hides gradient-flow bugs."""
    rng = np.random.default_rng(seed)
    for variable in model.variables:
        name, shape = variable.name, variable.shape.as_list()
        if "depthwise_kernel" in name:
            value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[:2])), shape)
        elif "kernel" in name:
            value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        elif "gamma" in name or "moving_variance" in name:
            value = rng.uniform(0.8, 1.2, shape)
        elif "beta" in name or "moving_mean" in name or "bias" in name:
            value = rng.normal(0, 0.1, shape)
        else:
            continue
        variable.assign(value.astype(np.float32))


def write_converted(directory: Path, spec, seed: int = 1) -> tuple[Path, tf_keras.Model]:
    """model_spec.json + checkpoint/ as `pipeline convert` writes them (synthetic weights)."""
    tf_keras.utils.set_random_seed(seed)
    model = build_model(spec)
    _keep_alive(model, seed)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model_spec.json").write_text(json.dumps(spec.to_dict()))
    tf.train.Checkpoint(**model.checkpoint_items).save(str(directory / "checkpoint" / "ckpt"))
    return directory, model


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def write_tfrecords(
    path: Path, coco_dir: Path, split: str = "train2017", limit: int = 24, num_classes: int = 3
) -> Path:
    annotations = json.loads((coco_dir / "annotations" / f"instances_{split}.json").read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in annotations["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    images = sorted(annotations["images"], key=lambda im: im["id"])[:limit]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image in images:
            anns = by_image.get(image["id"], [])
            w, h = image["width"], image["height"]
            feature = {
                "image/encoded": _bytes([(coco_dir / split / image["file_name"]).read_bytes()]),
                "image/source_id": _bytes([str(image["id"]).encode()]),
                "image/height": _ints([h]),
                "image/width": _ints([w]),
                "image/format": _bytes([b"jpeg"]),
                "image/object/bbox/xmin": _floats([a["bbox"][0] / w for a in anns]),
                "image/object/bbox/xmax": _floats(
                    [(a["bbox"][0] + a["bbox"][2]) / w for a in anns]
                ),
                "image/object/bbox/ymin": _floats([a["bbox"][1] / h for a in anns]),
                "image/object/bbox/ymax": _floats(
                    [(a["bbox"][1] + a["bbox"][3]) / h for a in anns]
                ),
                "image/object/class/label": _ints(
                    [a["category_id"] % num_classes + 1 for a in anns]
                ),
                "image/object/is_crowd": _ints([a["iscrowd"] for a in anns]),
                "image/object/area": _floats([a["area"] for a in anns]),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
    return path


def train_params(**overrides):
    """A `train` section as params.yaml holds it (composed conf/train/finetune.yaml)."""
    from omegaconf import OmegaConf

    base = {
        "optimizer": {"type": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": False},
        "schedule": {"type": "constant", "warmup_steps": 0, "warmup_learning_rate": 0.0},
        "freeze": {
            "name": "backbone",
            "modules": ["backbone"],
            "patterns": [],
            "trainable_patterns": [],
            "freeze_batch_norm": True,
        },
        "steps": 6,
        "batch_size": 4,
        "seed": 0,
        "gradient_clip_norm": 10.0,
        "l2_weight_decay": None,
        "ema_decay": None,
        "num_classes": None,
        "augmentation": {"random_horizontal_flip": True},
        "shuffle_buffer_size": 64,
        "cache_decoded_max_mb": 64,
        "skip_crowd": False,
        "log_every_steps": 1,
        "checkpoint_every_steps": 3,
        "validation_every_steps": 0,
        "runtime": {"distribution_strategy": "one_device", "num_gpus": 0},
    }
    config = OmegaConf.create(base)
    for key, value in overrides.items():
        OmegaConf.update(config, key, value, merge=False)
    return config
