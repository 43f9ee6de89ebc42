"""Export a TF1 checkpoint with the TF1 OD API's own exporter (object_detection/exporter.py).

Runs in the tf1_reference venv only (never imported by the tests: `boot` switches the whole
process to TF1 behaviour). Unlike make_zoo_dir.py, which re-saves the model's variables before
exporting, the checkpoint is handed to `exporter.export_inference_graph` as is, so a training
checkpoint's moving-average shadows reach the exporter and `eval_config.use_moving_averages`
does what it does for a user.

usage: export_checkpoint.py --tf1-reference DIR --pipeline-config P --checkpoint PREFIX --out DIR
"""

import argparse
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tf1-reference", required=True, help="../shared/tf1_reference")
    parser.add_argument("--pipeline-config", required=True)
    parser.add_argument("--checkpoint", required=True, help="name-based TF1 checkpoint prefix")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    sys.path.insert(0, args.tf1_reference)
    import boot  # noqa: F401  (must precede object_detection)
    from google.protobuf import text_format
    from object_detection import exporter
    from object_detection.protos import pipeline_pb2

    config = pipeline_pb2.TrainEvalPipelineConfig()
    with open(args.pipeline_config, encoding="utf-8") as handle:
        text_format.Merge(handle.read(), config)
    # Needs tensorflow.contrib.tfprof, absent under TF 2; it only prints statistics.
    exporter.profile_inference_graph = lambda graph: None
    averaged = config.eval_config.use_moving_averages
    exporter.export_inference_graph("image_tensor", config, args.checkpoint, args.out)
    print(f"{args.out}: exported with use_moving_averages={averaged}")


if __name__ == "__main__":
    main()
