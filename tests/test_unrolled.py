import pyro
import torch
from linear_gaussian import exact_posterior, make_model, make_prior, orthogonal_design, tasks_data
from sinusoid_fixtures import small_sinusoid

from pyro_gem import InnerVI, Sinusoid
from pyro_gem.inner import plate_nesting
from pyro_gem.objectives import TaskLogLikelihood
from pyro_gem.unrolled import UnrolledVI, gaussian_kl


def test_gaussian_kl_matches_torch():
    gen = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(2, 3, 5, generator=gen)
    sq, sp = torch.rand(2, 3, 5, generator=gen) + 0.1
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mq, sq), torch.distributions.Normal(mp, sp)
    ).sum(-1)
    torch.testing.assert_close(gaussian_kl((mq, sq), (mp, sp)), expected)


def test_unrolled_vi_is_pyro_svi_with_whitened_sgd():
    """The differentiable loop runs the algorithm of InnerVI(normal, SGD, whiten): same noise,
    same posterior, so a backprop method's adapt() (through Pyro) matches its training."""
    model, prior = small_sinusoid()
    batch = Sinusoid().sample(4, torch.Generator().manual_seed(0))
    p = (prior.loc.detach(), prior.scale.detach())
    nesting = plate_nesting(model, batch.support, prior.name)
    torch.manual_seed(5)
    vi = InnerVI(guide="normal", optim=pyro.optim.SGD({"lr": 0.05}), steps=7)
    fit = vi.fit(model, prior.name, batch.support, p, nesting=nesting)
    torch.manual_seed(5)
    torch.randn(4, 1, prior.num_weights)  # AutoNormal's draw when its parameters are built
    loglik = TaskLogLikelihood(model, prior.name, batch.support, nesting)
    loc, scale = UnrolledVI(0.05, 7).fit(loglik, p, create_graph=False)
    assert (fit.loc - p[0]).abs().max() > 0.05  # it moved
    torch.testing.assert_close(loc, fit.loc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scale, fit.scale, rtol=1e-5, atol=1e-6)


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
