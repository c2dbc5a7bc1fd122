"""Tests for :mod:`pyro_gem.evaluation.meta_test`: meta-test scores per task and summarised."""

import math

import pyro
import pytest
import torch
from sinusoid_fixtures import small_sinusoid

from pyro_gem import GEMBML, InnerVI, Sinusoid, TaskBatch, meta_test, task_scores
from pyro_gem.config import DEFAULTS
from pyro_gem.evaluation import metric_names
from pyro_gem.methods.registry import build

METRICS = Sinusoid().metrics


def test_meta_test_reports_every_metric_after_every_step():
    model, prior = small_sinusoid()
    learner = GEMBML(model, prior, inner=InnerVI(steps=2))
    scores = meta_test(
        learner, Sinusoid().test_tasks(6), (0, 1, 2), metrics=METRICS, num_samples=10, chunk=4
    )
    assert scores["steps"] == [0, 1, 2] and scores["num_tasks"] == 6
    for name in ("lpd", "mse", "coverage90"):
        assert set(scores[name]) == {"0", "1", "2"}
    for mean, ci in scores["mse"].values():
        assert mean > 0 and ci >= 0
    for mean, _ in scores["coverage90"].values():
        assert 0 <= mean <= 1
    assert all(math.isfinite(mean) for mean, _ in scores["lpd"].values())


def test_meta_test_without_family_metrics_scores_the_log_predictive_density():
    model, prior = small_sinusoid()
    learner = GEMBML(model, prior, inner=InnerVI(steps=1))
    scores = meta_test(learner, Sinusoid().test_tasks(3), (0, 1), num_samples=5)
    assert metric_names(scores) == ["lpd"]


@pytest.mark.parametrize("method", ["gem-bml+", "imaml", "maml", "bmaml"])
def test_meta_test_counts_diverged_tasks_and_keeps_going(method):
    model, prior = small_sinusoid()
    config = {**DEFAULTS, "method": method, "inner_steps": 2, "reg": 100.0, "num_particles": 2}
    config.update(
        {"inner_lr": 0.05} if method == "gem-bml+" else {"inner_optim": "sgd", "inner_lr": 1e-3}
    )
    learner = build(method, model, prior, config)
    test = Sinusoid().test_tasks(4)
    y = test.support[1].clone()
    y[1] = 3e38
    bad = TaskBatch((test.support[0], y), test.query)
    scores = meta_test(learner, bad, (0, 2), metrics=METRICS, num_samples=5)
    assert scores["diverged"] == 1
    for name in ("lpd", "mse", "coverage90"):
        assert all(math.isfinite(mean) for mean, _ in scores[name].values())


def test_task_scores_are_what_meta_test_summarises():
    model, prior = small_sinusoid()
    learner = GEMBML(model, prior, inner=InnerVI(steps=2))
    test = Sinusoid().test_tasks(5)
    y = test.support[1].clone()
    y[3] = 3e38  # task 3 diverges
    bad = TaskBatch((test.support[0], y), test.query)
    pyro.set_rng_seed(0)
    per_task = task_scores(learner, bad, (2, 0), metrics=METRICS, num_samples=10, chunk=2)
    pyro.set_rng_seed(0)
    summary = meta_test(learner, bad, (0, 2), metrics=METRICS, num_samples=10, chunk=2)
    assert list(per_task["mse"]) == [0, 2]
    for scores in per_task.values():
        assert scores[0].isfinite().all()  # the prior predictive ignores the support
        assert scores[2].isfinite().tolist() == [True, True, True, False, True]
    ok = torch.arange(5) != 3
    assert summary["diverged"] == 1
    # Each step count over the tasks finite at that count: task 3 still counts at 0 steps.
    assert summary["diverged_per_step"] == {"0": 0, "2": 1}
    counted = {0: torch.ones(5, dtype=torch.bool), 2: ok}
    for name in ("lpd", "mse", "coverage90"):
        for s in (0, 2):
            assert summary[name][str(s)][0] == pytest.approx(
                per_task[name][s][counted[s]].double().mean().item()
            )
    assert ((per_task["coverage90"][2][ok] >= 0) & (per_task["coverage90"][2][ok] <= 1)).all()


def test_task_scores_name_bad_steps_and_bad_query_data():
    model, prior = small_sinusoid()
    learner = GEMBML(model, prior, inner=InnerVI(steps=2))
    test = Sinusoid().test_tasks(2)
    with pytest.raises(ValueError, match="steps"):
        task_scores(learner, test, steps=(-1, 2))
    y = test.query[1].clone()
    y[1, 0] = torch.nan
    with pytest.raises(ValueError, match=r"query argument 1 holds NaN .*tasks \[1\]"):
        meta_test(learner, TaskBatch(test.support, (test.query[0], y)), steps=(0, 2))
