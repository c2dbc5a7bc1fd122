"""Differentiable inner VI, for the methods that backpropagate through the inner loop.

The ELBO-gradient row of the paper's Table 1 (Amortized BML, the L[2] cell, the KL-chaser) needs
∇_Θ λ(Θ): the posterior's parameters as a differentiable function of the prior. Pyro's SVI steps
its parameters in place and cannot give that, so :class:`UnrolledVI` writes the *same* algorithm
as ``InnerVI(guide="normal", optim=pyro.optim.SGD({"lr": lr}), whiten=True)`` as tensor
operations that keep their graph:

- AutoNormal's parameters in prior-whitened coordinates, θ = m + σ (a + softplus(ρ) ε), started
  at the prior (a = 0, softplus(ρ) = 1);
- the ELBO with the analytic KL of :class:`~pyro_gem.core.elbo.MeanFieldELBO`;
- plain SGD on (a, ρ), the only inner optimiser whose steps are differentiable as written
  (Adam's normalisation is differentiable too, but no method of the comparison uses it).

Memory and time of the backward pass grow linearly with the number of steps: that is the cost
Gradient-EM avoids, and what ``benchmarks/cost.py`` measures.

Example::

    vi = UnrolledVI(lr=0.05, steps=5)
    loc, scale = vi.fit(loglik, (prior.loc, prior.scale))      # (T, D) each, with a graph to Θ
    elbo = vi.elbo(loglik, (loc, scale), (prior.loc, prior.scale))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pyro_gem.core.likelihood import TaskLogLikelihood

__all__ = ["UnrolledVI", "gaussian_kl"]

Gaussian = tuple[torch.Tensor, torch.Tensor]


def gaussian_kl(q: Gaussian, p: Gaussian) -> torch.Tensor:
    """KL(N(μ_q, ν_q²) ‖ N(μ_p, ν_p²)) of diagonal Gaussians, summed over the last dimension.

    Written with log ν_q rather than log (ν_q / ν_p)²: its derivative 1/ν_q stays finite in
    float32 for far smaller posterior scales than 1/ν_q², which a collapsed scale overflows.
    """
    (mq, sq), (mp, sp) = q, p
    return (sp.log() - sq.log() + 0.5 * ((sq / sp).square() + ((mq - mp) / sp).square() - 1)).sum(
        -1
    )


def _whitened_kl(a: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """KL(N(a, softplus(ρ)²) ‖ N(0, 1)) summed over the last dimension, stable as ρ → −∞.

    Backpropagating through the inner steps differentiates this twice. Written as
    −log softplus(ρ) with the log taken as ρ itself where softplus(ρ) = e^ρ to float precision,
    its second derivative stays bounded; as log ν² (the general formula) it reaches 1/ν⁴, which
    overflows float32 once ν < 1e-10 and turns the whole batch's meta-gradient into NaN
    (every task shares the prior's graph, and 0 · inf = NaN).
    """
    nu = F.softplus(rho)
    tail = rho < -15.0
    log_nu = torch.where(tail, rho, F.softplus(rho.clamp(min=-15.0)).log())
    return (0.5 * (a.square() + nu.square() - 1) - log_nu).sum(-1)


def _softplus_inverse(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


class UnrolledVI:
    """K steps of SGD on the negative ELBO of a mean-field Gaussian posterior, differentiable.

    :param lr: the SGD step size (on AutoNormal's whitened loc and unconstrained scale).
    :param steps: the number of steps.
    :param num_particles: Monte Carlo draws of ε per step (and per ELBO estimate).
    :param init_scale: where the posterior's scale starts without an ``init``, as a fraction of
        the prior's (its loc starts at the prior's); ``None``: the prior's scale, as
        :class:`~pyro_gem.core.inner.InnerVI` does with the same option.
    """

    def __init__(
        self, lr: float, steps: int, num_particles: int = 1, init_scale: float | None = None
    ):
        if int(steps) < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if int(num_particles) < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles}")
        self.lr = float(lr)
        self.steps = int(steps)
        self.num_particles = int(num_particles)
        if init_scale is not None and not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        self.init_scale = 1.0 if init_scale is None else float(init_scale)

    def _draw(self, prior: Gaussian, a: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
        # One standard-normal draw per particle, in the order and layout AutoNormal draws them.
        eps = torch.randn((self.num_particles, *a.shape), dtype=a.dtype, device=a.device)
        return prior[0] + prior[1] * (a + nu * eps)

    def _negative_elbo(self, loglik: TaskLogLikelihood, prior: Gaussian, a, rho) -> torch.Tensor:
        nu = F.softplus(rho)
        expected = loglik(self._draw(prior, a, nu)).mean(0)
        return _whitened_kl(a, rho) - expected  # (T,)

    def fit(
        self,
        loglik: TaskLogLikelihood,
        prior: Gaussian,
        init: Gaussian | None = None,
        steps: int | None = None,
        create_graph: bool = True,
    ) -> Gaussian:
        """The posterior ``(loc, scale)``, each ``(T, D)``, after the SGD steps.

        :param loglik: the tasks' log-likelihood (T tasks; weights ``(P, T, D)``).
        :param prior: ``(m, σ)`` of the prior, ``(D,)`` or ``(T, D)``, possibly with a graph.
        :param init: where the posterior starts (defaults to the prior, its scale times
            ``init_scale``).
        :param steps: overrides the configured number of steps.
        :param create_graph: keep every step's graph (backpropagation through the loop).
        """
        m, sigma = prior
        steps = self.steps if steps is None else int(steps)
        shape = (loglik.num_tasks, m.shape[-1])
        if init is None:
            a = torch.zeros(shape, dtype=m.dtype, device=m.device)
            start = torch.full(shape, self.init_scale, dtype=m.dtype, device=m.device)
            rho = _softplus_inverse(start)
        else:
            a = ((init[0] - m) / sigma).expand(shape)
            rho = _softplus_inverse(init[1] / sigma).expand(shape)
        if not create_graph:
            a, rho = a.detach(), rho.detach()
        for _ in range(steps):
            if not a.requires_grad:
                a, rho = a.detach().requires_grad_(), rho.detach().requires_grad_()
            loss = self._negative_elbo(loglik, prior, a, rho).sum()
            g_a, g_rho = torch.autograd.grad(loss, (a, rho), create_graph=create_graph)
            a, rho = a - self.lr * g_a, rho - self.lr * g_rho
            if not create_graph:
                a, rho = a.detach(), rho.detach()
        return m + sigma * a, sigma * F.softplus(rho)

    def expected_log_likelihood(
        self, loglik: TaskLogLikelihood, posterior: Gaussian
    ) -> torch.Tensor:
        """A reparameterised estimate of E_q log P(D | θ) per task, ``(T,)``."""
        loc, scale = posterior
        eps = torch.randn((self.num_particles, *loc.shape), dtype=loc.dtype, device=loc.device)
        return loglik(loc + scale * eps).mean(0)

    def elbo(self, loglik: TaskLogLikelihood, posterior: Gaussian, prior: Gaussian) -> torch.Tensor:
        """A reparameterised ELBO estimate per task, ``(T,)``: E_q log P(D | θ) − KL(q ‖ prior)."""
        return self.expected_log_likelihood(loglik, posterior) - gaussian_kl(posterior, prior)
