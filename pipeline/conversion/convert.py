"""`python -m pipeline convert`: a TF1 zoo SSD or Faster R-CNN directory -> a converted TF2 model
directory (Faster R-CNN: `pipeline.conversion.faster_rcnn.convert`).

Output (written atomically): `checkpoint/` (tf.train.Checkpoint(**model.checkpoint_items), the
layout Model Garden's task `initialize` restores), `model_spec.json`, a copy of
`pipeline.config`, `conversion_report.json` and `conversion_report.md`.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_directory, write_json
from pipeline.conversion.mapping import apply_plan, plan_mapping
from pipeline.conversion.report import build_report, render_markdown
from pipeline.errors import PipelineError
from pipeline.modeling.builder import CHECKPOINT_DIR, SPEC_FILE
from pipeline.modeling.spec import SSDSpec
from pipeline.tf1.checkpoint import TF1Checkpoint
from pipeline.tf1.faster_rcnn_config import is_faster_rcnn
from pipeline.tf1.graph_facts import choose_box_clipping
from pipeline.tf1.pipeline_config import read_pipeline_config, ssd_spec_from_config

REPORT_JSON = "conversion_report.json"
REPORT_MD = "conversion_report.md"
CONFIG_FILE = "pipeline.config"


def target_spec(source: SSDSpec, num_classes: int | None) -> SSDSpec:
    if num_classes is None or num_classes == source.num_classes:
        return source
    if num_classes <= 0:
        raise PipelineError(f"--num-classes: {num_classes} is not a positive class count")
    return source.with_num_classes(num_classes)


def convert(
    tf1_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    num_classes: int | None = None,
    verify_images: str | os.PathLike[str] | None = None,
    max_verify_images: int | None = None,
    progress: bool = True,
    box_clipping: str = "auto",
) -> dict[str, Any]:
    """Convert a TF1 zoo SSD directory; return the report (also written to out_dir).

    `num_classes` different from the checkpoint's leaves the class predictors fresh. With
    `verify_images`, the TF1 graph and the converted model are run on those images and the parity
    figures go into the report; a failed verification raises PipelineError after the output is
    written (so the report can be inspected). `box_clipping` ('auto' | 'before_nms' |
    'after_nms') is the OD API era of the post-processing; 'auto' reads it from the model's graph.
    """
    from pipeline.modeling.builder import build_ssd_model

    timings: dict[str, float] = {}
    tf1_dir = Path(tf1_dir)
    config_path = tf1_dir / CONFIG_FILE
    if is_faster_rcnn(read_pipeline_config(config_path)):
        from pipeline.conversion.faster_rcnn.convert import convert_faster_rcnn

        return convert_faster_rcnn(
            tf1_dir, Path(out_dir), config_path, num_classes, verify_images, max_verify_images,
            progress, (REPORT_JSON, REPORT_MD), box_clipping,
        )  # fmt: skip
    start = time.perf_counter()
    checkpoint = TF1Checkpoint(tf1_dir)
    checkpoint.require_data()
    clipping = choose_box_clipping(tf1_dir, checkpoint.prefix, box_clipping)
    source_spec = ssd_spec_from_config(config_path).with_box_clipping(clipping.value)
    spec = target_spec(source_spec, num_classes)
    timings["read_config_and_index"] = time.perf_counter() - start

    start = time.perf_counter()
    model = build_ssd_model(spec)
    timings["build_model"] = time.perf_counter() - start

    start = time.perf_counter()
    fresh = spec.num_classes != source_spec.num_classes
    plan = plan_mapping(model, spec, checkpoint, fresh, str(config_path))
    timings["map_variables"] = time.perf_counter() - start
    start = time.perf_counter()
    apply_plan(plan, checkpoint, progress)
    timings["read_and_assign"] = time.perf_counter() - start

    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as staging:
        start = time.perf_counter()
        saved = write_checkpoint(model, staging / CHECKPOINT_DIR)
        timings["write_checkpoint"] = time.perf_counter() - start
        write_json(staging / SPEC_FILE, spec.to_dict())
        shutil.copyfile(config_path, staging / CONFIG_FILE)
        parity = None
        if verify_images is not None:
            start = time.perf_counter()
            parity = verify(
                tf1_dir,
                model,
                spec,
                verify_images,
                max_verify_images,
                source_spec,
                checkpoint,
                progress,
            )
            timings["verify"] = time.perf_counter() - start
        tf2_total = sum(len(m.variables) for m in model.checkpoint_items.values())
        report = build_report(
            tf1_dir=str(tf1_dir),
            checkpoint_prefix=str(checkpoint.prefix),
            source_spec=source_spec,
            spec=spec,
            plan=plan,
            tf1_total=len(checkpoint.shapes),
            tf2_total=tf2_total,
            checkpoint_path=str(Path(CHECKPOINT_DIR) / Path(saved).name),
            timings=timings,
            parity=parity,
            box_clipping=clipping,
        )
        write_json(staging / REPORT_JSON, report)
        (staging / REPORT_MD).write_text(render_markdown(report), encoding="utf-8")
    if parity is not None and not parity.get("passed", False):
        raise PipelineError(
            f"{out_dir / REPORT_JSON}: parity with the TF1 graph FAILED (see `parity`); the "
            "converted model does not compute what the TF1 model computes"
        )
    return report


def write_checkpoint(model: Any, directory: Path) -> str:
    """tf.train.Checkpoint(**model.checkpoint_items) with a `checkpoint` state file, so that
    `tf.train.latest_checkpoint(directory)` (Model Garden's `initialize`) finds it."""
    import tensorflow as tf

    checkpoint = tf.train.Checkpoint(**model.checkpoint_items)
    manager = tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=1)
    return manager.save(checkpoint_number=0)


def verify(
    tf1_dir: Path,
    model: Any,
    spec: SSDSpec,
    images_dir: str | os.PathLike[str],
    max_images: int | None,
    source_spec: SSDSpec,
    checkpoint: TF1Checkpoint,
    progress: bool,
) -> dict[str, Any]:
    """Run the TF1 graph and the converted model on the same images and compare them
    (`pipeline.conversion.parity`).

    After a class-count change the class outputs cannot be compared; the check then runs on a
    model converted with the checkpoint's own class count, which shares every converted weight
    with the output model (only the fresh class predictors differ).
    """
    from pipeline.conversion import parity as parity_lib
    from pipeline.modeling.builder import build_ssd_model

    note = None
    if spec.num_classes != source_spec.num_classes:
        model = build_ssd_model(source_spec)
        apply_plan(plan_mapping(model, source_spec, checkpoint), checkpoint)
        spec = source_spec
        note = (
            f"verified on the {source_spec.num_classes}-class conversion of the same checkpoint; "
            "the output model's class predictors are fresh and not compared"
        )
    report = parity_lib.verify_conversion(
        tf1_dir, model, spec, images_dir=images_dir, max_images=max_images, progress=progress
    ).to_dict()
    if note:
        report["note"] = note
    return report
