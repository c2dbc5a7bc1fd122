"""Gradient-EM against the closed-form truth of conjugate linear-Gaussian tasks (DESIGN.md §3)."""

import pyro
import pytest
import torch
from linear_gaussian import (
    exact_posterior,
    log_marginal,
    make_model,
    make_prior,
    orthogonal_design,
    tasks_data,
)

from pyro_gem import GEMBML, GradientEM, InnerVI, TaskBatch, gem_gradient, gem_plus_gradient
from pyro_gem.core.estimators import conjugate_gradient


def autograd_of(fn, m, log_s):
    m = m.detach().clone().requires_grad_()
    log_s = log_s.detach().clone().requires_grad_()
    return torch.autograd.grad(fn(m, log_s), (m, log_s))


def general_design(num_tasks=5, n=7, dim=4):
    gen = torch.Generator().manual_seed(3)
    return torch.randn(num_tasks, n, dim, generator=gen, dtype=torch.float64)


def test_exact_posterior_gives_the_marginal_likelihood_gradient():
    prior = make_prior(4)
    m, s = prior.loc.detach(), prior.log_scale.detach()
    x = general_design()  # correlated posterior: Gradient-EM needs only its marginals
    y = tasks_data(prior, x)
    g_m, g_s = gem_gradient(m, s, *exact_posterior(m, s, x, y))
    true_m, true_s = autograd_of(lambda a, b: log_marginal(a, b, x, y), m, s)
    torch.testing.assert_close(g_m.sum(0), true_m, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g_s.sum(0), true_s, rtol=1e-10, atol=1e-10)


def test_gem_plus_is_the_gradient_of_the_predictive_likelihood():
    prior = make_prior(4)
    m, s = prior.loc.detach(), prior.log_scale.detach()
    x = general_design(n=9)
    y = tasks_data(prior, x)
    x_tr, y_tr = x[:, :4], y[:, :4]

    def l2(a, b):
        return log_marginal(a, b, x, y) - log_marginal(a, b, x_tr, y_tr)

    joint, support = exact_posterior(m, s, x, y), exact_posterior(m, s, x_tr, y_tr)
    g_m, g_s = gem_plus_gradient(m, s, joint, support)
    true_m, true_s = autograd_of(l2, m, s)
    torch.testing.assert_close(g_m.sum(0), true_m, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g_s.sum(0), true_s, rtol=1e-10, atol=1e-10)
    # ... and it is exactly the difference of the two L[1] estimates.
    g1 = gem_gradient(m, s, *joint)
    g0 = gem_gradient(m, s, *support)
    torch.testing.assert_close(g_m, g1[0] - g0[0])
    torch.testing.assert_close(g_s, g1[1] - g0[1])


def test_reptile_limit_delta_posterior_fixed_variance():
    m = torch.tensor([0.2, -1.0], dtype=torch.float64)
    c0 = 0.5
    mu = torch.tensor([[1.0, 0.0], [0.5, -2.0]], dtype=torch.float64)
    g_m, g_s = gem_gradient(m, torch.full_like(m, c0).log(), mu, None)
    torch.testing.assert_close(g_m, (mu - m) / c0**2)  # the Reptile direction, scaled by 1/C0²
    assert torch.all(g_s == 0)  # a delta posterior never moves the (fixed) variance


def test_pre_training_limit_small_prior_variance():
    prior = make_prior(3)
    m = prior.loc.detach()
    x = general_design(dim=3)
    y = tasks_data(prior, x)
    log_s = torch.full_like(m, 1e-4).log()
    g_m, _ = gem_gradient(m, log_s, *exact_posterior(m, log_s, x, y))
    # ∇_m Σ log N(y | X m, noise²): the gradient of pre-training on the pooled data.
    m_req = m.clone().requires_grad_()
    loglik = torch.distributions.Normal(x @ m_req, 0.5).log_prob(y).sum()
    (expected,) = torch.autograd.grad(loglik, m_req)
    torch.testing.assert_close(g_m.sum(0), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("update", ["sequential", "joint"])
def test_converged_svi_matches_the_analytic_gradient(update):
    """Orthogonal design: the posterior is diagonal, so converged mean-field VI is exact."""
    torch.set_default_dtype(torch.float64)
    dim, num_tasks = 3, 4
    prior = make_prior(dim)
    x = orthogonal_design(num_tasks, 2 * dim, dim)
    y = tasks_data(prior, x)
    batch = TaskBatch((x[:, :dim], y[:, :dim]), (x[:, dim:], y[:, dim:]))
    inner = InnerVI(
        optim=pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.9985}),
        steps=3000,
        num_particles=32,
    )
    learner = GEMBML(make_model(prior), prior, inner=inner, update=update)
    support, joint = learner.fit_posteriors(batch)
    m, s = prior.loc.detach(), prior.log_scale.detach()
    for fit, (xx, yy) in ((support, batch.support), (joint, (x, y))):
        mean, sd = exact_posterior(m, s, xx, yy)
        torch.testing.assert_close(fit.loc, mean, rtol=0, atol=0.02)
        torch.testing.assert_close(fit.scale, sd, rtol=0.03, atol=0)

    for plus in (False, True):

        def objective(a, b, plus=plus):
            full = log_marginal(a, b, x, y)
            return full - log_marginal(a, b, *batch.support) if plus else full

        true_m, true_s = autograd_of(objective, m, s)
        estimator = GradientEM(plus=plus)
        est_m, est_s = estimator(m, s, (joint.loc, joint.scale), (support.loc, support.scale))
        scale = true_m.abs().max() + true_s.abs().max()
        torch.testing.assert_close(est_m.sum(0), true_m, rtol=0, atol=0.03 * scale)
        torch.testing.assert_close(est_s.sum(0), true_s, rtol=0, atol=0.03 * scale)


def test_conjugate_gradient_solves_each_task_and_stops_at_negative_curvature():
    gen = torch.Generator().manual_seed(0)
    b_mat = torch.randn(3, 5, 5, generator=gen, dtype=torch.float64)
    spd = b_mat @ b_mat.transpose(-1, -2) + 0.5 * torch.eye(5, dtype=torch.float64)
    rhs = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    x = conjugate_gradient(lambda v: (spd @ v[..., None])[..., 0], rhs, steps=5)
    torch.testing.assert_close(x, torch.linalg.solve(spd, rhs))
    # Indefinite matrices stop at non-positive curvature: at the first iteration with b (the
    # steepest-descent direction), later with the iterate reached so far (Newton-CG's rule).
    a = torch.tensor([[[-2.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, -0.5]]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.1], [1.0, 0.5]], dtype=torch.float64)
    x = conjugate_gradient(lambda v: (a @ v[..., None])[..., 0], b, steps=2)
    torch.testing.assert_close(x[0], b[0])
    ab = a[1] @ b[1]
    x1 = (b[1] @ b[1]) / (b[1] @ ab) * b[1]  # one CG step
    r1 = b[1] - (b[1] @ b[1]) / (b[1] @ ab) * ab
    p1 = r1 + (r1 @ r1) / (b[1] @ b[1]) * b[1]
    assert p1 @ (a[1] @ p1) < 0  # the second direction has negative curvature: stop at x1
    torch.testing.assert_close(x[1], x1)
