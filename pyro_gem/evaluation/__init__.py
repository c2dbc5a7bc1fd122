"""Meta-testing and its metrics: adapt to held-out tasks, then score their query sets.

Example::

    from pyro_gem.evaluation import meta_test
    scores = meta_test(learner, tasks.test_tasks(600), steps=(0, 1, 5, 10), metrics=tasks.metrics)
    scores["lpd"]["10"], scores["mse"]["10"]     # [mean, 95% CI half-width] over tasks
"""

from pyro_gem.evaluation.meta_test import meta_test, metric_names, score_metrics, task_scores
from pyro_gem.evaluation.metrics import (
    IntervalCoverage,
    LogPredictiveDensity,
    Metric,
    MetricError,
    Query,
    SquaredError,
    mean_ci95,
)
from pyro_gem.evaluation.returns import AverageReturn, rollout_meta_test, rollout_scores

__all__ = [
    "AverageReturn",
    "IntervalCoverage",
    "LogPredictiveDensity",
    "Metric",
    "MetricError",
    "Query",
    "SquaredError",
    "mean_ci95",
    "meta_test",
    "metric_names",
    "rollout_meta_test",
    "rollout_scores",
    "score_metrics",
    "task_scores",
]
