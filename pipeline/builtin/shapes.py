"""A deterministic COCO-format detection dataset of simple shapes, in two domains.

- `plain` (pre-training domain of the built-in zoo model): flat backgrounds, saturated colours,
  larger objects, upright shapes.
- `textured` (the default fine-tuning target): noisy multi-scale textures with stripes and clutter
  lines, a different colour set, smaller objects, rotated squares and triangles, shaded fills. The
  classes are the same, so the pre-trained model still finds something, but the domain shift leaves
  fine-tuning something to learn.

Colour never identifies the class (every colour is drawn for every shape), so a model has to learn
shape. Every image is rendered from its own random stream seeded by (seed, domain, split, index):
the same settings give byte-identical JPEGs and JSON, and image i does not depend on how many
images are generated. Shapes never touch each other (2 px gap), so each box is the exact extent of
the visible pixels of its shape and `area` is its pixel count.
"""

from __future__ import annotations

import io
import json
import math
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from pipeline.atomic import atomic_directory
from pipeline.errors import PipelineError

CATEGORIES: tuple[dict[str, Any], ...] = (
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
)
CIRCLE, SQUARE, TRIANGLE = 1, 2, 3

# Image ids are globally unique across splits (as in COCO) and independent of split sizes.
SPLIT_ID_BASE = {"train": 0, "val": 1_000_000, "test": 2_000_000}
MAX_IMAGES_PER_SPLIT = 999_999
_CIRCLE_VERTICES = 64
_GAP_PX = 2
_MIN_OBJECT_PIXELS = 16
_PLACEMENT_TRIES = 30


@dataclass(frozen=True)
class Domain:
    name: str
    textured: bool
    palette: tuple[tuple[int, int, int], ...]
    size_range: tuple[float, float]  # diameter of the shape's circumcircle, fraction of the side
    max_rotation_deg: float  # squares and triangles turn by up to this much
    min_contrast: float  # RGB distance between object colour and mean background
    max_box_iou: float


DOMAINS: dict[str, Domain] = {
    "plain": Domain(
        name="plain",
        textured=False,
        palette=(
            (220, 40, 40),
            (40, 180, 60),
            (40, 80, 220),
            (235, 210, 40),
            (200, 50, 200),
            (40, 200, 210),
            (245, 140, 30),
            (245, 245, 245),
            (20, 20, 20),
        ),
        size_range=(0.20, 0.60),
        max_rotation_deg=0.0,
        min_contrast=110.0,
        max_box_iou=0.2,
    ),
    "textured": Domain(
        name="textured",
        textured=True,
        palette=(
            (120, 60, 160),
            (20, 120, 120),
            (130, 80, 40),
            (120, 130, 30),
            (240, 140, 180),
            (30, 40, 110),
            (160, 230, 80),
            (120, 20, 40),
            (120, 190, 240),
            (250, 230, 170),
        ),
        size_range=(0.12, 0.45),
        max_rotation_deg=30.0,
        min_contrast=100.0,
        max_box_iou=0.3,
    ),
}


@dataclass(frozen=True)
class ShapesConfig:
    domain: str = "textured"
    image_size: int = 128
    seed: int = 0
    min_objects: int = 1
    max_objects: int = 4
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise PipelineError(
                f"shapes.domain: unknown domain '{self.domain}'; use one of {sorted(DOMAINS)}"
            )
        if not 32 <= self.image_size <= 2048:
            raise PipelineError(f"shapes.image_size: {self.image_size} is outside 32..2048")
        if not 1 <= self.min_objects <= self.max_objects <= 9:
            raise PipelineError(
                f"shapes.min_objects/max_objects: need 1 <= {self.min_objects} <= "
                f"{self.max_objects} <= 9"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise PipelineError(f"shapes.jpeg_quality: {self.jpeg_quality} is outside 1..100")


@dataclass(frozen=True)
class ShapeObject:
    category_id: int
    bbox: tuple[int, int, int, int]  # x, y, w, h in pixels, tight around the visible pixels
    area: int  # visible pixels
    polygon: tuple[float, ...]  # x1, y1, x2, y2, ... in COCO pixel coordinates
    color: tuple[int, int, int]


@dataclass
class Sample:
    image: np.ndarray  # uint8 [H, W, 3], before JPEG encoding
    objects: list[ShapeObject]
    # Object index + 1 for each pixel, 0 for background: what a box must enclose exactly.
    label_map: np.ndarray = field(repr=False)


def render_sample(config: ShapesConfig, split: str, index: int) -> Sample:
    """Render image `index` of `split`; a pure function of its arguments."""
    domain = DOMAINS[config.domain]
    size = config.image_size
    rng = np.random.default_rng([config.seed, _code(config.domain), _code(split), index])
    canvas, bg_mean = _background(rng, domain, size)
    if domain.textured:
        _clutter_lines(rng, canvas)
    label_map = np.zeros((size, size), np.uint8)
    occupied = np.zeros((size, size), bool)
    objects: list[ShapeObject] = []
    for _ in range(int(rng.integers(config.min_objects, config.max_objects + 1))):
        placed = _place(rng, domain, size, occupied, objects)
        if placed is None:
            continue
        category, vertices, mask = placed
        color = _pick_color(rng, domain, bg_mean)
        _paint(rng, canvas, mask, color, domain.textured)
        label_map[mask] = len(objects) + 1
        occupied |= _dilate(mask, _GAP_PX)
        rows, cols = np.nonzero(mask)
        x0, y0 = int(cols.min()), int(rows.min())
        bbox = (x0, y0, int(cols.max()) - x0 + 1, int(rows.max()) - y0 + 1)
        # PIL samples pixel centres at integer coordinates; COCO puts them at +0.5.
        polygon = tuple(round(float(v) + 0.5, 2) for v in vertices.reshape(-1))
        objects.append(ShapeObject(category, bbox, int(mask.sum()), polygon, color))
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return Sample(image=image, objects=objects, label_map=label_map)


def iter_samples(config: ShapesConfig, split: str, num_images: int) -> Iterator[Sample]:
    for index in range(num_images):
        yield render_sample(config, split, index)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    # 4:4:4 keeps colour edges where the boxes say they are; no `optimize` keeps bytes stable.
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def image_id(split: str, index: int) -> int:
    return SPLIT_ID_BASE[split] + index + 1


def file_name(image_id_: int) -> str:
    # predict/evaluate read the COCO image id back from the file name.
    return f"{image_id_:012d}.jpg"


def build_split(
    config: ShapesConfig, split: str, num_images: int, image_dir: Path, *, progress: bool = True
) -> dict[str, Any]:
    """Write `num_images` JPEGs into `image_dir`; return the split's COCO instances dict."""
    _check_split(split, num_images)
    image_dir.mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    samples = iter_samples(config, split, num_images)
    for index, sample in enumerate(
        tqdm(
            samples,
            total=num_images,
            desc=f"shapes {split}",
            unit="img",
            disable=None if progress else True,
        )
    ):
        id_ = image_id(split, index)
        name = file_name(id_)
        (image_dir / name).write_bytes(encode_jpeg(sample.image, config.jpeg_quality))
        height, width = sample.image.shape[:2]
        images.append({"id": id_, "file_name": name, "width": width, "height": height})
        for k, obj in enumerate(sample.objects):
            annotations.append(
                {
                    "id": id_ * 10 + k + 1,
                    "image_id": id_,
                    "category_id": obj.category_id,
                    "bbox": [float(v) for v in obj.bbox],
                    "area": float(obj.area),
                    "iscrowd": 0,
                    "segmentation": [list(obj.polygon)],
                }
            )
    return {
        "info": {
            "description": f"pipeline built-in shapes dataset, {split} split",
            "version": "1",
            "contributor": "pipeline.builtin.shapes",
            "generator": {**asdict(config), "split": split, "num_images": num_images},
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in CATEGORIES],
    }


@dataclass(frozen=True)
class DatasetSummary:
    out_dir: Path
    images: dict[str, int]
    annotations: dict[str, int]


def write_dataset(
    out_dir: str | Path,
    splits: Mapping[str, int],
    config: ShapesConfig,
    *,
    progress: bool = True,
) -> DatasetSummary:
    """Write `<out>/<split>/*.jpg` and `<out>/annotations/instances_<split>.json`, atomically."""
    if not splits:
        raise PipelineError("shapes.splits: no split requested; give e.g. train=400 val=100")
    for split, count in splits.items():
        _check_split(split, count)
    out_dir = Path(out_dir)
    counts: dict[str, int] = {}
    with atomic_directory(out_dir) as staging:
        (staging / "annotations").mkdir()
        for split, count in splits.items():
            coco = build_split(config, split, count, staging / split, progress=progress)
            # Compact and key-ordered as built: identical settings give identical bytes.
            path = staging / "annotations" / f"instances_{split}.json"
            path.write_text(json.dumps(coco, separators=(",", ":")) + "\n")
            counts[split] = len(coco["annotations"])
    return DatasetSummary(out_dir, dict(splits), counts)


def _check_split(split: str, count: int) -> None:
    if split not in SPLIT_ID_BASE:
        raise PipelineError(f"shapes split '{split}': unknown; use {', '.join(SPLIT_ID_BASE)}")
    if not 0 < count <= MAX_IMAGES_PER_SPLIT:
        raise PipelineError(
            f"shapes split '{split}': {count} images; use 1..{MAX_IMAGES_PER_SPLIT}"
        )


def _code(text: str) -> int:
    # A stable integer per name (Python's hash() is salted per process).
    return zlib.crc32(text.encode())


# ----------------------------------------------------------------------------- drawing


def _background(
    rng: np.random.Generator, domain: Domain, size: int
) -> tuple[np.ndarray, np.ndarray]:
    base = rng.uniform(40, 215, 3)
    canvas = np.broadcast_to(base, (size, size, 3)).astype(np.float32)
    if not domain.textured:
        return canvas.copy(), base
    # Value noise at two scales, a stripe pattern and pixel noise: texture at every frequency.
    for cells, amplitude in ((4, 45.0), (16, 25.0)):
        canvas = canvas + _smooth_noise(rng, cells, size) * amplitude
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(6, 24)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = (xs * math.cos(angle) + ys * math.sin(angle)) * (2 * math.pi / period)
    stripe_color = rng.uniform(-1, 1, 3).astype(np.float32)
    canvas = canvas + (np.sin(phase)[..., None] * stripe_color * rng.uniform(5, 25))
    canvas = canvas + rng.standard_normal((size, size, 3), dtype=np.float32) * 6
    return canvas, canvas.reshape(-1, 3).mean(axis=0)


def _smooth_noise(rng: np.random.Generator, cells: int, size: int) -> np.ndarray:
    """Noise in [-1, 1] varying over `cells` cells per side, bicubic-upsampled by Pillow."""
    coarse = rng.uniform(0, 255, (cells + 1, cells + 1, 3)).astype(np.uint8)
    fine = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(fine, np.float32) / 127.5 - 1.0


def _clutter_lines(rng: np.random.Generator, canvas: np.ndarray) -> None:
    size = canvas.shape[0]
    overlay = Image.new("L", (size, size))
    draw = ImageDraw.Draw(overlay)
    for _ in range(int(rng.integers(0, 4))):
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size, 4))
        draw.line((x0, y0, x1, y1), fill=255, width=int(rng.integers(1, 3)))
    mask = np.asarray(overlay) > 0
    canvas[mask] = rng.uniform(0, 255, 3)


def _shape_vertices(category: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    if category == CIRCLE:
        count, start = _CIRCLE_VERTICES, 0.0
    elif category == SQUARE:
        count, start = 4, math.pi / 4 + angle
    else:
        count, start = 3, -math.pi / 2 + angle
    theta = start + np.arange(count) * (2 * math.pi / count)
    return np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], axis=1)


def _rasterize(vertices: np.ndarray, size: int) -> np.ndarray:
    layer = Image.new("1", (size, size))
    ImageDraw.Draw(layer).polygon([tuple(v) for v in vertices.tolist()], fill=1)
    return np.asarray(layer, bool)


def _place(
    rng: np.random.Generator,
    domain: Domain,
    size: int,
    occupied: np.ndarray,
    placed: list[ShapeObject],
) -> tuple[int, np.ndarray, np.ndarray] | None:
    for _ in range(_PLACEMENT_TRIES):
        category = int(rng.integers(1, len(CATEGORIES) + 1))
        radius = rng.uniform(*domain.size_range) * size / 2
        # The circumcircle stays inside the image, so every shape is whole.
        cx, cy = rng.uniform(radius + 1, size - radius - 1, 2)
        angle = math.radians(rng.uniform(-domain.max_rotation_deg, domain.max_rotation_deg))
        vertices = _shape_vertices(category, float(cx), float(cy), float(radius), angle)
        mask = _rasterize(vertices, size)
        if mask.sum() < _MIN_OBJECT_PIXELS or (mask & occupied).any():
            continue
        rows, cols = np.nonzero(mask)
        box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        if any(_iou(box, other.bbox) > domain.max_box_iou for other in placed):
            continue
        return category, vertices, mask
    return None


def _iou(box: tuple[int, int, int, int], other_xywh: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    ox, oy, ow, oh = other_xywh
    iw = max(0, min(x1, ox + ow) - max(x0, ox))
    ih = max(0, min(y1, oy + oh) - max(y0, oy))
    inter = iw * ih
    union = (x1 - x0) * (y1 - y0) + ow * oh - inter
    return inter / union if union else 0.0


def _pick_color(
    rng: np.random.Generator, domain: Domain, background: np.ndarray
) -> tuple[int, int, int]:
    palette = np.asarray(domain.palette, np.float32)
    distance = np.linalg.norm(palette - background, axis=1)
    candidates = np.flatnonzero(distance >= domain.min_contrast)
    if candidates.size == 0:  # a mid-grey background: take the most distant colours
        candidates = np.argsort(distance)[-3:]
    return tuple(int(v) for v in palette[int(rng.choice(candidates))])


def _paint(
    rng: np.random.Generator,
    canvas: np.ndarray,
    mask: np.ndarray,
    color: tuple[int, int, int],
    shaded: bool,
) -> None:
    fill = np.asarray(color, np.float32)
    if not shaded:
        canvas[mask] = fill
        return
    # A linear light gradient plus grain, so the target domain's objects are not flat either.
    rows, cols = np.nonzero(mask)
    direction = rng.uniform(-1, 1, 2)
    ramp = (cols - cols.mean()) * direction[0] + (rows - rows.mean()) * direction[1]
    ramp = ramp / (np.abs(ramp).max() + 1e-6) * rng.uniform(0, 25)
    grain = rng.normal(0, 5, (rows.size, 1))
    canvas[rows, cols] = fill + ramp[:, None] + grain


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    grown = mask.copy()
    for _ in range(pixels):
        step = grown.copy()
        step[1:] |= grown[:-1]
        step[:-1] |= grown[1:]
        step[:, 1:] |= grown[:, :-1]
        step[:, :-1] |= grown[:, 1:]
        grown = step
    return grown
