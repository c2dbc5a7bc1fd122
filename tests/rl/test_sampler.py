import numpy as np
import pytest
import torch

from pyro_gem import GaussianPrior
from pyro_gem.rl import GaussianMLPPolicy, RolloutSampler

NAV = "pyro_gem/Navigation2D-v0"


@pytest.fixture
def prior():
    return GaussianPrior(GaussianMLPPolicy(2, 2, hidden=(16,)), init_scale=0.01)


def _theta(prior, num_tasks):
    return prior.loc.detach().expand(num_tasks, -1).clone()


def test_shapes_and_horizon(prior):
    sampler = RolloutSampler(NAV, prior.net, horizon=12)
    tasks = sampler.sample_tasks(3, np.random.default_rng(0))
    r = sampler.sample(tasks, _theta(prior, 3), rollouts=4, generator=torch.Generator())
    assert r.observations.shape == (3, 4, 12, 2) and r.actions.shape == (3, 4, 12, 2)
    assert r.rewards.shape == r.mask.shape == (3, 4, 12)
    assert r.returns.shape == (3, 4) and r.finite.all()
    # the first observation of every rollout is the origin; rewards are minus distances
    assert (r.observations[:, :, 0] == 0).all() and (r.rewards <= 0).all()


def test_seeded_rollouts_repeat(prior):
    sampler = RolloutSampler(NAV, prior.net, horizon=8)
    tasks = sampler.sample_tasks(2, np.random.default_rng(0))
    theta = _theta(prior, 2)
    a = sampler.sample(tasks, theta, 3, torch.Generator().manual_seed(5))
    b = sampler.sample(tasks, theta, 3, torch.Generator().manual_seed(5))
    c = sampler.sample(tasks, theta, 3, torch.Generator().manual_seed(6))
    torch.testing.assert_close(a.actions, b.actions)
    assert not torch.equal(a.actions, c.actions)


def test_each_task_acts_under_its_own_weights(prior):
    sampler = RolloutSampler(NAV, prior.net, horizon=5)
    theta = _theta(prior, 2)
    names = prior.net.names
    # task 1's policy: mean action +0.1 in x (the last layer's bias), tiny noise
    offset = sum(prior.net.sizes[: names.index("mean.2.bias")])
    theta[1, offset] = 5.0
    std = names.index("log_std")
    theta[:, sum(prior.net.sizes[:std]) : sum(prior.net.sizes[: std + 1])] = -10.0
    r = sampler.sample(np.zeros((2, 2)), theta, 2, torch.Generator())
    # actions are recorded as drawn (log π scores them); the environment clips the step
    assert (r.actions[1, :, :, 0] > 4).all() and r.actions[0, :, :, 0].abs().max() < 1
    steps = torch.arange(5, dtype=torch.float32) * 0.1
    torch.testing.assert_close(r.observations[1, :, :, 0], steps.expand(2, 5))


def test_a_non_finite_policy_marks_its_task_alone(prior):
    sampler = RolloutSampler(NAV, prior.net, horizon=6)
    theta = _theta(prior, 3)
    theta[1, 0] = torch.nan
    r = sampler.sample(np.zeros((3, 2)), theta, 2, torch.Generator())
    assert r.finite.tolist() == [True, False, True]
    assert r.returns[1].isnan().all() and r.returns[[0, 2]].isfinite().all()


def test_bad_arguments_are_named(prior):
    with pytest.raises(ValueError, match="horizon must be a positive"):
        RolloutSampler(NAV, prior.net, horizon=0)
    sampler = RolloutSampler(NAV, prior.net, horizon=3)
    with pytest.raises(ValueError, match="outside the task range"):
        sampler.sample(np.array([[0.0, 0.9]]), _theta(prior, 1), 1)
    with pytest.raises(ValueError, match=r"theta must have shape \(2, D\)"):
        sampler.sample(np.zeros((2, 2)), _theta(prior, 3), 1)
    with pytest.raises(ValueError, match="rollouts must be >= 1"):
        sampler.sample(np.zeros((2, 2)), _theta(prior, 2), 0)


def test_episodes_that_reach_the_goal_are_masked_after_the_end(prior):
    sampler = RolloutSampler(NAV, prior.net, horizon=6)
    theta = _theta(prior, 1)
    std = prior.net.names.index("log_std")
    theta[:, sum(prior.net.sizes[:std]) : sum(prior.net.sizes[: std + 1])] = -10.0
    # the goal at the origin's first step: a zero-mean, noiseless policy reaches it at once
    theta = torch.where(theta < -5, theta, 0.0)
    r = sampler.sample(np.zeros((1, 2)), theta, 2, torch.Generator())
    assert r.mask[0, :, 0].eq(1).all() and r.mask[0, :, 1:].eq(0).all()
