"""Fine-tuning of converted two-stage (Faster R-CNN) models: TF1 targets, sampling and losses
(`losses.py`), the Model Garden task (`task.py`)."""
