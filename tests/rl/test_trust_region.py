import pyro
import pytest
import torch

from pyro_gem import GaussianPrior
from pyro_gem.config import DEFAULTS
from pyro_gem.core.likelihood import task_log_likelihood
from pyro_gem.methods import build
from pyro_gem.rl import GaussianMLPPolicy, action_log_prob
from pyro_gem.rl.policy import policy_kl
from pyro_gem.rl.trust_region import TrustRegionVI
from pyro_gem.tasks.rl import MetaRLTasks


def _setup():
    prior = GaussianPrior(GaussianMLPPolicy(2, 2, hidden=(8,)), init_scale=0.1)

    def model(observations, actions, advantages, step_weights):
        log_prob = action_log_prob(prior.sample_net()(observations), actions)
        with pyro.plate("steps", observations.shape[-2], dim=-1):
            pyro.factor("surrogate", 100.0 * step_weights * log_prob * advantages)

    tasks = MetaRLTasks("pyro_gem/Navigation2D-v0", prior.net, rollouts=4, horizon=10)
    batch = tasks.sample(3, torch.Generator().manual_seed(0))
    batch.collect_support(prior.loc.detach().expand(3, -1))
    return model, prior, batch


@pytest.mark.parametrize("max_kl", [0.01, 0.001])
def test_a_step_stays_in_each_tasks_trust_region_and_does_not_lose(max_kl):
    model, prior, batch = _setup()
    vi = TrustRegionVI(prior.net, max_kl=max_kl, steps=1, scale_lr=0.0)
    m, sigma = prior.loc.detach(), prior.scale.detach()
    fit = vi.fit(model, "theta", batch.support, (m, sigma))
    obs, _, _, weights = batch.support
    start = m.expand(3, -1)
    kl = (weights * policy_kl(prior.net(start, obs), prior.net(fit.loc, obs))).sum(-1)
    assert (kl <= max_kl * (1 + 1e-4)).all()
    moved = (fit.loc - start).norm(dim=-1) > 0
    assert moved.any()

    def objective(loc):  # log P(D | μ) − KL(q ‖ p): the scales did not move (scale_lr 0)
        return task_log_likelihood(model, "theta", loc, batch.support, 1) - (
            0.5 * (((loc - m) / sigma) ** 2).sum(-1)
        )

    assert (objective(fit.loc)[moved] > objective(start)[moved]).all()


def test_a_smaller_trust_region_never_steps_further():
    model, prior, batch = _setup()
    m, sigma = prior.loc.detach(), prior.scale.detach()
    big = TrustRegionVI(prior.net, max_kl=0.01, steps=1, scale_lr=0.0)
    small = TrustRegionVI(prior.net, max_kl=0.0025, steps=1, scale_lr=0.0)
    step_big = (big.fit(model, "theta", batch.support, (m, sigma)).loc - m).norm(dim=-1)
    step_small = (small.fit(model, "theta", batch.support, (m, sigma)).loc - m).norm(dim=-1)
    # where both line searches accepted a step (one may give up within its backtracks)
    both = (step_small > 0) & (step_big > 0)
    assert both.any() and (step_small[both] <= step_big[both] * 1.001).all()


def test_only_gem_takes_the_trust_region():
    model, prior, _ = _setup()
    config = {**DEFAULTS, "inner_optim": "trust-region", "inner_lr": 0.01, "inner_steps": 1}
    learner = build("gem-bml+", model, prior, config)
    assert isinstance(learner.inner, TrustRegionVI)
    with pytest.raises(ValueError, match="GEM-BML\\(\\+\\)'s trust-region step"):
        build("imaml", model, prior, config)
    with pytest.raises(ValueError, match="maml takes one of"):
        build("maml", model, prior, config)
