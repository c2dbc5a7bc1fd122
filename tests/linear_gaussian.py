"""Conjugate linear-Gaussian tasks, y = X θ + ε: the marginal likelihood and posterior in closed form."""

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_gem import GaussianPrior

NOISE = 0.5


def log_marginal(m, log_s, x, y, noise=NOISE):
    """log N(y; X m, X diag(σ²) Xᵀ + noise² I), summed over tasks. x: (T, N, D), y: (T, N)."""
    var = torch.exp(2 * log_s)
    cov = (x * var) @ x.transpose(-1, -2) + noise**2 * torch.eye(x.shape[-2], dtype=x.dtype)
    return dist.MultivariateNormal(x @ m, covariance_matrix=cov).log_prob(y).sum()


def exact_posterior(m, log_s, x, y, noise=NOISE):
    """Posterior mean (T, D) and marginal standard deviations (T, D)."""
    prec = x.transpose(-1, -2) @ x / noise**2 + torch.diag_embed(torch.exp(-2 * log_s)).expand(
        x.shape[0], -1, -1
    )
    cov = torch.linalg.inv(prec)
    rhs = (x.transpose(-1, -2) @ y[..., None])[..., 0] / noise**2 + m * torch.exp(-2 * log_s)
    mean = (cov @ rhs[..., None])[..., 0]
    return mean, torch.diagonal(cov, dim1=-2, dim2=-1).sqrt()


def make_prior(dim, scale=0.7, dtype=torch.float64):
    torch.manual_seed(1)
    layer = nn.Linear(dim, 1, bias=False).to(dtype)
    return GaussianPrior(layer, init_scale=scale, init_loc=0.3 * torch.randn(dim, dtype=dtype))


def make_model(prior, noise=NOISE):
    def model(x, y=None):
        f = prior.sample_net()
        with pyro.plate("data", x.shape[-2], dim=-1):
            pyro.sample("y", dist.Normal(f(x).squeeze(-1), noise), obs=y)

    return model


def orthogonal_design(num_tasks, n, dim, dtype=torch.float64, seed=0):
    """x: (T, n, D) with XᵀX diagonal per task (scaled rows of the identity, repeated)."""
    gen = torch.Generator().manual_seed(seed)
    eye = torch.eye(dim, dtype=dtype).repeat(math.ceil(n / dim), 1)[:n]
    scales = 0.5 + torch.rand(num_tasks, n, 1, generator=gen, dtype=dtype)
    return eye * scales


def tasks_data(prior, x, seed=0, noise=NOISE):
    gen = torch.Generator().manual_seed(seed)
    theta = prior.loc.detach() + 1.3 * torch.randn(
        x.shape[0], x.shape[-1], generator=gen, dtype=x.dtype
    )
    return (x @ theta[..., None])[..., 0] + noise * torch.randn(
        x.shape[:2], generator=gen, dtype=x.dtype
    )
