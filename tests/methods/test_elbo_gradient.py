"""The ELBO-gradient methods against autograd through a manually unrolled loop."""

import math

import pytest
import torch
import torch.nn.functional as F
from linear_gaussian import NOISE, make_model, make_prior, orthogonal_design, tasks_data
from sinusoid_fixtures import small_sinusoid

from pyro_gem import Sinusoid, TaskBatch
from pyro_gem.methods.elbo_gradient import AmortizedBML, KLChaser


def manual_loglik(theta, x, y):
    """log N(y; X θ, NOISE²) per task, written out: theta (T, D), x (T, N, D), y (T, N)."""
    resid = (y - (x @ theta[..., None])[..., 0]) / NOISE
    return -0.5 * resid.square().sum(-1) - y.shape[-1] * math.log(NOISE * math.sqrt(2 * math.pi))


def manual_kl(mq, sq, mp, sp):
    return (torch.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5).sum(-1)


def manual_vi(m, s, x, y, lr, steps):
    """Whitened SGD on AutoNormal's (loc, unconstrained scale), one draw per step, from the
    prior (m, s), keeping the graph."""
    a = torch.zeros(x.shape[0], m.shape[-1], dtype=x.dtype)
    rho = torch.full_like(a, math.log(math.e - 1))  # softplus(rho) = 1
    a, rho = a.requires_grad_(), rho.requires_grad_()
    for _ in range(steps):
        eps = torch.randn(1, *a.shape, dtype=x.dtype)[0]
        nu = F.softplus(rho)
        theta = m + s * (a + nu * eps)
        neg_elbo = manual_kl(a, nu, 0.0, 1.0) - manual_loglik(theta, x, y)
        g_a, g_rho = torch.autograd.grad(neg_elbo.sum(), (a, rho), create_graph=True)
        a, rho = a - lr * g_a, rho - lr * g_rho
    return m + s * a, s * F.softplus(rho)


def manual_elbo(q, p, x, y):
    eps = torch.randn(1, *q[0].shape, dtype=x.dtype)[0]
    return manual_loglik(q[0] + q[1] * eps, x, y) - manual_kl(*q, *p)


@pytest.mark.parametrize("method", ["abml", "abml+", "kl-chaser"])
def test_meta_gradient_matches_autograd_through_a_manual_loop(method):
    torch.set_default_dtype(torch.float64)
    prior = make_prior(3)
    model = make_model(prior)
    x = orthogonal_design(4, 10, 3)
    y = tasks_data(prior, x)
    batch = TaskBatch((x[:, :6], y[:, :6]), (x[:, 6:], y[:, 6:]))
    lr, steps, query_steps = 0.05, 4, 3
    if method == "kl-chaser":
        learner = KLChaser(model, prior, inner_lr=lr, inner_steps=steps, query_steps=query_steps)
    else:
        learner = AmortizedBML(
            model,
            prior,
            inner_lr=lr,
            inner_steps=steps,
            query_steps=query_steps,
            plus=method == "abml+",
        )
    torch.manual_seed(11)
    losses, _ = learner.task_losses(batch)
    losses.mean().backward()
    ours = prior.loc.grad.clone(), prior.log_scale.grad.clone()

    prior.zero_grad()
    torch.manual_seed(11)
    m, s = prior.loc, prior.log_scale.exp()
    (xs, ys), (xq, yq) = batch.support, batch.query
    q_tr = manual_vi(m, s, xs, ys, lr, steps)
    if method == "kl-chaser":
        q_tv = manual_vi(*(t.detach() for t in q_tr), xq, yq, lr, query_steps)
        loss = manual_kl(*(t.detach() for t in q_tv), *q_tr)
    elif method == "abml":
        loss = -manual_elbo(q_tr, (m, s), torch.cat([xs, xq], 1), torch.cat([ys, yq], 1))
    else:  # E_{q_tr} log P(D_val | θ): the ELBO with q' = q_tr, whose KL term is zero
        loss = -manual_elbo(q_tr, q_tr, xq, yq)
    torch.testing.assert_close(losses, loss.detach())
    loss.mean().backward()
    assert prior.loc.grad.abs().max() > 1e-3
    torch.testing.assert_close(ours[0], prior.loc.grad, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(ours[1], prior.log_scale.grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("cls", [AmortizedBML, KLChaser])
def test_step_updates_the_prior_and_adapts_through_pyro(cls):
    model, prior = small_sinusoid()
    learner = cls(model, prior, inner_lr=0.05, inner_steps=3)
    before = [p.detach().clone() for p in prior.parameters()]
    stats = learner.step(Sinusoid().sample(5, torch.Generator().manual_seed(0)))
    assert stats["nan_tasks"] == [] and math.isfinite(stats["meta_objective"])
    assert all((p - b).abs().max() > 0 for p, b in zip(prior.parameters(), before, strict=True))
    post = learner.adapt(*Sinusoid().sample(3, torch.Generator().manual_seed(1)).support)
    assert post.loc.shape == (3, prior.num_weights) and (post.scale > 0).all()


def test_a_diverged_task_is_left_out_of_the_backpropagated_gradient():
    model, prior = small_sinusoid()
    batch = Sinusoid().sample(4, torch.Generator().manual_seed(0))
    x, y = batch.support
    y = y.clone()
    y[1] = 3e38  # finite data whose gradient overflows: task 1's inner loop turns NaN
    bad = TaskBatch((x, y), batch.query)
    learner = AmortizedBML(model, prior, inner_lr=0.05, inner_steps=2)
    with pytest.warns(UserWarning, match=r"diverged on tasks \[1\]"):
        stats = learner.step(bad)
    assert stats["nan_tasks"] == [1]
    assert all(torch.isfinite(p).all() for p in prior.parameters())


def test_backprop_step_drops_tasks_until_every_loss_is_finite():
    """A task may diverge only when the losses are recomputed (fresh noise): it is dropped too,
    and the update equals the one of the remaining tasks alone."""
    model, prior = small_sinusoid()
    learner = AmortizedBML(model, prior, torch.optim.SGD(prior.parameters(), lr=0.0))
    batch = Sinusoid().sample(4, torch.Generator().manual_seed(0))
    calls = []

    def losses(b):
        calls.append(len(b))
        value = (prior.loc.sum() + b.support[1].sum(-1)) * prior.log_scale.sum()
        if len(calls) == 1:
            value = torch.where(torch.arange(len(b)) == 1, torch.nan, value)
        if len(calls) == 2:
            value = torch.where(torch.arange(len(b)) == 2, torch.nan, value)  # task 3 of 4
        return value, {}

    with pytest.warns(UserWarning, match=r"diverged on tasks \[1, 3\]"):
        stats = learner.backprop_step(batch, losses)
    assert calls == [4, 3, 2] and stats["nan_tasks"] == [1, 3]
    expected = batch.support[1][[0, 2]].sum(-1).mean() + prior.loc.sum()
    torch.testing.assert_close(
        prior.log_scale.grad, torch.full_like(prior.log_scale, expected.item())
    )
