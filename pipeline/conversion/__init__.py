"""TF1 checkpoint -> TF2 Model Garden model: variable mapping, conversion, report, parity."""
