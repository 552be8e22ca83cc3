"""Metrics for ``salmonn eval``: ``compute_metrics(task, hyps, refs, samples)`` and its parts.

The names below load on first use: importing ``salmonn.evaluation.commands`` (``salmonn eval``, imported by the
CLI) or ``.run`` must not need the ``eval`` extra (jiwer, sacrebleu, ...), or every ``salmonn`` command would;
``salmonn eval`` checks for the extra first and says in one line what to install.
"""

import importlib

_HOMES = {"FOLLOWING_RULES": "following", "distinct_n": "following", "following_rate": "following",
          "repeat_rate": "following", "METRIC_UNITS": "metrics", "TASK_METRICS": "metrics",
          "compute_metrics": "metrics", "confusion_matrix": "metrics", "plot_confusion": "metrics"}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
