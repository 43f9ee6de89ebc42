"""Convert a TF1 Faster R-CNN directory: the Faster R-CNN branch of `pipeline.conversion.convert`.

Writes the same converted-directory layout as SSD (`checkpoint/` =
tf.train.Checkpoint(**model.checkpoint_items), `model_spec.json` with `family: faster_rcnn`,
`pipeline.config`, `conversion_report.{json,md}`), atomically. The TF1 OD API era of both stages'
NMS (boxes clipped before or after it) is chosen as for SSD (`graph_facts.choose_box_clipping`:
read from the directory's graph, else the TF version, else the TF >= 1.9 behaviour) and recorded
in model_spec.json and the report.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_directory, write_json
from pipeline.conversion.faster_rcnn.mapping import model_variables, plan_faster_rcnn_mapping
from pipeline.conversion.mapping import apply_plan
from pipeline.conversion.report import build_report, render_markdown
from pipeline.errors import PipelineError
from pipeline.modeling.builder import CHECKPOINT_DIR, SPEC_FILE
from pipeline.modeling.faster_rcnn.spec import FasterRCNNSpec
from pipeline.tf1.checkpoint import TF1Checkpoint
from pipeline.tf1.faster_rcnn_config import faster_rcnn_spec_from_config
from pipeline.tf1.graph_facts import choose_box_clipping

TARGET_MODEL = "official.vision.modeling.maskrcnn_model.MaskRCNNModel (masks off)"


def convert_faster_rcnn(
    tf1_dir: Path,
    out_dir: Path,
    config_path: Path,
    num_classes: int | None,
    verify_images: str | os.PathLike[str] | None,
    max_verify_images: int | None,
    progress: bool,
    report_names: tuple[str, str],
    box_clipping: str = "auto",
) -> dict[str, Any]:
    """See `pipeline.conversion.convert.convert`."""
    from pipeline.conversion.convert import write_checkpoint
    from pipeline.modeling.faster_rcnn.model import build_faster_rcnn_model

    timings: dict[str, float] = {}
    start = time.perf_counter()
    config_spec = faster_rcnn_spec_from_config(config_path)
    checkpoint = TF1Checkpoint(tf1_dir)
    checkpoint.require_data()
    clipping = choose_box_clipping(tf1_dir, checkpoint.prefix, box_clipping)
    source_spec = config_spec.with_box_clipping(clipping.value)
    spec = source_spec
    if num_classes is not None and num_classes != source_spec.num_classes:
        if num_classes <= 0:
            raise PipelineError(f"--num-classes: {num_classes} is not a positive class count")
        spec = source_spec.with_num_classes(num_classes)
    timings["read_config_and_index"] = time.perf_counter() - start

    start = time.perf_counter()
    model = build_faster_rcnn_model(spec)
    timings["build_model"] = time.perf_counter() - start
    start = time.perf_counter()
    fresh = spec.num_classes != source_spec.num_classes
    plan = plan_faster_rcnn_mapping(model, spec, checkpoint, fresh, str(config_path))
    timings["map_variables"] = time.perf_counter() - start
    start = time.perf_counter()
    apply_plan(plan, checkpoint, progress)
    timings["read_and_assign"] = time.perf_counter() - start

    report_json, report_md = report_names
    with atomic_directory(out_dir) as staging:
        start = time.perf_counter()
        saved = write_checkpoint(model, staging / CHECKPOINT_DIR)
        timings["write_checkpoint"] = time.perf_counter() - start
        write_json(staging / SPEC_FILE, spec.to_dict())
        shutil.copyfile(config_path, staging / "pipeline.config")
        parity = None
        if verify_images is not None:
            start = time.perf_counter()
            parity = _verify(tf1_dir, model, spec, source_spec, checkpoint, verify_images,
                             max_verify_images)  # fmt: skip
            timings["verify"] = time.perf_counter() - start
        report = build_report(
            tf1_dir=str(tf1_dir),
            checkpoint_prefix=str(checkpoint.prefix),
            source_spec=source_spec,
            spec=spec,
            plan=plan,
            tf1_total=len(checkpoint.shapes),
            tf2_total=len(model_variables(model)),
            checkpoint_path=str(Path(CHECKPOINT_DIR) / Path(saved).name),
            timings=timings,
            parity=parity,
            box_clipping=clipping,
            target_model=TARGET_MODEL,
            input_size=f"keep_aspect_ratio {spec.min_dimension}..{spec.max_dimension}",
        )
        write_json(staging / report_json, report)
        (staging / report_md).write_text(render_markdown(report), encoding="utf-8")
    if parity is not None and not parity.get("passed", False):
        raise PipelineError(
            f"{out_dir / report_json}: parity with the TF1 graph FAILED (see `parity`, "
            f"{'; '.join(parity.get('diagnosis', [])) or 'detections differ'}); the converted "
            "model does not compute what the TF1 model computes"
        )
    return report


def _verify(
    tf1_dir: Path,
    model: Any,
    spec: FasterRCNNSpec,
    source_spec: FasterRCNNSpec,
    checkpoint: TF1Checkpoint,
    images_dir: str | os.PathLike[str],
    max_images: int | None,
) -> dict[str, Any]:
    """Stage-by-stage parity; after a class-count change, on the checkpoint's own class count
    (which shares every converted weight with the output model)."""
    from pipeline.conversion.faster_rcnn.parity import verify_faster_rcnn
    from pipeline.modeling.faster_rcnn.model import build_faster_rcnn_model

    note = None
    if spec.num_classes != source_spec.num_classes:
        model = build_faster_rcnn_model(source_spec)
        apply_plan(plan_faster_rcnn_mapping(model, source_spec, checkpoint), checkpoint)
        note = (
            f"verified on the {source_spec.num_classes}-class conversion of the same checkpoint; "
            "the output model's second-stage predictors are fresh and not compared"
        )
    report = verify_faster_rcnn(tf1_dir, model, images_dir, max_images)
    if note:
        report["note"] = note
    return report
