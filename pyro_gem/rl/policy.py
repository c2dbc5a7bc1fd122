"""The Gaussian MLP policy of MAML's RL experiments, as a network a prior can be put on.

:class:`GaussianMLPPolicy` maps an observation to the mean of a diagonal Gaussian over actions
and carries a learned log standard deviation (one per action dimension, independent of the
state), all of them weights under the learnable prior. Its output concatenates the mean and the
log standard deviation, so the library's batched functional forward
(:class:`~pyro_gem.core.nn.FunctionalNet`) runs it on one weight set per task like any network;
:func:`action_distribution` turns that output into the action distribution.

Example::

    policy = GaussianMLPPolicy(observation_dim=2, action_dim=2)      # 2 × 100 ReLU, as MAML
    prior = GaussianPrior(policy, init_scale=0.01)
    out = prior.net(theta, observations)                             # (T, N, 4)
    log_prob = action_distribution(out).log_prob(actions)            # (T, N)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Independent, Normal

from pyro_gem.core.nn import batched_mlp

__all__ = ["GaussianMLPPolicy", "action_distribution", "action_log_prob", "policy_kl"]


class GaussianMLPPolicy(nn.Module):
    """π_θ(a | s) = N(μ_θ(s), diag exp(log_std)²), μ an MLP with ReLU hidden layers.

    :param observation_dim: length of an observation.
    :param action_dim: length of an action.
    :param hidden: hidden layer widths (MAML: two layers of 100). Weights start Xavier-uniform,
        biases at zero (MAML's initialisation).
    :param init_log_std: the log standard deviation's initial value (MAML's: 0, σ = 1).
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (100, 100),
        init_log_std: float = 0.0,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = observation_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, action_dim))
        self.mean = nn.Sequential(*layers)
        for layer in self.mean:
            if isinstance(layer, nn.Linear):  # MAML's initialisation
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """``(..., observation_dim) -> (..., 2 · action_dim)``: the mean, then the log std."""
        mean = self.mean(observations)
        return torch.cat([mean, self.log_std.expand_as(mean)], -1)

    def batched_forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` on P weight sets at once (``params`` each ``(P, ...)``, ``x``
        ``(P, N, observation_dim)``): batched matmuls, for
        :class:`~pyro_gem.core.nn.FunctionalNet`."""
        mean = batched_mlp(self.mean, params, x, prefix="mean.")
        return torch.cat([mean, params["log_std"][:, None, :].expand_as(mean)], -1)


#: The floor of the policy's standard deviation (MAML's ``min_std``).
MIN_LOG_STD = math.log(1e-6)


def action_distribution(out: torch.Tensor) -> Independent:
    """The action distribution of a :class:`GaussianMLPPolicy` output ``(..., 2 · A)``."""
    mean, log_std = out.chunk(2, dim=-1)
    return Independent(Normal(mean, log_std.clamp_min(MIN_LOG_STD).exp(), validate_args=False), 1)


def action_log_prob(out: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log π(a | s) of ``actions (..., A)`` under the policy output ``out (..., 2 · A)``."""
    return action_distribution(out).log_prob(actions)


def policy_kl(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """KL(new ‖ old) of the diagonal Gaussians of two policy outputs ``(..., 2 · A)``, ``(...)``."""
    mu_new, log_std_new = new.chunk(2, -1)
    mu_old, log_std_old = old.chunk(2, -1)
    # the floor of action_distribution, so that the KL is of the policies that act
    log_std_new, log_std_old = (
        log_std_new.clamp_min(MIN_LOG_STD),
        log_std_old.clamp_min(MIN_LOG_STD),
    )
    var_new, var_old = (2 * log_std_new).exp(), (2 * log_std_old).exp()
    kl = log_std_old - log_std_new + (var_new + (mu_new - mu_old) ** 2) / (2 * var_old) - 0.5
    return kl.sum(-1)
