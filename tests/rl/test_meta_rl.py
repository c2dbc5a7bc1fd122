"""Meta-RL through the learners' step / adapt interface, on 2D navigation with a small policy."""

import warnings

import pyro
import pytest
import torch

from pyro_gem import GaussianPrior, meta_test
from pyro_gem.config import DEFAULTS
from pyro_gem.methods import build
from pyro_gem.rl import GaussianMLPPolicy, action_log_prob
from pyro_gem.tasks.rl import RL_METHODS, MetaRLTasks


def _setup(horizon=8, rollouts=3, scale=1.0):
    policy = GaussianMLPPolicy(2, 2, hidden=(16,))
    prior = GaussianPrior(policy, init_scale=0.01)

    def model(observations, actions, advantages, step_weights):
        log_prob = action_log_prob(prior.sample_net()(observations), actions)
        with pyro.plate("steps", observations.shape[-2], dim=-1):
            pyro.factor("surrogate", scale * step_weights * log_prob * advantages)

    tasks = MetaRLTasks(
        "pyro_gem/Navigation2D-v0", prior.net, rollouts=rollouts, test_rollouts=4, horizon=horizon
    )
    return model, prior, tasks


def _learner(method, model, prior, **extra):
    config = {**DEFAULTS, "method": method, "inner_optim": "sgd", "inner_lr": 0.1}
    config["inner_steps"] = 1
    config.update(extra)
    return build(method, model, prior, config)


def test_batch_data_are_the_models_arguments():
    model, prior, tasks = _setup(horizon=8, rollouts=3)
    batch = tasks.sample(4, torch.Generator().manual_seed(0))
    assert len(batch) == 4 and batch.validate() == 4
    batch.collect_support(prior.loc.detach().expand(4, -1))
    obs, actions, adv, weights = batch.support
    assert obs.shape == (4, 24, 2) and actions.shape == (4, 24, 2) and adv.shape == (4, 24)
    # MAML's average over each rollout's steps, then over rollouts
    torch.testing.assert_close(weights.sum(1), torch.ones(4))
    first = obs.clone()
    batch.collect_support(prior.loc.detach().expand(4, -1) + 1.0)  # collected once
    assert torch.equal(batch.support[0], first)
    part = batch.select(torch.tensor([2, 0]))
    assert torch.equal(part.support[0], first[[2, 0]])


def test_uncollected_sets_name_the_rl_learners():
    _, _, tasks = _setup()
    batch = tasks.sample(2, torch.Generator())
    with pytest.raises(ValueError, match="on-policy tasks.*collect_query.*gem-bml\\+"):
        _ = batch.query


@pytest.mark.parametrize("method", RL_METHODS)
def test_every_rl_learner_meta_trains_and_reports_returns(method):
    model, prior, tasks = _setup()
    learner = _learner(method, model, prior)
    before = prior.loc.detach().clone()
    stats = learner.step(tasks.sample(3, torch.Generator().manual_seed(0)))
    assert stats["nan_tasks"] == []
    assert torch.isfinite(torch.tensor(stats["meta_objective"]))
    assert stats["return_support"] < 0 and stats["return_query"] < 0
    assert not torch.equal(prior.loc.detach(), before)
    scores = meta_test(learner, tasks.test_tasks(2), steps=(0, 1, 2))
    assert set(scores["return"]) == {"0", "1", "2"} and scores["diverged"] == 0


@pytest.mark.parametrize("inner_optim", ["adam", "sgd"])
def test_gem_adapts_a_policy_with_any_pyro_optimiser(inner_optim):
    model, prior, tasks = _setup()
    learner = _learner("gem-bml+", model, prior, inner_optim=inner_optim, inner_lr=0.05)
    stats = learner.step(tasks.sample(3, torch.Generator().manual_seed(0)))
    assert stats["nan_tasks"] == [] and torch.isfinite(prior.loc).all()
    before = learner.adapt_prior()[0]
    batch = tasks.sample(2, torch.Generator().manual_seed(1))
    batch.collect_support(before.expand(2, -1))
    post = learner.adapt(*batch.support)
    assert not torch.equal(post.loc, before.expand(2, -1)) and torch.isfinite(post.loc).all()


def test_gem_query_set_is_rolled_out_by_the_support_posteriors_mean(monkeypatch):
    model, prior, tasks = _setup()
    learner = _learner("gem-bml+", model, prior)
    seen = []
    sample = tasks.sampler.sample

    def record(task_params, theta, *args, **kwargs):
        seen.append(theta.clone())
        return sample(task_params, theta, *args, **kwargs)

    monkeypatch.setattr(tasks.sampler, "sample", record)
    support, _ = learner.fit_posteriors(tasks.sample(2, torch.Generator().manual_seed(0)))
    assert len(seen) == 2
    torch.testing.assert_close(seen[0], prior.loc.detach().expand(2, -1))
    torch.testing.assert_close(seen[1], support.loc)


@pytest.mark.parametrize("method", ["abml", "imaml", "bmaml"])
def test_learners_that_do_not_collect_rollouts_are_refused(method):
    model, prior, tasks = _setup()
    learner = _learner(method, model, prior, inner_optim="sgd")
    with pytest.raises(ValueError, match="on-policy tasks"):
        learner.step(tasks.sample(2, torch.Generator()))


def test_a_task_with_non_finite_data_is_left_out_of_the_prior():
    model, prior, tasks = _setup()
    learner = _learner("gem-bml+", model, prior)
    batch = tasks.sample(3, torch.Generator().manual_seed(0))
    batch.collect_support(prior.loc.detach().expand(3, -1))
    batch._sets["support"][2][1, 0] = torch.nan  # task 1's advantages
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = learner.step(batch)
    assert stats["nan_tasks"] == [1]
    assert torch.isfinite(prior.loc).all() and torch.isfinite(prior.log_scale).all()


def test_adapt_from_continues_from_the_earlier_posterior():
    model, prior, tasks = _setup()
    learner = _learner("maml", model, prior)
    batch = tasks.sample(2, torch.Generator().manual_seed(0))
    batch.collect_support(prior.loc.detach().expand(2, -1))
    first = learner.adapt(*batch.support)
    again = learner.adapt_from(first, *batch.support)
    # a second gradient step from θ_1 on the same data: θ_2 = θ_1 + α ∇ log P(D | θ_1)
    theta = first.loc.detach().requires_grad_()
    (grad,) = torch.autograd.grad(learner.log_likelihood(batch.support)(theta).sum(), theta)
    torch.testing.assert_close(again.loc, first.loc + 0.1 * grad, atol=1e-6, rtol=1e-4)


def test_meta_test_updates_use_fresh_rollouts_and_are_seeded():
    model, prior, tasks = _setup()
    learner = _learner("maml", model, prior)
    test = tasks.test_tasks(3)
    a = meta_test(learner, test, steps=(0, 1))
    b = meta_test(learner, test, steps=(0, 1))
    assert a == b and a["num_tasks"] == 3


def test_a_task_whose_policy_diverges_at_the_meta_test_is_counted_not_fatal(monkeypatch):
    model, prior, tasks = _setup()
    learner = _learner("maml", model, prior)
    adapt = learner.adapt

    def diverging(*support, **kwargs):
        post = adapt(*support, **kwargs)
        post.loc[0] = torch.nan  # task 0's inner loop blew up
        return post

    monkeypatch.setattr(learner, "adapt", diverging)
    scores = meta_test(learner, tasks.test_tasks(3), steps=(0, 1, 2))
    assert scores["diverged"] == 1
    assert all(torch.isfinite(torch.tensor(v)).all() for v in scores["return"].values())


@pytest.mark.parametrize("method", ["gem-bml+", "gem-bml", "maml", "reptile"])
def test_a_resumed_rl_run_ends_where_the_uninterrupted_one_does(method, tmp_path):
    from pyro_gem.training import train

    def run(iterations, out, resume):
        pyro.set_rng_seed(0)
        model, prior, tasks = _setup()
        extra = {"meta_update": "trpo", "cg_steps": 3} if method == "maml" else {}
        learner = _learner(method, model, prior, **extra)
        train(
            learner, tasks, meta_iterations=iterations, meta_batch=2, seed=3, out_dir=out,
            resume=resume, eval_every=0, progress=False,
        )  # fmt: skip
        return prior.loc.detach().clone(), prior.log_scale.detach().clone()

    straight = run(4, tmp_path / "a", False)
    run(2, tmp_path / "b", False)
    resumed = run(4, tmp_path / "b", True)
    assert torch.equal(straight[0], resumed[0]) and torch.equal(straight[1], resumed[1])


def test_maml_test_protocol_halves_the_step_of_the_later_updates():
    from pyro_gem.evaluation import rollout_scores

    model, prior, tasks = _setup()
    learner = _learner("maml", model, prior)
    inner, test = learner.inner, tasks.test_tasks(2)
    moves = {}
    adapt_from = learner.adapt_from

    def recorded(post, *data, **kwargs):
        new = adapt_from(post, *data, **kwargs)
        moves.setdefault(scale, []).append((new.loc - post.loc).detach())
        return new

    learner.adapt_from = recorded
    for scale in (1.0, 0.5):
        rollout_scores(learner, test, updates=(0, 1, 2), later_step_scale=scale)
        assert learner.inner is inner  # the learner's own inner loop is restored
    # The same first update and the same rollouts after it: the second step is half as long.
    torch.testing.assert_close(moves[0.5][0], 0.5 * moves[1.0][0], rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="later_step_scale"):
        rollout_scores(learner, test, updates=(0, 2), later_step_scale=0.0)
