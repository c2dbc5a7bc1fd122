"""Stein variational gradient descent (Liu & Wang, 2016), vectorised over tasks and differentiable.

BMAML's inner loop moves M particles of network weights per task along the SVGD direction

    φ(x_i) = 1/M Σ_j [ k(x_j, x_i) ∇_{x_j} log p(x_j) + ∇_{x_j} k(x_j, x_i) ],

with the RBF kernel k(x, y) = exp(−‖x − y‖² / h) and the median heuristic of the original code:
h = med / log(M + 1), med the median of the M² squared pairwise distances (numpy's median, the
mean of the two middle values). The first term pulls particles to high density, the second
pushes them apart. The bandwidth is held constant under differentiation (a heuristic, not part
of the objective). Pyro's :class:`pyro.infer.SVGD` runs one particle set through the param store
and optimiser; BMAML needs T sets at once and the graph of every step, hence this function.

Example::

    phi = svgd_direction(x, grad_log_p)       # x, grad_log_p: (T, M, D)
    x = x + step_size * phi
"""

from __future__ import annotations

import math

import torch

__all__ = ["rbf_kernel", "svgd_direction"]


def rbf_kernel(particles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RBF kernel matrix and bandwidth by the median heuristic.

    :param particles: ``(..., M, D)``.
    :returns: ``(K, h)``: ``K (..., M, M)`` and ``h (..., 1, 1)``.
    """
    num = particles.shape[-2]
    diff = particles.unsqueeze(-2) - particles.unsqueeze(-3)
    sq_dist = diff.square().sum(-1)
    med = torch.quantile(sq_dist.detach().flatten(-2), 0.5, dim=-1)[..., None, None]
    h = (med / math.log(num + 1)).clamp_min(torch.finfo(particles.dtype).tiny)
    return torch.exp(-sq_dist / h), h


def svgd_direction(particles: torch.Tensor, grad_log_p: torch.Tensor) -> torch.Tensor:
    """The SVGD update direction φ for every particle.

    :param particles: ``(..., M, D)``.
    :param grad_log_p: ∇ log p at each particle, ``(..., M, D)``.
    :returns: ``(..., M, D)``.
    """
    kernel, h = rbf_kernel(particles)
    num = particles.shape[-2]
    attraction = kernel @ grad_log_p  # Σ_j k(x_i, x_j) ∇ log p(x_j)  (k symmetric)
    # Σ_j ∇_{x_j} k(x_j, x_i) = Σ_j (2 / h) (x_i − x_j) k(x_i, x_j)
    repulsion = (2 / h) * (particles * kernel.sum(-1, keepdim=True) - kernel @ particles)
    return (attraction + repulsion) / num
