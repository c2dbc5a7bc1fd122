import pyro
import pytest
import torch
from linear_gaussian import exact_posterior, make_model, make_prior, orthogonal_design, tasks_data
from sinusoid_fixtures import small_sinusoid

from pyro_gem import InnerVI, Sinusoid
from pyro_gem.core.inner import plate_nesting
from pyro_gem.core.likelihood import TaskLogLikelihood
from pyro_gem.methods.unrolled import UnrolledVI, gaussian_kl


def test_gaussian_kl_matches_torch():
    gen = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(2, 3, 5, generator=gen)
    sq, sp = torch.rand(2, 3, 5, generator=gen) + 0.1
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mq, sq), torch.distributions.Normal(mp, sp)
    ).sum(-1)
    torch.testing.assert_close(gaussian_kl((mq, sq), (mp, sp)), expected)


@pytest.mark.parametrize("init_scale", [None, 0.05])
def test_unrolled_vi_is_pyro_svi_with_whitened_sgd(init_scale):
    """The differentiable loop runs the algorithm of InnerVI(normal, SGD, whiten): same noise,
    same posterior, so a backprop method's adapt() (through Pyro) matches its training; from the
    same narrow start too."""
    model, prior = small_sinusoid()
    batch = Sinusoid().sample(4, torch.Generator().manual_seed(0))
    p = (prior.loc.detach(), prior.scale.detach())
    nesting = plate_nesting(model, batch.support, prior.name)
    torch.manual_seed(5)
    vi = InnerVI(guide="normal", optim=pyro.optim.SGD({"lr": 0.05}), steps=7, init_scale=init_scale)
    fit = vi.fit(model, prior.name, batch.support, p, nesting=nesting)
    torch.manual_seed(5)
    torch.randn(4, 1, prior.num_weights)  # AutoNormal's draw when its parameters are built
    loglik = TaskLogLikelihood(model, prior.name, batch.support, nesting)
    loc, scale = UnrolledVI(0.05, 7, init_scale=init_scale).fit(loglik, p, create_graph=False)
    assert (fit.loc - p[0]).abs().max() > 0.05  # it moved
    torch.testing.assert_close(loc, fit.loc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scale, fit.scale, rtol=1e-5, atol=1e-6)


def test_unrolled_vi_starts_at_init_scale_times_the_prior_scale():
    model, prior = small_sinusoid()
    batch = Sinusoid().sample(3, torch.Generator().manual_seed(0))
    loglik = TaskLogLikelihood(model, prior.name, batch.support, 1)
    p = (prior.loc.detach(), prior.scale.detach())
    loc, scale = UnrolledVI(0.05, 0, init_scale=0.01).fit(loglik, p, create_graph=False)
    torch.testing.assert_close(loc, p[0].expand(3, -1))
    torch.testing.assert_close(scale, 0.01 * p[1].expand(3, -1))
    with pytest.raises(ValueError, match="init_scale must be positive"):
        UnrolledVI(0.05, 1, init_scale=0.0)


def test_unrolled_vi_converges_to_the_exact_posterior_mean():
    """On an orthogonal linear-Gaussian design the mean-field posterior is exact."""
    torch.set_default_dtype(torch.float64)
    prior = make_prior(3)
    model = make_model(prior)
    x = orthogonal_design(2, 6, 3)
    y = tasks_data(prior, x)
    loglik = TaskLogLikelihood(model, prior.name, (x, y), 1)
    m, s = prior.loc.detach(), prior.scale.detach()

    mean, sd = exact_posterior(m, prior.log_scale.detach(), x, y)
    loc, scale = UnrolledVI(0.02, 3000, num_particles=64).fit(loglik, (m, s), create_graph=False)
    torch.testing.assert_close(loc, mean, rtol=0, atol=0.03)
    torch.testing.assert_close(scale, sd, rtol=0.1, atol=0)


def test_the_fit_carries_a_graph_to_the_prior():
    model, prior = small_sinusoid()
    batch = Sinusoid().sample(2, torch.Generator().manual_seed(0))
    loglik = TaskLogLikelihood(model, prior.name, batch.support, 1)
    loc, scale = UnrolledVI(0.05, 3).fit(loglik, (prior.loc, prior.scale))
    (loc.sum() + scale.sum()).backward()
    assert prior.loc.grad is not None and prior.log_scale.grad.abs().sum() > 0


def test_whitened_kl_is_the_standard_normal_kl_and_twice_differentiable_at_tiny_scales():
    """The inner KL to N(0, 1) equals torch's, and its second derivative in ρ stays finite in
    float32 where the scale has collapsed (ρ = -30: ν ≈ 1e-13, 1/ν⁴ ≈ 1e52 overflows)."""
    from pyro_gem.methods.unrolled import _whitened_kl

    a = torch.tensor([[0.3, -1.2, 0.0, 2.0]])
    rho = torch.tensor([[0.5, -3.0, -30.0, -100.0]], requires_grad=True)
    nu = torch.nn.functional.softplus(rho)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(a[0, :2], nu[0, :2]), torch.distributions.Normal(0.0, 1.0)
    ).sum()
    kl = _whitened_kl(a[:, :2], rho[:, :2])
    torch.testing.assert_close(kl[0], expected)
    (g,) = torch.autograd.grad(_whitened_kl(a, rho).sum(), rho, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), rho)
    assert torch.isfinite(g).all() and torch.isfinite(h).all()
    torch.testing.assert_close(g[0, 2:], torch.tensor([-1.0, -1.0]))  # d(-log ν)/dρ → -1


def test_unrolled_meta_gradient_stays_finite_when_one_task_scale_collapses():
    """A huge inner step on one task drives its ρ far negative; the batch's second-order
    meta-gradient must stay finite (one task's 0 · inf would otherwise poison every task)."""
    model, prior = small_sinusoid()
    batch = Sinusoid().sample(3, torch.Generator().manual_seed(0))
    x, y = batch.support
    y = y.clone()
    y[1] *= 12.0  # task 1: a likelihood gradient so large that its scale collapses (ν ≈ 1e-19)
    loglik = TaskLogLikelihood(model, prior.name, (x, y), plate_nesting(model, (x, y), "theta"))
    torch.manual_seed(0)
    loc, scale = UnrolledVI(lr=0.3, steps=3).fit(loglik, (prior.loc, prior.scale))
    assert scale[1].min() < 1e-10 * prior.scale.min()  # the collapse did happen
    loss = -UnrolledVI(0.3, 0).elbo(loglik, (loc, scale), (prior.loc, prior.scale)).sum()
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(prior.loc.grad).all() and torch.isfinite(prior.log_scale.grad).all()
