"""Migrate TF1 Object Detection API zoo detectors to TensorFlow 2 (Model Garden), stage by stage."""

__version__ = "0.1.0"
