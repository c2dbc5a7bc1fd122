"""Meta-RL environments, registered in gymnasium's registry under the ``pyro_gem`` namespace.

Importing :mod:`pyro_gem` registers them, so ``gymnasium.make`` builds them:

=================================  ==========================================  =======
id                                 task                                        horizon
=================================  ==========================================  =======
``pyro_gem/Navigation2D-v0``       goal position, uniform in [−0.5, 0.5]²      100
``pyro_gem/HalfCheetahVel-v0``     goal velocity, uniform in [0, 2]            200
``pyro_gem/HalfCheetahDir-v0``     direction, ±1                               200
``pyro_gem/AntVel-v0``             goal velocity, uniform in [0, 3]            200
``pyro_gem/AntDir-v0``             direction, ±1                               200
=================================  ==========================================  =======

Example::

    env = gymnasium.make("pyro_gem/HalfCheetahVel-v0")
    tasks = env.unwrapped.sample_tasks(40, np.random.default_rng(0))
"""

from __future__ import annotations

import gymnasium as gym

from pyro_gem.envs.base import BatchedEnv, MetaEnv, check_tasks
from pyro_gem.envs.navigation import BatchedNavigation, Navigation2DEnv

__all__ = [
    "ENV_IDS",
    "BatchedEnv",
    "BatchedNavigation",
    "MetaEnv",
    "Navigation2DEnv",
    "check_tasks",
]

#: id -> (entry point, horizon)
ENV_IDS = {
    "pyro_gem/Navigation2D-v0": ("pyro_gem.envs.navigation:Navigation2DEnv", 100),
    "pyro_gem/HalfCheetahVel-v0": ("pyro_gem.envs.mujoco:HalfCheetahVelEnv", 200),
    "pyro_gem/HalfCheetahDir-v0": ("pyro_gem.envs.mujoco:HalfCheetahDirEnv", 200),
    "pyro_gem/AntVel-v0": ("pyro_gem.envs.mujoco:AntVelEnv", 200),
    "pyro_gem/AntDir-v0": ("pyro_gem.envs.mujoco:AntDirEnv", 200),
}

for _id, (_entry, _horizon) in ENV_IDS.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry, max_episode_steps=_horizon)
