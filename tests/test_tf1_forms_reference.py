"""Issue 9, item 2, against the TF1 OD API's own exporter (`../shared/tf1_reference`).

- An export of the OD API sample ssd_mobilenet_v1_coco config: frozen-only and SavedModel-only
  copies convert to the same TF2 weights, bit for bit, as its checkpoint; parity passes on each
  form against that same graph (meta graph + checkpoint, frozen graph, SavedModel).
- Moving averages: a training checkpoint whose shadows differ from its raw weights, exported by
  the TF1 exporter with eval_config.use_moving_averages: true. The converted model (auto: the
  config asks for the averages) matches that TF1 graph; the raw weights would not.
Each export runs once per session (about 1-2 minutes on 2 cores): slow.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.conversion.convert import convert
from pipeline.conversion.parity import verify_conversion
from pipeline.tf1.checkpoint import TF1Checkpoint
from pipeline.tf1.graph_runner import iter_images
from pipeline.tf1.synthetic_checkpoint import (
    synthetic_value,
    training_checkpoint,
    write_tf1_checkpoint,
)
from pipeline.tf1.weights import SHADOW_SUFFIX, is_averaged

pytestmark = pytest.mark.slow

CONFIG = "ssd_mobilenet_v1_coco.config"
NUM_IMAGES = 2
EXPORT_SCRIPT = Path(__file__).parent / "tf1_scripts" / "export_checkpoint.py"


@pytest.fixture(scope="module")
def images(coco_tiny: Path) -> list[tuple[str, np.ndarray]]:
    return [(p.name, image) for p, image in iter_images(coco_tiny / "val2017", NUM_IMAGES)]


@pytest.fixture(scope="module")
def export(tf1_reference_export, od_api_configs: Path) -> Path:
    return tf1_reference_export(od_api_configs / CONFIG)


@pytest.fixture(scope="module")
def forms(export: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{form: converted directory} for the export and its frozen-only / SavedModel-only copies."""
    root = tmp_path_factory.mktemp("forms")
    frozen, saved = root / "frozen_only", root / "saved_model_only"
    frozen.mkdir()
    saved.mkdir()
    for copy in (frozen, saved):
        shutil.copyfile(export / "pipeline.config", copy / "pipeline.config")
    shutil.copyfile(export / "frozen_inference_graph.pb", frozen / "frozen_inference_graph.pb")
    shutil.copytree(export / "saved_model", saved / "saved_model")
    converted = {}
    for form, tf1_dir in (("checkpoint", export), ("frozen_graph", frozen), ("saved_model", saved)):
        report = convert(tf1_dir, root / f"{form}_tf2", progress=False)
        assert report["source"]["form"] == form
        assert report["complete"], form
        converted[form] = root / f"{form}_tf2"
    return converted


def _converted_tensors(directory: Path) -> dict[str, np.ndarray]:
    import tensorflow as tf

    prefix = tf.train.latest_checkpoint(str(directory / "checkpoint"))
    reader = tf.train.load_checkpoint(prefix)
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if "OPTIMIZER_SLOT" not in name and name != "_CHECKPOINTABLE_OBJECT_GRAPH"
    }


def test_frozen_and_saved_model_convert_to_the_checkpoints_weights(forms: dict[str, Path]) -> None:
    reference = _converted_tensors(forms["checkpoint"])
    assert len(reference) > 199
    for form in ("frozen_graph", "saved_model"):
        tensors = _converted_tensors(forms[form])
        assert tensors.keys() == reference.keys(), form
        for name, value in reference.items():
            assert tensors[name].dtype == value.dtype
            assert np.array_equal(tensors[name], value), (form, name)


@pytest.mark.parametrize(
    ("form", "graph"),
    [("checkpoint", "meta"), ("frozen_graph", "frozen"), ("saved_model", "saved_model")],
)
def test_parity_on_the_graph_each_form_came_from(
    forms: dict[str, Path], export: Path, images, form: str, graph: str
) -> None:
    report = verify_conversion(export, forms[form], images=images, tf1_graph=graph)
    assert report.tf1_graph == graph
    assert report.passed, report.summary()
    assert report.detections_checked == 50 * NUM_IMAGES


@pytest.fixture(scope="module")
def moving_average_case(
    export: Path,
    tf1_reference_python: Path,
    tf1_reference_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    """A training dir whose shadows are the export's weights and whose raw trainable values are
    other synthetic weights, exported by the TF1 exporter with use_moving_averages: true."""
    root = tmp_path_factory.mktemp("moving_averages")
    reference = TF1Checkpoint(export)
    exported = {name: reference.read(name) for name in reference.shapes}
    raw = {
        name: synthetic_value(name, value.shape, value.dtype.name, seed=1)
        if is_averaged(name) and name != "global_step"
        else value
        for name, value in exported.items()
    }
    shadows = {n: v for n, v in exported.items() if is_averaged(n) and n != "global_step"}
    train = root / "train"
    train.mkdir()
    write_tf1_checkpoint(train / "model.ckpt-500", training_checkpoint(raw, shadows))
    (train / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-500"\n')
    text = (export / "pipeline.config").read_text()
    assert "use_moving_averages: false" in text
    text = text.replace("use_moving_averages: false", "use_moving_averages: true")
    (train / "pipeline.config").write_text(text)
    tf1_export = root / "tf1_export"
    command = [
        str(tf1_reference_python),
        str(EXPORT_SCRIPT),
        "--tf1-reference",
        str(tf1_reference_dir),
        "--pipeline-config",
        str(train / "pipeline.config"),
        "--checkpoint",
        str(train / "model.ckpt-500"),
        "--out",
        str(tf1_export),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"{EXPORT_SCRIPT.name} failed:\n{result.stderr[-3000:]}")
    return {"train": train, "tf1_export": tf1_export, "root": root}


def test_moving_averages_match_the_graph_tf1_exported(
    moving_average_case: dict[str, Path], forms: dict[str, Path], images
) -> None:
    train, tf1_export = moving_average_case["train"], moving_average_case["tf1_export"]
    root = moving_average_case["root"]
    checkpoint = TF1Checkpoint(train)
    shadowed = [n for n in checkpoint.shapes if n.endswith(SHADOW_SUFFIX)]
    assert len(shadowed) == 129
    for shadow in shadowed:
        raw = checkpoint.read(shadow.removesuffix(SHADOW_SUFFIX))
        assert not np.array_equal(checkpoint.read(shadow), raw), shadow

    report = convert(train, root / "ma", progress=False)
    assert report["complete"]
    assert report["weights"]["weights"] == "moving_average"
    assert "use_moving_averages is true" in report["weights"]["reason"]
    assert report["tf1"]["raw_values_replaced_by_moving_averages"] == len(shadowed)
    # The shadows are the first export's weights: the same TF2 weights, bit for bit.
    ours, theirs = _converted_tensors(root / "ma"), _converted_tensors(forms["checkpoint"])
    assert all(np.array_equal(ours[name], theirs[name]) for name in theirs)

    matched = verify_conversion(tf1_export, root / "ma", images=images)
    assert matched.passed, matched.summary()
    convert(train, root / "raw", progress=False, weights="raw")
    mismatched = verify_conversion(tf1_export, root / "raw", images=images[:1])
    assert not mismatched.class_logits_passed and not mismatched.box_encodings_passed
