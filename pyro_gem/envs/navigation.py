"""2D navigation (MAML's point-robot task): move a point from the origin to a goal.

The state is the point's position; an action is a displacement, clipped to [−0.1, 0.1] per
coordinate; the reward after each step is minus the distance to the goal, and an episode ends
when the point is within 0.01 of the goal in both coordinates (as MAML's ``point_env_rand_goal``
and pytorch-maml-rl's ``2DNavigation-v0``). Goals are uniform in [−0.5, 0.5]²; the horizon of
100 steps is the registered ``max_episode_steps``.

Example::

    env = gymnasium.make("pyro_gem/Navigation2D-v0")
    env.unwrapped.set_task(np.array([0.3, -0.2]))
    obs, info = env.reset(seed=0)                 # obs: the position, [0, 0]
    obs, reward, terminated, truncated, info = env.step(np.array([0.1, -0.1]))
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from pyro_gem.envs.base import BatchedEnv, MetaEnv, check_tasks

__all__ = ["BatchedNavigation", "Navigation2DEnv"]

#: Per-coordinate bound of one step.
MAX_STEP = 0.1
#: The point has reached the goal within this distance in both coordinates.
GOAL_TOLERANCE = 0.01


def _step(position: np.ndarray, action: np.ndarray, goal: np.ndarray):
    """One step of every copy: new positions, rewards, terminated (the same for 1 or B)."""
    position = position + np.clip(action, -MAX_STEP, MAX_STEP)
    offset = position - goal
    reward = -np.sqrt((offset**2).sum(-1))
    terminated = (np.abs(offset) < GOAL_TOLERANCE).all(-1)
    return position, reward, terminated


class Navigation2DEnv(MetaEnv, gym.Env):
    """A point in the plane steered to a goal (the task).

    :param goal: the initial task; ``None`` draws none (set one before stepping).
    """

    metadata = {"render_modes": []}
    task_space = spaces.Box(-0.5, 0.5, shape=(2,), dtype=np.float64)

    def __init__(self, goal: np.ndarray | None = None):
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-MAX_STEP, MAX_STEP, shape=(2,), dtype=np.float32)
        self._task = np.zeros(2) if goal is None else check_tasks(goal, self.task_space, "x")[0]
        self._position = np.zeros(2)

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self.task_space.low, self.task_space.high, size=(num_tasks, 2))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._position = np.zeros(2)
        return self._position.astype(np.float32), {"goal": self._task.copy()}

    def step(self, action):
        self._position, reward, terminated = _step(
            self._position, np.asarray(action, np.float64), self._task
        )
        return self._position.astype(np.float32), float(reward), bool(terminated), False, {}

    def batched(self, num_envs: int) -> BatchedNavigation:
        return BatchedNavigation(num_envs)


class BatchedNavigation(BatchedEnv):
    """``num_envs`` navigation points stepped as one array operation."""

    observation_dim = 2
    action_dim = 2

    def __init__(self, num_envs: int):
        self.num_envs = int(num_envs)
        self.position = np.zeros((self.num_envs, 2))
        self.goal = np.zeros((self.num_envs, 2))

    def reset(self, tasks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        tasks = check_tasks(tasks, Navigation2DEnv.task_space, "Navigation2DEnv")
        if len(tasks) != self.num_envs:
            raise ValueError(f"{len(tasks)} tasks for {self.num_envs} environments")
        self.goal = tasks.copy()
        self.position = np.zeros((self.num_envs, 2))
        return self.position.copy()

    def step(self, actions: np.ndarray, active: np.ndarray | None = None):
        # Every copy is stepped: one array operation costs no more than a masked one.
        self.position, reward, terminated = _step(self.position, actions, self.goal)
        return self.position.copy(), reward, terminated
