"""Comparing DVC experiments as a team: a compact markdown report with an AP-vs-LR plot."""

from pipeline.experiments.report import ExperimentRow, collect_rows, write_report

__all__ = ["ExperimentRow", "collect_rows", "write_report"]
