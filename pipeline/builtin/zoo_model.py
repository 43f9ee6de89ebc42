"""The recipe of the built-in zoo model: a small SSD MobileNet v2 in genuine TF1 zoo format.

`builtin://ssd_mobilenet_v2_tiny_builtin` (conf/zoo/) resolves to
`pipeline/builtin/assets/<name>.tar.gz`. That tarball is made here, once, offline, with the
project's own stages, and committed:

1. `pipeline_config_text`: the TF1 text-format pipeline.config (3 shape classes, 128x128 input,
   depth multiplier 0.35, anchors for 128 px images).
2. A TF1 zoo directory holding freshly initialised weights (the Keras initialisers of the TF2 model,
   exported under their TF1 names), converted with `pipeline.conversion` like any zoo model.
3. Pre-training from scratch on the `plain` shapes domain (`pipeline.builtin.shapes` ->
   `pipeline.datasets` TFRecords -> `pipeline.training`, every layer and the BatchNorm statistics
   trained).
4. The trained TF2 weights exported back to TF1 variable names (`tf1_weights`), written as a TF1
   zoo directory by `pipeline.tf1.graph_builder` (name-based checkpoint, `checkpoint` file,
   model.ckpt.meta inference graph, frozen_inference_graph.pb, pipeline.config), evaluated, and
   packed into a deterministic tarball with one top-level folder like the real zoo tarballs.

The proof that conversion works on the real zoo architectures comes from the real TF1 graphs in
the test fixtures; this model only makes the default pipeline run offline with meaningful numbers.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import logging
import os
import re
import tarfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

NAME = "ssd_mobilenet_v2_tiny_builtin"
# Fixed metadata of every tarball member, so the same files give the same bytes.
_TAR_MTIME = 1_546_300_800  # 2019-01-01T00:00:00Z
_TAR_MODE_FILE = 0o644
_TAR_MODE_DIR = 0o755


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """What the pipeline.config describes."""

    image_size: int = 128
    depth_multiplier: float = 0.35
    min_depth: int = 8
    # Anchors: 6 feature maps of 8x8, 4x4, 2x2, 1x1, 1x1, 1x1 at 128 px. Shapes are roughly
    # square, so no 3:1 anchors; every map gets the interpolated-scale anchor (4 per location).
    min_scale: float = 0.1
    max_scale: float = 0.8
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5)
    reduce_boxes_in_lowest_layer: bool = False
    # The OD API's evaluation setting (the exported zoo graphs use 0.3): keeps low-score
    # detections so COCO AP sees the whole precision/recall curve.
    score_threshold: float = 1e-8
    # A short training needs BatchNorm moving statistics that follow the weights (zoo: 0.9997).
    batch_norm_decay: float = 0.99
    l2_weight: float = 4e-5
    class_prediction_bias_init: float = 0.0


@dataclasses.dataclass(frozen=True)
class PretrainSettings:
    """How the weights are made (recorded in the pipeline.config's train_config)."""

    steps: int = 3000
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    gradient_clip_norm: float = 10.0
    seed: int = 0
    init_seed: int = 0
    # The `plain` shapes domain (conf/shapes/plain.yaml).
    shapes_seed: int = 7
    train_images: int = 2000
    val_images: int = 200


@dataclasses.dataclass(frozen=True)
class BuiltinZooSettings:
    name: str = NAME
    model: ModelSettings = ModelSettings()
    pretrain: PretrainSettings = PretrainSettings()


# ---- 1. pipeline.config --------------------------------------------------------------------

_HEADER = """\
# TF1 Object Detection API pipeline.config of the built-in zoo model `{name}`: SSD MobileNet v2,
# depth multiplier {depth_multiplier}, {image_size}x{image_size} input, 3 classes (1 circle,
# 2 square, 3 triangle: the classes of the project's built-in shapes dataset). Pre-trained from
# scratch on the `plain` shapes domain ({train_images} images, {num_steps} steps of batch
# {batch_size}) by `python -m pipeline make-builtin-zoo`; see docs/builtin_model.md.
"""

_TRAIN_CONFIG = """\
  batch_size: {batch_size}
  data_augmentation_options {{
    random_horizontal_flip {{
    }}
  }}
  optimizer {{
    adam_optimizer {{
      learning_rate {{
        cosine_decay_learning_rate {{
          learning_rate_base: {learning_rate}
          total_steps: {num_steps}
          warmup_learning_rate: 0.0
          warmup_steps: {warmup_steps}
        }}
      }}
    }}
    use_moving_average: false
  }}
  gradient_clipping_by_norm: {gradient_clip_norm}
  num_steps: {num_steps}
"""


def pipeline_config_text(settings: BuiltinZooSettings = BuiltinZooSettings()) -> str:
    """The TF1 text-format pipeline.config of the built-in model (written by the TF1 graph
    builder's generator, with the pre-training recorded in train_config)."""
    from pipeline.tf1 import graph_builder
    from pipeline.tf1.graph_builder import SSDGraphConfig, TrainEvalSections, config_number

    model, pretrain = settings.model, settings.pretrain
    config = SSDGraphConfig(
        num_classes=3,
        image_size=(model.image_size, model.image_size),
        depth_multiplier=model.depth_multiplier,
        min_depth=model.min_depth,
        min_scale=model.min_scale,
        max_scale=model.max_scale,
        aspect_ratios=model.aspect_ratios,
        reduce_boxes_in_lowest_layer=model.reduce_boxes_in_lowest_layer,
        score_threshold=model.score_threshold,
        batch_norm_decay=model.batch_norm_decay,
        l2_weight=model.l2_weight,
        class_prediction_bias_init=model.class_prediction_bias_init,
    )
    train_config = _TRAIN_CONFIG.format(
        batch_size=pretrain.batch_size,
        learning_rate=config_number(pretrain.learning_rate),
        num_steps=pretrain.steps,
        warmup_steps=pretrain.warmup_steps,
        gradient_clip_norm=config_number(pretrain.gradient_clip_norm),
    )
    header = _HEADER.format(
        name=settings.name,
        depth_multiplier=config_number(model.depth_multiplier),
        image_size=model.image_size,
        train_images=pretrain.train_images,
        num_steps=pretrain.steps,
        batch_size=pretrain.batch_size,
    )
    sections = TrainEvalSections(
        train_config=train_config,
        label_map="shapes_label_map.pbtxt",
        train_record="shapes_plain_train.record",
        val_record="shapes_plain_val.record",
        eval_examples=pretrain.val_images,
        metrics_set="coco_detection_metrics",
    )
    return graph_builder.pipeline_config_text(
        config, sections, header=header, override_base_feature_extractor_hyperparams=True
    )


# ---- 2./4. TF1 weights <-> TF2 model -------------------------------------------------------


def tf1_weights(model: Any, *, tolerance: float = 0.0) -> dict[str, np.ndarray]:
    """{TF1 variable name: value} of a model built by `pipeline.modeling.build_ssd_model`.

    Variables a TF1 layer does not have (BatchNorm without scale/center) are left out; their TF2
    counterparts must still hold the value that reproduces their absence (training could have
    moved them), otherwise the export would not compute what the TF2 model computes.
    """
    from pipeline.modeling.tf1_layout import model_records

    weights: dict[str, np.ndarray] = {}
    for record in model_records(model):
        for name, variable, implied in record.variables():
            value = np.asarray(variable.numpy(), dtype=np.float32)
            if implied is not None:
                drift = float(np.max(np.abs(value - implied))) if value.size else 0.0
                if drift > tolerance:
                    raise PipelineError(
                        f"{name}: not a TF1 variable (implied {implied}) but the TF2 model holds "
                        f"values up to {drift:g} away from it; freeze it during training"
                    )
                continue
            if name in weights:
                raise RuntimeError(f"{name}: two TF2 variables map to it")
            weights[name] = value
    return weights


def initial_weights(spec: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Fresh weights for `spec` under TF1 names: the TF2 model's own initialisers, seeded."""
    import tensorflow as tf

    from pipeline.modeling.builder import build_ssd_model

    tf.keras.utils.set_random_seed(seed)
    return tf1_weights(build_ssd_model(spec))


def graph_config(spec: Any) -> Any:
    """The `pipeline.tf1.graph_builder` description of the TF1 graph an SSDSpec describes."""
    from pipeline.tf1.graph_builder import SSDGraphConfig

    if spec.architecture != "ssd_mobilenet_v2" or spec.box_predictor.use_depthwise:
        raise PipelineError(
            f"pipeline.config: {spec.architecture} (depthwise box predictor "
            f"{spec.box_predictor.use_depthwise}) cannot be written by the TF1 graph builder; "
            "the built-in model is an ssd_mobilenet_v2 with convolutional box predictors"
        )
    anchors, post = spec.anchors, spec.post_processing
    if anchors.scales or anchors.anchor_strides or anchors.anchor_offsets:
        raise PipelineError(
            "pipeline.config: explicit anchor scales/strides/offsets are not supported by the "
            "TF1 graph builder; use min_scale/max_scale"
        )
    return SSDGraphConfig(
        num_classes=spec.num_classes,
        image_size=tuple(spec.image_size),
        depth_multiplier=spec.feature_extractor.depth_multiplier,
        min_depth=spec.feature_extractor.min_depth,
        use_depthwise=spec.feature_extractor.use_depthwise,
        box_predictor_kernel_size=spec.box_predictor.kernel_size,
        num_layers=anchors.num_layers,
        min_scale=anchors.min_scale,
        max_scale=anchors.max_scale,
        aspect_ratios=tuple(anchors.aspect_ratios),
        interpolated_scale_aspect_ratio=anchors.interpolated_scale_aspect_ratio,
        reduce_boxes_in_lowest_layer=anchors.reduce_boxes_in_lowest_layer,
        box_coder_scales=tuple(spec.box_coder.scales),
        score_threshold=post.score_threshold,
        iou_threshold=post.iou_threshold,
        max_detections_per_class=post.max_detections_per_class,
        max_total_detections=post.max_total_detections,
        logit_scale=post.logit_scale,
        batch_norm_epsilon=spec.feature_extractor.batch_norm_epsilon,
        batch_norm_decay=spec.feature_extractor.batch_norm_decay,
        l2_weight=spec.feature_extractor.l2_weight,
        class_prediction_bias_init=spec.box_predictor.class_prediction_bias_init,
    )


def write_tf1_zoo_dir(
    out_dir: str | os.PathLike[str],
    config_text: str,
    weights: Mapping[str, np.ndarray],
    global_step: int = 0,
) -> Path:
    """A complete TF1 zoo directory (checkpoint, graphs, `config_text` as pipeline.config).

    `weights` are the model's TF1 variables; `global_step` (the training steps that made them)
    is stored like the zoo checkpoints store it.

    The graph comes from `pipeline.tf1.graph_builder` built for the spec `config_text` describes;
    the builder's own pipeline.config is replaced by `config_text` (same model, plus the
    train_config that says how the weights were made).
    """
    from pipeline.atomic import atomic_file
    from pipeline.tf1.graph_builder import write_zoo_dir

    spec = spec_from_config_text(config_text)
    values = {**weights, "global_step": np.asarray(global_step, dtype=np.int64)}
    out = write_zoo_dir(out_dir, graph_config(spec), weights=values, frozen=True)
    with atomic_file(out / "pipeline.config") as handle:
        handle.write(config_text)
    _reserialize_deterministically(out / "frozen_inference_graph.pb")
    return out


def _reserialize_deterministically(graph_path: Path) -> None:
    """Protobuf writes map fields (NodeDef.attr) in hash order unless asked not to; the same
    graph must give the same bytes for the tarball to be reproducible."""
    import tensorflow as tf

    from pipeline.atomic import atomic_file

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_path.read_bytes())
    with atomic_file(graph_path, "wb") as handle:
        handle.write(graph_def.SerializeToString(deterministic=True))


def spec_from_config_text(text: str) -> Any:
    """The SSDSpec a pipeline.config text describes (parsed like a zoo model's file)."""
    from google.protobuf import text_format

    from pipeline.tf1.pipeline_config import ssd_spec_from_config
    from pipeline.tf1.protos.pipeline_subset import message_class

    message = message_class("TrainEvalPipelineConfig")()
    text_format.Parse(text, message, allow_unknown_field=True)
    return ssd_spec_from_config(message, source="built-in pipeline.config")


# ---- packing -------------------------------------------------------------------------------


def write_tarball(
    zoo_dir: str | os.PathLike[str], out_path: str | os.PathLike[str], top: str
) -> str:
    """Pack `zoo_dir`'s files under one top-level folder `top/`, deterministically; return the
    sha256 of the tarball.

    Same files -> same bytes: members sorted by name, fixed mtime, uid/gid 0 and no owner names,
    fixed modes, ustar headers (no pax timestamps), gzip header without name or mtime.
    """
    from pipeline.atomic import atomic_file

    zoo_dir = Path(zoo_dir)
    files = sorted(p for p in zoo_dir.iterdir() if p.is_file())
    if not files:
        raise PipelineError(f"{zoo_dir}: nothing to pack")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(_tar_info(f"{top}/", tarfile.DIRTYPE, 0, _TAR_MODE_DIR))
        for path in files:
            data = path.read_bytes()
            info = _tar_info(f"{top}/{path.name}", tarfile.REGTYPE, len(data), _TAR_MODE_FILE)
            tar.addfile(info, io.BytesIO(data))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, compresslevel=9, mtime=0) as gz:
        gz.write(raw.getvalue())
    payload = packed.getvalue()
    with atomic_file(out_path, "wb") as handle:
        handle.write(payload)
    return hashlib.sha256(payload).hexdigest()


def _tar_info(name: str, kind: bytes, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name.rstrip("/") if kind == tarfile.DIRTYPE else name)
    info.type = kind
    info.size = size
    info.mode = mode
    info.mtime = _TAR_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


_SHA256_LINE = re.compile(r"^sha256:.*$", re.M)


def pin_sha256(zoo_yaml: str | os.PathLike[str], digest: str) -> None:
    """Rewrite the `sha256:` line of a conf/zoo/*.yaml (comments and other keys kept)."""
    from pipeline.atomic import atomic_file

    path = Path(zoo_yaml)
    text = path.read_text(encoding="utf-8")
    if not _SHA256_LINE.search(text):
        raise PipelineError(f"{path}: no `sha256:` line to pin; add `sha256: null`")
    with atomic_file(path) as handle:
        handle.write(_SHA256_LINE.sub(f"sha256: {digest}", text, count=1))


# ---- 3. pre-training with the project's stages ---------------------------------------------


def pretrain_params(pretrain: PretrainSettings) -> dict[str, Any]:
    """The `train` section (as conf/train composes it) of the pre-training run: Adam with a
    warmed-up cosine schedule, every layer trained and the BatchNorm statistics updated."""
    return {
        "optimizer": {"type": "adam", "learning_rate": pretrain.learning_rate},
        "schedule": {
            "type": "cosine",
            "warmup_steps": min(pretrain.warmup_steps, max(pretrain.steps - 1, 0)),
            "warmup_learning_rate": 0.0,
            "alpha": 0.0,
        },
        "freeze": {
            "name": "none",
            "modules": [],
            "patterns": [],
            "trainable_patterns": [],
            "freeze_batch_norm": False,
        },
        "steps": pretrain.steps,
        "batch_size": pretrain.batch_size,
        "seed": pretrain.seed,
        "gradient_clip_norm": pretrain.gradient_clip_norm,
        "l2_weight_decay": None,  # the pipeline.config's conv_hyperparams weight
        "ema_decay": None,
        "num_classes": None,
        "augmentation": {"from_pipeline_config": True, "options": [], "skip": []},
        "shuffle_buffer_size": pretrain.train_images,
        "skip_crowd": False,
        "log_every_steps": max(1, min(50, pretrain.steps)),
        "checkpoint_every_steps": pretrain.steps,
        "validation_every_steps": 0,
        "runtime": {"distribution_strategy": "one_device", "num_gpus": 0},
    }


@dataclasses.dataclass
class BuildResult:
    tarball: Path
    sha256: str
    size_bytes: int
    report: dict[str, Any]


def shapes_dataset(out: Path, domain: str, seed: int, splits: Mapping[str, int], size: int) -> Path:
    """Built-in shapes images + COCO json, then TFRecords per split (`<out>/tfrecords/<split>`)."""
    from pipeline.builtin.shapes import ShapesConfig, write_dataset
    from pipeline.datasets import BuildConfig, build_tfrecords

    config = ShapesConfig(domain=domain, image_size=size, seed=seed)
    write_dataset(out / "coco", dict(splits), config, progress=False)
    for split in splits:
        build_tfrecords(
            BuildConfig(
                annotations=out / "coco" / "annotations" / f"instances_{split}.json",
                images=out / "coco" / split,
                out=out / "tfrecords" / split,
                shards=2 if split == "train" else 1,
                prefix=split,
                progress=False,
            )
        )
    return out


def tfrecords_glob(dataset: Path, split: str) -> str:
    return str(dataset / "tfrecords" / split / f"{split}-*.tfrecord")


def trained_weights(converted_dir: Path, train_dir: Path) -> tuple[dict[str, np.ndarray], int]:
    """The TF1 weights of the newest training checkpoint in `train_dir` and its step."""
    import tensorflow as tf

    from pipeline.modeling.builder import load_converted
    from pipeline.training.restore import restore_model

    model, _ = load_converted(converted_dir)
    report = restore_model(model, str(train_dir / "checkpoint"))
    if report.reinitialized or report.not_in_checkpoint:
        raise PipelineError(f"{train_dir}: the training checkpoint does not hold the whole model")
    reader = tf.train.load_checkpoint(report.checkpoint)
    step = int(reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE"))
    return tf1_weights(model), step


def evaluate_converted(converted_dir: Path, dataset: Path, out: Path) -> dict[str, Any]:
    """COCO metrics of a converted model on a shapes dataset's val TFRecords."""
    from pipeline.evaluation import evaluate_model

    evaluation = evaluate_model(
        converted_dir, tfrecords_glob(dataset, "val"), out, batch_size=8, progress=False
    )
    return {
        "metrics": {k: round(float(v), 4) for k, v in evaluation.metrics.items()},
        "per_category_ap": {k: round(float(v), 4) for k, v in evaluation.per_category_ap.items()},
        "num_images": evaluation.num_images,
    }


def build_builtin_zoo(
    out_dir: str | os.PathLike[str],
    work_dir: str | os.PathLike[str],
    settings: BuiltinZooSettings = BuiltinZooSettings(),
    *,
    verify_images: int = 8,
    textured_val_images: int = 120,
    textured_seed: int = 2026,
) -> BuildResult:
    """Run the whole recipe (module docstring) in `work_dir`; write `<out_dir>/<name>.tar.gz`.

    The report (timings, pre-training losses, parity with the TF1 graph, COCO AP on the plain and
    the textured val sets) goes to `<work_dir>/build_report.json`.
    """
    from pipeline.atomic import write_json
    from pipeline.conversion.convert import convert
    from pipeline.training.finetune import finetune

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    pretrain = settings.pretrain
    size = settings.model.image_size
    timings: dict[str, float] = {}

    def step(name: str) -> None:
        timings[name] = round(time.perf_counter() - started, 2)
        log.info("built-in zoo: %s done (%.1fs)", name, timings[name])

    started = time.perf_counter()
    plain = shapes_dataset(
        work / "shapes_plain",
        "plain",
        pretrain.shapes_seed,
        {"train": pretrain.train_images, "val": pretrain.val_images},
        size,
    )
    step("plain_dataset")

    started = time.perf_counter()
    config_text = pipeline_config_text(settings)
    spec = spec_from_config_text(config_text)
    write_tf1_zoo_dir(work / "tf1_initial", config_text, initial_weights(spec, pretrain.init_seed))
    convert(work / "tf1_initial", work / "converted_initial", progress=False)
    step("initial_tf1_and_convert")

    started = time.perf_counter()
    training = finetune(
        pretrain_params(pretrain),
        work / "converted_initial",
        tfrecords_glob(plain, "train"),
        work / "pretrain",
        restart=True,
        source="pipeline.builtin.zoo_model.pretrain_params",
        export=False,
    )
    step("pretrain")

    started = time.perf_counter()
    weights, global_step = trained_weights(work / "converted_initial", work / "pretrain")
    zoo_dir = write_tf1_zoo_dir(work / "tf1" / settings.name, config_text, weights, global_step)
    step("export_tf1")

    started = time.perf_counter()
    conversion = convert(
        zoo_dir,
        work / "converted",
        verify_images=plain / "coco" / "val",
        max_verify_images=verify_images,
        progress=False,
    )
    step("convert_and_parity")

    started = time.perf_counter()
    textured = shapes_dataset(
        work / "shapes_textured", "textured", textured_seed, {"val": textured_val_images}, size
    )
    evaluation = {
        "plain_val": evaluate_converted(work / "converted", plain, work / "eval_plain"),
        "textured_val": evaluate_converted(work / "converted", textured, work / "eval_textured"),
    }
    step("evaluate")

    tarball = Path(out_dir) / f"{settings.name}.tar.gz"
    digest = write_tarball(zoo_dir, tarball, settings.name)
    report = {
        "name": settings.name,
        "settings": dataclasses.asdict(settings),
        "tarball": str(tarball),
        "sha256": digest,
        "size_bytes": tarball.stat().st_size,
        "pretrain": {
            "steps": training.summary["steps"],
            "wall_seconds": training.summary["wall_seconds"],
            "images_per_second": training.summary["images_per_second"],
            "final": training.summary["final"],
        },
        "parity": {k: v for k, v in conversion["parity"].items() if k != "images"},
        "evaluation": evaluation,
        "timings_seconds": timings,
    }
    write_json(work / "build_report.json", report)
    return BuildResult(tarball, digest, report["size_bytes"], report)
