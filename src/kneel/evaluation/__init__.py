"""Evaluation of landmark predictions: metrics in mm, matching to ground truth, tables, plots and HTML reports."""

from kneel.evaluation.metrics import (
    DEFAULT_THRESHOLDS,
    cumulative_curve,
    error_summary,
    group_errors,
    grouped_recall,
    landmark_errors_mm,
    outlier_percent,
    recall_at,
)
from kneel.evaluation.run import EvaluationReport, evaluate, evaluate_cv, headline

__all__ = [
    "EvaluationReport",
    "evaluate",
    "evaluate_cv",
    "headline",
    "DEFAULT_THRESHOLDS",
    "cumulative_curve",
    "error_summary",
    "group_errors",
    "grouped_recall",
    "landmark_errors_mm",
    "outlier_percent",
    "recall_at",
]
