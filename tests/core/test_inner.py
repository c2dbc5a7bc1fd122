import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.distributions.normal as torch_normal
from sinusoid_fixtures import small_sinusoid

from pyro_gem import InnerVI, Sinusoid
from pyro_gem.core.inner import plate_nesting


class SharedNoise:
    """Standard-normal draws laid out per task, so a task sees the same noise alone or batched."""

    def __init__(self, num_tasks, dim, steps):
        gen = torch.Generator().manual_seed(7)
        self.table = torch.randn(steps + 2, num_tasks, 1, dim, generator=gen)
        self.task = None  # None: the whole batch; an int: that task alone
        self.calls = 0
        self.original = torch_normal._standard_normal

    def __call__(self, shape, dtype, device):
        if len(shape) != 3:  # not a guide draw of the task-batched weights
            return self.original(shape, dtype=dtype, device=device)
        draws = self.table[self.calls]
        self.calls += 1
        if self.task is not None:
            draws = draws[self.task : self.task + 1]
        assert draws.shape == shape, (draws.shape, shape)
        return draws.to(dtype)


@pytest.mark.parametrize("guide", ["normal", "delta"])
def test_vectorised_inner_vi_equals_one_svi_per_task(guide, monkeypatch):
    model, prior = small_sinusoid()
    batch = Sinusoid().sample(4, torch.Generator().manual_seed(0))
    steps = 12
    noise = SharedNoise(len(batch), prior.num_weights, steps)
    monkeypatch.setattr(torch_normal, "_standard_normal", noise)
    vi = InnerVI(guide=guide, optim=pyro.optim.Adam({"lr": 0.05}), steps=steps)
    p = (prior.loc.detach(), prior.scale.detach())
    together = vi.fit(model, prior.name, batch.support, p)
    for t in range(len(batch)):
        noise.task, noise.calls = t, 0
        alone = vi.fit(model, prior.name, tuple(a[t : t + 1] for a in batch.support), p)
        torch.testing.assert_close(alone.loc[0], together.loc[t], rtol=1e-4, atol=1e-6)
        if guide == "normal":
            assert noise.calls == steps + 1  # every draw came from the shared table
            torch.testing.assert_close(alone.scale[0], together.scale[t], rtol=1e-4, atol=1e-6)
        else:
            assert alone.scale is None
    moved = (together.loc - prior.loc).abs().amax(-1)
    assert torch.all(moved > 0)


@pytest.mark.parametrize("whiten", [True, False])
def test_guide_starts_at_the_prior_and_prior_is_untouched(whiten):
    model, prior = small_sinusoid()
    batch = Sinusoid().sample(3, torch.Generator().manual_seed(1))
    before = [p.detach().clone() for p in prior.parameters()]
    vi = InnerVI(steps=3, whiten=whiten)
    fit = vi.fit(
        model, prior.name, batch.support, (prior.loc.detach(), prior.scale.detach()), record=(0,)
    )
    loc0, scale0, _ = fit.snapshots[0]
    torch.testing.assert_close(loc0, prior.loc.detach().expand(3, -1))
    torch.testing.assert_close(scale0, prior.scale.detach().expand(3, -1))
    for p, b in zip(prior.parameters(), before):
        assert torch.equal(p, b)
        assert p.grad is None
    assert not fit.loc.requires_grad and not fit.scale.requires_grad
    assert len(pyro.get_param_store().keys()) == 0


@pytest.mark.parametrize("whiten", [True, False])
def test_the_guide_can_start_narrower_than_the_prior(whiten):
    model, prior = small_sinusoid()
    batch = Sinusoid().sample(3, torch.Generator().manual_seed(1))
    p = (prior.loc.detach(), prior.scale.detach())
    vi = InnerVI(steps=2, whiten=whiten, init_scale=0.1)
    fit = vi.fit(model, prior.name, batch.support, p, record=(0,))
    loc0, scale0, _ = fit.snapshots[0]
    torch.testing.assert_close(loc0, prior.loc.detach().expand(3, -1))
    torch.testing.assert_close(scale0, 0.1 * prior.scale.detach().expand(3, -1))
    # an explicit start (the sequential update's second fit) is kept as given
    start = (fit.loc, fit.scale)
    second = vi.fit(model, prior.name, batch.support, p, init=start, record=(0,))
    torch.testing.assert_close(second.snapshots[0][1], fit.scale)
    with pytest.raises(ValueError, match="init_scale must be a positive fraction"):
        InnerVI(init_scale=0.0)


def test_nothing_leaks_into_the_global_param_store():
    pyro.param("users_own", torch.tensor(1.0))
    model, prior = small_sinusoid()
    batch = Sinusoid().sample(2, torch.Generator().manual_seed(1))
    InnerVI(steps=2).fit(
        model, prior.name, batch.support, (prior.loc.detach(), prior.scale.detach())
    )
    assert list(pyro.get_param_store().keys()) == ["users_own"]


def test_factor_likelihood_and_no_data_plate():
    """A likelihood written as pyro.factor, with no plate at all (nesting 0)."""
    _, prior = small_sinusoid()

    def model(x, y):
        f = prior.sample_net()
        pyro.factor("loglik", -((f(x).squeeze(-1) - y) ** 2).sum(-1) / 0.18)

    batch = Sinusoid().sample(3, torch.Generator().manual_seed(2))
    assert plate_nesting(model, batch.support, prior.name) == 0
    fit = InnerVI(steps=20, optim=pyro.optim.Adam({"lr": 0.1})).fit(
        model, prior.name, batch.support, (prior.loc.detach(), prior.scale.detach())
    )
    assert fit.loc.shape == (3, prior.num_weights)
    assert fit.losses[-1] < fit.losses[0]


def test_particles_and_any_pyro_optim():
    model, prior = small_sinusoid()
    batch = Sinusoid().sample(2, torch.Generator().manual_seed(3))
    for optim in (pyro.optim.SGD({"lr": 0.01}), pyro.optim.ClippedAdam({"lr": 0.05})):
        vi = InnerVI(optim=optim, steps=3, num_particles=4)
        fit = vi.fit(model, prior.name, batch.support, (prior.loc.detach(), prior.scale.detach()))
        assert fit.finite.all()


def test_plate_nesting_refuses_models_it_cannot_fit():
    _, prior = small_sinusoid()
    batch = Sinusoid().sample(2, torch.Generator().manual_seed(3))

    def model_with(theta_dist, param=False):
        def model(x, y=None):
            theta = pyro.sample("theta", theta_dist)
            scale = pyro.param("noise", torch.tensor(0.3)) if param else 0.3
            mean = prior.net(theta, x)
            with pyro.plate("data", x.shape[-2], dim=-1):
                pyro.sample("y", dist.Normal(mean.squeeze(-1), scale), obs=y)

        return model

    d = prior.num_weights
    cases = {
        r"draws from Independent\(Laplace\)": model_with(
            dist.Laplace(torch.zeros(d), 1.0).to_event(1)
        ),
        r"event shape \(5,\), but the prior is over": model_with(
            dist.Normal(torch.zeros(5), 1.0).to_event(1)
        ),
        r"pyro.param sites \['noise'\]": model_with(prior.dist(), param=True),
    }
    for message, model in cases.items():
        with pytest.raises(ValueError, match=message):
            plate_nesting(model, batch.support, "theta", num_weights=d)
        with pytest.raises(ValueError, match=message):
            InnerVI(steps=1).fit(model, "theta", batch.support, (prior.loc, prior.scale))
    assert plate_nesting(model_with(prior.dist()), batch.support, "theta", num_weights=d) == 1
    assert len(pyro.get_param_store().keys()) == 0


def test_inner_vi_errors():
    model, prior = small_sinusoid()
    with pytest.raises(ValueError, match="unsupported guide"):
        InnerVI(guide="multivariate_normal")
    with pytest.raises(ValueError, match="unsupported guide AutoLowRankMultivariateNormal"):
        InnerVI(guide=pyro.infer.autoguide.AutoLowRankMultivariateNormal)
    with pytest.raises(ValueError, match="pyro.optim"):
        InnerVI(optim=torch.optim.Adam)
    with pytest.raises(ValueError, match="steps"):
        InnerVI(steps=-1)

    def no_prior(x, y=None):
        with pyro.plate("data", x.shape[-2], dim=-1):
            pyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    batch = Sinusoid().sample(2, torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match="no prior sample site 'theta'"):
        InnerVI().fit(no_prior, "theta", batch.support, (prior.loc, prior.scale))


def test_scale_lr_steps_the_guides_scales_alone():
    """One SGD step: the means move by lr·g whatever scale_lr is, the scales' unconstrained
    parameters by scale_lr·g (the same gradients: one draw, the same seed)."""
    model, prior = small_sinusoid()
    batch = Sinusoid().sample(3, torch.Generator().manual_seed(0))
    p = (prior.loc.detach(), prior.scale.detach())
    fits = {}
    for scale_lr in (None, 0.5, 1e-3):
        pyro.set_rng_seed(1)
        vi = InnerVI(optim=pyro.optim.SGD({"lr": 0.05}), steps=1, init_scale=0.1, scale_lr=scale_lr)
        fits[scale_lr] = vi.fit(model, "theta", batch.support, p)
    torch.testing.assert_close(fits[0.5].loc, fits[None].loc)
    torch.testing.assert_close(fits[1e-3].loc, fits[None].loc)

    def moved(fit):  # the softplus-unconstrained scale's change, in whitened units
        start = torch.as_tensor(0.1)
        return torch.log(torch.expm1(fit.scale / prior.scale)) - torch.log(torch.expm1(start))

    torch.testing.assert_close(moved(fits[0.5]), moved(fits[None]) * 10, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(moved(fits[1e-3]), moved(fits[None]) / 50, rtol=1e-3, atol=1e-6)


def test_scale_lr_needs_a_plain_optimiser_with_a_step():
    sched = pyro.optim.ExponentialLR(
        {"optimizer": torch.optim.SGD, "optim_args": {"lr": 0.1}, "gamma": 0.9}
    )
    with pytest.raises(ValueError, match="scale_lr needs a plain PyroOptim"):
        InnerVI(optim=sched, scale_lr=0.1)
    with pytest.raises(ValueError, match="scale_lr needs a plain PyroOptim"):
        InnerVI(optim=pyro.optim.SGD(lambda name: {"lr": 0.1}), scale_lr=0.1)
    with pytest.raises(ValueError, match="scale_lr must be > 0"):
        InnerVI(optim=pyro.optim.SGD({"lr": 0.1}), scale_lr=0.0)
