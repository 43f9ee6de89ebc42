"""Conversion of the real zoo checkpoint layouts (synthetic weights): coverage both ways, the
converted directory, Model Garden-style restore, class-count change, mismatch errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pipeline.cli import main
from pipeline.conversion.convert import convert
from pipeline.conversion.mapping import plan_mapping
from pipeline.errors import PipelineError
from pipeline.modeling.builder import build_ssd_model, load_converted
from pipeline.modeling.tf1_layout import model_records
from pipeline.tf1.checkpoint import TF1Checkpoint
from pipeline.tf1.pipeline_config import ssd_spec_from_config

V2 = "ssd_mobilenet_v2_coco_2018_03_29"
V1 = "ssd_mobilenet_v1_coco_2018_01_28"


@pytest.fixture(scope="module")
def converted(
    tmp_path_factory: pytest.TempPathFactory, synthetic_zoos: dict[str, Path]
) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("converted")
    result = {}
    for name in (V2, V1):
        report = convert(synthetic_zoos[name], root / name, progress=False)
        result[name] = (root / name, report)
    return result


@pytest.mark.parametrize("name", [V2, V1])
def test_index_maps_fully_both_ways(tf1_zoo_dir: Path, name: str) -> None:
    """The real index alone (no data file): every TF1 weight has a TF2 home and vice versa."""
    spec = ssd_spec_from_config(tf1_zoo_dir / name)
    model = build_ssd_model(spec)
    checkpoint = TF1Checkpoint(tf1_zoo_dir / name)
    plan = plan_mapping(model, spec, checkpoint)
    assert plan.complete
    assert plan.tf1_ignored == ["global_step"]
    assert sorted(plan.tf1_mapped) == sorted(n for n in checkpoint.shapes if n != "global_step")
    model_variables = {id(v) for m in model.checkpoint_items.values() for v in m.variables}
    assert {id(v) for _, v, _ in plan.assignments} == model_variables
    assert not plan.fresh and not plan.implied


@pytest.mark.parametrize("name", [V2, V1])
def test_converted_directory(
    converted: dict[str, tuple[Path, dict]], synthetic_zoos: dict[str, Path], name: str
) -> None:
    out, report = converted[name]
    for file in ("model_spec.json", "pipeline.config", "conversion_report.json"):
        assert (out / file).is_file()
    assert (out / "conversion_report.md").read_text().startswith("# Conversion report")
    assert (out / "pipeline.config").read_bytes() == (
        synthetic_zoos[name] / "pipeline.config"
    ).read_bytes()
    on_disk = json.loads((out / "conversion_report.json").read_text())
    assert on_disk["complete"] is True
    assert on_disk["tf1"]["unmapped"] == [] and on_disk["tf2"]["uninitialised"] == []
    assert on_disk["tf1"]["mapped"] == on_disk["tf1"]["total"] - 1  # all but global_step
    assert on_disk["tf2"]["initialised_from_tf1"] == on_disk["tf2"]["total"]
    assert on_disk["fresh_layers"] == [] and on_disk["parity"] is None
    # The returned report adds the run's timings, which stay out of the cached directory.
    returned = json.loads(json.dumps(report))
    assert set(returned.pop("timings_s")) >= {"build_model", "write_checkpoint"}
    assert on_disk == returned


@pytest.mark.parametrize("name", [V2, V1])
def test_load_converted_restores_the_tf1_values(
    converted: dict[str, tuple[Path, dict]], synthetic_zoos: dict[str, Path], name: str
) -> None:
    model, spec = load_converted(converted[name][0])
    reader = tf.train.load_checkpoint(str(synthetic_zoos[name] / "model.ckpt"))
    for record in model_records(model):
        for tf1_name, variable, _ in record.variables():
            np.testing.assert_array_equal(variable.numpy(), reader.get_tensor(tf1_name))
    assert spec == ssd_spec_from_config(synthetic_zoos[name])


def test_model_garden_initialize_restores_the_checkpoint_dir(
    converted: dict[str, tuple[Path, dict]],
) -> None:
    """What Model Garden's RetinaNetTask.initialize does with init_checkpoint (all / backbone)."""
    out, _ = converted[V1]
    spec = ssd_spec_from_config(out / "pipeline.config")
    reference, _ = load_converted(out)
    model = build_ssd_model(spec)
    path = tf.train.latest_checkpoint(str(out / "checkpoint"))
    assert path is not None
    status = tf.train.Checkpoint(**model.checkpoint_items).read(path)
    status.expect_partial().assert_existing_objects_matched()
    for a, b in zip(model.head.variables, reference.head.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    backbone_only = build_ssd_model(spec)
    status = tf.train.Checkpoint(backbone=backbone_only.backbone).read(path)
    status.expect_partial().assert_existing_objects_matched()
    np.testing.assert_array_equal(
        backbone_only.backbone.variables[0].numpy(), reference.backbone.variables[0].numpy()
    )


def test_class_count_change_keeps_everything_but_the_class_predictors(
    tmp_path: Path, synthetic_zoos: dict[str, Path]
) -> None:
    report = convert(synthetic_zoos[V2], tmp_path / "out", num_classes=3, progress=False)
    expected_fresh = [f"BoxPredictor_{i}/ClassPredictor" for i in range(6)]
    assert report["fresh_layers"] == expected_fresh
    assert report["complete"] is True
    assert len(report["tf1"]["replaced_by_fresh_layers"]) == 12
    assert len(report["tf2"]["fresh"]) == 12
    assert report["tf1"]["mapped"] + 12 + 1 == report["tf1"]["total"]
    assert report["target"]["num_classes"] == 3 and report["source"]["num_classes"] == 90
    model, spec = load_converted(tmp_path / "out")
    assert spec.num_classes == 3
    reader = tf.train.load_checkpoint(str(synthetic_zoos[V2] / "model.ckpt"))
    for record in model_records(model):
        for tf1_name, variable, _ in record.variables():
            if record.scope in expected_fresh:
                assert variable.shape[-1] in (3 * 4, 6 * 4)  # (3 classes + background) * anchors
                assert list(variable.shape) != list(reader.get_variable_to_shape_map()[tf1_name])
            else:
                np.testing.assert_array_equal(variable.numpy(), reader.get_tensor(tf1_name))
    outputs = model(tf.zeros([1, 300, 300, 3]), training=False)
    assert outputs["cls_outputs"]["4"].shape[-1] == 3 * 4
    assert int(tf.reduce_max(outputs["detection_classes"])) <= 3
    assert "BoxPredictor_0/ClassPredictor" in (tmp_path / "out/conversion_report.md").read_text()


def test_sample_v2_config_with_real_v2_checkpoint_names_the_fields(
    od_api_configs: Path, tf1_zoo_dir: Path
) -> None:
    spec = ssd_spec_from_config(od_api_configs / "ssd_mobilenet_v2_coco.config")
    model = build_ssd_model(spec)
    with pytest.raises(PipelineError) as error:
        plan_mapping(
            model, spec, TF1Checkpoint(tf1_zoo_dir / V2), config_source="ssd_mobilenet_v2_coco"
        )
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("ssd_mobilenet_v2_coco: ")
    assert (
        "model.ssd.box_predictor.convolutional_box_predictor.kernel_size (1): "
        "BoxPredictor_0/BoxEncodingPredictor/weights is [3, 3, 576, 12] in the checkpoint but "
        "[1, 1, 576, 12] in the model the config describes"
    ) in message
    assert "model.ssd.feature_extractor.use_depthwise (false)" in message


def test_mismatched_config_fails_the_command_before_writing(
    tmp_path: Path,
    synthetic_zoos: dict[str, Path],
    od_api_configs: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    zoo = tmp_path / "zoo"
    shutil.copytree(synthetic_zoos[V2], zoo)
    shutil.copyfile(od_api_configs / "ssd_mobilenet_v2_coco.config", zoo / "pipeline.config")
    code = main(["convert", "--tf1-dir", str(zoo), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "kernel_size (1)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_other_architecture_config_is_named(tf1_zoo_dir: Path) -> None:
    spec = ssd_spec_from_config(tf1_zoo_dir / V1)
    model = build_ssd_model(spec)
    with pytest.raises(PipelineError, match=r"type is ssd_mobilenet_v1 .* holds FeatureExtractor/"
                       r"MobilenetV2/"):  # fmt: skip
        plan_mapping(model, spec, TF1Checkpoint(tf1_zoo_dir / V2))


def test_missing_data_file_is_a_clear_error(tmp_path: Path, tf1_zoo_dir: Path) -> None:
    with pytest.raises(PipelineError, match="data file not found"):
        convert(tf1_zoo_dir / V1, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_convert_command_with_verification(
    tmp_path: Path,
    synthetic_zoos: dict[str, Path],
    coco_tiny: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "convert",
            "--tf1-dir",
            str(synthetic_zoos[V1]),
            "--out",
            str(out),
            "--verify-images",
            str(coco_tiny / "val2017"),
            "--max-verify-images",
            "2",
            "--metrics",
            str(tmp_path / "metrics.json"),
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "199/200 TF1 variables mapped" in printed
    assert "parity with the TF1 graph: passed" in printed
    parity = json.loads((out / "conversion_report.json").read_text())["parity"]
    assert parity["passed"] is True and parity["num_images"] == 2
    assert parity["detections_matched"] == parity["detections_checked"] > 0
    assert parity["class_logits_max_abs_diff"] <= 1e-4 * max(1, parity["class_logits_max_abs_tf1"])
    assert "Parity with the TF1 graph" in (out / "conversion_report.md").read_text()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["complete"] is True and metrics["parity_passed"] is True
    assert metrics["tf1_unmapped"] == metrics["tf2_uninitialised"] == 0
    assert metrics["detections_matched"] == parity["detections_matched"]


def test_convert_reads_model_params(tmp_path: Path) -> None:
    import argparse

    from pipeline.commands.convert import _settings, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    params = tmp_path / "params.yaml"
    params.write_text(
        "model:\n  num_classes: 3\n  verify_images: some/images\n  verify_max_images: 4\n"
        "  box_clipping: after_nms\n"
    )
    base = ["--tf1-dir", "zoo", "--out", "out", "--params", str(params)]
    assert _settings(parser.parse_args(base)) == (3, Path("some/images"), 4, "after_nms")
    args = parser.parse_args([*base, "--num-classes", "5", "--max-verify-images", "2",
                              "--box-clipping", "before_nms"])  # fmt: skip
    assert _settings(args) == (5, Path("some/images"), 2, "before_nms")
    params.write_text("model:\n  num_classes: null\n  verify_images: null\n")
    assert _settings(parser.parse_args(base)) == (None, None, None, "auto")


def test_batch_norm_without_scale_converts_with_implied_gamma(
    tmp_path: Path, tf1_zoo_dir: Path
) -> None:
    """A config whose BatchNorm has no scale (TF1 then creates no gamma) still converts fully."""
    import dataclasses

    from pipeline.conversion.mapping import apply_plan
    from pipeline.tf1.synthetic_checkpoint import write_tf1_checkpoint

    spec = ssd_spec_from_config(tf1_zoo_dir / V1)
    extractor = dataclasses.replace(
        spec.feature_extractor,
        depth_multiplier=0.25,
        batch_norm_scale=False,
        override_base_feature_extractor_hyperparams=True,
    )
    spec = dataclasses.replace(spec, image_size=(128, 128), feature_extractor=extractor)
    model = build_ssd_model(spec)
    layout = {
        name: np.full(variable.shape, 0.5, np.float32)
        for record in model_records(model)
        for name, variable, _ in record.variables()
        if not name.endswith("BatchNorm/gamma")
    }
    write_tf1_checkpoint(tmp_path / "model.ckpt", layout)
    checkpoint = TF1Checkpoint(tmp_path / "model.ckpt")
    plan = plan_mapping(model, spec, checkpoint)
    gammas = [name for name, _, _ in plan.implied]
    assert gammas and all(name.endswith("BatchNorm/gamma") for name in gammas)
    assert len(plan.assignments) + len(gammas) == sum(
        len(m.variables) for m in model.checkpoint_items.values()
    )
    apply_plan(plan, checkpoint)
    for _, variable, _ in plan.implied:
        np.testing.assert_array_equal(variable.numpy(), 1.0)
    for _, variable, _ in plan.assignments:
        np.testing.assert_array_equal(variable.numpy(), 0.5)
