"""TF1 Object Detection API config messages (the subset this project reads)."""
