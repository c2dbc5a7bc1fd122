import torch

from pyro_gem.rl import Rollouts, advantages, discounted_returns, linear_baseline
from pyro_gem.rl.advantages import baseline_features


def _rollouts(rewards, mask=None, obs_dim=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    t, k, h = rewards.shape
    mask = torch.ones_like(rewards) if mask is None else mask
    return Rollouts(
        torch.randn(t, k, h, obs_dim, generator=gen),
        torch.randn(t, k, h, 1, generator=gen),
        rewards * mask,
        mask,
        torch.ones(t, dtype=torch.bool),
        torch.zeros(t, 1),
    )


def test_discounted_returns_match_the_sum():
    r = torch.randn(2, 3, 7, dtype=torch.float64)
    mask = torch.ones_like(r)
    mask[0, 1, 4:] = 0
    out = discounted_returns(r * mask, mask, 0.9)
    for t in range(7):
        expected = sum(0.9 ** (s - t) * r[..., s] * mask[..., s] for s in range(t, 7))
        torch.testing.assert_close(out[..., t], expected * mask[..., t])


def test_linear_baseline_recovers_returns_linear_in_its_features():
    torch.manual_seed(0)
    obs = torch.randn(3, 4, 20, 2, dtype=torch.float64)
    mask = torch.ones(3, 4, 20, dtype=torch.float64)
    mask[1, 2, 12:] = 0
    feats = baseline_features(obs, mask)
    coef = torch.randn(3, feats.shape[-1], dtype=torch.float64)  # one regression per task
    returns = torch.einsum("tkhf,tf->tkh", feats, coef)
    values = linear_baseline(obs, mask, returns)
    # rllab's ridge of 1e-5 biases the fit slightly; it is the closed-form ridge solution.
    torch.testing.assert_close(values, returns * mask, atol=2e-3, rtol=0)
    for t in range(3):
        x, y = feats[t].reshape(-1, feats.shape[-1]), returns[t].reshape(-1)
        w = torch.linalg.solve(x.T @ x + 1e-5 * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)
        torch.testing.assert_close(values[t], (feats[t] @ w) * mask[t])


def test_baseline_is_fitted_per_task():
    obs = torch.zeros(2, 3, 5, 1)
    mask = torch.ones(2, 3, 5)
    returns = torch.stack([torch.full((3, 5), 1.0), torch.full((3, 5), -4.0)])
    values = linear_baseline(obs, mask, returns)
    torch.testing.assert_close(values[0], torch.full((3, 5), 1.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(values[1], torch.full((3, 5), -4.0), atol=1e-4, rtol=0)


def test_gae_with_lambda_one_is_returns_minus_baseline():
    rewards = torch.randn(2, 3, 10, dtype=torch.float64)
    roll = _rollouts(rewards)
    adv = advantages(roll, discount=0.95, gae_lambda=1.0, normalize=False)
    returns = discounted_returns(roll.rewards, roll.mask, 0.95)
    values = linear_baseline(roll.observations, roll.mask, returns)
    torch.testing.assert_close(adv, returns - values)


def test_gae_with_lambda_zero_is_the_td_error():
    rewards = torch.randn(1, 2, 6, dtype=torch.float64)
    roll = _rollouts(rewards)
    adv = advantages(roll, discount=0.9, gae_lambda=0.0, normalize=False)
    values = linear_baseline(
        roll.observations, roll.mask, discounted_returns(rewards, roll.mask, 0.9)
    )
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], -1)
    torch.testing.assert_close(adv, rewards + 0.9 * next_values - values)


def test_normalised_per_task_over_running_steps_and_zero_after_the_end():
    rewards = (
        torch.randn(3, 4, 8, dtype=torch.float64) * torch.tensor([1.0, 10.0, 100.0])[:, None, None]
    )
    mask = torch.ones_like(rewards)
    mask[:, 0, 5:] = 0
    adv = advantages(_rollouts(rewards, mask))
    assert (adv[:, 0, 5:] == 0).all()
    n = mask.sum((1, 2))
    mean = (adv * mask).sum((1, 2)) / n
    std = (((adv - mean[:, None, None]) ** 2 * mask).sum((1, 2)) / n).sqrt()
    torch.testing.assert_close(mean, torch.zeros(3, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(std, torch.ones(3, dtype=torch.float64), atol=1e-6, rtol=0)


def test_a_non_finite_task_does_not_spoil_the_others_baseline():
    obs = torch.randn(3, 2, 6, 2, dtype=torch.float64)
    mask = torch.ones(3, 2, 6, dtype=torch.float64)
    returns = torch.randn(3, 2, 6, dtype=torch.float64)
    alone = linear_baseline(obs[[0, 2]], mask[[0, 2]], returns[[0, 2]])
    returns[1, 0, 3] = torch.nan
    values = linear_baseline(obs, mask, returns)
    assert values[1].isnan().all()
    torch.testing.assert_close(values[[0, 2]], alone)
