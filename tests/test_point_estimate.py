"""MAML, first-order MAML and Reptile against finite differences and their closed forms."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_gem import GaussianPrior, Sinusoid, TaskBatch
from pyro_gem.point_estimate import MAML, Reptile


def tiny(dtype=torch.float64):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1)).to(dtype)
    prior = GaussianPrior(net, init_scale=0.1)

    def model(x, y=None):
        f = prior.sample_net()
        with pyro.plate("data", x.shape[-2], dim=-1):
            pyro.sample("y", dist.Normal(f(x).squeeze(-1), 0.5), obs=y)

    return model, prior


def batch64(num_tasks=3):
    b = Sinusoid(shots=5).sample(num_tasks, torch.Generator().manual_seed(1))
    return TaskBatch(tuple(a.double() for a in b.support), tuple(a.double() for a in b.query))


def frozen_maml(model, prior, steps, first_order=False):
    """A MAML learner whose meta-step leaves m in place (lr 0), to read its gradient."""
    optim = torch.optim.SGD([prior.loc], lr=0.0)
    return MAML(model, prior, optim, inner_lr=0.05, inner_steps=steps, first_order=first_order)


def manual_adapt(learner, args, steps, lr):
    """The inner loop written out: θ ← θ + lr ∇ log-likelihood, one task at a time."""
    thetas = []
    for t in range(args[0].shape[0]):
        theta = learner.prior.loc.detach().clone()
        one = tuple(a[t : t + 1] for a in args)
        for _ in range(steps):
            theta = theta.detach().requires_grad_()
            (g,) = torch.autograd.grad(learner.log_likelihood(one)(theta[None]).sum(), theta)
            theta = theta + lr * g
        thetas.append(theta.detach())
    return torch.stack(thetas)


def test_maml_meta_gradient_matches_finite_differences():
    torch.set_default_dtype(torch.float64)
    model, prior = tiny()
    learner = frozen_maml(model, prior, steps=3)
    batch = batch64()
    learner.step(batch)
    grad = prior.loc.grad.clone()

    def loss(m):
        with torch.no_grad():
            prior.loc.copy_(m)
        theta = learner.adapt_weights(batch.support)
        return -learner.log_likelihood(batch.query)(theta).mean().item()

    m0, eps = prior.loc.detach().clone(), 1e-6
    for i in range(prior.num_weights):
        e = torch.zeros_like(m0)
        e[i] = eps
        fd = (loss(m0 + e) - loss(m0 - e)) / (2 * eps)
        assert fd == pytest.approx(grad[i].item(), rel=1e-5, abs=1e-7)
    # Second-order terms matter here: the first-order gradient differs.
    fo = frozen_maml(model, prior, steps=3, first_order=True)
    with torch.no_grad():
        prior.loc.copy_(m0)
    fo.step(batch)
    assert not torch.allclose(prior.loc.grad, grad, rtol=1e-3)


def test_first_order_maml_and_reptile_closed_forms():
    torch.set_default_dtype(torch.float64)
    model, prior = tiny()
    batch = batch64()
    fo = frozen_maml(model, prior, steps=2, first_order=True)
    fo.step(batch)
    theta = manual_adapt(fo, batch.support, 2, 0.05).requires_grad_()
    (g,) = torch.autograd.grad(-fo.log_likelihood(batch.query)(theta).mean(), theta)
    torch.testing.assert_close(prior.loc.grad, g.sum(0))

    reptile = Reptile(
        model, prior, torch.optim.SGD([prior.loc], lr=0.5), inner_lr=0.05, inner_steps=4
    )
    m0 = prior.loc.detach().clone()
    theta = manual_adapt(reptile, batch.joint(), 4, 0.05)
    reptile.step(batch)
    torch.testing.assert_close(prior.loc.detach(), m0 + 0.5 * (theta - m0).mean(0))


@pytest.mark.parametrize("learner_cls", [MAML, Reptile])
def test_adapt_through_pyro_svi_equals_the_inner_loop(learner_cls):
    torch.set_default_dtype(torch.float64)
    model, prior = tiny()
    learner = learner_cls(model, prior, inner_lr=0.05, inner_steps=3)
    batch = batch64()
    post = learner.adapt(*batch.support)
    torch.testing.assert_close(post.loc, learner.adapt_weights(batch.support), rtol=1e-6, atol=1e-7)
    assert post.scale is None
    draws = post.predict(batch.query[0], num_samples=4)
    assert draws["y"].shape == (4, 3, 5)
    assert len(pyro.get_param_store().keys()) == 0


def test_point_estimate_learners_reject_extra_latents():
    _, prior = tiny(torch.float32)

    def model(x, y=None):
        f = prior.sample_net()
        noise = pyro.sample("noise", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", x.shape[-2], dim=-1):
            pyro.sample("y", dist.Normal(f(x).squeeze(-1), noise), obs=y)

    b = Sinusoid(shots=5).sample(2, torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="latent site 'noise'"):
        MAML(model, prior).step(b)
