"""Reading TF1 Object Detection API artefacts: pipeline.config, name-based checkpoints, graphs."""
