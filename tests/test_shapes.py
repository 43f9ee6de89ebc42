"""The built-in shapes dataset: deterministic, valid COCO, boxes that match the drawn pixels."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.builtin.shapes import (
    CATEGORIES,
    DOMAINS,
    ShapesConfig,
    encode_jpeg,
    render_sample,
    write_dataset,
)
from pipeline.cli import main
from pipeline.errors import PipelineError

SPLITS = {"train": 24, "val": 8}


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, tuple[Path, ShapesConfig]]:
    built = {}
    for domain in DOMAINS:
        config = ShapesConfig(domain=domain, seed=7)
        out = tmp_path_factory.mktemp(domain) / "shapes"
        write_dataset(out, SPLITS, config, progress=False)
        built[domain] = (out, config)
    return built


@pytest.fixture(params=sorted(DOMAINS))
def dataset(request, datasets) -> tuple[Path, ShapesConfig]:
    return datasets[request.param]


def _coco(out: Path, split: str) -> dict:
    return json.loads((out / "annotations" / f"instances_{split}.json").read_text())


def _decoded(out: Path, split: str, name: str) -> np.ndarray:
    return np.asarray(Image.open(out / split / name).convert("RGB"), np.int16)


def test_layout_and_coco_validity(dataset) -> None:
    from pycocotools.coco import COCO

    out, config = dataset
    assert sorted(p.name for p in out.iterdir()) == ["annotations", "train", "val"]
    all_image_ids: set[int] = set()
    for split, count in SPLITS.items():
        path = out / "annotations" / f"instances_{split}.json"
        coco = COCO(str(path))
        assert sorted(coco.getCatIds()) == [1, 2, 3]
        assert [c["name"] for c in coco.loadCats([1, 2, 3])] == ["circle", "square", "triangle"]
        assert len(coco.getImgIds()) == count
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(
            img["file_name"] for img in coco.dataset["images"]
        )
        ann_ids = [a["id"] for a in coco.dataset["annotations"]]
        assert len(ann_ids) == len(set(ann_ids))
        for img in coco.dataset["images"]:
            assert isinstance(img["id"], int) and img["file_name"] == f"{img['id']:012d}.jpg"
            assert img["id"] not in all_image_ids
            all_image_ids.add(img["id"])
            with Image.open(out / split / img["file_name"]) as im:
                assert im.format == "JPEG"
                assert im.size == (img["width"], img["height"]) == (config.image_size,) * 2
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
            assert config.min_objects <= len(anns) <= config.max_objects
            for ann in anns:
                x, y, w, h = ann["bbox"]
                assert all(isinstance(v, float) for v in ann["bbox"])
                assert x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
                assert 0 < ann["area"] <= w * h and ann["iscrowd"] == 0
                # Sizes as specified: circumcircle diameter 12-60% of the side.
                assert max(w, h) >= 0.10 * config.image_size
                assert max(w, h) <= 0.61 * config.image_size
                # The polygon and the pixel box agree; pycocotools rasterises it to ~area.
                polygon = np.asarray(ann["segmentation"][0]).reshape(-1, 2)
                assert polygon[:, 0].min() >= x - 1 and polygon[:, 0].max() <= x + w + 1
                assert polygon[:, 1].min() >= y - 1 and polygon[:, 1].max() <= y + h + 1
                assert abs(coco.annToMask(ann).sum() - ann["area"]) <= 0.15 * ann["area"] + 8
    # Not every image is a single object.
    counts = [
        len(anns) for anns in COCO(str(out / "annotations/instances_train.json")).imgToAnns.values()
    ]
    assert max(counts) >= 3


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path) -> None:
    out, config = dataset
    again = tmp_path / "again"
    write_dataset(again, SPLITS, config, progress=False)
    assert _tree_digest(again) == _tree_digest(out)
    other = tmp_path / "other"
    write_dataset(other, {"train": 4}, ShapesConfig(domain=config.domain, seed=8), progress=False)
    first = "train/000000000001.jpg"
    assert _tree_digest(other)[first] != _tree_digest(out)[first]


def test_images_do_not_depend_on_split_size(dataset, tmp_path) -> None:
    out, config = dataset
    fewer = tmp_path / "fewer"
    write_dataset(fewer, {"train": 5}, config, progress=False)
    for path in sorted((fewer / "train").iterdir()):
        assert path.read_bytes() == (out / "train" / path.name).read_bytes()
    assert _coco(fewer, "train")["annotations"] == [
        a for a in _coco(out, "train")["annotations"] if a["image_id"] <= 5
    ]


def test_plain_boxes_match_the_jpeg_pixels(datasets) -> None:
    """From the JPEG alone: foreground is exactly inside the boxes, and fills them as its shape.

    Flat backgrounds make this possible; the textured domain is checked against its label map.
    """
    out, _ = datasets["plain"]
    # Fill ratio of a shape in its box: circle pi/4, axis-aligned square 1, upright triangle 1/2.
    expected_fill = {1: np.pi / 4, 2: 1.0, 3: 0.5}
    coco = _coco(out, "train")
    for img in coco["images"]:
        pixels = _decoded(out, "train", img["file_name"])
        # Shapes keep 1 px off the border, so the first row is background.
        background = np.median(pixels[0], axis=0)
        foreground = np.abs(pixels - background).max(axis=2) > 60
        inside = np.zeros_like(foreground)
        for ann in (a for a in coco["annotations"] if a["image_id"] == img["id"]):
            x, y, w, h = (int(v) for v in ann["bbox"])
            inside[y : y + h, x : x + w] = True
            box = foreground[y : y + h, x : x + w]
            rows, cols = np.nonzero(box)
            # The box is tight: the shape reaches every side (JPEG may shave one pixel).
            assert rows.min() <= 1 and cols.min() <= 1
            assert rows.max() >= h - 2 and cols.max() >= w - 2
            fill = box.mean()
            assert abs(fill - expected_fill[ann["category_id"]]) < 0.08, (img, ann, fill)
            assert abs(box.sum() - ann["area"]) <= 0.1 * ann["area"]
        grown = inside.copy()
        grown[1:] |= inside[:-1]
        grown[:-1] |= inside[1:]
        grown[:, 1:] |= inside[:, :-1]
        grown[:, :-1] |= inside[:, 1:]
        assert not (foreground & ~grown).any(), img


def test_boxes_are_exact_extents_of_the_drawn_shapes(dataset) -> None:
    out, config = dataset
    coco = _coco(out, "val")
    for index, img in enumerate(coco["images"]):
        sample = render_sample(config, "val", index)
        # What was written is what was rendered.
        assert (out / "val" / img["file_name"]).read_bytes() == encode_jpeg(
            sample.image, config.jpeg_quality
        )
        anns = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
        assert len(anns) == len(sample.objects)
        decoded = _decoded(out, "val", img["file_name"])
        for k, ann in enumerate(anns, start=1):
            mask = sample.label_map == k
            rows, cols = np.nonzero(mask)
            x0, y0 = cols.min(), rows.min()
            assert ann["bbox"] == [x0, y0, cols.max() - x0 + 1, rows.max() - y0 + 1]
            assert ann["area"] == mask.sum()
            # The JPEG shows the object's colour there (shading and grain average out).
            color = np.asarray(sample.objects[k - 1].color)
            assert np.abs(decoded[mask].mean(axis=0) - color).max() < 30


def test_domains_differ(tmp_path) -> None:
    stats = {}
    for name in ("plain", "textured"):
        config = ShapesConfig(domain=name, seed=0)
        samples = [render_sample(config, "train", i) for i in range(40)]
        background_std = np.mean(
            [s.image[s.label_map == 0].astype(float).std(axis=0).mean() for s in samples]
        )
        sizes = [max(o.bbox[2], o.bbox[3]) / config.image_size for s in samples for o in s.objects]
        colors = {o.color for s in samples for o in s.objects}
        stats[name] = (background_std, np.mean(sizes), min(sizes), colors)
    plain, textured = stats["plain"], stats["textured"]
    assert plain[0] < 1.0 < 10.0 < textured[0]  # flat vs textured backgrounds
    assert plain[1] > textured[1] + 0.03 and textured[2] < 0.15 < plain[2]  # smaller objects
    assert not plain[3] & textured[3]  # disjoint colour sets
    assert plain[3] <= set(DOMAINS["plain"].palette)


def test_colour_does_not_give_away_the_class() -> None:
    config = ShapesConfig(domain="plain", seed=0)
    seen: dict[tuple[int, int, int], set[int]] = {}
    for i in range(150):
        for obj in render_sample(config, "train", i).objects:
            seen.setdefault(obj.color, set()).add(obj.category_id)
    assert sum(len(classes) == len(CATEGORIES) for classes in seen.values()) >= len(seen) - 1


def test_invalid_settings() -> None:
    with pytest.raises(PipelineError, match=r"unknown domain 'foggy'"):
        ShapesConfig(domain="foggy")
    with pytest.raises(PipelineError, match=r"min_objects/max_objects"):
        ShapesConfig(min_objects=3, max_objects=2)
    with pytest.raises(PipelineError, match=r"split 'dev': unknown"):
        write_dataset("unused", {"dev": 3}, ShapesConfig(), progress=False)


def test_cli_flags_and_params(tmp_path, capsys) -> None:
    out = tmp_path / "flags"
    args = ["make-shapes", "--out", str(out), "--split", "train=3", "--split", "val"]
    assert main([*args, "--num-images", "2", "--domain", "plain", "--seed", "3"]) == 0
    assert "wrote plain shapes (seed 3)" in capsys.readouterr().out
    assert len(list((out / "train").iterdir())) == 3 and len(list((out / "val").iterdir())) == 2

    params = tmp_path / "params.yaml"
    settings = {"domain": "plain", "seed": 3, "splits": {"train": 3, "val": 2}}
    params.write_text(yaml.safe_dump({"data": {"shapes": settings}}))
    from_params = tmp_path / "from_params"
    assert main(["make-shapes", "--params", str(params), "--out", str(from_params)]) == 0
    assert _tree_digest(from_params) == _tree_digest(out)


def test_cli_errors_are_one_line(tmp_path, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"shapes": {"colour": 1, "splits": {"train": 1}}}}))
    out = tmp_path / "out"
    assert main(["make-shapes", "--params", str(params), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {params}: data.shapes has unknown key")
    assert main(["make-shapes", "--out", str(out), "--split", "train=x"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --split train=x: N must be an integer, e.g. train=400"
    )
    assert not out.exists()


def test_jpeg_is_standard(dataset) -> None:
    out, _ = dataset
    data = (out / "train" / "000000000001.jpg").read_bytes()
    assert data[:2] == b"\xff\xd8"
    assert Image.open(io.BytesIO(data)).mode == "RGB"
