"""Converted-model inference time against the original TF1 graph, same images, one process.

    .venv/bin/python bench/bench_inference.py [--images 10] [--repeats 3] [--model NAME ...]

Models (real TF1 inference graphs from `../shared/fixtures`, holding synthetic weights of their
exact checkpoint layout, `pipeline.tf1.synthetic_checkpoint`):
  ssd_mobilenet_v2          the zoo's ssd_mobilenet_v2_coco_2018_03_29 graph (TF 1.5-era, 300x300)
  faster_rcnn_inception_v2  a user's TF 1.8 export (faster_rcnn_inception_v2_cards_export_tf1.8,
                            keep_aspect_ratio 600..1024, 300 proposals)
Each is converted by the project, then both run one image at a time (what `predict` does) on the
first `--images` coco_tiny val images:
  TF1:  the `.meta` inference graph restored in a `tf.compat.v1` session (`tf1_detector`),
  ours: the converted model as `predict` loads it (`load_detector`: a traced tf.function).
Per image the two alternate (TF1, ours, ...), after one warm-up pass each; the ratio of the
median per-image times is printed (target <= 1.0x the TF1 graph's time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIXTURES = ROOT.parent / "shared" / "fixtures"
MODELS = {
    "ssd_mobilenet_v2": FIXTURES / "tf1_zoo" / "ssd_mobilenet_v2_coco_2018_03_29",
    "faster_rcnn_inception_v2": FIXTURES
    / "tf1_user_models"
    / "faster_rcnn_inception_v2_cards_export_tf1.8",
}
IMAGES = FIXTURES / "coco" / "coco_tiny" / "val2017"


def _seconds(detector, images) -> list[float]:
    times = []
    for image in images:
        start = time.perf_counter()
        detector(image[None])
        times.append(time.perf_counter() - start)
    return times


def bench_model(name: str, scratch: Path, image_count: int, repeats: int) -> dict:
    from pipeline.conversion.convert import convert
    from pipeline.inference.detector import load_detector, tf1_detector
    from pipeline.tf1.graph_runner import list_images, load_image
    from pipeline.tf1.synthetic_checkpoint import make_synthetic_zoo_dir

    zoo = make_synthetic_zoo_dir(MODELS[name], scratch / name / "tf1", seed=0)
    convert(zoo, scratch / name / "tf2", progress=False)
    images = [load_image(path) for path in list_images(IMAGES, image_count)]
    detectors = {"tf1": tf1_detector(zoo), "ours": load_detector(scratch / name / "tf2")}
    for detector in detectors.values():  # load, trace, warm up
        _seconds(detector, images[:2])
    times: dict[str, list[float]] = {side: [] for side in detectors}
    for _ in range(repeats):
        for image in images:
            for side, detector in detectors.items():
                times[side] += _seconds(detector, [image])
    median = {side: statistics.median(values) for side, values in times.items()}
    return {
        "images": len(images),
        "repeats": repeats,
        "median_seconds_per_image": {k: round(v, 4) for k, v in median.items()},
        "ratio_ours_vs_tf1": round(median["ours"] / median["tf1"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", choices=sorted(MODELS), action="append")
    args = parser.parse_args(argv)
    if not IMAGES.is_dir():
        print(f"needs {FIXTURES} (../shared beside the project)")
        return 2
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.model or list(MODELS):
            results[name] = bench_model(name, Path(scratch), args.images, args.repeats)
            ratio = results[name]["ratio_ours_vs_tf1"]
            print(f"{name}: {ratio:.2f}x the TF1 graph's time per image (target <= 1.0x)")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
