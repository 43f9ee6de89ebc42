"""The built-in zoo model (builtin://ssd_mobilenet_v2_tiny_builtin): a genuine TF1 zoo artifact
that is pinned, converts with parity, and detects shapes.

Fast tests use the committed tarball; the slow test rebuilds it with a few steps and checks the
recipe end to end, including that the same inputs give the same tarball bytes.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.builtin import asset_path
from pipeline.builtin import zoo_model as zm
from pipeline.builtin.shapes import ShapesConfig, encode_jpeg, render_sample
from pipeline.conversion.parity import box_iou
from pipeline.zoo import fetch_zoo_model, file_sha256, validate_zoo_dir

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ZOO_CONF = PROJECT_ROOT / "conf" / "zoo" / f"{zm.NAME}.yaml"
URL = f"builtin://{zm.NAME}"


def pinned_sha256() -> str:
    return yaml.safe_load(ZOO_CONF.read_text())["sha256"]


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model, fetched through the pipeline's own (sha256-verified) fetch path."""
    return fetch_zoo_model(URL, tmp_path_factory.mktemp("fetched") / "zoo", sha256=pinned_sha256())


def write_images(folder: Path, domain: str, count: int, seed: int = 11) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    config = ShapesConfig(domain=domain, image_size=128, seed=seed)
    samples = []
    for index in range(count):
        sample = render_sample(config, "test", index)
        (folder / f"{domain}_{index:03d}.jpg").write_bytes(encode_jpeg(sample.image, 92))
        samples.append(sample)
    return samples


@pytest.fixture(scope="module")
def converted(zoo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """`convert --verify-images` on plain and textured shapes images (parity with the TF1 graph)."""
    from pipeline.conversion.convert import convert

    images = tmp_path_factory.mktemp("parity_images")
    write_images(images, "plain", 2)
    write_images(images, "textured", 2)
    out = tmp_path_factory.mktemp("converted") / "converted"
    report = convert(zoo_dir, out, verify_images=images, progress=False)
    return out, report


# ---- the artifact ----------------------------------------------------------------------------


def test_shipped_asset_matches_the_pinned_sha256() -> None:
    pin = pinned_sha256()
    assert isinstance(pin, str) and len(pin) == 64, f"{ZOO_CONF}: sha256 is not pinned"
    assert file_sha256(asset_path(zm.NAME)) == pin
    assert yaml.safe_load(ZOO_CONF.read_text())["url"] == URL


def test_tarball_is_laid_out_like_a_zoo_release() -> None:
    with tarfile.open(asset_path(zm.NAME)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {n.split("/")[0] for n in names} == {zm.NAME}
    files = {n.split("/", 1)[1] for n in names if "/" in n}
    assert files == {
        "checkpoint",
        "frozen_inference_graph.pb",
        "model.ckpt.data-00000-of-00001",
        "model.ckpt.index",
        "model.ckpt.meta",
        "pipeline.config",
    }
    assert all(m.uid == 0 and m.gid == 0 and not m.uname for m in members)
    # A few MB, so that it can live in git.
    assert asset_path(zm.NAME).stat().st_size < 8 * 2**20


def test_fetched_dir_is_a_valid_tf1_zoo_dir(zoo_dir: Path) -> None:
    model = validate_zoo_dir(zoo_dir)
    assert model.checkpoint_prefix.name == "model.ckpt"
    assert model.meta_graph is not None and model.frozen_graph is not None
    assert 'model_checkpoint_path: "model.ckpt"' in (zoo_dir / "checkpoint").read_text()


def test_pipeline_config_parses_to_the_intended_spec(zoo_dir: Path) -> None:
    from pipeline.modeling.anchors import anchors_per_location, feature_map_shapes
    from pipeline.tf1.pipeline_config import ssd_spec_from_config

    spec = ssd_spec_from_config(zoo_dir / "pipeline.config")
    # Exactly what the recipe's settings describe (the pre-training settings do not enter it).
    assert spec == zm.spec_from_config_text(zm.pipeline_config_text())
    assert spec.architecture == "ssd_mobilenet_v2"
    assert spec.num_classes == 3
    assert spec.image_size == (128, 128)
    assert spec.depth_multiplier == pytest.approx(0.35)
    assert spec.use_depthwise and spec.kernel_size == 3
    assert spec.post_processing.score_converter == "SIGMOID"
    assert spec.box_coder.scales == (10.0, 10.0, 5.0, 5.0)
    assert spec.training.hard_example_miner is not None
    assert feature_map_shapes(spec) == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    assert anchors_per_location(spec) == [4] * 6


def test_recipe_writes_the_shipped_pipeline_config_byte_for_byte(zoo_dir: Path) -> None:
    """The recipe's generator (the TF1 graph builder's, with the pre-training recorded) still
    writes exactly the file inside the committed tarball."""
    assert zm.pipeline_config_text() == (zoo_dir / "pipeline.config").read_text(encoding="utf-8")


def test_checkpoint_is_name_based_with_tf1_od_api_names(zoo_dir: Path) -> None:
    import tensorflow as tf

    from pipeline.tf1.graph_builder import graph_variable_layout
    from pipeline.tf1.pipeline_config import ssd_spec_from_config

    reader = tf.train.load_checkpoint(str(zoo_dir / "model.ckpt"))
    shapes = reader.get_variable_to_shape_map()
    spec = ssd_spec_from_config(zoo_dir / "pipeline.config")
    layout = graph_variable_layout(zm.graph_config(spec))
    assert {name: tuple(shape) for name, shape in shapes.items()} == {
        name: shape for name, (shape, _) in layout.items()
    }
    assert "FeatureExtractor/MobilenetV2/expanded_conv_13/expand/weights" in shapes
    assert "BoxPredictor_5/ClassPredictor/biases" in shapes
    assert shapes["BoxPredictor_0/ClassPredictor/biases"] == [4 * 4]  # 4 anchors x (3 + 1)
    # Pre-trained: the step counter says how long, and the weights are not an initialisation.
    assert int(reader.get_tensor("global_step")) > 0
    assert np.abs(reader.get_tensor("BoxPredictor_0/ClassPredictor/biases")).max() > 0
    variance = reader.get_tensor("FeatureExtractor/MobilenetV2/Conv/BatchNorm/moving_variance")
    assert not np.allclose(variance, 1.0)


# ---- conversion and parity ------------------------------------------------------------------


def test_converts_with_parity_on_shapes_images(converted: tuple[Path, dict]) -> None:
    _, report = converted
    assert report["tf1"]["mapped"] == report["tf1"]["total"] - len(
        report["tf1"]["ignored_bookkeeping"]
    )
    assert report["tf1"]["ignored_bookkeeping"] == ["global_step"]
    parity = report["parity"]
    assert parity["tf1_graph"] == "meta"
    assert parity["num_images"] == 4
    assert parity["passed"], parity.get("diagnosis")
    assert parity["detections_matched"] == parity["detections_checked"] > 0


def test_frozen_graph_computes_what_the_meta_graph_computes(zoo_dir: Path, tmp_path: Path) -> None:
    from pipeline.tf1.graph_runner import TF1GraphRunner

    image = write_images(tmp_path, "textured", 1, seed=5)[0].image
    with TF1GraphRunner(zoo_dir, graph="meta") as meta:
        expected = meta.run(image)
    with TF1GraphRunner(zoo_dir, graph="frozen") as frozen:
        actual = frozen.run(image)
    for key in ("class_logits", "box_encodings", "detection_scores", "detection_boxes"):
        np.testing.assert_allclose(actual[key], expected[key], rtol=1e-5, atol=1e-5)


# ---- it detects -----------------------------------------------------------------------------


def _recall(truths: list, detections: list, min_score: float = 0.5) -> float:
    """Share of ground-truth boxes with a same-class detection (score >= min_score) at IoU .5."""
    found = total = 0
    for objects, (boxes, scores, classes) in zip(truths, detections, strict=True):
        keep = scores >= min_score
        for category, gt_box in objects:
            total += 1
            same = keep & (classes == category)
            if same.any() and box_iou(gt_box, boxes[same]).max() >= 0.5:
                found += 1
    return found / total


def test_pretrained_model_detects_plain_shapes(converted: tuple[Path, dict]) -> None:
    from pipeline.inference import load_detector

    # The `test` split: images the pre-training never saw (it used train and val).
    config = ShapesConfig(domain="plain", image_size=128, seed=7)
    samples = [render_sample(config, "test", i) for i in range(16)]
    truths = []
    for sample in samples:
        objects = []
        for obj in sample.objects:
            x, y, w, h = obj.bbox
            objects.append((obj.category_id, np.array([y, x, y + h, x + w]) / 128.0))
        truths.append(objects)
    detector = load_detector(converted[0])
    outputs = detector(np.stack([s.image for s in samples]))
    detections = [
        (
            outputs["detection_boxes"][i],
            outputs["detection_scores"][i],
            outputs["detection_classes"][i].astype(int),
        )
        for i in range(len(samples))
    ]
    recall = _recall(truths, detections)
    # The same detections scored against another image's objects: what luck alone gives.
    shifted = _recall(truths, detections[1:] + detections[:1])
    assert recall >= 0.7, recall
    assert recall - shifted >= 0.4, (recall, shifted)


# ---- the recipe -----------------------------------------------------------------------------


def test_pipeline_config_text_matches_the_plain_shapes_conf() -> None:
    """The recipe pre-trains on the domain conf/shapes/plain.yaml documents."""
    plain = yaml.safe_load((PROJECT_ROOT / "conf" / "shapes" / "plain.yaml").read_text())
    pretrain = zm.PretrainSettings()
    assert plain["domain"] == "plain"
    assert plain["image_size"] == zm.ModelSettings().image_size
    assert plain["seed"] == pretrain.shapes_seed
    assert plain["splits"] == {"train": pretrain.train_images, "val": pretrain.val_images}


def test_tarball_is_deterministic_and_pins(tmp_path: Path) -> None:
    source = tmp_path / "model"
    source.mkdir()
    (source / "b.txt").write_bytes(b"second")
    (source / "a.txt").write_bytes(b"first")
    first = zm.write_tarball(source, tmp_path / "one.tar.gz", "top")
    (source / "a.txt").touch()  # a new mtime must not change the bytes
    second = zm.write_tarball(source, tmp_path / "two.tar.gz", "top")
    assert first == second == file_sha256(tmp_path / "one.tar.gz")
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tar.gz").read_bytes()
    with tarfile.open(tmp_path / "one.tar.gz") as tar:
        assert tar.getnames() == ["top", "top/a.txt", "top/b.txt"]
    conf = tmp_path / "zoo.yaml"
    conf.write_text("# comment\nname: x\nsha256: null\narchitecture: y\n")
    zm.pin_sha256(conf, first)
    assert conf.read_text() == f"# comment\nname: x\nsha256: {first}\narchitecture: y\n"


def test_export_refuses_drifted_implied_variables() -> None:
    """A TF1 layer without BatchNorm scale has no gamma: the TF2 gamma must stay at 1."""
    from pipeline.errors import PipelineError
    from pipeline.modeling.builder import build_ssd_model
    from pipeline.modeling.tf1_layout import model_records

    spec = zm.spec_from_config_text(
        zm.pipeline_config_text().replace("scale: true", "scale: false", 1)
    )
    model = build_ssd_model(spec)
    weights = zm.tf1_weights(model)
    assert "FeatureExtractor/MobilenetV2/Conv/BatchNorm/gamma" not in weights
    gamma = next(
        variable
        for record in model_records(model)
        for name, variable, implied in record.variables()
        if name == "FeatureExtractor/MobilenetV2/Conv/BatchNorm/gamma" and implied is not None
    )
    gamma.assign(gamma * 1.5)
    with pytest.raises(PipelineError, match="gamma"):
        zm.tf1_weights(model)


@pytest.mark.slow
def test_recipe_rebuilds_the_asset_reproducibly(tmp_path: Path) -> None:
    """`make-builtin-zoo` with a few steps, twice in fresh processes (TF names graph functions
    with a per-process counter): a valid zoo tarball, parity, and the same bytes both times."""
    import json
    import subprocess
    import sys

    digests = []
    for run in ("a", "b"):
        command = [
            sys.executable, "-m", "pipeline", "make-builtin-zoo", "--out", str(tmp_path / run),
            "--work", str(tmp_path / f"work_{run}"), "--steps", "4", "--batch-size", "4",
            "--train-images", "16", "--val-images", "8",
        ]  # fmt: skip
        done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads((tmp_path / f"work_{run}" / "build_report.json").read_text())
        assert report["parity"]["passed"]
        assert report["pretrain"]["steps"] == 4
        assert set(report["evaluation"]) == {"plain_val", "textured_val"}
        tarball = tmp_path / run / f"{zm.NAME}.tar.gz"
        assert report["sha256"] == file_sha256(tarball)
        assert report["sha256"] in done.stdout
        digests.append(report["sha256"])
    fetched = fetch_zoo_model(str(tmp_path / "a" / f"{zm.NAME}.tar.gz"), tmp_path / "fetched")
    validate_zoo_dir(fetched)
    assert "num_steps: 4" in (fetched / "pipeline.config").read_text()
    assert digests[0] == digests[1]
