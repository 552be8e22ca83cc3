"""Metrics for ``salmonn eval``: ``compute_metrics(task, hyps, refs, samples)`` and its parts."""

from salmonn.evaluation.following import FOLLOWING_RULES, distinct_n, following_rate, repeat_rate
from salmonn.evaluation.metrics import (METRIC_UNITS, TASK_METRICS, compute_metrics, confusion_matrix,
                                        plot_confusion)

__all__ = ["FOLLOWING_RULES", "METRIC_UNITS", "TASK_METRICS", "compute_metrics", "confusion_matrix",
           "distinct_n", "following_rate", "plot_confusion", "repeat_rate"]
