"""Run a TF1 Object Detection API inference graph under `tf.compat.v1`.

An export holds the inference graph three times: `model.ckpt.meta` (with variables, restored from
`model.ckpt`), `frozen_inference_graph.pb` (variables folded into constants) and `saved_model/`
(the frozen graph with a `serving_default` signature whose input key is `inputs`). Any of them
can be run here, and a training dir's `model.ckpt-N.meta` when it is an inference graph, and a
frozen graph file or a TF1 SavedModel directory given on its own.
Everything happens in an explicit `tf.Graph` and `tf.compat.v1.Session`, so TF2 eager code in the
same process (the converted model) is unaffected.

Tensor names are those the OD API exporter gives every SSD graph: input `image_tensor`, raw
outputs `concat` (box encodings [B, N, 1, 4]) and `concat_1` (class logits [B, N, C+1]), per-head
`BoxPredictor_i/{BoxEncodingPredictor,ClassPredictor}/BiasAdd`, the anchors (the input of
`Postprocessor/ExpandDims`: [N, 4], normalized ymin, xmin, ymax, xmax, not clipped, in the order
the heads are flattened) and the
post-processed `detection_{boxes,scores,classes}`, `num_detections`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.errors import PipelineError
from pipeline.tf1.model_dir import (
    FROZEN_GRAPH,
    SAVED_MODEL_DIR,
    SAVED_MODEL_PB,
    find_checkpoint,
)

INPUT_TENSOR = "image_tensor:0"
BOX_ENCODINGS = "concat:0"
CLASS_LOGITS = "concat_1:0"
DETECTION_TENSORS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
# SSDMetaArch.postprocess tiles the anchors over the batch with this op; its input is the anchor
# box list (names seen in the real graphs listed as fallbacks).
ANCHORS_CONSUMER_OP = "Postprocessor/ExpandDims"
ANCHORS_OPS = ("Concatenate/concat", "MultipleGridAnchorGenerator/Identity")
# Box predictor outputs: `BoxPredictor_i/ClassPredictor/BiasAdd` for per-level heads, numbered
# scopes for weight-shared ones (`WeightSharedConvolutionalBoxPredictor[_i]/{BoxPredictor,
# ClassPredictor}/BiasAdd`).
_HEAD_OP = re.compile(
    r"^(?:.+/)?(?:BoxEncodingPredictor|ClassPredictor|BoxPredictor)(?:_\d+)?/BiasAdd$"
)
SERVING_SIGNATURE = "serving_default"

GraphKind = Literal["auto", "meta", "frozen", "saved_model"]
# TF1 variable name -> the checkpoint entry to restore it from (e.g. its moving average).
RestoreName = Callable[[str], str]


class NoInferenceGraph(PipelineError):
    """Nothing to compare against: no graph in the directory, or one that is not an exported SSD
    inference graph (e.g. a training dir's training graph)."""


@dataclasses.dataclass(frozen=True)
class GraphFiles:
    """The graph to run and where its weights are: `kind` 'meta' (graph + checkpoint prefix),
    'frozen' (a GraphDef .pb) or 'saved_model' (a SavedModel directory)."""

    kind: str
    path: Path
    checkpoint_prefix: Path | None = None


def resolve_graph(
    zoo_dir: str | os.PathLike[str],
    graph: GraphKind = "auto",
    checkpoint_prefix: str | os.PathLike[str] | None = None,
) -> GraphFiles:
    """Which graph to run in a TF1 model directory.

    'auto': the checkpoint's own meta graph when present (the weights the converter reads;
    `model.ckpt-N.meta` in a training dir), else the frozen graph, else the SavedModel.
    `checkpoint_prefix` chooses the checkpoint (default: the directory's newest).
    """
    zoo_dir = Path(zoo_dir)
    if zoo_dir.is_file() and graph in ("auto", "frozen"):
        return GraphFiles("frozen", zoo_dir)
    prefix = Path(checkpoint_prefix) if checkpoint_prefix else find_checkpoint(zoo_dir)[0]
    meta = prefix.with_name(prefix.name + ".meta") if prefix is not None else None
    has_meta = meta is not None and meta.is_file()
    if graph == "meta" or (graph == "auto" and has_meta):
        if not has_meta or prefix is None or meta is None:
            raise NoInferenceGraph(
                f"{zoo_dir}: no checkpoint with its .meta graph (model.ckpt[-N].meta + .index); "
                "run the frozen graph or the SavedModel instead"
            )
        return GraphFiles("meta", meta, prefix)
    frozen = zoo_dir / FROZEN_GRAPH
    if graph in ("frozen", "auto") and frozen.is_file():
        return GraphFiles("frozen", frozen)
    saved_model = next(
        (d for d in (zoo_dir / SAVED_MODEL_DIR, zoo_dir) if (d / SAVED_MODEL_PB).is_file()), None
    )
    if graph in ("saved_model", "auto") and saved_model is not None:
        return GraphFiles("saved_model", saved_model)
    wanted = {
        "frozen": FROZEN_GRAPH,
        "saved_model": f"{SAVED_MODEL_DIR}/{SAVED_MODEL_PB}",
    }.get(graph, f"model.ckpt[-N].meta + .index, {FROZEN_GRAPH} or {SAVED_MODEL_DIR}/")
    raise NoInferenceGraph(
        f"{zoo_dir}: no TF1 inference graph to run ({wanted} not found); pass an exported TF1 "
        "model directory (export_inference_graph.py writes all three)"
    )


def is_tf1_saved_model(path: str | os.PathLike[str]) -> bool:
    """A SavedModel directory written by TF1 (`SavedModelBuilder`, as the OD API exporter does):
    no object graph, which every TF2 `tf.saved_model.save` writes."""
    from tensorflow.core.protobuf import saved_model_pb2

    file = Path(path) / SAVED_MODEL_PB
    if not file.is_file():
        return False
    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(file.read_bytes())
    except Exception as error:  # google.protobuf.message.DecodeError
        raise PipelineError(f"{file}: not a SavedModel ({error})") from None
    return bool(saved.meta_graphs) and not any(
        meta.HasField("object_graph_def") for meta in saved.meta_graphs
    )


def tf1_model_kind(path: str | os.PathLike[str]) -> str | None:
    """Which TF1 inference graph `path` is, or None when it is none of them: "meta" / "frozen" for
    a zoo or export directory (as `resolve_graph` picks), "frozen" for a frozen graph file,
    "saved_model" for a TF1 SavedModel directory (or an export directory holding only one)."""
    path = Path(path)
    if path.is_file():
        return "frozen" if path.suffix == ".pb" else None
    if not path.is_dir():
        return None
    try:
        kind = resolve_graph(path).kind
    except PipelineError:
        return None
    if kind == "saved_model" and not (
        is_tf1_saved_model(path) or is_tf1_saved_model(path / SAVED_MODEL_DIR)
    ):
        return None
    return kind


def resolve_graph_kind(zoo_dir: str | os.PathLike[str], graph: GraphKind = "auto") -> str:
    """The kind of graph `resolve_graph` picks ('meta', 'frozen' or 'saved_model')."""
    return resolve_graph(zoo_dir, graph).kind


class TF1GraphRunner:
    """The TF1 inference graph of a model directory, loaded once and run image by image.

    `zoo_dir` is a model directory, a frozen graph file or a TF1 SavedModel directory.
    `restore_name` maps a variable of a meta graph to the checkpoint entry it is restored from
    (the weight source's choice, e.g. moving averages, as the TF1 exporter does); by default the
    meta graph's own saver restores every variable from its own name. `raw_outputs=False` accepts
    graphs without the SSD raw outputs (`concat`, `concat_1`), for callers that only need the
    detections (`detect`). Use as a context manager (or call `close()`) to release the session.
    """

    def __init__(
        self,
        zoo_dir: str | os.PathLike[str],
        graph: GraphKind = "auto",
        checkpoint_prefix: str | os.PathLike[str] | None = None,
        restore_name: RestoreName | None = None,
        raw_outputs: bool = True,
    ) -> None:
        import tensorflow as tf

        self.zoo_dir = Path(zoo_dir)
        self._raw_outputs = raw_outputs
        self.files = resolve_graph(self.zoo_dir, graph, checkpoint_prefix)
        self.kind = self.files.kind
        self.input_tensor = INPUT_TENSOR
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        try:
            self._load(restore_name)
        except BaseException:
            self.session.close()
            raise
        self.head_tensors = sorted(
            op.name for op in self.graph.get_operations() if _HEAD_OP.match(op.name)
        )
        self.anchors_tensor = _find_anchors_op(self.graph)

    def _load(self, restore_name: RestoreName | None) -> None:
        import tensorflow as tf

        path = self.files.path
        # Saver and loader check for eager mode in the *current* graph context.
        with self.graph.as_default():
            if self.kind == "meta":
                saver = tf.compat.v1.train.import_meta_graph(str(path), clear_devices=True)
                self._check_inference_graph(path)
                if saver is None:
                    raise PipelineError(f"{path}: the graph has no variables")
                if restore_name is not None:
                    names = {restore_name(v.op.name): v for v in tf.compat.v1.global_variables()}
                    saver = tf.compat.v1.train.Saver(names)
                saver.restore(self.session, str(self.files.checkpoint_prefix))
            elif self.kind == "frozen":
                from pipeline.tf1.graph_facts import read_graph_def

                tf.compat.v1.import_graph_def(read_graph_def(path)[0], name="")
                self._check_inference_graph(path)
            else:
                try:
                    meta_graph = tf.compat.v1.saved_model.loader.load(
                        self.session, [tf.saved_model.SERVING], str(path)
                    )
                except RuntimeError as error:  # no meta graph with the `serve` tag
                    raise PipelineError(f"{path}: {error}") from None
                signature = meta_graph.signature_def.get(SERVING_SIGNATURE)
                if signature is not None and len(signature.inputs) == 1:
                    # The TF1 exporter's key is `inputs` (the image_tensor placeholder).
                    self.input_tensor = next(iter(signature.inputs.values())).name
                self._check_inference_graph(path / SAVED_MODEL_PB)

    def _check_inference_graph(self, path: Path) -> None:
        names = {op.name for op in self.graph.get_operations()}
        raw = ("concat", "concat_1") if self._raw_outputs else ()
        required = (self.input_tensor.split(":")[0], *raw, *DETECTION_TENSORS)
        missing = [name for name in required if name not in names]
        if missing:
            raise NoInferenceGraph(
                f"{path}: not a TF1 detection inference graph (no `{'`, `'.join(missing)}`; a "
                "training graph, or not exported with export_inference_graph.py); export the "
                "model with the TF1 exporter"
            )

    def __enter__(self) -> TF1GraphRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    def run(
        self, image: np.ndarray, with_heads: bool = False, with_anchors: bool = False
    ) -> dict[str, Any]:
        """Run one uint8 image ([H, W, 3] or [1, H, W, 3]); batch dimension dropped in outputs.

        Returns box_encodings [N, 4], class_logits [N, C+1], detection_boxes [K, 4],
        detection_scores [K], detection_classes [K] (1..C), num_detections (int), plus `heads`
        ({'BoxPredictor_i/ClassPredictor': [H, W, A*(C+1)], ...}) and `anchors` [N, 4] if asked.
        """
        batch = _as_batch(image)
        fetches: dict[str, Any] = {
            "box_encodings": BOX_ENCODINGS,
            "class_logits": CLASS_LOGITS,
            **{name: f"{name}:0" for name in DETECTION_TENSORS},
        }
        if with_heads:
            fetches["heads"] = {name.rsplit("/", 1)[0]: f"{name}:0" for name in self.head_tensors}
        if with_anchors:
            fetches["anchors"] = self._anchors_name()
        raw = self.session.run(fetches, {self.input_tensor: batch})
        out: dict[str, Any] = {
            "box_encodings": raw["box_encodings"].reshape(raw["box_encodings"].shape[1], -1),
            "class_logits": raw["class_logits"][0],
            "detection_boxes": raw["detection_boxes"][0],
            "detection_scores": raw["detection_scores"][0],
            "detection_classes": raw["detection_classes"][0],
            "num_detections": int(raw["num_detections"][0]),
        }
        if with_heads:
            out["heads"] = {name: value[0] for name, value in raw["heads"].items()}
        if with_anchors:
            out["anchors"] = raw["anchors"]
        return out

    def anchors(self, image_size: tuple[int, int] = (300, 300)) -> np.ndarray:
        """The graph's anchors [N, 4]. They depend on the feature-map sizes, so the graph is run
        on a blank image; with a fixed-shape resizer any input size gives the same anchors."""
        blank = np.zeros((1, *image_size, 3), dtype=np.uint8)
        return self.session.run(self._anchors_name(), {self.input_tensor: blank})

    def detect(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's detection outputs for a uint8 batch [N, H, W, 3] of one image size, batch
        dimension kept: the interface of `pipeline.inference.load_detector`."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}"
            )
        fetches = {name: f"{name}:0" for name in DETECTION_TENSORS}
        return self.session.run(fetches, {self.input_tensor: images})

    def _anchors_name(self) -> str:
        if self.anchors_tensor is None:
            raise PipelineError(
                f"{self.zoo_dir}: no anchor tensor (input of {ANCHORS_CONSUMER_OP}) in the graph; "
                f"compare raw outputs without anchors"
            )
        return self.anchors_tensor


def _find_anchors_op(graph: Any) -> str | None:
    """The anchors tensor the post-processor decodes against: the input of
    `Postprocessor/ExpandDims` (it tiles the anchors over the batch), which is `Concatenate/concat`
    in ssd_mobilenet_v2's graph and `MultipleGridAnchorGenerator/Identity` in v1's."""
    try:
        num_anchors = graph.get_tensor_by_name(BOX_ENCODINGS).shape[1]
    except (KeyError, ValueError):
        num_anchors = None

    def fits(tensor: Any) -> bool:
        shape = tensor.shape
        return (
            shape.rank == 2
            and shape[-1] == 4
            and (num_anchors is None or shape[0] is None or shape[0] == num_anchors)
        )

    candidates = []
    with contextlib.suppress(KeyError):
        candidates.append(graph.get_operation_by_name(ANCHORS_CONSUMER_OP).inputs[0])
    for name in ANCHORS_OPS:
        with contextlib.suppress(KeyError):
            candidates.append(graph.get_tensor_by_name(f"{name}:0"))
    for tensor in candidates:
        if fits(tensor):
            return tensor.name
    return None


def _as_batch(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected one uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    return image


def tf1_graph_anchors(
    zoo_dir: str | os.PathLike[str], image_size: tuple[int, int] = (300, 300)
) -> np.ndarray:
    """The anchors [N, 4] (normalized ymin, xmin, ymax, xmax) the TF1 graph decodes against."""
    with TF1GraphRunner(zoo_dir) as runner:
        return runner.anchors(image_size)


def run_tf1_graph(
    zoo_dir: str | os.PathLike[str],
    images: Iterable[np.ndarray],
    graph: GraphKind = "auto",
    with_heads: bool = False,
) -> list[dict[str, Any]]:
    """Outputs of the TF1 graph for each image (see `TF1GraphRunner.run`)."""
    with TF1GraphRunner(zoo_dir, graph) as runner:
        return [runner.run(image, with_heads=with_heads) for image in images]


def list_images(images_dir: str | os.PathLike[str], max_images: int | None = None) -> list[Path]:
    """JPEG/PNG files of a directory in name order (first `max_images`)."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise PipelineError(f"{images_dir}: not a directory; pass a folder of JPEG/PNG images")
    paths = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not paths:
        raise PipelineError(f"{images_dir}: no .jpg/.jpeg/.png images found")
    return paths[:max_images] if max_images else paths


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode to uint8 RGB [H, W, 3] (grayscale COCO images are expanded to 3 channels)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def iter_images(
    images_dir: str | os.PathLike[str], max_images: int | None = None
) -> Iterator[tuple[Path, np.ndarray]]:
    for path in list_images(images_dir, max_images):
        yield path, load_image(path)


def write_frozen_graph(
    zoo_dir: str | os.PathLike[str], out_path: str | os.PathLike[str] | None = None
) -> Path:
    """Fold the checkpoint into the meta graph's constants, as the OD API exporter does, and write
    `frozen_inference_graph.pb` (keeping everything the detection outputs need, which includes the
    raw head outputs and the anchors)."""
    import tensorflow as tf

    from pipeline.atomic import atomic_file

    zoo_dir = Path(zoo_dir)
    out_path = Path(out_path) if out_path is not None else zoo_dir / FROZEN_GRAPH
    with TF1GraphRunner(zoo_dir, graph="meta") as runner:
        outputs = [*DETECTION_TENSORS, "concat", "concat_1"]
        if runner.anchors_tensor is not None:
            outputs.append(runner.anchors_tensor.split(":")[0])
        with runner.graph.as_default():
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                runner.session, runner.graph.as_graph_def(), outputs
            )
    with atomic_file(out_path, "wb") as handle:
        handle.write(frozen.SerializeToString())
    return out_path
