"""`evaluate --model <TF1 model>`: the original TF1 graph, in each form a TF1 export comes in,
scored by the same evaluator as its conversion (the built-in zoo model on a few shapes images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.builtin.shapes import ShapesConfig, write_dataset
from pipeline.cli import main
from pipeline.datasets import BuildConfig, build_tfrecords
from pipeline.errors import PipelineError
from pipeline.evaluation import evaluate_model
from pipeline.tf1.graph_runner import FROZEN_GRAPH, tf1_model_kind

NUM_IMAGES = 12


@pytest.fixture(scope="module")
def val_tfrecords(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A few images of the default pipeline's validation domain, as build-tfrecords writes them."""
    root = tmp_path_factory.mktemp("shapes")
    write_dataset(
        root / "shapes", {"val": NUM_IMAGES}, ShapesConfig("textured", 128, 2026), progress=False
    )
    build_tfrecords(
        BuildConfig(
            root / "shapes" / "annotations" / "instances_val.json",
            root / "shapes" / "val",
            root / "tfrecords",
            shards=1,
            progress=False,
        )
    )
    return str(root / "tfrecords" / "*.tfrecord")


def write_tf1_saved_model(frozen_graph: Path, out: Path) -> Path:
    """A TF1 SavedModel of a frozen graph, written as the OD API exporter's `write_saved_model`
    does: `serving_default` with input `inputs` -> image_tensor, constants, no variables."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        graph_def = v1.GraphDef()
        graph_def.ParseFromString(frozen_graph.read_bytes())
        v1.import_graph_def(graph_def, name="")
        info = v1.saved_model.utils.build_tensor_info
        outputs = {
            name: info(graph.get_tensor_by_name(f"{name}:0"))
            for name in ("detection_boxes", "detection_scores", "detection_classes")
        }
        outputs["num_detections"] = info(graph.get_tensor_by_name("num_detections:0"))
        signature = v1.saved_model.signature_def_utils.build_signature_def(
            inputs={"inputs": info(graph.get_tensor_by_name("image_tensor:0"))},
            outputs=outputs,
            method_name=v1.saved_model.signature_constants.PREDICT_METHOD_NAME,
        )
        builder = v1.saved_model.Builder(str(out))
        builder.add_meta_graph_and_variables(
            session,
            [v1.saved_model.tag_constants.SERVING],
            signature_def_map={"serving_default": signature},
        )
        builder.save()
    return out


@pytest.fixture(scope="module")
def tf1_saved_model(builtin_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tf1_saved_model(
        builtin_zoo / FROZEN_GRAPH, tmp_path_factory.mktemp("tf1_export") / "saved_model"
    )


def evaluate_cli(model: Path, tfrecords: str, out: Path) -> int:
    args = ["--model", str(model), "--tfrecords", tfrecords, "--out", str(out), "--no-progress"]
    return main(["evaluate", *args])


@pytest.fixture(scope="module")
def tf1_eval(
    builtin_zoo: Path, val_tfrecords: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """`evaluate --model data/zoo` as the evaluate-coco-map@tf1 stage runs it."""
    out = tmp_path_factory.mktemp("eval") / "tf1"
    assert evaluate_cli(builtin_zoo, val_tfrecords, out) == 0
    return out


def _detections(out: Path) -> tuple[list[tuple[int, int]], np.ndarray]:
    """(image id, category id) and [score, x, y, w, h] of each detection, in a fixed order."""
    rows = sorted(
        (d["image_id"], d["category_id"], -d["score"], *d["bbox"])
        for d in json.loads((out / "detections.json").read_text())
    )
    return [row[:2] for row in rows], np.array([row[2:] for row in rows])


def assert_same_detections(out: Path, expected: Path) -> None:
    ids, values = _detections(out)
    expected_ids, expected_values = _detections(expected)
    assert ids == expected_ids
    np.testing.assert_allclose(values[:, 0], expected_values[:, 0], atol=1e-5)  # scores
    np.testing.assert_allclose(values[:, 1:], expected_values[:, 1:], atol=1e-3)  # pixels


def test_every_tf1_form_is_evaluated_the_same(
    builtin_zoo: Path,
    tf1_saved_model: Path,
    tf1_eval: Path,
    val_tfrecords: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert tf1_model_kind(builtin_zoo) == "meta"
    assert tf1_model_kind(builtin_zoo / FROZEN_GRAPH) == "frozen"
    assert tf1_model_kind(tf1_saved_model) == "saved_model"
    assert tf1_model_kind(tf1_saved_model.parent) == "saved_model"  # an export dir holding it
    meta = json.loads((tf1_eval / "metrics.json").read_text())
    assert meta["num_images"] == NUM_IMAGES and meta["num_detections"] > 0
    assert meta["AP"] > 0.01  # the built-in model detects shapes: the class ids mapped back
    for form in (builtin_zoo / FROZEN_GRAPH, tf1_saved_model):
        out = tmp_path / form.name
        assert evaluate_cli(form, val_tfrecords, out) == 0, capsys.readouterr().err
        metrics = json.loads((out / "metrics.json").read_text())
        # Frozen constants against restored variables: float round-off only.
        assert metrics["AP"] == pytest.approx(meta["AP"], abs=1e-6)
        assert metrics["num_detections"] == meta["num_detections"]
        assert_same_detections(out, tf1_eval)


def test_tf1_ap_equals_converted_ap(
    builtin_converted: Path, tf1_eval: Path, val_tfrecords: str, tmp_path: Path
) -> None:
    assert tf1_model_kind(builtin_converted) is None  # the TF2 model, not mistaken for TF1
    result = evaluate_model(builtin_converted, val_tfrecords, tmp_path / "eval", progress=False)
    tf1 = json.loads((tf1_eval / "metrics.json").read_text())
    assert result.metrics["AP"] == pytest.approx(tf1["AP"], abs=1e-4)
    assert result.metrics["AP50"] == pytest.approx(tf1["AP50"], abs=1e-4)


def test_tf1_detections_equal_converted_detections(
    builtin_converted: Path, tf1_eval: Path, val_tfrecords: str, tmp_path: Path
) -> None:
    evaluate_model(builtin_converted, val_tfrecords, tmp_path / "eval", progress=False)
    assert_same_detections(tmp_path / "eval", tf1_eval)


def test_our_saved_model_is_not_taken_for_a_tf1_one(
    builtin_converted: Path, tmp_path: Path
) -> None:
    from pipeline.inference import export_saved_model
    from pipeline.modeling.builder import load_converted

    model, spec = load_converted(builtin_converted)
    exported = export_saved_model(model, spec, tmp_path / "saved_model")
    assert tf1_model_kind(exported) is None
    assert tf1_model_kind(tmp_path) is None  # holds saved_model/, but a TF2 one


def test_what_is_not_a_model_gets_one_line(
    tmp_path: Path, val_tfrecords: str, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "frozen_inference_graph.pb"
    broken.write_bytes(b"\x08not a graph")
    empty = tmp_path / "empty"
    empty.mkdir()
    for model, expected in ((broken, "not a TF1 graph"), (empty, "TF1 export")):
        code = evaluate_cli(model, val_tfrecords, tmp_path / "out")
        err = capsys.readouterr().err
        assert code != 0 and expected in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()
    with pytest.raises(PipelineError, match=r"saved_model/saved_model\.pb not found"):
        from pipeline.tf1.graph_runner import resolve_graph_kind

        resolve_graph_kind(empty, "saved_model")


@pytest.mark.slow
def test_the_tf1_exporters_own_forms_are_evaluated_the_same(
    tf1_reference_export, builtin_zoo: Path, val_tfrecords: str, tmp_path: Path
) -> None:
    """A directory written by the TF1 OD API's own exporter (about 1.5 minutes to build): its
    SavedModel (input `inputs`), frozen graph and meta graph + checkpoint score the same."""
    export = tf1_reference_export(builtin_zoo / "pipeline.config")
    assert tf1_model_kind(export / "saved_model") == "saved_model"
    outs = []
    for form in (export, export / FROZEN_GRAPH, export / "saved_model"):
        outs.append(tmp_path / form.name)
        assert evaluate_cli(form, val_tfrecords, outs[-1]) == 0
    first = json.loads((outs[0] / "metrics.json").read_text())
    assert first["num_detections"] > 0
    for out in outs[1:]:
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["AP"] == pytest.approx(first["AP"], abs=1e-6)
        assert_same_detections(out, outs[0])
