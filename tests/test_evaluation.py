"""Tests for :mod:`pyro_gem.evaluation`: meta-test scores per task and summarised."""

import math

import pyro
import pytest
import torch
from sinusoid_fixtures import small_sinusoid

from pyro_gem import GEMBML, InnerVI, Sinusoid, TaskBatch, meta_test, task_scores
from pyro_gem.cli import DEFAULTS
from pyro_gem.methods import build


def test_meta_test_reports_mse_and_coverage():
    model, prior = small_sinusoid()
    learner = GEMBML(model, prior, inner=InnerVI(steps=2))
    scores = meta_test(learner, Sinusoid().test_tasks(6), steps=(0, 1, 2), num_samples=10, chunk=4)
    assert set(scores["mse"]) == {"0", "1", "2"}
    for mean, ci in scores["mse"].values():
        assert mean > 0 and ci >= 0
    assert 0 <= scores["coverage90"] <= 1 and scores["num_tasks"] == 6


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
    scores = meta_test(learner, bad, steps=(0, 2), num_samples=5)
    assert scores["diverged"] == 1
    assert all(math.isfinite(mean) for mean, _ in scores["mse"].values())


def test_task_scores_are_what_meta_test_summarises():
    model, prior = small_sinusoid()
    learner = GEMBML(model, prior, inner=InnerVI(steps=2))
    test = Sinusoid().test_tasks(5)
    y = test.support[1].clone()
    y[3] = 3e38  # task 3 diverges
    bad = TaskBatch((test.support[0], y), test.query)
    pyro.set_rng_seed(0)
    per_task = task_scores(learner, bad, steps=(2, 0), num_samples=10, chunk=2)
    pyro.set_rng_seed(0)
    summary = meta_test(learner, bad, steps=(0, 2), num_samples=10, chunk=2)
    assert list(per_task["mse"]) == [0, 2]
    for scores in per_task.values():
        assert scores[0].isfinite().all()  # the prior predictive ignores the support
        assert scores[2].isfinite().tolist() == [True, True, True, False, True]
    ok = torch.arange(5) != 3
    assert summary["diverged"] == 1
    for s in (0, 2):
        assert summary["mse"][str(s)][0] == pytest.approx(
            per_task["mse"][s][ok].double().mean().item()
        )
    assert summary["coverage90"] == pytest.approx(per_task["coverage90"][2][ok].mean().item())
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
