"""Benchmark: build-tfrecords against Model Garden's create_coco_tf_record, same images and shards.

Builds temporary datasets of 1x and 10x coco_tiny val (images replicated under new names and
ids), runs each writer in a fresh subprocess (as users run them: `python -m ...`, imports
included), and prints wall time, the speed ratio and peak RSS, measured in this run.

    .venv/bin/python bench/bench_tfrecords.py [--repeats 3] [--shards 4] [--scale 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COCO_TINY = Path(os.environ.get("SHARED_FIXTURES", ROOT.parent / "shared" / "fixtures")) / (
    "coco/coco_tiny"
)


def make_dataset(target: Path, replicas: int) -> tuple[Path, Path]:
    source = json.loads((COCO_TINY / "annotations" / "instances_val2017.json").read_text())
    images_dir = target / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for r in range(replicas):
        for image in source["images"]:
            name = f"r{r:03d}_{image['file_name']}"
            shutil.copyfile(COCO_TINY / "val2017" / image["file_name"], images_dir / name)
            images.append({**image, "file_name": name, "id": image["id"] * 1000 + r})
        for ann in source["annotations"]:
            annotations.append(
                {**ann, "id": ann["id"] * 1000 + r, "image_id": ann["image_id"] * 1000 + r}
            )
    path = target / "instances.json"
    path.write_text(
        json.dumps(
            {"images": images, "annotations": annotations, "categories": source["categories"]}
        )
    )
    return path, images_dir


def run_measured(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB, largest process of the tree) of one subprocess."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{command[:4]} failed:\n{process.stderr.read().decode()[-3000:]}")
    return elapsed, usage.ru_maxrss / 1024


def count_records(files: list[Path]) -> int:
    total = 0
    for path in files:
        with open(path, "rb") as handle:
            while header := handle.read(12):
                (length,) = struct.unpack("<Q", header[:8])
                handle.seek(length + 4, os.SEEK_CUR)
                total += 1
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--scale", type=int, default=10)
    args = parser.parse_args()
    if not COCO_TINY.is_dir():
        print(f"skipped: {COCO_TINY} not available")
        return 0
    python = sys.executable
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_tfrecords_") as scratch:
        for replicas in (1, args.scale):
            annotations, images = make_dataset(Path(scratch) / f"x{replicas}", replicas)
            ours_out = Path(scratch) / f"ours_x{replicas}"
            theirs_prefix = Path(scratch) / f"mg_x{replicas}" / "val"
            theirs_prefix.parent.mkdir()
            ours_cmd = [
                python,
                "-m",
                "pipeline",
                "build-tfrecords",
                "--annotations",
                str(annotations),
                "--images",
                str(images),
                "--out",
                str(ours_out),
                "--shards",
                str(args.shards),
                "--no-progress",
            ]
            theirs_cmd = [
                python,
                "-m",
                "official.vision.data.create_coco_tf_record",
                f"--image_dir={images}",
                f"--object_annotations_file={annotations}",
                f"--output_file_prefix={theirs_prefix}",
                f"--num_shards={args.shards}",
            ]
            timings: dict[str, list[tuple[float, float]]] = {"ours": [], "model_garden": []}
            for _ in range(args.repeats):  # interleaved, so machine load hits both alike
                timings["ours"].append(run_measured(ours_cmd))
                timings["model_garden"].append(run_measured(theirs_cmd))
            ours_n = count_records(sorted(ours_out.glob("*.tfrecord")))
            theirs_n = count_records(sorted(theirs_prefix.parent.glob("*.tfrecord")))
            assert ours_n == theirs_n == 80 * replicas, (ours_n, theirs_n)
            rows.append(
                {
                    "images": 80 * replicas,
                    "ours_s": min(t for t, _ in timings["ours"]),
                    "mg_s": min(t for t, _ in timings["model_garden"]),
                    "ours_rss": max(m for _, m in timings["ours"]),
                    "mg_rss": max(m for _, m in timings["model_garden"]),
                }
            )
            shutil.rmtree(Path(scratch) / f"x{replicas}")

    print(
        f"build-tfrecords vs Model Garden create_coco_tf_record ({args.shards} shards, "
        f"best of {args.repeats}, {os.cpu_count()} CPUs)"
    )
    print("| images | ours s | MG s | speed-up | ours peak RSS MiB | MG peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['images']} | {row['ours_s']:.2f} | {row['mg_s']:.2f} | "
            f"{row['mg_s'] / row['ours_s']:.1f}x | {row['ours_rss']:.0f} | "
            f"{row['mg_rss']:.0f} |"
        )
    small, large = rows
    extra = large["images"] - small["images"]
    ours_rate = (large["ours_s"] - small["ours_s"]) / extra * 1000
    mg_rate = (large["mg_s"] - small["mg_s"]) / extra * 1000
    print(
        f"marginal cost per image (startup excluded): ours {ours_rate:.2f} ms, "
        f"MG {mg_rate:.2f} ms ({mg_rate / max(ours_rate, 1e-9):.1f}x)"
    )
    print(
        f"peak RSS growth 1x -> {args.scale}x: ours {large['ours_rss'] - small['ours_rss']:+.0f} "
        f"MiB, MG {large['mg_rss'] - small['mg_rss']:+.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
