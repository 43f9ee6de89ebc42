"""Run a TF1 Object Detection API inference graph under `tf.compat.v1`.

A zoo directory holds the inference graph twice: `model.ckpt.meta` (with variables, restored from
`model.ckpt`) and `frozen_inference_graph.pb` (variables folded into constants), and the exporter
adds a third copy, `saved_model/` (a TF1 SavedModel whose `serving_default` input is `inputs`).
Any of them can be run here, and so can a frozen graph file or a TF1 SavedModel directory given
on its own. Everything happens in an explicit `tf.Graph` and `tf.compat.v1.Session`, so TF2
eager code in the same process (the converted model) is unaffected.

Tensor names are those the OD API exporter gives every SSD graph: input `image_tensor`, raw
outputs `concat` (box encodings [B, N, 1, 4]) and `concat_1` (class logits [B, N, C+1]), per-head
`BoxPredictor_i/{BoxEncodingPredictor,ClassPredictor}/BiasAdd`, the anchors (the input of
`Postprocessor/ExpandDims`: [N, 4], normalized ymin, xmin, ymax, xmax, not clipped, in the order
the heads are flattened) and the
post-processed `detection_{boxes,scores,classes}`, `num_detections`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.errors import PipelineError

FROZEN_GRAPH = "frozen_inference_graph.pb"
META_GRAPH = "model.ckpt.meta"
CHECKPOINT_PREFIX = "model.ckpt"
SAVED_MODEL = "saved_model.pb"
SAVED_MODEL_DIR = "saved_model"
SERVING_SIGNATURE = "serving_default"

INPUT_TENSOR = "image_tensor:0"
BOX_ENCODINGS = "concat:0"
CLASS_LOGITS = "concat_1:0"
DETECTION_TENSORS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
# SSDMetaArch.postprocess tiles the anchors over the batch with this op; its input is the anchor
# box list (names seen in the real graphs listed as fallbacks).
ANCHORS_CONSUMER_OP = "Postprocessor/ExpandDims"
ANCHORS_OPS = ("Concatenate/concat", "MultipleGridAnchorGenerator/Identity")
# Box predictor outputs: `BoxPredictor_i/ClassPredictor/BiasAdd` for per-level heads, numbered
# scopes for weight-shared ones.
_HEAD_OP = re.compile(r"^(?:.+/)?(?:BoxEncodingPredictor|ClassPredictor)(?:_\d+)?/BiasAdd$")

GraphKind = Literal["auto", "meta", "frozen", "saved_model"]


def _has_checkpoint(zoo_dir: Path) -> bool:
    return (zoo_dir / META_GRAPH).is_file() and (zoo_dir / f"{CHECKPOINT_PREFIX}.index").is_file()


def is_tf1_saved_model(path: str | os.PathLike[str]) -> bool:
    """A SavedModel directory written by TF1 (`SavedModelBuilder`, as the OD API exporter does):
    no object graph, which every TF2 `tf.saved_model.save` writes."""
    from tensorflow.core.protobuf import saved_model_pb2

    file = Path(path) / SAVED_MODEL
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
    a zoo or export directory (as `resolve_graph_kind` picks), "frozen" for a frozen graph file,
    "saved_model" for a TF1 SavedModel directory (or an export directory holding only one)."""
    path = Path(path)
    if path.is_file():
        return "frozen" if path.suffix == ".pb" else None
    if not path.is_dir():
        return None
    if _has_checkpoint(path):
        return "meta"
    if (path / FROZEN_GRAPH).is_file():
        return "frozen"
    if is_tf1_saved_model(path) or is_tf1_saved_model(path / SAVED_MODEL_DIR):
        return "saved_model"
    return None


def _saved_model_dir(path: Path) -> Path:
    return path if (path / SAVED_MODEL).is_file() else path / SAVED_MODEL_DIR


def resolve_graph_kind(zoo_dir: str | os.PathLike[str], graph: GraphKind = "auto") -> str:
    """Which graph to run: the meta graph + checkpoint when present (the weights the converter
    reads), else the frozen graph (a `.pb` file itself, or the directory's), else the TF1
    SavedModel."""
    zoo_dir = Path(zoo_dir)
    if zoo_dir.is_file() and graph in ("auto", "frozen"):
        return "frozen"
    if graph == "saved_model" or (graph == "auto" and tf1_model_kind(zoo_dir) == "saved_model"):
        if not is_tf1_saved_model(_saved_model_dir(zoo_dir)):
            raise PipelineError(
                f"{zoo_dir}: no TF1 SavedModel ({SAVED_MODEL} without a TF2 object graph) found; "
                "pass the exporter's saved_model/ directory"
            )
        return "saved_model"
    if graph == "meta" or (graph == "auto" and _has_checkpoint(zoo_dir)):
        if not _has_checkpoint(zoo_dir):
            raise PipelineError(
                f"{zoo_dir}: {META_GRAPH} or {CHECKPOINT_PREFIX}.index missing; "
                f"pass the extracted zoo directory or use the frozen graph"
            )
        return "meta"
    if (zoo_dir / FROZEN_GRAPH).is_file():
        return "frozen"
    raise PipelineError(
        f"{zoo_dir}: neither {META_GRAPH} + {CHECKPOINT_PREFIX}, {FROZEN_GRAPH} nor a TF1 "
        f"{SAVED_MODEL_DIR}/ found; pass an extracted TF1 zoo model or export directory"
    )


class TF1GraphRunner:
    """The TF1 inference graph of a zoo directory, loaded once and run image by image.

    `zoo_dir` is a zoo/export directory, a frozen graph file or a TF1 SavedModel directory.
    `raw_outputs=False` accepts graphs without the SSD raw outputs (`concat`, `concat_1`), for
    callers that only need the detections (`detect`). Use as a context manager (or call
    `close()`) to release the session.
    """

    def __init__(
        self, zoo_dir: str | os.PathLike[str], graph: GraphKind = "auto", raw_outputs: bool = True
    ) -> None:
        import tensorflow as tf

        self.zoo_dir = Path(zoo_dir)
        self.kind = resolve_graph_kind(self.zoo_dir, graph)
        self.input_tensor = INPUT_TENSOR
        self.graph = tf.Graph()
        with self.graph.as_default():
            if self.kind == "meta":
                saver = tf.compat.v1.train.import_meta_graph(
                    str(self.zoo_dir / META_GRAPH), clear_devices=True
                )
            elif self.kind == "frozen":
                frozen = self.zoo_dir if self.zoo_dir.is_file() else self.zoo_dir / FROZEN_GRAPH
                graph_def = tf.compat.v1.GraphDef()
                try:
                    graph_def.ParseFromString(frozen.read_bytes())
                except Exception as error:  # google.protobuf.message.DecodeError
                    raise PipelineError(
                        f"{frozen}: not a frozen TF1 GraphDef ({error}); pass "
                        f"{FROZEN_GRAPH} from a TF1 export"
                    ) from None
                tf.compat.v1.import_graph_def(graph_def, name="")
        self.session = tf.compat.v1.Session(graph=self.graph)
        if self.kind == "meta":
            if saver is None:
                raise PipelineError(f"{self.zoo_dir / META_GRAPH}: the graph has no variables")
            # Saver.restore checks for eager mode in the *current* graph context.
            with self.graph.as_default():
                saver.restore(self.session, str(self.zoo_dir / CHECKPOINT_PREFIX))
        elif self.kind == "saved_model":
            self.input_tensor = self._load_saved_model(_saved_model_dir(self.zoo_dir))
        names = {op.name for op in self.graph.get_operations()}
        raw = ("concat", "concat_1") if raw_outputs else ()
        for required in (self.input_tensor.split(":")[0], *raw, *DETECTION_TENSORS):
            if required not in names:
                raise PipelineError(
                    f"{self.zoo_dir}: graph has no `{required}` tensor; expected a TF1 Object "
                    f"Detection API SSD inference graph (exported with export_inference_graph)"
                )
        self.head_tensors = sorted(
            op.name for op in self.graph.get_operations() if _HEAD_OP.match(op.name)
        )
        self.anchors_tensor = _find_anchors_op(self.graph)

    def _load_saved_model(self, saved_model_dir: Path) -> str:
        """Load the `serve` meta graph (constants or variables) into this session; the name of
        the serving signature's one input (`inputs` -> `image_tensor:0` in OD API exports)."""
        import tensorflow as tf

        with self.graph.as_default():
            try:
                meta = tf.compat.v1.saved_model.loader.load(
                    self.session,
                    [tf.compat.v1.saved_model.tag_constants.SERVING],
                    str(saved_model_dir),
                )
            except RuntimeError as error:  # no meta graph with the `serve` tag
                raise PipelineError(f"{saved_model_dir}: {error}") from None
        signature = meta.signature_def.get(SERVING_SIGNATURE)
        if signature is None or len(signature.inputs) != 1:
            raise PipelineError(
                f"{saved_model_dir}: SavedModel signature `{SERVING_SIGNATURE}` missing or without "
                "exactly one input; expected a TF1 Object Detection API export (input `inputs`)"
            )
        return next(iter(signature.inputs.values())).name

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
