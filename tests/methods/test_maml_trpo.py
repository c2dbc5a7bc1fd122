import pyro
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from pyro_gem import GaussianPrior
from pyro_gem.config import DEFAULTS
from pyro_gem.core.batch import TaskBatch
from pyro_gem.methods import build
from pyro_gem.methods.maml_trpo import MAMLTRPO
from pyro_gem.rl import GaussianMLPPolicy, action_log_prob
from pyro_gem.rl.policy import policy_kl
from pyro_gem.tasks.rl import MetaRLTasks


def _setup():
    prior = GaussianPrior(GaussianMLPPolicy(2, 2, hidden=(8,)), init_scale=0.01)

    def model(observations, actions, advantages, step_weights):
        log_prob = action_log_prob(prior.sample_net()(observations), actions)
        with pyro.plate("steps", observations.shape[-2], dim=-1):
            pyro.factor("surrogate", step_weights * log_prob * advantages)

    tasks = MetaRLTasks("pyro_gem/Navigation2D-v0", prior.net, rollouts=4, horizon=10)
    return model, prior, tasks


def test_policy_kl_matches_torch():
    new, old = torch.randn(5, 6), torch.randn(5, 6)
    expected = kl_divergence(
        Normal(new[:, :3], new[:, 3:].exp()), Normal(old[:, :3], old[:, 3:].exp())
    ).sum(-1)
    torch.testing.assert_close(policy_kl(new, old), expected)


def test_trpo_step_stays_in_the_trust_region_and_improves_the_surrogate():
    model, prior, tasks = _setup()
    learner = MAMLTRPO(model, prior, inner_lr=0.1, inner_steps=1, max_kl=0.01)
    before = prior.loc.detach().clone()
    stats = learner.step(tasks.sample(3, torch.Generator().manual_seed(0)))
    assert stats["nan_tasks"] == []
    assert 0 < stats["step_fraction"] <= 1 and stats["kl"] <= 0.01
    assert not torch.equal(prior.loc.detach(), before)


def test_a_tiny_trust_region_still_takes_a_step_that_respects_it():
    model, prior, tasks = _setup()
    learner = MAMLTRPO(model, prior, inner_lr=0.1, inner_steps=1, max_kl=1e-6)
    stats = learner.step(tasks.sample(3, torch.Generator().manual_seed(1)))
    assert stats["step_fraction"] == 0 or stats["kl"] <= 1e-6


def test_trpo_needs_meta_rl_tasks():
    model, prior, _ = _setup()
    learner = MAMLTRPO(model, prior)
    batch = TaskBatch((torch.zeros(2, 3, 2),), (torch.zeros(2, 3, 2),))
    with pytest.raises(ValueError, match="needs meta-RL tasks"):
        learner.step(batch)


def test_registry_builds_trpo_for_maml_only():
    model, prior, _ = _setup()
    config = {**DEFAULTS, "inner_optim": "sgd", "inner_lr": 0.1, "inner_steps": 1}
    assert isinstance(build("maml", model, prior, {**config, "meta_update": "trpo"}), MAMLTRPO)
    with pytest.raises(ValueError, match="meta_update 'trpo' is MAML's"):
        build("fomaml", model, prior, {**config, "meta_update": "trpo"})
    with pytest.raises(ValueError, match="unknown meta_update 'lbfgs'"):
        build("maml", model, prior, {**config, "meta_update": "lbfgs"})


def test_a_diverged_task_is_left_out_and_the_others_still_step():
    model, prior, tasks = _setup()
    learner = MAMLTRPO(model, prior, inner_lr=0.1, inner_steps=1, max_kl=0.01)
    batch = tasks.sample(3, torch.Generator().manual_seed(0))
    m = prior.loc.detach()
    batch.collect_support(m.expand(3, -1))
    theta = learner._adapted(m, batch.support, create_graph=False).detach()
    batch.collect_query(theta)
    batch.query[2][1, :] = torch.nan  # task 1's D_val advantages
    before = prior.loc.detach().clone()
    with pytest.warns(UserWarning, match=r"diverged on tasks \[1\]"):
        stats = learner.step(batch)
    assert stats["nan_tasks"] == [1] and stats["step_fraction"] > 0
    assert torch.isfinite(prior.loc).all() and not torch.equal(prior.loc.detach(), before)
