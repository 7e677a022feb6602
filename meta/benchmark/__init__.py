"""The benchmark of the meta-policy against baselines on held-out datasets (ADBench's protocol).

- :mod:`~anomaly_gym.meta.benchmark.protocol`: settings, few-shot label draws, methods,
  dataset-level folds and the leakage rules;
- :mod:`~anomaly_gym.meta.benchmark.runner`: :class:`BenchmarkConfig` and
  :func:`run_benchmark`, which runs the cells (target × method × seed) through an executor
  (:mod:`anomaly_gym.meta.executors`: serial, a local process pool, or Ray);
- :mod:`~anomaly_gym.meta.benchmark.cells`: one cell, and the detectors' set-up;
- :mod:`~anomaly_gym.meta.benchmark.policies`: which policy bundle scores which target;
- :mod:`~anomaly_gym.meta.benchmark.results`: ``results.csv`` (appended, resumable), ``run.json``, ``folds.json``;
- :mod:`~anomaly_gym.meta.benchmark.report`: statistics, ``summary.md`` and plots.

Example:
    >>> from anomaly_gym.meta.benchmark import BenchmarkConfig, run_benchmark
    >>> results = run_benchmark(BenchmarkConfig(sources=["builtin"], targets=["builtin"],  # doctest: +SKIP
    ...                                         datasets=["sklearn/wine-0"], methods=["iforest"], seeds=1))
    >>> results.frame()[["dataset", "method", "auroc"]]  # doctest: +SKIP
"""

from anomaly_gym.meta.benchmark.protocol import COLUMNS, Setting, draw_labels, plan_folds
from anomaly_gym.meta.benchmark.report import write_summary
from anomaly_gym.meta.benchmark.results import TIMING_COLUMNS, load_results
from anomaly_gym.meta.benchmark.runner import BenchmarkConfig, BenchmarkResults, run_benchmark

__all__ = [
    "COLUMNS",
    "TIMING_COLUMNS",
    "BenchmarkConfig",
    "BenchmarkResults",
    "Setting",
    "draw_labels",
    "load_results",
    "plan_folds",
    "run_benchmark",
    "write_summary",
]
