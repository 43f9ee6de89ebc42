"""The conversion report: what was mapped, what was not, and how closely the TF2 model agrees.

`conversion_report.json` is the machine-readable record (the DVC stage's metrics can point into
it); `conversion_report.md` is the same content for people.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.conversion.mapping import MappingPlan
from pipeline.modeling.faster_rcnn.spec import FasterRCNNSpec
from pipeline.modeling.spec import SSDSpec
from pipeline.tf1.graph_facts import BoxClipping
from pipeline.tf1.model_dir import TF1ModelDir
from pipeline.tf1.weights import WeightSource


def build_report(
    *,
    model_dir: TF1ModelDir,
    weights: WeightSource,
    source_spec: SSDSpec | FasterRCNNSpec,
    spec: SSDSpec | FasterRCNNSpec,
    plan: MappingPlan,
    tf2_total: int,
    checkpoint_path: str,
    parity: dict[str, Any] | None = None,
    parity_note: str | None = None,
    box_clipping: BoxClipping | None = None,
    target_model: str = "official.vision.modeling.retinanet_model.RetinaNetModel",
    input_size: str | None = None,
) -> dict[str, Any]:
    """`input_size`: how the model sizes its input, for the report (default: the spec's fixed
    image_size)."""
    fresh_variables = [name for record in plan.fresh for name, _, _ in record.variables()]
    return {
        "complete": plan.complete,
        "source": {
            "tf1_dir": str(model_dir.root),
            "form": model_dir.form,
            "weights_file": str(model_dir.weights_file),
            "checkpoint": str(model_dir.checkpoint_prefix or ""),
            "checkpoint_reason": model_dir.checkpoint_reason,
            "pipeline_config": str(model_dir.pipeline_config),
            "pipeline_config_reason": model_dir.config_reason,
            "architecture": source_spec.architecture,
            "num_classes": source_spec.num_classes,
            # graph_rewriter.quantization of a quantized graph (SSD only), else None.
            "quantization": _quantization(source_spec),
        },
        "weights": weights.describe(),
        "target": {
            "model": target_model,
            "checkpoint": checkpoint_path,
            "num_classes": spec.num_classes,
            "input_size": input_size or "x".join(str(d) for d in spec.image_size),
            **({} if input_size else {"image_size": list(spec.image_size)}),
        },
        "tf1": {
            "total": weights.total,
            "mapped": len(plan.tf1_mapped),
            "unmapped": plan.tf1_unmapped,
            "replaced_by_fresh_layers": plan.tf1_replaced,
            "ignored_bookkeeping": plan.tf1_ignored,
            "ignored_by_kind": {why: names for why, names in weights.unused.items() if names},
            "raw_values_replaced_by_moving_averages": len(weights.replaced_by_shadows),
        },
        "tf2": {
            "total": tf2_total,
            "initialised_from_tf1": len(plan.assignments),
            "initialised_implied_constants": [name for name, _, _ in plan.implied],
            "zeroed_pruned_from_graph": [name for name, _, _ in plan.pruned],
            "fresh": fresh_variables,
            "uninitialised": plan.tf2_uninitialised,
        },
        "fresh_layers": plan.fresh_layers,
        # Layers TF1 builds but its detections never read, which the frozen graph lacks (zeroed).
        "pruned_layers": plan.pruned_layers,
        "post_processing": {
            "box_clipping": box_clipping.value
            if box_clipping
            else spec.post_processing.box_clipping,
            "why": box_clipping.reason if box_clipping else "model_spec default",
        },
        "mapping": [
            {"tf1": name, "module": record.module, "layer": record.scope}
            for name, _, record in plan.assignments
        ],
        "parity": parity,
        "parity_note": parity_note,
    }


def flat_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The report's headline numbers as flat keys (a DVC metrics file, `dvc metrics diff`)."""
    metrics: dict[str, Any] = {
        "complete": report["complete"],
        "tf1_variables": report["tf1"]["total"],
        "tf1_mapped": report["tf1"]["mapped"],
        "tf1_unmapped": len(report["tf1"]["unmapped"]),
        "tf2_variables": report["tf2"]["total"],
        "tf2_initialised_from_tf1": report["tf2"]["initialised_from_tf1"],
        "tf2_uninitialised": len(report["tf2"]["uninitialised"]),
        "fresh_layers": len(report["fresh_layers"]),
        **{f"seconds_{k}": v for k, v in (report.get("timings_s") or {}).items()},
    }
    parity = report.get("parity")
    if parity:
        metrics.update(
            {
                "parity_passed": parity["passed"],
                "parity_images": parity["num_images"],
                "box_encodings_max_abs_diff": parity["box_encodings_max_abs_diff"],
                "class_logits_max_abs_diff": parity["class_logits_max_abs_diff"],
                "detections_matched": parity["detections_matched"],
                "detections_checked": parity["detections_checked"],
                "detections_min_iou": parity["detections_min_iou"],
                "detections_max_score_diff": parity["detections_max_score_diff"],
            }
        )
    return metrics


def _quantization(spec: Any) -> dict[str, Any] | None:
    quantization = getattr(spec, "quantization", None)
    return None if quantization is None else dataclasses.asdict(quantization)


def _quantization_note(quantization: dict[str, Any] | None) -> str:
    if not quantization:
        return ""
    return (
        f", quantized: fake quantization of {quantization['weight_bits']}-bit weights and "
        f"{quantization['activation_bits']}-bit activations"
    )


def render_markdown(report: dict[str, Any]) -> str:
    source, target, tf1, tf2 = report["source"], report["target"], report["tf1"], report["tf2"]
    weights = report["weights"]
    status = "complete" if report["complete"] else "INCOMPLETE"
    lines = [
        "# Conversion report",
        "",
        f"- Source: {source['form'].replace('_', ' ')} `{source['weights_file']}` "
        f"({source['architecture']}, {source['num_classes']} classes"
        + _quantization_note(source.get("quantization"))
        + ")"
        + (f"; {source['checkpoint_reason']}" if source["checkpoint_reason"] else ""),
        f"- Config: `{source['pipeline_config']}` ({source['pipeline_config_reason']})",
        f"- Weights: **{weights['weights'].replace('_', ' ')}**: {weights['reason']}",
        f"- Target: Model Garden `{target['model'].rsplit('.', 1)[-1]}`, "
        f"{target['num_classes']} classes, input {target['input_size']}, checkpoint "
        f"`{target['checkpoint']}`",
        f"- Coverage: **{status}**",
        f"- Post-processing: boxes clipped {_clipping_line(report)}",
        "",
        "| | count |",
        "|---|---:|",
        f"| TF1 variables | {tf1['total']} |",
        f"| TF1 mapped | {tf1['mapped']} |",
        f"| TF1 unmapped | {len(tf1['unmapped'])} |",
        f"| TF1 replaced by fresh layers | {len(tf1['replaced_by_fresh_layers'])} |",
        f"| TF1 bookkeeping ignored (slots, step counters, unused shadows) | "
        f"{len(tf1['ignored_bookkeeping'])} |",
        f"| TF1 raw values replaced by their moving averages | "
        f"{tf1['raw_values_replaced_by_moving_averages']} |",
        f"| TF2 variables | {tf2['total']} |",
        f"| TF2 initialised from TF1 | {tf2['initialised_from_tf1']} |",
        f"| TF2 implied constants | {len(tf2['initialised_implied_constants'])} |",
        f"| TF2 zeroed: unread layers the frozen graph pruned | "
        f"{len(tf2.get('zeroed_pruned_from_graph', []))} |",
        f"| TF2 fresh (class count changed) | {len(tf2['fresh'])} |",
        f"| TF2 uninitialised | {len(tf2['uninitialised'])} |",
        "",
    ]
    for why, names in tf1["ignored_by_kind"].items():
        # Hundreds of names for a training dir: folded away, not in a table cell.
        lines += [f"<details><summary>{len(names)} {why} ignored</summary>", ""]
        lines += [f"- `{name}`" for name in names] + ["", "</details>", ""]
    if report["fresh_layers"]:
        lines += ["## Layers starting fresh", ""]
        lines += [f"- `{layer}`" for layer in report["fresh_layers"]]
        lines.append("")
    for title, names in (
        ("TF1 variables not mapped", tf1["unmapped"]),
        ("TF2 variables not initialised", tf2["uninitialised"]),
    ):
        if names:
            lines += [f"## {title}", ""] + [f"- `{name}`" for name in names] + [""]
    parity = report.get("parity")
    lines += ["## Parity with the TF1 graph", ""]
    if not parity:
        note = report.get("parity_note") or "Not verified (run `convert` with `--verify-images`)."
        lines += [note, ""]
    else:
        lines += _parity_lines(parity)
    return "\n".join(lines)


def _clipping_line(report: dict[str, Any]) -> str:
    post = report.get("post_processing") or {}
    value = str(post.get("box_clipping", "before_nms")).replace("_", " ")
    return f"{value} ({post['why']})" if post.get("why") else value


def _parity_lines(parity: dict[str, Any]) -> list[str]:
    lines = [f"- Result: **{'passed' if parity.get('passed') else 'FAILED'}**"]
    for key, value in parity.items():
        if key in ("passed", "images"):
            continue
        lines.append(f"- {key}: {value}")
    images = parity.get("images") or []
    if images:
        lines += ["", "| image | box max abs diff | logit max abs diff | detections matched |"]
        lines.append("|---|---:|---:|---:|")
        for image in images:
            det = image["detections"]
            lines.append(
                f"| {image['image']} | {image['box_encodings']['max_abs_diff']:.3g} | "
                f"{image['class_logits']['max_abs_diff']:.3g} | {det['matched']}/{det['checked']} |"
            )
    lines.append("")
    return lines
