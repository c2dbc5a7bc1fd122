"""Tests for :mod:`pyro_gem.core.priors`: the learnable Gaussian prior over a network's weights."""

import pyro
import pytest
import torch
from torch import nn

from pyro_gem import GaussianPrior


def net():
    return nn.Sequential(nn.Linear(1, 4), nn.ReLU(), nn.Linear(4, 1))  # 13 weights


def test_starts_at_the_modules_initialisation_or_given_values():
    module = net()
    prior = GaussianPrior(module, init_scale=0.05)
    assert prior.num_weights == 13
    torch.testing.assert_close(prior.loc[:4], module[0].weight.detach().flatten())
    torch.testing.assert_close(prior.scale, torch.full((13,), 0.05))
    scales = torch.linspace(0.1, 1.0, 13)
    prior = GaussianPrior(net(), init_scale=scales, init_loc=torch.ones(13))
    torch.testing.assert_close(prior.scale, scales)
    assert torch.equal(prior.loc.detach(), torch.ones(13))
    assert {n for n, _ in prior.named_parameters()} == {"loc", "log_scale"}


def test_samples_at_its_site_with_event_shape_num_weights():
    prior = GaussianPrior(net(), name="w")
    tr = pyro.poutine.trace(prior.sample).get_trace()
    assert tr.nodes["w"]["value"].shape == (13,)
    assert tr.nodes["w"]["fn"].event_shape == (13,)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"init_loc": torch.zeros(12)}, r"init_loc has shape \(12,\), expected \(13,\)"),
        ({"init_scale": torch.ones(12)}, r"init_scale has shape \(12,\)"),
        ({"init_scale": 0.0}, "positive and finite"),
        ({"init_scale": float("nan")}, "positive and finite"),
    ],
)
def test_bad_initial_values_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GaussianPrior(net(), **kwargs)
