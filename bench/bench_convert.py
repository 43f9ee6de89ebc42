"""Benchmark: converting a zoo model vs merely reading and re-writing the same tensors.

Builds a zoo directory from a `fixtures/tf1_zoo` model (default ssd_mobilenet_v2_coco_2018_03_29:
its real graph, 67.5 MB, 345 tensors; `--model` names another, e.g.
faster_rcnn_inception_resnet_v2_atrous_coco_2018_01_28: its pipeline.config and index, 907
tensors) with a synthetic checkpoint of the exact layout, then, alternating, in this process:
- reference: read every tensor of the TF1 checkpoint and write them all to a new checkpoint
  (CheckpointReader + SaveV2: the I/O any conversion must do);
- conversion: `pipeline.conversion.convert.convert` (config + index, variable mapping, assignment,
  TF2 object-based checkpoint, spec, report), with model construction timed separately.
Prints medians, the ratio conversion / reference (target <= 2x), and the one-off costs (TensorFlow
import, model construction) on their own lines.

    .venv/bin/python bench/bench_convert.py [--repeats 3] [--model NAME]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = Path(os.environ.get("SHARED_FIXTURES", ROOT.parent / "shared" / "fixtures"))
DEFAULT_MODEL = "ssd_mobilenet_v2_coco_2018_03_29"


def read_and_rewrite(prefix: Path, out_prefix: Path) -> float:
    import tensorflow as tf

    start = time.perf_counter()
    reader = tf.train.load_checkpoint(str(prefix))
    names = sorted(reader.get_variable_to_shape_map())
    tensors = [reader.get_tensor(name) for name in names]
    tf.raw_ops.SaveV2(
        prefix=str(out_prefix),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=tensors,
    )
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a fixtures/tf1_zoo directory")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    source = FIXTURES / "tf1_zoo" / args.model
    if not source.is_dir():
        print(f"skipped: fixture {source} not available")
        return 0

    start = time.perf_counter()
    import official.vision.modeling  # noqa: F401  (Model Garden, imported by the converter)
    import tensorflow as tf  # noqa: F401

    import_seconds = time.perf_counter() - start

    from pipeline.conversion.convert import convert
    from pipeline.tf1.synthetic_checkpoint import make_synthetic_zoo_dir

    with tempfile.TemporaryDirectory(prefix="bench_convert_") as scratch:
        root = Path(scratch)
        zoo = make_synthetic_zoo_dir(source, root / "zoo")
        data_mb = sum(p.stat().st_size for p in zoo.glob("model.ckpt.data-*")) / 1e6
        reference, conversion, construction = [], [], []
        for repeat in range(args.repeats):
            reference.append(read_and_rewrite(zoo / "model.ckpt", root / f"copy{repeat}" / "ckpt"))
            start = time.perf_counter()
            report = convert(zoo, root / f"converted{repeat}", progress=False)
            total = time.perf_counter() - start
            construction.append(report["timings_s"]["build_model"])
            conversion.append(total - report["timings_s"]["build_model"])

    ref, conv = statistics.median(reference), statistics.median(conversion)
    print(f"checkpoint: {args.model} layout, {data_mb:.1f} MB, {report['tf1']['total']} tensors")
    print(f"TensorFlow + Model Garden import: {import_seconds:.2f} s (once)")
    print(f"model construction: {statistics.median(construction):.2f} s (median, separate)")
    print(f"read + re-write the tensors: {ref:.3f} s (median of {args.repeats})")
    print(f"conversion without model construction: {conv:.3f} s (median of {args.repeats})")
    print(f"ratio conversion / read+rewrite: {conv / ref:.2f}x (target <= 2x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
