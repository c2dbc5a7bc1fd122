"""What a meta-RL environment adds to a gymnasium environment: a task space to draw tasks from,
a way to set the task, and a batched twin that steps many copies at once.

A task is a small vector (a goal position, a goal velocity, a direction). :class:`MetaEnv` is a
mixin for a ``gymnasium.Env``: :meth:`~MetaEnv.sample_tasks` draws tasks from a seed,
:meth:`~MetaEnv.set_task` sets one (refusing a task outside the range, with the range in the
message), and :meth:`~MetaEnv.batched` builds a :class:`BatchedEnv`, the same dynamics and
rewards for ``num_envs`` copies stepped together, which the rollout sampler
(:mod:`pyro_gem.rl.sampler`) drives with one batched policy forward per time step.

Example::

    env = gymnasium.make("pyro_gem/Navigation2D-v0")
    tasks = env.unwrapped.sample_tasks(4, np.random.default_rng(0))   # (4, 2) goals
    env.unwrapped.set_task(tasks[0])
    batched = env.unwrapped.batched(8)
    obs = batched.reset(np.repeat(tasks, 2, axis=0), np.random.default_rng(1))   # (8, 2)
    obs, reward, terminated = batched.step(np.zeros((8, 2)))
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

__all__ = ["BatchedEnv", "MetaEnv", "check_tasks"]


def check_tasks(tasks: np.ndarray, space: spaces.Box, env_name: str) -> np.ndarray:
    """``tasks`` as a float64 array ``(B, task_dim)``, checked against the task space.

    :raises ValueError: naming the environment, the offending task and the range.
    """
    tasks = np.asarray(tasks, dtype=np.float64)
    if tasks.ndim == 1:
        tasks = tasks[None]
    if tasks.ndim != 2 or tasks.shape[1:] != space.shape:
        raise ValueError(
            f"{env_name}: tasks must have shape (n, {space.shape[0]}), got {tasks.shape}"
        )
    bad = ~(np.isfinite(tasks).all(1) & (tasks >= space.low).all(1) & (tasks <= space.high).all(1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{env_name}: task {tasks[i].tolist()} is outside the task range "
            f"[{space.low.tolist()}, {space.high.tolist()}]"
        )
    return tasks


class MetaEnv:
    """Mixin for a gymnasium environment with a distribution over tasks.

    :cvar task_space: the box every task lies in (``set_task`` refuses others).
    """

    task_space: spaces.Box

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``num_tasks`` tasks ``(num_tasks, task_dim)`` from the task distribution."""
        raise NotImplementedError

    def set_task(self, task: np.ndarray) -> None:
        """Make ``task`` the current one (it takes effect at once; reset as usual)."""
        self._task = check_tasks(task, self.task_space, type(self).__name__)[0]

    @property
    def task(self) -> np.ndarray:
        return self._task

    def batched(self, num_envs: int) -> BatchedEnv:
        """``num_envs`` copies of this environment stepped together."""
        raise NotImplementedError


class BatchedEnv:
    """``num_envs`` copies of one environment, each with its own task, stepped together.

    Arrays are NumPy float64, one row per copy. A copy that terminated keeps being stepped (its
    later rewards are the sampler's to mask out).

    :ivar num_envs: copies.
    :ivar observation_dim: length of one observation.
    :ivar action_dim: length of one action.
    """

    num_envs: int
    observation_dim: int
    action_dim: int

    def reset(self, tasks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Set each copy's task ``(num_envs, task_dim)`` and reset it; the initial
        observations ``(num_envs, observation_dim)``."""
        raise NotImplementedError

    def step(
        self, actions: np.ndarray, active: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply ``actions (num_envs, action_dim)``: ``(observations, rewards (num_envs,),
        terminated (num_envs,) bool)``.

        :param active: ``(num_envs,)`` bool, the copies to step (all by default); the others
            may be left where they are (their outputs are then meaningless): an episode that
            ended need not cost simulation.
        """
        raise NotImplementedError
