"""Advantages of rollouts: discounted returns, the linear feature baseline (Duan et al. 2016, as
in MAML's code) fitted per task, generalised advantage estimation and normalisation.

The baseline regresses each task's discounted returns-to-go on features of the state and time,
``[clip(s, ±10), clip(s, ±10)², t/100, (t/100)², (t/100)³, 1]``, by ridge least squares over the
task's own rollouts (all tasks solved as one batched linear system); the ridge coefficient
starts at 1e-5 and grows tenfold, up to five times, where the solution is not finite (rllab's
``LinearFeatureBaseline``). With the baseline's values V, the advantages are GAE(γ, λ):
``Â_t = Σ_l (γλ)^l δ_{t+l}``, ``δ_t = r_t + γ V(s_{t+1}) − V(s_t)`` (V = 0 past the end), which
for λ = 1 (MAML's setting) is the return-to-go minus the baseline. They are then normalised per
task to zero mean and unit variance over the task's steps.

Example::

    adv = advantages(rollouts, discount=0.99, gae_lambda=1.0)     # (T, K, H), 0 where masked
"""

from __future__ import annotations

import torch

from pyro_gem.rl.sampler import Rollouts

__all__ = [
    "advantages",
    "baseline_features",
    "discounted_returns",
    "linear_baseline",
    "rollout_data",
]


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, discount: float) -> torch.Tensor:
    """Returns-to-go ``Σ_{t' ≥ t} γ^{t'−t} r_t'`` of ``rewards (..., H)``, 0 where masked."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = (rewards[..., t] + discount * running) * mask[..., t]
        out[..., t] = running
    return out


def baseline_features(observations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The linear baseline's features ``(..., H, 2 · obs + 4)`` of ``observations (..., H, obs)``."""
    o = observations.clamp(-10, 10)
    time = torch.arange(o.shape[-2], dtype=o.dtype, device=o.device) / 100.0
    time = time.expand(o.shape[:-1])[..., None]
    feats = torch.cat([o, o**2, time, time**2, time**3, torch.ones_like(time)], -1)
    return feats * mask[..., None]


def linear_baseline(
    observations: torch.Tensor,
    mask: torch.Tensor,
    returns: torch.Tensor,
    reg: float = 1e-5,
    retries: int = 5,
) -> torch.Tensor:
    """Per-task ridge regression of ``returns (T, K, H)`` on the features: the values
    ``V (T, K, H)`` at every step of each task's rollouts (0 where masked)."""
    # A task whose rollouts are not finite (its policy diverged) gets NaN values; the others
    # are solved as usual (the solver must not see its NaNs).
    finite = returns.flatten(1).isfinite().all(1) & observations.flatten(1).isfinite().all(1)
    feats = baseline_features(observations, mask).double().nan_to_num()  # (T, K, H, F)
    x = feats.flatten(1, 2)  # (T, K·H, F)
    y = (returns * mask).double().nan_to_num().flatten(1)[..., None]
    xtx, xty = x.transpose(1, 2) @ x, x.transpose(1, 2) @ y
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    coef = torch.full_like(xty, torch.nan)
    todo = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for _ in range(retries):
        solved = torch.linalg.lstsq(xtx[todo] + reg * eye, xty[todo]).solution
        coef[todo] = solved
        todo = ~torch.isfinite(coef).all(-1).all(-1)
        if not todo.any():
            break
        reg *= 10
    values = (feats @ coef[:, None]).squeeze(-1)  # (T, K, H)
    values[~finite] = torch.nan
    return values.to(returns.dtype) * mask


def advantages(
    rollouts: Rollouts, discount: float = 0.99, gae_lambda: float = 1.0, normalize: bool = True
) -> torch.Tensor:
    """GAE(γ, λ) advantages ``(T, K, H)`` with the linear baseline, normalised per task.

    :param discount: γ (MAML: 0.99).
    :param gae_lambda: λ; 1 gives returns-to-go minus the baseline (MAML's).
    :param normalize: zero mean, unit variance over each task's running steps.
    """
    mask, rewards = rollouts.mask, rollouts.rewards
    returns = discounted_returns(rewards, mask, discount)
    values = linear_baseline(rollouts.observations, mask, returns)
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], -1)
    deltas = (rewards + discount * next_values - values) * mask
    adv = discounted_returns(deltas, mask, discount * gae_lambda)
    if normalize:
        count = mask.sum((1, 2), keepdim=True).clamp(min=1)
        mean = (adv * mask).sum((1, 2), keepdim=True) / count
        var = ((adv - mean) ** 2 * mask).sum((1, 2), keepdim=True) / count
        adv = (adv - mean) / (var.sqrt() + 1e-8) * mask
    return adv


def rollout_data(rollouts: Rollouts, discount: float, gae_lambda: float) -> tuple:
    """The model's arguments ``(observations, actions, advantages, step_weights)`` of
    ``rollouts``, each ``(T, K · H, ...)``."""
    adv = advantages(rollouts, discount, gae_lambda)
    mask = rollouts.mask
    lengths = mask.sum(-1, keepdim=True).clamp(min=1)
    weights = mask / (lengths * mask.shape[1])
    return (
        rollouts.observations.flatten(1, 2),
        rollouts.actions.flatten(1, 2),
        adv.flatten(1, 2),
        weights.flatten(1, 2),
    )
