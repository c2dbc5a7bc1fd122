import math
from types import SimpleNamespace

import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from pyro_gem.evaluation.classification import (
    Accuracy,
    CalibrationError,
    PredictiveNLL,
    predictive_log_probs,
)
from pyro_gem.evaluation.metrics import MetricError


def query_of(logits: torch.Tensor, labels: torch.Tensor):
    """What the classification metrics read of a Query: the logits site under S draws."""
    return SimpleNamespace(sites=lambda: {"logits": logits}, target=labels)


def test_predictive_probabilities_are_the_mean_over_draws_of_the_class_probabilities():
    logits = torch.randn(7, 3, 4, 5)  # S draws, T tasks, N points, C classes
    expected = logits.softmax(-1).mean(0)
    got = predictive_log_probs(query_of(logits, torch.zeros(3, 4, dtype=torch.long))).exp()
    assert torch.allclose(got, expected, atol=1e-6)


def test_accuracy_and_nll_of_known_predictions():
    # one draw; task 0 right on both points, task 1 right on one of two
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], [[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]]])
    labels = torch.tensor([[0, 1], [0, 1]])
    q = query_of(probs.log()[None], labels)
    assert torch.allclose(Accuracy()(q), torch.tensor([1.0, 0.5]))
    nll = torch.tensor([-(math.log(0.7) + math.log(0.8)) / 2, -(math.log(0.6) + math.log(0.4)) / 2])
    assert torch.allclose(PredictiveNLL()(q), nll, atol=1e-6)


@pytest.mark.parametrize("bins", [15, 10, 4])
def test_ece_and_mce_pooled_over_tasks_match_torchmetrics_on_all_predictions(bins):
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(5, 40, 25, 5, generator=gen)  # 5 draws, 40 tasks of 25 points
    labels = torch.randint(0, 5, (40, 25), generator=gen)
    metric = CalibrationError(bins)
    q = query_of(logits, labels)
    per_task = metric(q)
    assert per_task.shape == (40, bins, 3)
    summary = metric.summarize(per_task)
    probs = logits.softmax(-1).mean(0).reshape(-1, 5)
    flat = labels.reshape(-1)
    for norm, key in (("l1", "ece"), ("max", "mce")):
        reference = multiclass_calibration_error(probs, flat, 5, n_bins=bins, norm=norm)
        assert summary[key] == pytest.approx(reference.item(), abs=1e-6)
    assert summary["bins"] == bins and sum(c[0] for c in summary["counts"]) == 1000


def test_a_calibrated_predictor_has_small_ece_and_an_overconfident_one_large():
    gen = torch.Generator().manual_seed(1)
    n = 20000
    confidence = 0.5 + 0.5 * torch.rand(n, generator=gen)
    correct = torch.rand(n, generator=gen) < confidence  # right with the stated probability
    labels = torch.where(correct, 0, 1)
    probs = torch.stack([confidence, 1 - confidence], -1)
    calibrated = CalibrationError().summarize(
        CalibrationError()(query_of(probs.log()[None, None], labels[None]))
    )
    assert calibrated["ece"] < 0.02
    sharp = torch.stack([0.99 * torch.ones(n), 0.01 * torch.ones(n)], -1)
    over = CalibrationError().summarize(
        CalibrationError()(query_of(sharp.log()[None, None], labels[None]))
    )
    accuracy = correct.float().mean().item()
    assert (
        over["ece"]
        == pytest.approx(0.99 - accuracy, abs=1e-4)
        == pytest.approx(over["mce"], abs=1e-4)
    )


def test_a_model_without_a_logits_site_gets_an_error_naming_it():
    q = SimpleNamespace(sites=lambda: {"probs": torch.zeros(1)}, target=torch.zeros(1))
    with pytest.raises(
        MetricError, match=r"reads the class logits from the site 'logits'.*pyro.deterministic"
    ):
        Accuracy()(q)
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        CalibrationError(0)


def test_the_nll_of_a_confidently_wrong_prediction_is_not_capped():
    logits = torch.tensor([[[[0.0, -200.0]]]])  # p(label 1) = e^-200
    assert PredictiveNLL()(query_of(logits, torch.tensor([[1]]))).item() == pytest.approx(
        200, rel=1e-4
    )
