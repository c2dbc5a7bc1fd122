"""Learnable priors over the weights of an ``nn.Module``.

The prior is the meta-parameter Θ of Bayesian meta-learning. :class:`GaussianPrior` is a diagonal
Gaussian N(m, diag σ²) over all of a network's weights, flattened into one vector and sampled at
one Pyro site. Θ = (``loc``, ``log_scale``) are ordinary torch parameters, so any torch optimiser
steps them; σ = exp(log_scale).

Example (a single task, written the Pyro way)::

    net = nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 1))
    prior = GaussianPrior(net, init_scale=0.01)

    def model(x, y=None):
        f = prior.sample_net()                       # θ ~ P(θ; Θ) at site "theta"
        mean = f(x).squeeze(-1)
        with pyro.plate("data", x.shape[-2], dim=-1):
            pyro.sample("y", dist.Normal(mean, 0.1), obs=y)

One site holds the whole network. For a prior per layer, put one prior on each layer (each with
its own ``name``) and run the layers yourself; the learners take a single prior today.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.runtime import get_plates
from torch import nn

from pyro_gem.core.nn import FunctionalNet

__all__ = ["GaussianPrior", "prior_optimizer"]


class GaussianPrior(nn.Module):
    """Diagonal Gaussian prior over a network's weights, θ ~ N(loc, diag exp(log_scale)²).

    :param module: the network the prior is over (any module of standard layers).
    :param init_scale: initial prior standard deviation σ, a float or a tensor of
        ``num_weights`` entries.
    :param init_loc: initial prior mean, a tensor of ``num_weights`` entries; defaults to the
        module's own initialisation.
    :param name: the Pyro sample site of the weights.
    :param input_rank: rank of one input example, see :class:`~pyro_gem.core.nn.FunctionalNet`.
    """

    def __init__(
        self,
        module: nn.Module,
        init_scale: float | torch.Tensor = 0.01,
        init_loc: torch.Tensor | None = None,
        name: str = "theta",
        input_rank: int | None = None,
    ):
        super().__init__()
        self.name = name
        self.net = FunctionalNet(module, input_rank=input_rank)
        d = self.net.num_weights
        loc = self.net.flatten(module) if init_loc is None else torch.as_tensor(init_loc)
        if loc.shape != (d,):
            raise ValueError(f"init_loc has shape {tuple(loc.shape)}, expected ({d},)")
        self.loc = nn.Parameter(loc.detach().clone())
        self.log_scale = nn.Parameter(self._log_scale(init_scale, "init_scale"))

    def _log_scale(self, scale: float | torch.Tensor, name: str) -> torch.Tensor:
        d = self.net.num_weights
        value = torch.as_tensor(scale, dtype=self.loc.dtype, device=self.loc.device)
        if value.shape not in ((), (1,), (d,)):
            raise ValueError(f"{name} has shape {tuple(value.shape)}: expected a float or ({d},)")
        if not torch.all(value > 0) or not torch.all(torch.isfinite(value)):
            raise ValueError(f"{name} must be positive and finite, got {scale!r}")
        return value.log().expand(d).clone()

    @torch.no_grad()
    def reset_scale(self, scale: float | torch.Tensor) -> None:
        """Set every σ to ``scale`` (a float or ``num_weights`` values), e.g. a method's own
        starting scale (the ``prior_init_scale`` option); the mean is untouched."""
        self.log_scale.copy_(self._log_scale(scale, "scale"))

    def _apply(self, fn, recurse: bool = True):
        # ``.to(device)`` moves the functional network's module too (buffers of user layers).
        self.net.module._apply(fn)
        return super()._apply(fn, recurse)

    @property
    def num_weights(self) -> int:
        return self.net.num_weights

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def dist(self) -> dist.TorchDistribution:
        """The prior P(θ; Θ) as a Pyro distribution with event shape ``(num_weights,)``."""
        return dist.Normal(self.loc, self.scale).to_event(1)

    def sample(self) -> torch.Tensor:
        """Sample θ at this prior's site (``pyro.sample(self.name, self.dist())``)."""
        return pyro.sample(self.name, self.dist())

    def sample_net(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Sample θ at this prior's site and return the network evaluated on it.

        The returned callable maps inputs ``(..., N, *E)`` to outputs ``(..., N, *out)``. Under
        plates (the learner's ``tasks`` plate, Predictive's particles) each plate slice gets its
        own weights; call it outside the data plate.
        """
        theta = self.sample()
        dims = [f.dim for f in get_plates() if f.vectorized and f.dim is not None]
        weight_batch = theta.dim() - 1 + max(dims) + 1 if dims else None
        return lambda x: self.net(theta, x, weight_batch)


def prior_optimizer(
    prior: GaussianPrior, lr: float, scale_lr: float | None = None
) -> torch.optim.Adam:
    """Adam over the prior's mean and log-scale; with ``scale_lr`` the log-scale has a meta rate
    of its own (a second parameter group, which a milestone schedule scales like the first).

    :param lr: the meta rate of the mean (and of the log-scale without ``scale_lr``).
    :param scale_lr: the meta rate of the log-scale.
    """
    if scale_lr is None or scale_lr == lr:
        return torch.optim.Adam(prior.parameters(), lr=lr)
    if not scale_lr >= 0:
        raise ValueError(f"meta_lr_scale must be >= 0, got {scale_lr}")
    groups = [{"params": [prior.loc]}, {"params": [prior.log_scale], "lr": scale_lr}]
    return torch.optim.Adam(groups, lr=lr)
