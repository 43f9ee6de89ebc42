"""`python -m pipeline convert`: a TF1 SSD or Faster R-CNN model directory -> a converted TF2
model directory (Faster R-CNN: `pipeline.conversion.faster_rcnn.convert`).

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
from pipeline.conversion.family import ConversionFamily
from pipeline.conversion.mapping import apply_plan, model_variables, plan_mapping
from pipeline.conversion.report import build_report, render_markdown
from pipeline.errors import PipelineError
from pipeline.modeling.builder import CHECKPOINT_DIR, SPEC_FILE
from pipeline.modeling.spec import SSDSpec
from pipeline.reproducible_outputs import drop_checkpoint_timestamps
from pipeline.tf1.faster_rcnn_config import is_faster_rcnn
from pipeline.tf1.graph_facts import choose_box_clipping
from pipeline.tf1.graph_runner import NoInferenceGraph, resolve_graph
from pipeline.tf1.model_dir import TF1ModelDir, resolve_tf1_dir
from pipeline.tf1.pipeline_config import read_pipeline_config, ssd_spec_from_config
from pipeline.tf1.weights import WeightsChoice, WeightSource, open_weights

REPORT_JSON = "conversion_report.json"
REPORT_MD = "conversion_report.md"
CONFIG_FILE = "pipeline.config"


def target_spec(source: Any, num_classes: int | None) -> Any:
    if num_classes is None or num_classes == source.num_classes:
        return source
    if num_classes <= 0:
        raise PipelineError(f"--num-classes: {num_classes} is not a positive class count")
    if getattr(source, "quantization", None) is not None:
        raise PipelineError(
            f"--num-classes: {num_classes} differs from the quantized model's "
            f"{source.num_classes}; fresh class predictors of a quantized graph would have no "
            "trained fake-quant ranges to compare with the TF1 graph: convert with the model's "
            "own class count and change it when fine-tuning (train.num_classes), where the "
            "ranges are learned"
        )
    return source.with_num_classes(num_classes)


def _build_ssd(spec: SSDSpec) -> Any:
    from pipeline.modeling.builder import build_ssd_model

    return build_ssd_model(spec)


def _ssd_parity(
    root: os.PathLike[str],
    model: Any,
    spec: SSDSpec,
    images_dir: str | os.PathLike[str],
    max_images: int | None,
    progress: bool,
    graph: dict[str, Any],
) -> dict[str, Any]:
    from pipeline.conversion import parity as parity_lib

    return parity_lib.verify_conversion(
        root,
        model,
        spec,
        images_dir=images_dir,
        max_images=max_images,
        progress=progress,
        tf1_graph=graph["graph"],
        checkpoint_prefix=graph["checkpoint_prefix"],
        restore_name=graph["restore_name"],
    ).to_dict()


SSD = ConversionFamily(
    name="ssd",
    spec_from_config=lambda config, source: ssd_spec_from_config(config, source=source),
    build_model=_build_ssd,
    plan_mapping=plan_mapping,
    parity=_ssd_parity,
    target_model="official.vision.modeling.retinanet_model.RetinaNetModel",
)


def family_of(config: Any) -> ConversionFamily:
    """The conversion family of a parsed pipeline.config (unsupported models are refused when
    their spec is read)."""
    if is_faster_rcnn(config):
        from pipeline.conversion.faster_rcnn.convert import FASTER_RCNN

        return FASTER_RCNN
    return SSD


def convert(
    tf1_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    num_classes: int | None = None,
    verify_images: str | os.PathLike[str] | None = None,
    max_verify_images: int | None = None,
    progress: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    pipeline_config: str | os.PathLike[str] | None = None,
    weights: WeightsChoice = "auto",
    box_clipping: str = "auto",
) -> dict[str, Any]:
    """Convert a TF1 SSD or Faster R-CNN model directory; return the report (also written to
    out_dir, less its `timings_s`: the written directory depends on the inputs alone).

    The directory may be an export, a zoo tarball, a training dir, a frozen graph or a SavedModel
    with its pipeline config (`pipeline.tf1.model_dir`); `checkpoint` / `pipeline_config` choose
    among several, `weights` ('auto' | 'raw' | 'moving_average') which values of a checkpoint
    (`pipeline.tf1.weights`). `num_classes` different from the model's leaves the class
    predictors fresh. With `verify_images`, the TF1 graph the weights came from and the converted
    model are run on those images and the parity figures go into the report; a failed
    verification raises PipelineError after the output is written (so the report can be
    inspected). A directory without an inference graph (a training dir) gets a parity note.
    `box_clipping` ('auto' | 'before_nms' | 'after_nms') is the OD API era of the
    post-processing; 'auto' reads it from the model's graph.
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    model_dir = resolve_tf1_dir(
        tf1_dir, checkpoint=checkpoint, pipeline_config=pipeline_config, require_data=False
    )
    config_path = model_dir.pipeline_config
    config = read_pipeline_config(config_path)
    family = family_of(config)
    clipping = choose_box_clipping(model_dir.root, model_dir.checkpoint_prefix, box_clipping)
    source_spec = family.spec_from_config(config, str(config_path))
    source_spec = source_spec.with_box_clipping(clipping.value)
    spec = target_spec(source_spec, num_classes)
    source = open_weights(model_dir, weights, bool(config.eval_config.use_moving_averages))
    source.require_data()
    timings["read_config_and_index"] = time.perf_counter() - start

    start = time.perf_counter()
    model = family.build_model(spec)
    timings["build_model"] = time.perf_counter() - start

    start = time.perf_counter()
    fresh = spec.num_classes != source_spec.num_classes
    plan = family.plan_mapping(model, spec, source, fresh, str(config_path))
    timings["map_variables"] = time.perf_counter() - start
    start = time.perf_counter()
    apply_plan(plan, source, progress)
    timings["read_and_assign"] = time.perf_counter() - start

    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as staging:
        start = time.perf_counter()
        saved = write_checkpoint(model, staging / CHECKPOINT_DIR)
        timings["write_checkpoint"] = time.perf_counter() - start
        write_json(staging / SPEC_FILE, spec.to_dict())
        shutil.copyfile(config_path, staging / CONFIG_FILE)
        parity = parity_note = None
        if verify_images is not None:
            start = time.perf_counter()
            try:
                parity = verify(
                    family,
                    model_dir,
                    model,
                    spec,
                    verify_images,
                    max_verify_images,
                    source_spec,
                    source,
                    progress,
                )
            except NoInferenceGraph as error:
                parity_note = f"not verified: {error}"
            timings["verify"] = time.perf_counter() - start
        report = build_report(
            model_dir=model_dir,
            weights=source,
            source_spec=source_spec,
            spec=spec,
            plan=plan,
            tf2_total=len(model_variables(model)),
            checkpoint_path=str(Path(CHECKPOINT_DIR) / Path(saved).name),
            parity=parity,
            parity_note=parity_note,
            box_clipping=clipping,
            target_model=family.target_model,
            input_size=family.input_size(spec),
        )
        write_json(staging / REPORT_JSON, report)
        (staging / REPORT_MD).write_text(render_markdown(report), encoding="utf-8")
    # Timings vary run to run: returned (the CLI prints them, --metrics records them), never
    # written into the cached output, so equal inputs give byte-identical directories.
    report["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    if parity is not None and not parity.get("passed", False):
        diagnosis = "; ".join(parity.get("diagnosis") or [])
        raise PipelineError(
            f"{out_dir / REPORT_JSON}: parity with the TF1 graph FAILED (see `parity`"
            + (f": {diagnosis}" if diagnosis else "")
            + "); the converted model does not compute what the TF1 model computes"
        )
    return report


def write_checkpoint(model: Any, directory: Path) -> str:
    """tf.train.Checkpoint(**model.checkpoint_items) with a `checkpoint` state file, so that
    `tf.train.latest_checkpoint(directory)` (Model Garden's `initialize`) finds it."""
    import tensorflow as tf

    checkpoint = tf.train.Checkpoint(**model.checkpoint_items)
    manager = tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=1)
    saved = manager.save(checkpoint_number=0)
    drop_checkpoint_timestamps(directory)
    return saved


def verify(
    family: ConversionFamily,
    model_dir: TF1ModelDir,
    model: Any,
    spec: Any,
    images_dir: str | os.PathLike[str],
    max_images: int | None,
    source_spec: Any,
    weights: WeightSource,
    progress: bool,
) -> dict[str, Any]:
    """Run the TF1 graph the weights came from and the converted model on the same images and
    compare them (the family's parity: `pipeline.conversion.parity`, or stage by stage for
    Faster R-CNN).

    The graph is the checkpoint's own meta graph (restored with the same values the converter
    read: moving averages when those were used), the frozen graph, or the SavedModel. After a
    class-count change the class outputs cannot be compared; the check then runs on a model
    converted with the source's own class count, which shares every converted weight with the
    output model (only the fresh class predictors differ). Raises NoInferenceGraph when there is
    no inference graph to run.
    """
    graph = {"checkpoint": "auto", "frozen_graph": "frozen", "saved_model": "saved_model"}
    runner_graph = graph[model_dir.form]
    # Resolve the graph first: a training dir without an inference graph needs no second model.
    resolve_graph(model_dir.root, runner_graph, model_dir.checkpoint_prefix)
    note = None
    if spec.num_classes != source_spec.num_classes:
        model = family.build_model(source_spec)
        apply_plan(family.plan_mapping(model, source_spec, weights, False, "pipeline.config"),
                   weights)  # fmt: skip
        spec = source_spec
        note = (
            f"verified on the {source_spec.num_classes}-class conversion of the same weights; "
            "the output model's class predictors are fresh and not compared"
        )
    report = family.parity(
        model_dir.root,
        model,
        spec,
        images_dir,
        max_images,
        progress,
        {
            "graph": runner_graph,
            "checkpoint_prefix": model_dir.checkpoint_prefix,
            "restore_name": weights.stored_name if weights.weights == "moving_average" else None,
        },
    )
    if note:
        report["note"] = note
    return report
