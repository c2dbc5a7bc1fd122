"""The method registry: every cell of the matrix builds, steps and adapts through one interface."""

import math
import re

import pyro
import pytest
import torch
from sinusoid_fixtures import small_sinusoid

from pyro_gem import METHOD_TABLE, METHODS, Sinusoid
from pyro_gem.config import DEFAULTS
from pyro_gem.methods.registry import INNER_OPTIMS, build


def config(**over):
    return {**DEFAULTS, "inner_optim": "sgd", "inner_lr": 1e-3, "inner_steps": 2, **over}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_steps_adapts_and_predicts(method):
    model, prior = small_sinusoid()
    over = {"num_particles": 3} if method == "bmaml" else {}
    if method == "imaml":
        over["reg"] = 100.0
    learner = build(method, model, prior, config(**over))
    assert learner.name == method
    stats = learner.step(Sinusoid().sample(4, torch.Generator().manual_seed(0)))
    assert stats["nan_tasks"] == [] and math.isfinite(stats["meta_objective"])
    test = Sinusoid().test_tasks(3)
    post = learner.adapt(*test.support, steps=2, record=(0, 2))
    draws = post.history[2].predict(test.query[0], num_samples=5)
    assert draws["y"].shape == (5, 3, test.query[0].shape[1])


@pytest.mark.parametrize("optim", [name for name in INNER_OPTIMS if name != "sgd"])
@pytest.mark.parametrize("method", [m for m, row in METHOD_TABLE.items() if row.needs_sgd])
def test_methods_that_need_sgd_say_so(method, optim):
    model, prior = small_sinusoid()
    with pytest.raises(
        ValueError, match=f"{re.escape(method)} needs plain SGD.*set inner_optim to 'sgd'"
    ):
        build(method, model, prior, config(inner_optim=optim))


@pytest.mark.parametrize("optim", sorted(INNER_OPTIMS))
@pytest.mark.parametrize("method", [m for m, row in METHOD_TABLE.items() if not row.needs_sgd])
def test_methods_that_decouple_take_any_inner_optimiser(method, optim):
    model, prior = small_sinusoid()
    learner = build(method, model, prior, config(inner_optim=optim, reg=100.0))
    assert type(learner.inner.optim).__name__ == "PyroOptim"
    assert learner.inner.optim.pt_optim_constructor is INNER_OPTIMS[optim]


@pytest.mark.parametrize(
    "method", [m for m, row in METHOD_TABLE.items() if row.posterior == "Gaussian"]
)
def test_gaussian_posteriors_start_at_guide_init_scale(method):
    model, prior = small_sinusoid()
    learner = build(method, model, prior, config(guide_init_scale=0.01))
    assert learner.inner.init_scale == 0.01
    if hasattr(learner, "unrolled"):  # training's differentiable loop starts there too
        assert learner.unrolled.init_scale == 0.01
    post = learner.adapt(*Sinusoid().test_tasks(2).support, steps=0)
    torch.testing.assert_close(post.scale, 0.01 * prior.scale.detach().expand(2, -1))


def test_imaml_newton_solver_steps_adapts_and_predicts():
    model, prior = small_sinusoid()
    learner = build("imaml", model, prior, config(inner_optim="newton", reg=100.0, cg_steps=3))
    stats = learner.step(Sinusoid().sample(4, torch.Generator().manual_seed(0)))
    assert stats["nan_tasks"] == [] and prior.loc.grad.isfinite().all()
    test = Sinusoid().test_tasks(3)
    post = learner.adapt(*test.support, steps=2, record=(0, 1, 2))
    assert set(post.history) == {0, 1, 2} and post.scale is None  # a point per task
    torch.testing.assert_close(post.history[0].loc, prior.loc.detach().expand(3, -1))
    draws = post.predict(test.query[0], num_samples=4)
    assert draws["y"].shape == (4, 3, test.query[0].shape[1])


def test_newton_is_imamls_alone():
    model, prior = small_sinusoid()
    with pytest.raises(ValueError, match="'newton' is iMAML's proximal Newton-CG solver; maml"):
        build("maml", model, prior, config(inner_optim="newton"))


def test_unknown_method_and_optimiser():
    model, prior = small_sinusoid()
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        build("nope", model, prior, config())
    with pytest.raises(ValueError, match="unknown inner optimiser 'lbfgs'"):
        build("maml", model, prior, config(inner_optim="lbfgs"))


def test_inner_lr_decay_is_a_pyro_scheduler_that_the_inner_vi_steps():
    model, prior = small_sinusoid()
    learner = build("gem-bml+", model, prior, config(inner_optim="adam", inner_lr_decay=0.0))
    assert learner.inner.optim.pt_scheduler_constructor is torch.optim.lr_scheduler.ExponentialLR
    # A decay of 0 leaves only the first step: more steps change nothing.
    test = Sinusoid().test_tasks(3)
    fits = []
    for steps in (1, 4):
        pyro.set_rng_seed(0)
        fits.append(learner.adapt(*test.support, steps=steps))
    assert not torch.equal(fits[0].loc, prior.loc.detach().expand(3, -1))
    torch.testing.assert_close(fits[0].loc, fits[1].loc)
    torch.testing.assert_close(fits[0].scale, fits[1].scale)


@pytest.mark.parametrize("method, optim", [("maml", "sgd"), ("imaml", "newton")])
def test_inner_lr_decay_needs_a_pyro_optim_inner_loop(method, optim):
    model, prior = small_sinusoid()
    with pytest.raises(
        ValueError, match=f"inner_lr_decay applies to a PyroOptim inner loop; {method}"
    ):
        build(method, model, prior, config(inner_optim=optim, inner_lr_decay=0.5))
    with pytest.raises(ValueError, match="inner_lr_decay must lie in"):
        build("gem-bml", model, prior, config(inner_lr_decay=1.5))


@pytest.mark.parametrize("method", ["gem-bml+", "gem-bml", "abml", "kl-chaser"])
def test_meta_lr_scale_gives_the_log_scale_its_own_meta_rate(method):
    from pyro_gem.training import train

    model, prior = small_sinusoid()
    learner = build(method, model, prior, config(meta_lr=1e-2, meta_lr_scale=1e-3))
    m0, s0 = prior.loc.detach().clone(), prior.log_scale.detach().clone()
    # The milestone schedule scales both rates: ×0.1 from iteration 1 on.
    train(learner, Sinusoid(), meta_iterations=2, meta_batch=4, eval_every=0, progress=False,
          meta_lr_milestones=[1])  # fmt: skip
    assert [g["lr"] for g in learner.meta_optim.param_groups] == pytest.approx([1e-3, 1e-4])
    # Adam's first two steps move a coordinate by at most lr each: 1e-2 + 1e-3 for m,
    # 1e-3 + 1e-4 for log σ, and most of them by about that much.
    dm, ds = (prior.loc.detach() - m0).abs(), (prior.log_scale.detach() - s0).abs()
    assert dm.max() <= 1.1e-2 * 1.001 and ds.max() <= 1.1e-3 * 1.001
    assert dm.median() > 2e-3 and ds.median() > 2e-4


def test_meta_lr_scale_zero_freezes_the_prior_scale_and_prior_init_scale_sets_it():
    model, prior = small_sinusoid(init_scale=0.05)
    learner = build("gem-bml+", model, prior, config(meta_lr_scale=0.0, prior_init_scale=0.2))
    torch.testing.assert_close(prior.scale, torch.full_like(prior.scale, 0.2))
    m0 = prior.loc.detach().clone()
    learner.step(Sinusoid().sample(4, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(prior.scale, torch.full_like(prior.scale, 0.2))
    assert not torch.equal(prior.loc.detach(), m0)
    with pytest.raises(ValueError, match="meta_lr_scale"):
        build("gem-bml+", model, prior, config(meta_lr_scale=-1.0))
    with pytest.raises(ValueError, match="scale must be positive"):
        build("gem-bml+", model, prior, config(prior_init_scale=0.0))
