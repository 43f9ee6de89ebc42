"""Class ids: a label map that disagrees with the model's class count is one clear error before any
work, in fine-tune and in evaluate (which scores it anyway only with --allow-class-mismatch)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.datasets import BuildConfig, build_tfrecords
from pipeline.datasets.label_map import LabelMapEntry, class_mismatch

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _entries(*ids: tuple[int, int]) -> list[LabelMapEntry]:
    return [LabelMapEntry(class_id, f"c{source}", source) for class_id, source in ids]


def test_class_mismatch_rules() -> None:
    # The dataset's own ids (a COCO subset for a COCO model): fewer is fine, beyond is not.
    assert class_mismatch(_entries((1, 1), (3, 3)), 90) is None
    assert "class id 91 ('c91') is beyond the model's 90 classes" in class_mismatch(
        _entries((1, 1), (91, 91)), 90
    )
    # Renumbered (1..K): K must be the model's class count.
    assert class_mismatch(_entries((1, 5), (2, 7)), 2) is None
    assert "renumbers the dataset's categories to class ids 1..2, but the model has 90" in (
        class_mismatch(_entries((1, 5), (2, 7)), 90)
    )
    assert "beyond the model's 1 classes (1 of the label map's 2 are)" in class_mismatch(
        _entries((1, 5), (2, 7)), 1
    )


@pytest.fixture(scope="module")
def four_classes(coco_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """coco_tiny val as TFRecords with a 4-class label map (the built-in model has 3 classes);
    person is class 4, so the very first batches hold a class the model lacks."""
    root = tmp_path_factory.mktemp("four")
    (root / "classes.json").write_text(json.dumps(["cup", "car", "dog", "person"]))
    split = coco_tiny / "annotations" / "instances_val2017.json"
    build_tfrecords(
        BuildConfig(split, coco_tiny / "val2017", root / "tfrecords", shards=1,
                    label_map=root / "classes.json", progress=False)
    )  # fmt: skip
    return root / "tfrecords"


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_fine_tune_refuses_more_classes_than_the_model_before_any_work(
    builtin_converted: Path, four_classes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["train"].update(steps=2, batch_size=2)
    params["train"]["schedule"]["warmup_steps"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "finetuned"
    args = ["--params", str(tmp_path / "params.yaml"), "--converted", str(builtin_converted)]
    args += ["--train-tfrecords", str(four_classes / "*.tfrecord"), "--out", str(out)]
    code = main(["fine-tune", *args])
    err = _one_line_error(capsys)
    assert code != 0
    assert f"{four_classes / 'label_map.json'}: class id 4 ('person') is beyond" in err
    assert "set train.num_classes: 4 in" in err and "data.label_map" in err
    assert not out.exists()  # no checkpoint/, dvclive/ or anything else left behind


def test_fine_tune_check_passes_a_matching_label_map(
    builtin_converted: Path, four_classes: Path
) -> None:
    from pipeline.training.finetune import check_class_ids

    pattern = str(four_classes / "*.tfrecord")
    check_class_ids([pattern, None], 4, builtin_converted, "params.yaml")  # train.num_classes: 4
    check_class_ids([str(builtin_converted / "none" / "*.tfrecord")], 3, "c", "p")  # no label map


def test_evaluate_refuses_a_mismatch_unless_allowed(
    builtin_zoo: Path,
    builtin_converted: Path,
    four_classes: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pattern = str(four_classes / "*.tfrecord")
    for model in (builtin_converted, builtin_zoo):  # model_spec.json / TF1 pipeline.config
        out = tmp_path / model.name
        code = main(["evaluate", "--model", str(model), "--tfrecords", pattern, "--out", str(out)])
        err = _one_line_error(capsys)
        assert code != 0 and "class id 4 ('person') is beyond the model's 3 classes" in err
        assert "--allow-class-mismatch" in err
        assert not out.exists()
    out = tmp_path / "allowed"
    with caplog.at_level(logging.WARNING):
        args = ["--model", str(builtin_zoo), "--tfrecords", pattern, "--out", str(out)]
        args += ["--max-images", "2", "--no-progress", "--allow-class-mismatch"]
        code = main(["evaluate", *args])
    assert code == 0 and (out / "metrics.json").is_file()
    assert "scoring it anyway (--allow-class-mismatch)" in caplog.text
