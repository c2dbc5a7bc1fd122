"""MAML, first-order MAML, Reptile, iMAML and pre-training against finite differences, closed
forms and exact meta-gradients."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import NOISE, make_model, make_prior, tasks_data
from sinusoid_fixtures import small_sinusoid
from torch import nn

from pyro_gem import GaussianPrior, Sinusoid, TaskBatch
from pyro_gem.core.estimators import implicit_gradient, proximal_newton
from pyro_gem.core.likelihood import TaskLogLikelihood
from pyro_gem.methods.point_estimate import IMAML, MAML, PreTraining, Reptile


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


def quadratic_imaml_problem():
    """Linear-Gaussian tasks: −log P(D_tr | θ) is quadratic, so θ*(m) has a closed form."""
    torch.set_default_dtype(torch.float64)
    prior = make_prior(3)
    model = make_model(prior)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 9, 3, generator=gen)  # a correlated design
    y = tasks_data(prior, x)
    return prior, model, TaskBatch((x[:, :5], y[:, :5]), (x[:, 5:], y[:, 5:]))


def exact_imaml_gradient(prior, batch, reg):
    """Autograd of mean_τ −log P(D_val | θ*(m)) through θ* = (A + λI)⁻¹(Xᵀy/s² + λm)."""
    (xs, ys), (xq, yq) = batch.support, batch.query
    m = prior.loc.detach().clone().requires_grad_()
    a = xs.transpose(-1, -2) @ xs / NOISE**2
    rhs = (xs.transpose(-1, -2) @ ys[..., None])[..., 0] / NOISE**2 + reg * m
    theta = torch.linalg.solve(a + reg * torch.eye(3), rhs)
    resid = (yq - (xq @ theta[..., None])[..., 0]) / NOISE
    (grad,) = torch.autograd.grad(0.5 * resid.square().sum(-1).mean(), m)
    return theta.detach(), grad


def test_implicit_gradient_equals_the_exact_meta_gradient_on_a_quadratic():
    prior, model, batch = quadratic_imaml_problem()
    reg = 2.0
    theta, exact = exact_imaml_gradient(prior, batch, reg)
    learner = IMAML(model, prior, reg=reg, cg_steps=3)
    train, val = learner.log_likelihood(batch.support), learner.log_likelihood(batch.query)
    t = theta.clone().requires_grad_()
    (grad_val,) = torch.autograd.grad(-val(t).sum(), t)
    g = implicit_gradient(lambda w: -train(w), grad_val, theta, reg, cg_steps=3)  # D = 3
    torch.testing.assert_close(g.mean(0), exact, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("inner_optim", ["sgd", "adam", "newton"])
def test_imaml_learner_with_a_converged_inner_loop(inner_optim):
    """Any inner optimiser: the implicit gradient only needs the inner solution. On a quadratic
    one Newton-CG step with D conjugate-gradient iterations is the exact solution."""
    prior, model, batch = quadratic_imaml_problem()
    reg = 2.0
    _, exact = exact_imaml_gradient(prior, batch, reg)
    optim = {
        "sgd": pyro.optim.SGD({"lr": 0.02}),
        "adam": pyro.optim.Adam({"lr": 0.05}),
        "newton": "newton",
    }[inner_optim]
    learner = IMAML(
        model,
        prior,
        torch.optim.SGD([prior.loc], lr=0.0),
        inner_steps=1 if inner_optim == "newton" else 1500,
        reg=reg,
        cg_steps=3,
        inner_optim=optim,
    )
    stats = learner.step(batch)
    assert stats["nan_tasks"] == []
    tol = {"rtol": 1e-8, "atol": 1e-10} if inner_optim == "newton" else {"rtol": 1e-3, "atol": 1e-5}
    torch.testing.assert_close(prior.loc.grad, exact, **tol)


def test_proximal_newton_descends_a_nonconvex_objective():
    """On a ReLU network's sinusoid loss (non-convex: CG meets negative curvature) every Newton
    step lowers each task's proximal objective or leaves the task where it is."""
    model, prior = small_sinusoid()
    batch = Sinusoid().sample(6, torch.Generator().manual_seed(2))
    loglik = TaskLogLikelihood(model, prior.name, batch.support, 1)
    start = prior.loc.detach().expand(6, -1)
    reg = 10.0

    def objective(t):
        return -loglik(t) + 0.5 * reg * (t - start).square().sum(-1)

    theta, snapshots = proximal_newton(lambda t: -loglik(t), start, reg, 6, 5, range(7))
    values = torch.stack([objective(snapshots[k]) for k in range(7)])
    assert (values[1:] <= values[:-1]).all()
    assert (values[-1] < 0.75 * values[0]).all()
    torch.testing.assert_close(theta, snapshots[6])


def test_imaml_rejects_an_unknown_solver():
    model, prior = tiny()
    with pytest.raises(ValueError, match="inner_optim must be a PyroOptim or 'newton'"):
        IMAML(model, prior, inner_optim="lbfgs")


def test_pretraining_fits_the_pooled_data():
    model, prior = tiny()
    batch = batch64()
    learner = PreTraining(model, prior, torch.optim.SGD([prior.loc], lr=0.0))
    learner.step(batch)
    m = prior.loc.detach().clone().requires_grad_()
    data = batch.joint()
    loglik = learner.log_likelihood(data)(m.expand(len(batch), -1)).mean()
    (grad,) = torch.autograd.grad(-loglik, m)
    torch.testing.assert_close(prior.loc.grad, grad)
