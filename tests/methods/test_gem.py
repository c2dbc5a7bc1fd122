import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from sinusoid_fixtures import small_sinusoid

from pyro_gem import GEMBML, GaussianPrior, InnerVI, Sinusoid, TaskBatch, gem_gradient
from pyro_gem.config import DEFAULTS
from pyro_gem.methods.registry import build


def batch_of(num_tasks=5, seed=0):
    return Sinusoid().sample(num_tasks, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("guide", ["normal", "delta"])
@pytest.mark.parametrize("plus", [False, True], ids=["gem-bml", "gem-bml+"])
def test_step_writes_the_gradient_em_estimate_and_steps(plus, guide):
    model, prior = small_sinusoid()
    learner = GEMBML(
        model,
        prior,
        torch.optim.SGD(prior.parameters(), lr=1e-3),
        plus=plus,
        inner=InnerVI(guide=guide, steps=3),
    )
    batch = batch_of()
    m0, s0 = prior.loc.detach().clone(), prior.log_scale.detach().clone()
    learner.nesting(batch.support)  # traced once, then cached: same randomness below
    pyro.set_rng_seed(5)
    support, joint = learner.fit_posteriors(batch)
    pyro.set_rng_seed(5)
    stats = learner.step(batch)
    g_m, g_s = gem_gradient(m0, s0, joint.loc, joint.scale)
    if plus:
        h_m, h_s = gem_gradient(m0, s0, support.loc, support.scale)
        g_m, g_s = g_m - h_m, g_s - h_s
    torch.testing.assert_close(prior.loc.grad, -g_m.mean(0))
    torch.testing.assert_close(prior.log_scale.grad, -g_s.mean(0))
    torch.testing.assert_close(prior.loc.detach(), m0 + 1e-3 * g_m.mean(0))
    if guide == "delta":
        assert torch.equal(prior.log_scale.detach(), s0)
    for key in ("elbo_support", "elbo_query", "meta_objective", "grad_norm_loc"):
        assert math.isfinite(stats[key])
    assert stats["nan_tasks"] == []


def test_names_and_update_variants():
    model, prior = small_sinusoid()
    assert GEMBML(model, prior).name == "gem-bml+"
    assert GEMBML(model, prior, plus=False).name == "gem-bml"
    joint = GEMBML(model, prior, update="joint", inner=InnerVI(steps=2))
    assert math.isfinite(joint.step(batch_of())["meta_objective"])
    with pytest.raises(ValueError, match="update"):
        GEMBML(model, prior, update="parallel")
    with pytest.raises(ValueError, match="GaussianPrior"):
        GEMBML(model, object())


def test_nan_in_one_task_is_left_out_and_reported():
    """A delta guide makes the inner loop deterministic, so the update can be compared exactly."""
    batch = batch_of(4)
    y = batch.support[1].clone()
    y[2] = 3e38  # finite data whose gradient overflows: the inner loop of task 2 turns NaN
    bad = TaskBatch((batch.support[0], y), batch.query)
    healthy = bad.select(torch.tensor([0, 1, 3]))
    priors = []
    for data in (bad, healthy):
        torch.manual_seed(0)
        model, prior = small_sinusoid()
        inner = InnerVI(guide="delta", steps=3, optim=pyro.optim.Adam({"lr": 0.05}))
        learner = GEMBML(model, prior, torch.optim.SGD(prior.parameters(), lr=1e-3), inner=inner)
        if data is bad:
            with pytest.warns(UserWarning, match=r"tasks \[2\]"):
                stats = learner.step(data)
            assert stats["nan_tasks"] == [2]
        else:
            learner.step(data)
        assert torch.isfinite(prior.loc).all() and torch.isfinite(prior.log_scale).all()
        priors.append(prior)
    torch.testing.assert_close(priors[0].loc, priors[1].loc)


def test_every_task_diverging_leaves_the_prior_alone():
    model, prior = small_sinusoid()
    learner = GEMBML(model, prior, inner=InnerVI(steps=3, optim=pyro.optim.Adam({"lr": 0.05})))
    batch = batch_of(2)
    before = prior.loc.detach().clone()
    huge = TaskBatch((batch.support[0], torch.full_like(batch.support[1], 3e38)), batch.query)
    with pytest.warns(UserWarning, match="every task"):
        learner.step(huge)
    assert torch.equal(prior.loc.detach(), before)


def test_bad_input_gets_a_clear_error():
    model, prior = small_sinusoid()
    learner = GEMBML(model, prior, inner=InnerVI(steps=1))
    b = batch_of(3)
    x, y = b.support
    cases = {
        "holds zero tasks": TaskBatch((x[:0], y[:0]), (x[:0], y[:0])),
        "set is empty": TaskBatch((x[:, :0], y[:, :0]), b.query),
        "shapes must agree": TaskBatch((x, y[:, :4]), b.query),
        "NaN": TaskBatch((x, torch.where(y > 0, torch.nan, y)), b.query),
        "support has 3 tasks but query has 2": TaskBatch(b.support, tuple(a[:2] for a in b.query)),
        "expected \\(tasks, points": TaskBatch((x[0, :, 0], y[0]), b.query),
    }
    for message, batch in cases.items():
        with pytest.raises(ValueError, match=message):
            learner.step(batch)
    with pytest.raises(ValueError, match="zero data points|set is empty"):
        learner.adapt(x[:, :0], y[:, :0])

    def no_prior(x, y=None):
        with pyro.plate("data", x.shape[-2], dim=-1):
            pyro.sample("y", dist.Normal(torch.zeros(x.shape[:-1]), 1.0), obs=y)

    with pytest.raises(ValueError, match="no prior sample site"):
        GEMBML(no_prior, prior).step(b)
    with pytest.raises(ValueError, match="unsupported guide"):
        GEMBML(model, prior, inner=InnerVI(guide="iaf"))


def test_adapt_records_history_and_predicts():
    model, prior = small_sinusoid()
    learner = GEMBML(model, prior, inner=InnerVI(steps=4))
    test = Sinusoid().test_tasks(3)
    post = learner.adapt(*test.support, record=(0, 2, 4))
    assert sorted(post.history) == [0, 2, 4]
    assert post.steps == 4
    torch.testing.assert_close(post.history[4].loc, post.loc)
    torch.testing.assert_close(post.history[0].loc, prior.loc.detach().expand(3, -1))
    draws = post.predict(test.query[0], num_samples=7)
    assert draws["y"].shape == (7, 3, 10)
    assert draws["mean"].shape == (7, 3, 10)
    with pytest.raises(ValueError, match="over 3 tasks"):
        post.predict(test.query[0][:2])
    with pytest.raises(ValueError, match="hold no tensor: pass the model's data positionally"):
        post.predict(x=test.query[0])
    with pytest.raises(ValueError, match="prediction input argument 0 holds NaN"):
        post.predict(torch.where(test.query[0] > 0, torch.nan, test.query[0]))
    assert len(pyro.get_param_store().keys()) == 0


def test_user_conv_model_with_batchnorm_and_factor_likelihood():
    """A user's own model: Conv2d + BatchNorm classifier, likelihood via pyro.factor."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 3),
    )
    prior = GaussianPrior(net, init_scale=0.1)

    def model(images, labels):
        logits = prior.sample_net()(images)
        pyro.factor("loglik", dist.Categorical(logits=logits).log_prob(labels).sum(-1))

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat(4, 2)  # 4 tasks, 6 shots
    images = torch.randn(4, 6, 1, 8, 8, generator=gen) + labels[..., None, None, None]
    batch = TaskBatch((images[:, :3], labels[:, :3]), (images[:, 3:], labels[:, 3:]))
    learner = GEMBML(model, prior, inner=InnerVI(steps=3, optim=pyro.optim.Adam({"lr": 0.1})))
    stats = learner.step(batch)
    assert stats["nan_tasks"] == [] and math.isfinite(stats["meta_objective"])
    assert prior.loc.grad is not None and torch.isfinite(prior.loc.grad).all()


def test_prediction_survives_a_task_whose_scale_underflowed():
    # A task's unconstrained scale far negative is finite, but its scale is 0: that task is
    # diverged and predicts NaN, and the others still predict.
    model, prior = small_sinusoid()
    learner = build("gem-bml+", model, prior, {**DEFAULTS, "inner_steps": 1})
    test = Sinusoid().test_tasks(3)
    post = learner.adapt(*test.support)
    key = next(k for k in post.state if "scale" in k)
    post.state[key][1] = -1e4
    post.scale[1] = 0.0
    draws = post.predict(test.query[0], num_samples=4)
    assert torch.isnan(draws["mean"][:, 1]).all()
    assert torch.isfinite(draws["mean"][:, [0, 2]]).all()


def test_redesigned_gem_plus_by_hand_is_the_model_files():
    """The recipe of methods/gem.py's docstring builds the learner models/sinusoid.py's config
    describes: the same prior after two meta-iterations, bit for bit."""
    import pyro.optim

    from pyro_gem import prior_optimizer
    from pyro_gem.config import build_learner, resolve_config
    from pyro_gem.modelfile import load_model_file

    path = Path(__file__).resolve().parents[2] / "models" / "sinusoid.py"
    batches = [Sinusoid().sample(6, torch.Generator().manual_seed(s)) for s in (0, 1)]
    priors = []
    for by_hand in (False, True):
        mf = load_model_file(path, seed=0)
        if by_hand:
            alpha = mf.module.MAML_LR
            mf.prior.reset_scale(0.1)
            inner = InnerVI(optim=pyro.optim.SGD({"lr": alpha / 0.1**2}), steps=1, init_scale=0.1)
            learner = GEMBML(
                mf.model,
                mf.prior,
                prior_optimizer(mf.prior, 1e-3, scale_lr=1e-4),
                plus=True,
                inner=inner,
                query_steps=1,
            )
        else:
            learner = build_learner(mf, resolve_config(mf.config, {"method": "gem-bml+"}))
        pyro.set_rng_seed(3)
        for batch in batches:
            learner.step(batch)
        priors.append((mf.prior.loc.detach().clone(), mf.prior.log_scale.detach().clone()))
    for a, b in zip(*priors):
        assert torch.equal(a, b)
