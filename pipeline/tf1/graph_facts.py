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
    """'before_nms' if the first NMS op's boxes come through a ClipToWindow, 'after_nms' if not,
    None when the graph has no NMS (a training graph)."""
    nodes = {node.name: node for node in graph_def.node}
    nms = next((node for node in graph_def.node if node.op in _NMS_OPS), None)
    if nms is None:
        return None
    seen: set[str] = set()
    stack = [nms.input[0]]
    while stack:
        name = stack.pop().lstrip("^").split(":")[0]
        if name in seen or name not in nodes:
            continue
        if "ClipToWindow" in name:
            return "before_nms"
        seen.add(name)
        stack.extend(nodes[name].input)
    return "after_nms"


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
