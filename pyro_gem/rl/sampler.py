"""Rollouts of a whole meta-batch at once: every task, every rollout, one batched policy forward
per time step.

:class:`RolloutSampler` steps ``T · K`` copies of an environment through its batched twin
(:meth:`~pyro_gem.envs.MetaEnv.batched`: array operations for 2D navigation, direct MuJoCo
stepping for the MuJoCo tasks), with task ``t``'s K copies acting under its own weights θ_t.
Actions are drawn from the policy's Gaussian with a torch generator, so a seed fixes the
rollouts. A copy whose episode ended keeps being stepped, masked out.

A task whose policy produced a non-finite action is reported in :attr:`Rollouts.finite`
(``False``): its copies step with zero actions from then on and its rewards are NaN, so that its
inner loop diverges and the learner leaves it out of the meta-gradient, as for any task.

Example::

    sampler = RolloutSampler("pyro_gem/Navigation2D-v0", policy=prior.net)
    tasks = sampler.sample_tasks(20, np.random.default_rng(0))           # (20, 2) goals
    rollouts = sampler.sample(tasks, theta, rollouts=20, generator=torch.Generator())
    rollouts.returns.mean(1)                                             # (20,) per task
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from pyro_gem.envs.base import MetaEnv, check_tasks
from pyro_gem.rl.policy import action_distribution

__all__ = ["RolloutSampler", "Rollouts", "make_meta_env"]


def make_meta_env(env_id: str, **kwargs) -> gym.Env:
    """``gymnasium.make(env_id)``, checked to be a meta-RL environment.

    :raises ValueError: for an id gymnasium does not know (listing the project's), or an
        environment without a task distribution.
    """
    import pyro_gem.envs  # noqa: F401  (registers the project's environments)

    if env_id not in gym.registry:
        ours = sorted(k for k in gym.registry if k.startswith("pyro_gem/"))
        raise ValueError(f"unknown environment id {env_id!r}: pyro_gem registers {ours}")
    env = gym.make(env_id, **kwargs)
    if not isinstance(env.unwrapped, MetaEnv):
        raise ValueError(
            f"{env_id} is not a meta-RL environment: it needs sample_tasks/set_task/batched "
            "(pyro_gem.envs.MetaEnv)"
        )
    return env


@dataclass
class Rollouts:
    """K rollouts of each of T tasks, padded to the horizon H.

    :ivar observations: ``(T, K, H, observation_dim)``, the state each action was taken in.
    :ivar actions: ``(T, K, H, action_dim)``.
    :ivar rewards: ``(T, K, H)``, zero after an episode ended.
    :ivar mask: ``(T, K, H)``, 1 for the steps of a running episode, 0 after it ended.
    :ivar finite: ``(T,)`` bool, ``False`` for a task whose policy produced a non-finite action.
    :ivar tasks: the tasks, ``(T, task_dim)``.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor
    finite: torch.Tensor
    tasks: torch.Tensor

    @property
    def returns(self) -> torch.Tensor:
        """Undiscounted return of every rollout, ``(T, K)`` (NaN for a non-finite task)."""
        return (self.rewards * self.mask).sum(-1)

    @property
    def num_steps(self) -> int:
        """Environment steps taken (the running episodes' steps)."""
        return int(self.mask.sum())


class RolloutSampler:
    """Batched rollouts of a meta-RL environment under per-task policy weights.

    :param env_id: a registered meta-RL environment (e.g. ``"pyro_gem/Navigation2D-v0"``).
    :param policy: ``(theta (T, D), observations (T, K, obs)) -> (T, K, 2 · A)``, the output of
        a :class:`~pyro_gem.rl.policy.GaussianMLPPolicy` (e.g. ``prior.net``).
    :param horizon: steps per rollout; the environment's registered ``max_episode_steps`` by
        default.
    :raises ValueError: for an unknown id or a horizon below 1.
    """

    def __init__(
        self,
        env_id: str,
        policy: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        horizon: int | None = None,
    ):
        self.env_id = env_id
        self.env = make_meta_env(env_id)
        self.meta_env: MetaEnv = self.env.unwrapped
        registered = self.env.spec.max_episode_steps if self.env.spec else None
        horizon = registered if horizon is None else horizon
        if horizon is None or int(horizon) < 1:
            raise ValueError(f"horizon must be a positive number of steps, got {horizon}")
        self.horizon = int(horizon)
        self.policy = policy
        self.observation_dim = int(np.prod(self.env.observation_space.shape))
        self.action_dim = int(np.prod(self.env.action_space.shape))
        self._batched: dict[int, object] = {}

    def __getstate__(self) -> dict:
        # The environments are rebuilt from their id where the sampler is unpickled (a Ray
        # worker fitting a meta-RL shard), not shipped.
        state = dict(self.__dict__)
        for key in ("env", "meta_env", "_batched"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.env = make_meta_env(self.env_id)
        self.meta_env = self.env.unwrapped
        self._batched = {}

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> np.ndarray:
        """``num_tasks`` tasks from the environment's task distribution."""
        return self.meta_env.sample_tasks(num_tasks, rng)

    def check_tasks(self, tasks: np.ndarray | torch.Tensor) -> np.ndarray:
        """Tasks as an array, refused (ValueError naming the range) if outside the range."""
        if torch.is_tensor(tasks):
            tasks = tasks.detach().cpu().numpy()
        return check_tasks(tasks, self.meta_env.task_space, self.env_id)

    def _envs(self, num_envs: int):
        if num_envs not in self._batched:
            self._batched[num_envs] = self.meta_env.batched(num_envs)
        return self._batched[num_envs]

    @torch.no_grad()
    def sample(
        self,
        tasks: np.ndarray | torch.Tensor,
        theta: torch.Tensor,
        rollouts: int,
        generator: torch.Generator | None = None,
    ) -> Rollouts:
        """K rollouts of every task, task t acting under weights ``theta[t]``.

        :param tasks: ``(T, task_dim)``.
        :param theta: policy weights ``(T, D)``.
        :param rollouts: K, rollouts per task.
        :param generator: the action noise's (and the environments' reset noise's) stream.
        """
        tasks = self.check_tasks(tasks)
        num_tasks, k = len(tasks), int(rollouts)
        if k < 1:
            raise ValueError(f"rollouts must be >= 1, got {rollouts}")
        if theta.dim() != 2 or theta.shape[0] != num_tasks:
            raise ValueError(
                f"theta must have shape ({num_tasks}, D) for {num_tasks} tasks, got "
                f"{tuple(theta.shape)}"
            )
        device, dtype = theta.device, theta.dtype
        if generator is None:  # torch's global stream (a fresh Generator would repeat)
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
        gen = generator
        seed = int(torch.randint(2**62, (1,), generator=gen))
        envs = self._envs(num_tasks * k)
        obs = envs.reset(np.repeat(tasks, k, axis=0), np.random.default_rng(seed))
        h, a_dim = self.horizon, self.action_dim
        observations = torch.zeros(num_tasks, k, h, self.observation_dim, dtype=dtype)
        actions = torch.zeros(num_tasks, k, h, a_dim, dtype=dtype)
        rewards = torch.zeros(num_tasks, k, h, dtype=torch.float64)
        mask = torch.zeros(num_tasks, k, h, dtype=dtype)
        alive = torch.ones(num_tasks, k, dtype=torch.bool)
        finite = torch.ones(num_tasks, dtype=torch.bool)
        for t in range(h):
            o = torch.as_tensor(obs, dtype=dtype).reshape(num_tasks, k, -1)
            dist = action_distribution(self.policy(theta, o.to(device)))
            noise = torch.randn(num_tasks, k, a_dim, generator=gen, dtype=dtype)
            a = (dist.base_dist.loc + dist.base_dist.scale * noise.to(device)).cpu()
            finite &= torch.isfinite(a).flatten(1).all(1)
            a = torch.where(finite[:, None, None], a, torch.zeros_like(a))
            obs, r, terminated = envs.step(
                a.reshape(num_tasks * k, a_dim).double().numpy(), alive.flatten().numpy()
            )
            observations[:, :, t] = o
            actions[:, :, t] = a
            mask[:, :, t] = alive
            rewards[:, :, t] = torch.as_tensor(r).reshape(num_tasks, k) * alive
            alive &= ~torch.as_tensor(terminated).reshape(num_tasks, k)
            if not alive.any():
                break
        rewards[~finite] = torch.nan  # finite is on the CPU, like rewards here
        return Rollouts(
            observations.to(device),
            actions.to(device),
            rewards.to(device=device, dtype=dtype),
            mask.to(device),
            finite.to(device),
            torch.as_tensor(tasks, dtype=dtype, device=device),
        )
