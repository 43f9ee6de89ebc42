"""Issue 9, item 2: every form a TF1 model arrives in converts through `--tf1-dir` alone.

- The real training dirs of `tf1_user_models` (their exact index layouts, RMSProp slots and
  moving-average shadows included, with synthetic values): complete conversions, newest
  checkpoint, slots and step counters counted; the TF1 exporter's choice of moving averages.
- Directory resolution: newest checkpoint without a state file, `--checkpoint`, the one
  `*.config`, no config at all, a Faster R-CNN training dir without data, a training graph as
  `.meta`.
- Frozen graphs: the constants by variable name, with or without the `X/read` identities.
Tests that need the TF1 OD API's own exporter (frozen graph / SavedModel forms, moving averages
exported by TF1) are in `test_tf1_forms_reference.py`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.conversion.convert import convert
from pipeline.errors import PipelineError
from pipeline.modeling import load_converted
from pipeline.modeling.tf1_layout import model_records
from pipeline.tf1.checkpoint import TF1Checkpoint, is_bookkeeping
from pipeline.tf1.model_dir import resolve_tf1_dir
from pipeline.tf1.synthetic_checkpoint import make_synthetic_zoo_dir
from pipeline.tf1.weights import SHADOW_SUFFIX, SLOTS, UNUSED_SHADOWS, is_averaged, open_weights

TRAINING_DIRS = {
    # name: (checkpoint, TF1 variables, model variables, shadows)
    "ssd_mobilenet_v1_person_train": ("model.ckpt-6518", 587, 199, 129),
    "ssdlite_mobilenet_v2_train": ("model.ckpt-10000", 1161, 404, 252),
}


@pytest.fixture(scope="module")
def user_models(shared_fixtures: Path) -> Path:
    path = shared_fixtures / "tf1_user_models"
    if not path.is_dir():
        pytest.skip(f"shared fixture not available: {path}")
    return path


@pytest.fixture(scope="module")
def training_dirs(user_models: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("training_dirs")
    return {name: make_synthetic_zoo_dir(user_models / name, root / name) for name in TRAINING_DIRS}


@pytest.mark.parametrize("name", sorted(TRAINING_DIRS))
def test_training_dir_converts_completely_with_tf1_dir_alone(
    training_dirs: dict[str, Path], user_models: Path, name: str, tmp_path: Path
) -> None:
    prefix, total, variables, shadows = TRAINING_DIRS[name]
    src = training_dirs[name]
    # The synthetic directory has the real index's exact layout.
    real = TF1Checkpoint(user_models / name / prefix)
    assert TF1Checkpoint(src).shapes == real.shapes

    report = convert(src, tmp_path / "out", progress=False)
    assert report["complete"]
    assert report["source"]["checkpoint"] == str(src / prefix)
    tf1, tf2 = report["tf1"], report["tf2"]
    assert tf1["total"] == total
    assert tf1["mapped"] == variables == tf2["initialised_from_tf1"] == tf2["total"]
    assert tf1["unmapped"] == [] and tf2["uninitialised"] == []
    # The config leaves eval_config.use_moving_averages false: raw weights, as TF1's exporter.
    assert report["weights"]["weights"] == "raw"
    assert "use_moving_averages is false" in report["weights"]["reason"]
    kinds = tf1["ignored_by_kind"]
    assert len(kinds[SLOTS]) == 2 * shadows + 1  # RMSProp, RMSProp_1 per variable + global_step
    assert len(kinds[UNUSED_SHADOWS]) == shadows
    assert tf1["mapped"] + len(tf1["ignored_bookkeeping"]) == total
    markdown = (tmp_path / "out" / "conversion_report.md").read_text()
    assert f"<details><summary>{2 * shadows + 1} {SLOTS} ignored</summary>" in markdown
    # Counted in the table, listed only in the folded section.
    table_row = next(line for line in markdown.splitlines() if "bookkeeping ignored" in line)
    assert "RMSProp" not in table_row and table_row.endswith(f"| {3 * shadows + 1} |")


@pytest.mark.parametrize("name", sorted(TRAINING_DIRS))
def test_moving_averages_read_exactly_the_shadows_tf1_training_wrote(
    training_dirs: dict[str, Path], name: str, tmp_path: Path
) -> None:
    """The exporter averages trainable variables only; in the real training indexes the shadows
    are exactly those (no BatchNorm moving statistics), so none is missing and none left over."""
    import tensorflow as tf

    _, total, variables, shadows = TRAINING_DIRS[name]
    src = training_dirs[name]
    names = TF1Checkpoint(src).shapes
    shadowed = {n.removesuffix(SHADOW_SUFFIX) for n in names if n.endswith(SHADOW_SUFFIX)}
    model_variables = {n for n in names if not is_bookkeeping(n)}
    assert shadowed == {n for n in model_variables if is_averaged(n)}

    report = convert(src, tmp_path / "ma", progress=False, weights="moving_average")
    assert report["complete"] and report["weights"]["weights"] == "moving_average"
    assert report["tf1"]["raw_values_replaced_by_moving_averages"] == shadows
    assert UNUSED_SHADOWS not in report["tf1"]["ignored_by_kind"]
    assert report["tf1"]["mapped"] == variables
    assert report["tf1"]["mapped"] + len(report["tf1"]["ignored_bookkeeping"]) + shadows == total
    assert {entry["tf1"] for entry in report["mapping"]} == model_variables
    # The converted values are the shadows where TF1 averages, the raw values elsewhere.
    reader = tf.train.load_checkpoint(str(TF1Checkpoint(src).prefix))
    model, _ = load_converted(tmp_path / "ma")
    checked = 0
    for record in model_records(model):
        for tf1_name, variable, _ in record.variables():
            stored = tf1_name + SHADOW_SUFFIX if is_averaged(tf1_name) else tf1_name
            np.testing.assert_array_equal(variable.numpy(), reader.get_tensor(stored))
            checked += 1
    assert checked == variables


def test_missing_shadow_is_one_clear_error(synthetic_zoos: dict[str, Path], tmp_path: Path) -> None:
    zoo = synthetic_zoos["ssd_mobilenet_v1_coco_2018_01_28"]
    with pytest.raises(PipelineError, match=r"no ExponentialMovingAverage shadow.*--weights raw"):
        convert(zoo, tmp_path / "out", progress=False, weights="moving_average")
    assert not (tmp_path / "out").exists()
    # The config asking for them is the same error, naming why.
    copy = tmp_path / "zoo"
    shutil.copytree(zoo, copy)
    config = copy / "pipeline.config"
    text = config.read_text()
    assert "use_moving_averages: false" in text
    config.write_text(text.replace("use_moving_averages: false", "use_moving_averages: true"))
    with pytest.raises(PipelineError, match=r"use_moving_averages is true.*shadow"):
        convert(copy, tmp_path / "out", progress=False)


def test_config_asking_for_moving_averages_uses_them(
    training_dirs: dict[str, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "train"
    shutil.copytree(training_dirs["ssd_mobilenet_v1_person_train"], copy)
    config = copy / "pipeline.config"
    text = config.read_text()
    config.write_text(text.replace("eval_config: {", "eval_config: {\n  use_moving_averages: true"))
    report = convert(copy, tmp_path / "out", progress=False)
    assert report["weights"]["weights"] == "moving_average"
    assert "use_moving_averages is true" in report["weights"]["reason"]
    raw = open_weights(resolve_tf1_dir(copy), "raw", use_moving_averages=True)
    assert raw.weights == "raw" and raw.reason.startswith("--weights raw")


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`python -m pipeline convert ...` in this process: (exit code, stdout, stderr)."""
    code = main(["convert", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_faster_rcnn_training_dir_without_data_is_one_line(
    user_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _cli(
        capsys,
        "--tf1-dir",
        str(user_models / "faster_rcnn_inception_v2_cards_train"),
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    # Faster R-CNN has its own converter now; the index alone is one line naming the data file.
    assert "model.ckpt-3292.data-00000-of-00001: checkpoint data file not found" in lines[0]
    assert not (tmp_path / "out").exists()


def test_no_config_is_one_line_naming_what_was_found(
    training_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = training_dirs["ssd_mobilenet_v1_person_train"]
    bare = tmp_path / "bare"
    bare.mkdir()
    for path in src.glob("model.ckpt-6518.*"):
        shutil.copyfile(path, bare / path.name)
    code, _, err = _cli(capsys, "--tf1-dir", str(bare), "--out", str(tmp_path / "out"))
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert "no pipeline.config or other *.config" in lines[0]
    assert "model.ckpt-6518.index" in lines[0] and "--pipeline-config" in lines[0]

    # The training dir's one *.config is used; with two, --pipeline-config chooses.
    shutil.copyfile(src / "pipeline.config", bare / "ssd_mobilenet_v1_coco.config")
    model = resolve_tf1_dir(bare)
    assert model.pipeline_config == bare / "ssd_mobilenet_v1_coco.config"
    assert "only *.config" in model.config_reason
    shutil.copyfile(src / "pipeline.config", bare / "other.config")
    with pytest.raises(PipelineError, match=r"several configs .*--pipeline-config"):
        resolve_tf1_dir(bare)
    chosen = resolve_tf1_dir(bare, pipeline_config=bare / "other.config")
    assert chosen.config_reason == "--pipeline-config"


def _fake_checkpoint(root: Path, prefix: str) -> None:
    (root / f"{prefix}.index").write_bytes(b"index")
    (root / f"{prefix}.data-00000-of-00001").write_bytes(b"data")


def test_newest_checkpoint_and_checkpoint_choice(tmp_path: Path) -> None:
    (tmp_path / "pipeline.config").write_text("model {}\n")
    for step in (900, 1200, 11000):
        _fake_checkpoint(tmp_path, f"model.ckpt-{step}")
    model = resolve_tf1_dir(tmp_path)
    assert model.checkpoint_prefix == tmp_path / "model.ckpt-11000"  # numeric, not by name
    assert model.checkpoint_reason == "the highest step present"
    # The state file wins (training machines write absolute paths of their own)...
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "C:\\\\train\\\\model.ckpt-1200"\n'
        'all_model_checkpoint_paths: "C:\\\\train\\\\model.ckpt-1200"\n'
    )
    assert resolve_tf1_dir(tmp_path).checkpoint_prefix == tmp_path / "model.ckpt-1200"
    # ... unless it names a checkpoint that is not there.
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-13000"\n')
    model = resolve_tf1_dir(tmp_path)
    assert model.checkpoint_prefix == tmp_path / "model.ckpt-11000"
    assert "names model.ckpt-13000, which is absent" in model.checkpoint_reason
    chosen = resolve_tf1_dir(tmp_path, checkpoint="model.ckpt-900")
    assert chosen.checkpoint_prefix == tmp_path / "model.ckpt-900"
    assert chosen.checkpoint_reason == "--checkpoint"
    with pytest.raises(PipelineError, match=r"--checkpoint not found .*model.ckpt-1200"):
        resolve_tf1_dir(tmp_path, checkpoint="model.ckpt-5")
    (tmp_path / "model.ckpt-11000.data-00000-of-00001").unlink()
    with pytest.raises(PipelineError, match=r"model.ckpt-11000 has an index but no data file"):
        resolve_tf1_dir(tmp_path)


def test_weights_only_as_graphs_or_nothing(tmp_path: Path) -> None:
    (tmp_path / "pipeline.config").write_text("model {}\n")
    with pytest.raises(PipelineError, match=r"no weights found \(found: pipeline.config\)"):
        resolve_tf1_dir(tmp_path)
    (tmp_path / "saved_model").mkdir()
    (tmp_path / "saved_model" / "saved_model.pb").write_bytes(b"pb")
    assert resolve_tf1_dir(tmp_path).form == "saved_model"
    (tmp_path / "frozen_inference_graph.pb").write_bytes(b"pb")
    assert resolve_tf1_dir(tmp_path).form == "frozen_graph"
    _fake_checkpoint(tmp_path, "model.ckpt")
    assert resolve_tf1_dir(tmp_path).form == "checkpoint"


def _write_training_meta_graph(path: Path) -> None:
    """A meta graph like TF1 training writes: variables and a loss, no image_tensor."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        weights = tf.compat.v1.get_variable("FeatureExtractor/MobilenetV1/Conv2d_0/weights", [1])
        images = tf.compat.v1.placeholder(tf.float32, [None, 1], name="IteratorGetNext")
        tf.reduce_sum(images * weights, name="total_loss")
        tf.compat.v1.train.Saver()
        tf.compat.v1.train.export_meta_graph(str(path), graph=graph)


def test_training_graph_gets_a_parity_note_not_a_crash(
    training_dirs: dict[str, Path],
    coco_tiny: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    train = tmp_path / "train"
    shutil.copytree(training_dirs["ssd_mobilenet_v1_person_train"], train)
    images = coco_tiny / "val2017"
    report = convert(
        train, tmp_path / "no_meta", progress=False, verify_images=images, max_verify_images=1
    )
    assert report["parity"] is None
    assert report["parity_note"].startswith("not verified: ")
    assert "no TF1 inference graph to run" in report["parity_note"]

    _write_training_meta_graph(train / "model.ckpt-6518.meta")
    code, out, err = _cli(
        capsys,
        "--tf1-dir",
        str(train),
        "--out",
        str(tmp_path / "out"),
        "--verify-images",
        str(images),
        "--max-verify-images",
        "1",
        "--no-progress",
    )
    assert code == 0, err[-2000:]
    assert "parity with the TF1 graph: not verified" in out
    written = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
    assert written["complete"] and written["parity"] is None
    note = written["parity_note"]
    assert "model.ckpt-6518.meta: not a TF1 detection inference graph (no `image_tensor`" in note
    assert "a training graph" in note
    assert written["parity_note"] in (tmp_path / "out" / "conversion_report.md").read_text()


def _frozen_graph_def() -> tuple[object, dict[str, np.ndarray]]:
    """A small graph frozen as the TF1 exporter freezes: each variable becomes a Const of its
    name, still read through `<name>/read`."""
    import tensorflow as tf

    values = {
        "Conv/weights": np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4),
        "Conv/BatchNorm/gamma": np.full(4, 1.5, np.float32),
        "Conv/BatchNorm/moving_mean": np.linspace(0, 1, 4).astype(np.float32),
    }
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, 5, 5, 3], name="image_tensor")
        # Variables named like slim's (scopes), constants that are not variables beside them.
        with tf.compat.v1.variable_scope("Conv"):
            kernel = tf.compat.v1.get_variable(
                "weights", initializer=values["Conv/weights"], use_resource=False
            )
            gamma = tf.compat.v1.get_variable(
                "BatchNorm/gamma", initializer=values["Conv/BatchNorm/gamma"], use_resource=False
            )
            mean = tf.compat.v1.get_variable(
                "BatchNorm/moving_mean",
                initializer=values["Conv/BatchNorm/moving_mean"],
                use_resource=False,
            )
            out = tf.nn.conv2d(images, kernel, [1, 1, 1, 1], "SAME")
            out = tf.identity((out - mean) * gamma + tf.constant(0.5), name="output")
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                session, graph.as_graph_def(), [out.op.name]
            )
    return frozen, values


def test_frozen_graph_constants_by_variable_name_with_or_without_read_nodes() -> None:
    from pipeline.tf1.weights import GraphConstantWeights

    frozen, values = _frozen_graph_def()
    assert {f"{name}/read" for name in values} <= {node.name for node in frozen.node}
    weights = GraphConstantWeights(frozen, "frozen_inference_graph.pb", "frozen_graph")
    assert set(weights.shapes) == set(values)
    for name, value in values.items():
        assert weights.shapes[name] == value.shape
        np.testing.assert_array_equal(weights.read(name), value)

    # optimize_for_inference-style rewrites drop the `X/read` identities.
    stripped = type(frozen)()
    stripped.CopyFrom(frozen)
    reads = {node.name: node.input[0] for node in stripped.node if node.name.endswith("/read")}
    kept = [node for node in stripped.node if node.name not in reads]
    del stripped.node[:]
    for node in kept:
        node.input[:] = [reads.get(name, name) for name in node.input]
        stripped.node.append(node)
    assert len(reads) == len(values)
    assert not any(node.name.endswith("/read") for node in stripped.node)
    rewired = GraphConstantWeights(stripped, "optimized.pb", "frozen_graph")
    assert set(rewired.shapes) == set(values)
    for name, value in values.items():
        np.testing.assert_array_equal(rewired.read(name), value)
