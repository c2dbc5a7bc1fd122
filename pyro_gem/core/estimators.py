"""Meta-gradient estimators: Gradient-EM, the implicit gradient of iMAML, and the SGD inner loop
that backpropagation-based baselines (MAML) differentiate through.

Gradient-EM gives the prior's gradient in closed form from posteriors.

Theorem (Gradient-EM): ∇_Θ L(Θ; D) = E_{θ ~ P(θ|D;Θ)} ∇_Θ log P(θ; Θ). With the posterior replaced
by q = N(μ, diag ν²) and the prior N(m, diag σ²), σ = exp(s), per weight:

    ĝ_m = (μ − m) / σ²
    ĝ_s = ((μ − m)² + ν²) / σ² − 1

GEM-BML ascends L[1] with ĝ(λ_tr⊕val); GEM-BML+ ascends L[2] = L(D_tr ∪ D_val) − L(D_tr) with
ĝ(λ_tr⊕val) − ĝ(λ_tr). Only the final guide parameters enter: the cost of the meta-gradient does
not depend on how many inner steps produced them.

The implicit gradient (iMAML, Rajeswaran et al. 2019) differentiates the proximal inner
problem θ*(m) = argmin_θ L_tr(θ) + λ/2 ‖θ − m‖² at its solution instead of through the steps
that found it: dθ*/dm = (I + H/λ)⁻¹ with H = ∇²L_tr(θ*), so the meta-gradient of L_val(θ*) is
the solution g of (I + H/λ) g = ∇L_val(θ*), found by conjugate gradient on Hessian-vector
products. Its cost, like Gradient-EM's, does not depend on the inner steps.

iMAML's inner problem itself can be solved by :func:`proximal_newton` (Newton-CG), which copes
with the curvature that fixed-step gradient descent cannot.

Example::

    g_loc, g_log_scale = gem_gradient(m, s, mu, nu)       # ascent direction per task, (T, D)
    g = gem_plus_gradient(m, s, (mu_tv, nu_tv), (mu_tr, nu_tr))
    g = implicit_gradient(train_loss, grad_val, theta_star, reg=1.0, cg_steps=5)   # (T, D)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = [
    "GradientEM",
    "GradientSum",
    "conjugate_gradient",
    "gem_gradient",
    "gem_plus_gradient",
    "implicit_gradient",
    "proximal_newton",
    "sgd_adapt",
]

Posterior = tuple[torch.Tensor, torch.Tensor | None]


def gem_gradient(
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    post_loc: torch.Tensor,
    post_scale: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient-EM estimate of ∇_Θ L(Θ; D) for a Gaussian prior and posterior.

    :param loc: prior mean m, ``(D,)``.
    :param log_scale: prior log standard deviation s, ``(D,)``.
    :param post_loc: posterior mean μ, ``(..., D)``.
    :param post_scale: posterior standard deviation ν, ``(..., D)``; ``None`` for a delta
        posterior, whose scale gradient is undefined: the prior scale is then held fixed
        (the Reptile correspondence) and ĝ_s is zero.
    :returns: ``(ĝ_m, ĝ_s)``, each of the posterior's shape: the ascent direction of L.
    """
    inv_var = torch.exp(-2 * log_scale.detach())
    diff = post_loc - loc.detach()
    g_loc = diff * inv_var
    if post_scale is None:
        return g_loc, torch.zeros_like(g_loc)
    g_log_scale = (diff.square() + post_scale.square()) * inv_var - 1
    return g_loc, g_log_scale


def gem_plus_gradient(
    loc: torch.Tensor, log_scale: torch.Tensor, joint: Posterior, support: Posterior
) -> tuple[torch.Tensor, torch.Tensor]:
    """GEM-BML+ estimate of ∇_Θ L[2] = ĝ(λ_tr⊕val) − ĝ(λ_tr).

    :param joint: ``(μ, ν)`` of q_λtr⊕val, the posterior given support and query.
    :param support: ``(μ, ν)`` of q_λtr, the posterior given the support set only.
    """
    gm_j, gs_j = gem_gradient(loc, log_scale, *joint)
    gm_s, gs_s = gem_gradient(loc, log_scale, *support)
    return gm_j - gm_s, gs_j - gs_s


class GradientEM:
    """The Gradient-EM meta-gradient estimator for objective L[1] or L[2].

    :param plus: ``False`` for GEM-BML (L[1]), ``True`` for GEM-BML+ (L[2]).
    """

    def __init__(self, plus: bool = True):
        self.plus = plus

    def __call__(
        self, loc: torch.Tensor, log_scale: torch.Tensor, joint: Posterior, support: Posterior
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-task ascent directions ``(T, D)`` for the prior's loc and log-scale."""
        if self.plus:
            return gem_plus_gradient(loc, log_scale, joint, support)
        return gem_gradient(loc, log_scale, *joint)


@dataclass
class GradientSum:
    """Per-task meta-gradients summed over a batch's finite tasks: what a runner's worker sends
    back for its shard (:mod:`pyro_gem.runners`), one vector per meta-parameter however many
    tasks it fitted, with a flag and a few numbers per task.

    :ivar total: for each meta-parameter, the sum over the finite tasks of its per-task
        gradient ``(D,)`` (Gradient-EM: the ascent directions of the prior's loc and log-scale).
    :ivar finite: per task, whether it counted, ``(T,)`` bool (a diverged task is left out).
    :ivar per_task: named per-task numbers ``(T,)`` (e.g. the query log-likelihood).
    :ivar losses: named inner runs' losses, each summed over the tasks at each step.
    """

    total: tuple[torch.Tensor, ...]
    finite: torch.Tensor
    per_task: dict[str, torch.Tensor] = field(default_factory=dict)
    losses: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        grads: Sequence[torch.Tensor],
        finite: torch.Tensor,
        per_task: dict[str, torch.Tensor] | None = None,
        losses: dict[str, list[float]] | None = None,
    ) -> GradientSum:
        """Sum the per-task gradients of the ``finite`` tasks (``grads``: each
        ``(finite.sum(), D)``, the finite tasks' rows only)."""
        total = tuple(g.sum(0) for g in grads)
        return cls(total, finite, dict(per_task or {}), dict(losses or {}))

    @property
    def count(self) -> int:
        """How many tasks counted."""
        return int(self.finite.sum())

    def mean(self) -> tuple[torch.Tensor, ...]:
        """The mean over the finite tasks of each meta-gradient (NaN if none counted)."""
        return tuple(t / self.count for t in self.total)

    @classmethod
    def cat(cls, parts: Sequence[GradientSum]) -> GradientSum:
        """The shards' sums as one sum over all their tasks (totals added in shard order,
        per-task entries concatenated, losses added step by step)."""
        total = tuple(torch.stack(ts).sum(0) for ts in zip(*(p.total for p in parts)))
        per_task = {k: torch.cat([p.per_task[k] for p in parts]) for k in parts[0].per_task}
        losses = {
            k: [sum(step) for step in zip(*(p.losses[k] for p in parts))] for k in parts[0].losses
        }
        return cls(total, torch.cat([p.finite for p in parts]), per_task, losses)

    def to(self, device: torch.device) -> GradientSum:
        return GradientSum(
            tuple(t.to(device) for t in self.total),
            self.finite.to(device),
            {k: v.to(device) for k, v in self.per_task.items()},
            self.losses,
        )


def sgd_adapt(
    log_likelihood: Callable[[torch.Tensor], torch.Tensor],
    theta: torch.Tensor,
    steps: int,
    lr: float,
    create_graph: bool,
) -> torch.Tensor:
    """K steps of gradient ascent on each task's log-likelihood, differentiable if asked.

    The point-estimate inner loop of MAML, first-order MAML and Reptile:
    θ ← θ + lr ∇_θ log P(D_τ | θ), for every task at once.

    :param log_likelihood: ``theta (T, D) -> (T,)``.
    :param theta: the starting weights ``(T, D)``; with ``create_graph`` they may carry a graph
        to the meta-parameters (second-order MAML backpropagates through every step).
    :param steps: the number of steps K.
    :param lr: the step size α.
    :param create_graph: keep the graph of each step (second order) or not (first order).
    """
    for _ in range(steps):
        if not theta.requires_grad:
            theta = theta.detach().requires_grad_()
        (grad,) = torch.autograd.grad(log_likelihood(theta).sum(), theta, create_graph=create_graph)
        theta = theta + lr * grad
        if not create_graph:
            theta = theta.detach()
    return theta


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, steps: int
) -> torch.Tensor:
    """Solve A x = b for every row of ``b`` ``(T, D)`` at once, A symmetric positive definite.

    A task whose matrix shows non-positive curvature along a search direction (iMAML's
    I + H/λ is indefinite when the inner loss is non-convex and λ small) stops there with the
    iterate reached so far, or with ``b`` itself if that happens at the first iteration: the
    rule of Newton-CG (Nocedal & Wright, Algorithm 7.1), which keeps a descent direction
    instead of dividing by the curvature.

    :param matvec: ``v (T, D) -> A v``, each task's matrix applied to its own row.
    :param steps: conjugate-gradient iterations (exact after D in exact arithmetic).
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = r.square().sum(-1, keepdim=True)
    eps = torch.finfo(b.dtype).eps
    tiny = torch.finfo(b.dtype).tiny
    active = torch.ones_like(rs, dtype=torch.bool)
    for i in range(steps):
        ap = matvec(p)
        curvature = (p * ap).sum(-1, keepdim=True)
        positive = curvature > eps * p.square().sum(-1, keepdim=True)
        if i == 0:
            x = torch.where(positive, x, b)
        active = active & positive & (rs > tiny)
        alpha = torch.where(active, rs / curvature.clamp_min(tiny), 0.0)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = r.square().sum(-1, keepdim=True)
        p = r + torch.where(active, rs_new / rs.clamp_min(tiny), 0.0) * p
        rs = rs_new
    return x


def implicit_gradient(
    train_loss: Callable[[torch.Tensor], torch.Tensor],
    grad_val: torch.Tensor,
    theta: torch.Tensor,
    reg: float,
    cg_steps: int,
) -> torch.Tensor:
    """iMAML's meta-gradient per task: g with (I + H/λ) g = ∇L_val(θ*), by conjugate gradient.

    :param train_loss: ``theta (T, D) -> (T,)``, each task's inner loss L_tr (without the
        proximal term); H is its Hessian at ``theta``.
    :param grad_val: ∇_θ L_val at ``theta``, ``(T, D)``.
    :param theta: the inner solutions θ*, ``(T, D)``.
    :param reg: the proximal strength λ.
    :param cg_steps: conjugate-gradient iterations.
    :returns: ``(T, D)``: the gradient of each task's L_val(θ*(m)) with respect to m.
    """
    theta = theta.detach().requires_grad_()
    # Tasks are independent, so the Hessian of the summed loss is block diagonal: one
    # double-backward gives every task's Hessian-vector product at once.
    (grad,) = torch.autograd.grad(train_loss(theta).sum(), theta, create_graph=True)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        (hv,) = torch.autograd.grad(grad, theta, grad_outputs=v, retain_graph=True)
        return v + hv / reg

    return conjugate_gradient(matvec, grad_val.detach(), cg_steps)


def proximal_newton(
    loss: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    reg: float,
    steps: int,
    cg_steps: int,
    record: Sequence[int] = (),
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """θ* = argmin_θ L(θ) + λ/2 ‖θ − m‖² for every task, by Newton-CG from θ = m.

    Each step solves (I + H/λ) d = −∇F/λ (F the proximal objective, H the Hessian of L) by
    :func:`conjugate_gradient` on Hessian-vector products, truncated at negative curvature, so
    a non-convex L still gets a descent direction (−∇F/λ, the proximal gradient step, at
    worst). A backtracking search over d, d/2, … d/16 keeps the best point that lowers F; a
    task with none stays where it is. Unlike gradient descent at a fixed step, this converges
    whatever the curvature: iMAML's meta-gradient assumes θ* solves the problem, and the
    initialisation it learns sits where the data term is sharply curved (on sinusoid, 4× the
    top Hessian eigenvalue of MAML's), where MAML's step size diverges.

    :param loss: ``theta (T, D) -> (T,)``, each task's inner loss L (without the proximal term).
    :param start: m for every task, ``(T, D)``; the iterates carry no graph to it.
    :param reg: the proximal strength λ.
    :param steps: Newton steps.
    :param cg_steps: conjugate-gradient iterations per step.
    :param record: steps after which to keep a copy of θ.
    :returns: θ after ``steps`` steps ``(T, D)`` and ``{step: θ}`` for ``record``.
    """
    anchor = start.detach()

    def objective(theta: torch.Tensor) -> torch.Tensor:
        return loss(theta) + 0.5 * reg * (theta - anchor).square().sum(-1)

    theta = anchor.clone()
    snapshots = {}
    for i in range(steps + 1):
        if i in record:
            snapshots[i] = theta.clone()
        if i == steps:
            break
        theta = theta.detach().requires_grad_()
        value = objective(theta)
        (grad,) = torch.autograd.grad(value.sum(), theta, create_graph=True)

        def matvec(v: torch.Tensor, grad=grad, theta=theta) -> torch.Tensor:
            # ∇F = ∇L + λ(θ − m): the Hessian of F over λ is I + H/λ.
            (hv,) = torch.autograd.grad(grad, theta, grad_outputs=v, retain_graph=True)
            return hv / reg

        direction = conjugate_gradient(matvec, -grad.detach() / reg, cg_steps)
        with torch.no_grad():
            best, best_value = theta.detach(), value.detach()
            for fraction in (1.0, 0.5, 0.25, 0.125, 0.0625):
                candidate = theta + fraction * direction
                candidate_value = objective(candidate)
                better = (candidate_value < best_value)[:, None]  # NaN is never better
                best = torch.where(better, candidate, best)
                best_value = torch.where(better[:, 0], candidate_value, best_value)
        theta = best
    return theta.detach(), snapshots
