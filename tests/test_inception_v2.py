"""ssd_inception_v2 (issue 11): conversion proven against the real TF1 zoo graph, then fine-tuned.

- `ssd_inception_v2_coco_2018_01_28`: the zoo's own graph (TF 1.5, clips before NMS) run with
  synthetic weights of its exact checkpoint layout; every variable mapped, raw outputs per level
  within 1e-4 relative, the graph's top-50 detections reproduced on real COCO images; a 0.1%
  change of one early BatchNorm scale must fail the check.
- the OD API sample config (`ssd_inception_v2_coco.config`, which sets
  override_base_feature_extractor_hyperparams) exported by the TF1 OD API's own code (later
  post-processing: clips after NMS), converted and compared the same way (slow).
- the converted zoo model fine-tunes a few steps, and every conf/train/freeze choice resolves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.conversion.parity import verify_conversion
from pipeline.tf1.graph_runner import iter_images

ZOO_MODEL = "ssd_inception_v2_coco_2018_01_28"
NUM_IMAGES = 3


@pytest.fixture(scope="module")
def images(coco_tiny: Path) -> list[tuple[str, np.ndarray]]:
    return [(path.name, image) for path, image in iter_images(coco_tiny / "val2017", NUM_IMAGES)]


@pytest.fixture(scope="module")
def converted(tf1_zoo_dir: Path, tmp_path_factory) -> tuple[Path, Path, dict]:
    from pipeline.conversion.convert import convert
    from pipeline.tf1.synthetic_checkpoint import make_synthetic_zoo_dir

    root = tmp_path_factory.mktemp("inception_v2")
    zoo = make_synthetic_zoo_dir(tf1_zoo_dir / ZOO_MODEL, root / "tf1", seed=0)
    report = convert(zoo, root / "tf2", progress=False)
    return zoo, root / "tf2", report


def test_every_variable_mapped(converted) -> None:
    _, _, report = converted
    assert report["complete"] and report["source"]["architecture"] == "ssd_inception_v2"
    assert report["tf1"]["unmapped"] == [] and report["tf2"]["uninitialised"] == []
    assert report["tf1"]["mapped"] == report["tf1"]["total"] - 1  # all but global_step
    assert report["tf1"]["ignored_bookkeeping"] == ["global_step"]


def test_matches_the_real_tf1_5_zoo_graph(converted, images) -> None:
    zoo, out, _ = converted
    report = verify_conversion(zoo, out, images=images)
    assert report.passed, report.summary()
    assert report.detections_checked == 50 * NUM_IMAGES
    for image in report.images:
        assert image.class_logits.max_abs_tf1 > 1.0
        assert len(image.class_logits.per_level_max_abs_diff) == 6


def test_a_small_weight_change_is_caught(converted, images) -> None:
    from pipeline.modeling import load_converted

    zoo, out, _ = converted
    model, spec = load_converted(out)
    record = next(
        r
        for r in model.backbone.tf1_layout.records
        if r.scope.endswith("/Conv2d_2c_3x3") and r.kind == "batch_norm"
    )
    record.layer.gamma.assign(record.layer.gamma * 1.001)
    report = verify_conversion(zoo, model, spec, images=images[:1])
    assert not report.box_encodings_passed and not report.class_logits_passed


@pytest.mark.slow
def test_sample_config_export_matches(od_api_configs, tf1_reference_export, images, tmp_path):
    from pipeline.conversion.convert import convert

    zoo = tf1_reference_export(od_api_configs / "ssd_inception_v2_coco.config")
    report = convert(zoo, tmp_path / "tf2", progress=False)
    assert report["complete"] and report["tf1"]["unmapped"] == []
    parity = verify_conversion(zoo, tmp_path / "tf2", images=images)
    assert parity.passed, parity.summary()


@pytest.mark.slow
def test_fine_tunes_and_freeze_choices_resolve(converted, coco_tiny, tmp_path) -> None:
    from test_training_support import check_freezing_and_finetune

    _, out, _ = converted
    check_freezing_and_finetune(out, coco_tiny, tmp_path, num_classes=90)


def test_zoo_entry_composes() -> None:
    from pipeline.params import compose

    zoo = compose(Path("conf"), ["zoo=ssd_inception_v2_coco"]).zoo
    assert zoo.architecture == "ssd_inception_v2" and zoo.name == ZOO_MODEL
    assert zoo.url == f"http://download.tensorflow.org/models/object_detection/{ZOO_MODEL}.tar.gz"
