"""Facts about a TF1 inference graph that its pipeline.config does not hold.

The same pipeline.config exported by two OD API versions can give two graphs that post-process
differently (see `pipeline.modeling.spec.BOX_CLIPPING_CHOICES`). The graph itself says which it
is: in the 2018 code the boxes of every per-class NMS pass through `ClipToWindow` first; in later
code NMS reads the decoded boxes directly and `ClipToWindow` comes after it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

# The OD API release whose exporter first clipped after NMS shipped with TF 1.9 (the zoo's
# 2018_07_18 graphs are TF 1.9 and clip after NMS, the 2018_07_03 ones are TF 1.8 and before).
FIRST_TF_CLIPPING_AFTER_NMS = (1, 9)
_NMS_OPS = {f"NonMaxSuppression{suffix}" for suffix in ("", "V2", "V3", "V4", "V5")}


@dataclass(frozen=True)
class BoxClipping:
    """Where the graph's NMS clips boxes ('before_nms' | 'after_nms') and how that was found."""

    value: str
    reason: str


def read_graph_def(path: str | os.PathLike[str]) -> tuple[Any, str]:
    """(GraphDef, TF version or '') of a `.meta` MetaGraphDef, a frozen `GraphDef` `.pb`, or a
    SavedModel directory / `saved_model.pb`."""
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

    path = Path(path)
    if path.is_dir():
        path = path / "saved_model.pb"
    data = path.read_bytes()
    try:
        if path.suffix == ".meta":
            meta = meta_graph_pb2.MetaGraphDef.FromString(data)
            return meta.graph_def, meta.meta_info_def.tensorflow_version
        if path.name == "saved_model.pb":
            saved = saved_model_pb2.SavedModel.FromString(data)
            meta = saved.meta_graphs[0]
            return meta.graph_def, meta.meta_info_def.tensorflow_version
        return tf.compat.v1.GraphDef.FromString(data), ""
    except Exception as error:  # protobuf raises DecodeError and friends
        raise PipelineError(f"{path}: not a TF1 graph ({error}); re-extract the model") from error


def box_clipping_of_graph(graph_def: Any) -> str | None:
    """'before_nms' if the first NMS op's boxes are clipped inside its own multiclass-NMS scope,
    'after_nms' if not, None when the graph has no NMS (a training graph).

    Exported TF1 graphs inline the per-image NMS loop and name the clip `ClipToWindow`; graphs
    with TF2-style control flow (the built-in model's, written by `pipeline.tf1.graph_builder`)
    keep the loop body in a library function, where the clip is plain Minimum/Maximum ops. Only
    the NMS scope's own clip counts: Faster R-CNN clips its *anchors* to the image (a top-level
    `ClipToWindow`) upstream of the first-stage NMS in every era."""
    nms = next((node for node in graph_def.node if node.op in _NMS_OPS), None)
    if nms is not None:
        nodes = {node.name: node for node in graph_def.node}
        marker = "MultiClassNonMaxSuppression/"
        scope = (
            nms.name[: nms.name.index(marker) + len(marker)]
            if marker in nms.name
            else nms.name.rsplit("/", 1)[0] + "/"
        )
        clipped = _upstream(nodes, nms, lambda node: "ClipToWindow" in node.name, scope)
        return "before_nms" if clipped else "after_nms"
    for function in graph_def.library.function:
        nodes = {node.name: node for node in function.node_def}
        nms = next((node for node in function.node_def if node.op in _NMS_OPS), None)
        if nms is not None:
            clipped = _upstream(
                nodes, nms, lambda node: node.op in ("Minimum", "Maximum", "ClipByValue"), ""
            )
            return "before_nms" if clipped else "after_nms"
    return None


def _upstream(nodes: dict[str, Any], nms: Any, is_clip: Any, scope: str) -> bool:
    """Whether a node `is_clip` within `scope` feeds the NMS op's boxes (its first input)."""
    seen: set[str] = set()
    stack = [nms.input[0]]
    while stack:
        name = stack.pop().lstrip("^").split(":")[0]
        if name in seen or name not in nodes:
            continue
        if name.startswith(scope) and is_clip(nodes[name]):
            return True
        seen.add(name)
        stack.extend(nodes[name].input)
    return False


def tf_version_tuple(version: str) -> tuple[int, int] | None:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def detect_box_clipping(graphs: list[Path]) -> BoxClipping:
    """From `graphs`: the NMS wiring of the first with an NMS, else the TF version that wrote the
    first that names one (a training graph), else the behaviour of every OD API since TF 1.9."""
    versions = []
    for path in graphs:
        graph_def, version = read_graph_def(path)
        found = box_clipping_of_graph(graph_def)
        if found is not None:
            where = "through ClipToWindow" if found == "before_nms" else "unclipped"
            return BoxClipping(found, f"{path.name}: its NMS reads the boxes {where}")
        if tf_version_tuple(version) is not None:
            versions.append((path, version))
    if versions:
        path, version = versions[0]
        value = (
            "before_nms" if tf_version_tuple(version) < FIRST_TF_CLIPPING_AFTER_NMS else "after_nms"
        )
        when = value.replace("_", " ")
        return BoxClipping(
            value, f"{path.name} has no NMS; TF {version} wrote it, whose OD API clips {when}"
        )
    return BoxClipping(
        "after_nms",
        "no inference graph: assumed the OD API of TF 1.9 and later (clips after NMS); "
        "pass --box-clipping before_nms for a model exported with TF 1.8 or earlier",
    )


def choose_box_clipping(
    tf1_dir: Path, checkpoint_prefix: Path | None, override: str = "auto"
) -> BoxClipping:
    """`override` unless 'auto'; else detected from the model's graphs (`detect_box_clipping`)."""
    if override != "auto":
        return BoxClipping(override, "set by --box-clipping / model.box_clipping")
    candidates = [tf1_dir / "frozen_inference_graph.pb", tf1_dir / "saved_model" / "saved_model.pb"]
    if checkpoint_prefix is not None:
        candidates.append(checkpoint_prefix.with_name(checkpoint_prefix.name + ".meta"))
    return detect_box_clipping([path for path in candidates if path.is_file()])
