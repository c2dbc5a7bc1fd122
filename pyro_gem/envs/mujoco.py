"""MAML's MuJoCo locomotion tasks (goal velocity and direction for HalfCheetah and Ant) on
gymnasium's MuJoCo v5 environments, each with a batched twin that steps many copies at once.

===================  =====================  ====================================================
class                task                   reward per step
===================  =====================  ====================================================
HalfCheetahVelEnv    v* ~ U[0, 2]           −|v − v*| − 0.05‖a‖²
HalfCheetahDirEnv    d = ±1, each with ½    d·v − 0.05‖a‖²
AntVelEnv            v* ~ U[0, 3]           −|v − v*| + 1 − 0.005‖a‖² − c + 0.05·healthy
AntDirEnv            d = ±1, each with ½    d·v − 0.005‖a‖² − c + 0.05·healthy
===================  =====================  ====================================================

``v`` is the forward (x) velocity of the torso over one step, (x_after − x_before)/dt; ``a`` the
action as given (MuJoCo clamps the control to [−1, 1], the cost does not); ``c`` is the contact
cost 5e-4·Σ clip(cfrc_ext, −1, 1)²; ``healthy`` is 1 while the torso height is in [0.2, 1.0] and
the state is finite (the Ant terminates when it is not; the HalfCheetah never terminates). The
weights are MAML's (cbfinn/maml_rl ``rllab/envs/mujoco/{half_cheetah,ant}_env_rand*.py``, kept by
tristandeleu/pytorch-maml-rl ``maml_rl/envs/mujoco/{half_cheetah,ant}.py``); the "+ 1" of the
Ant's velocity reward is MAML's, to keep the reward of staying alive positive near the goal so
that falling (ending the episode) does not pay. Each step's ``info`` holds the terms:
``reward_forward`` (the task term, the + 1 included), ``reward_ctrl``, and for the Ant
``reward_contact`` and ``reward_survive``, next to gymnasium's ``x_velocity`` etc. and ``task``.

Example::

    env = gymnasium.make("pyro_gem/HalfCheetahVel-v0")
    tasks = env.unwrapped.sample_tasks(4, np.random.default_rng(0))   # (4, 1) goal velocities
    env.unwrapped.set_task(tasks[0])
    obs, info = env.reset(seed=0)                                     # obs: (17,)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    batched = env.unwrapped.batched(8)
    obs = batched.reset(np.repeat(tasks, 2, axis=0), np.random.default_rng(1))   # (8, 17)
    obs, reward, terminated = batched.step(np.zeros((8, 6)))

Differences from MAML
---------------------
*Time step.* We keep gymnasium v5's models: 5 MuJoCo steps of 0.01 s per environment step, so
dt = 0.05 s for both robots, and the 200-step horizon covers 10 s. MAML's rllab models step once
per action (no frame skip) with timestep 0.01 s (HalfCheetah) and 0.02 s (Ant, RK4), so its 200
steps cover 2 s and 4 s; pytorch-maml-rl uses gym's models (dt = 0.05 s, as here) but a 100-step
horizon (5 s). The rewards are velocities, so a step's reward has the same scale either way, but
here each action is held 5 (2.5) times as long, the start-up transient is a smaller part of an
episode, and a good policy travels much further: returns are not comparable with MAML's numbers.

*Velocity.* MAML measures the torso's instantaneous centre-of-mass velocity after the step;
we (like gymnasium and pytorch-maml-rl) use the displacement over the step divided by dt: for the
HalfCheetah of the root slider ``qpos[0]``, for the Ant of the torso frame ``xpos``, which MuJoCo
last computed before the final sub-step (gymnasium reads it that way; the twin does the same).

*Observations.* gymnasium v5's own: the HalfCheetah's ``qpos[1:]`` and ``qvel`` (17 numbers;
MAML adds the torso position, 20), the Ant's ``qpos[2:]``, ``qvel`` and the clipped external
contact forces of the 13 bodies (105 numbers; MAML's 125 add the x, y position, the world body's
forces, which are zero, the torso's rotation matrix, which repeats the quaternion, and the torso
position). Leaving out the absolute position keeps the policy from keying on where it is, which
no task depends on.

*Other.* The survive bonus is paid only while healthy (gymnasium's rule; MAML pays 0.05 also on
the step that ends the episode). Resets use gymnasium's noise (uniform ±0.1 on ``qpos``,
0.1·N(0, 1) on ``qvel``, as pytorch-maml-rl's gym models; rllab's was 0.01·N(0, 1) on ``qpos``).
MAML's HalfCheetah clipped the action before its control cost; here (as in gymnasium and
pytorch-maml-rl) the cost is on the action as given. The Ant's control cost divides the action by
half the control range, which is 1 for gymnasium's model (±1 with gear 150 instead of rllab's
±150), so 0.005‖a‖² is MAML's cost.

The batched twins
-----------------
:class:`BatchedHalfCheetah` and :class:`BatchedAnt` hold one ``mujoco.MjModel`` (the single
environment's) and one ``mujoco.MjData`` per copy, step each with
``mujoco.mj_step(model, data, nstep=frame_skip)`` (plus ``mj_rnePostConstraint`` for the Ant,
whose contact forces it needs), and compute observations, rewards and terminations in NumPy on
the stacked ``qpos``/``qvel``. From the same state and actions they give gymnasium's numbers to
rounding. ``mujoco.rollout`` was measured too (≈25 % faster for the HalfCheetah on one busy core,
no faster for the Ant) but not used: its state (``mjSTATE_FULLPHYSICS``) leaves out the
solver's warm start, so trajectories restarted every step drift from gymnasium's (≈3e-10 after 50
steps, growing), and it cannot return the contact forces the Ant's reward needs.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import mujoco
import numpy as np
from gymnasium import spaces, utils
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from pyro_gem.envs.base import BatchedEnv, MetaEnv, check_tasks

__all__ = [
    "AntDirEnv",
    "AntVelEnv",
    "BatchedAnt",
    "BatchedHalfCheetah",
    "HalfCheetahDirEnv",
    "HalfCheetahVelEnv",
    "check_direction_tasks",
    "forward_reward",
]

#: What a task asks of the robot: a forward velocity or a direction (±1) to run in.
TaskKind = Literal["velocity", "direction"]

#: MAML's HalfCheetah control cost, 0.5 · 1e-1 per squared action.
CHEETAH_CTRL_COST_WEIGHT = 0.05
#: MAML's Ant control cost, 0.5 · 1e-2 per squared (range-normalised) action.
ANT_CTRL_COST_WEIGHT = 0.005
#: MAML's Ant contact cost, 0.5 · 1e-3 per squared clipped external force.
ANT_CONTACT_COST_WEIGHT = 5e-4
#: MAML's Ant survive bonus per step.
ANT_SURVIVE_REWARD = 0.05
#: The torso height outside which the Ant has fallen (or jumped) and the episode ends (MAML's,
#: which is also gymnasium v5's default).
ANT_HEALTHY_Z_RANGE = (0.2, 1.0)
#: Added to the Ant's velocity reward (MAML's "make it happy, not suicidal").
ANT_VELOCITY_OFFSET = 1.0

HALF_CHEETAH_VELOCITY_SPACE = spaces.Box(0.0, 2.0, shape=(1,), dtype=np.float64)
ANT_VELOCITY_SPACE = spaces.Box(0.0, 3.0, shape=(1,), dtype=np.float64)
#: Directions are ±1; the box is only the range ``check_tasks`` tests first.
DIRECTION_SPACE = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float64)


def forward_reward(
    x_velocity: np.ndarray | float,
    task: np.ndarray | float,
    kind: TaskKind,
    velocity_offset: float = 0.0,
) -> np.ndarray | float:
    """The task's term of the reward, for one copy (scalars) or many (arrays ``(B,)``).

    :param x_velocity: the torso's forward velocity over the step.
    :param task: the goal velocity, or the direction ±1.
    :param kind: which of the two ``task`` is.
    :param velocity_offset: added to a velocity reward (the Ant's 1).
    """
    if kind == "velocity":
        return velocity_offset - np.abs(x_velocity - task)
    return task * x_velocity


def check_direction_tasks(tasks: np.ndarray, env_name: str) -> np.ndarray:
    """``tasks`` as ``(B, 1)`` float64 directions, each −1 or +1.

    :raises ValueError: naming the environment and the offending task.
    """
    tasks = check_tasks(tasks, DIRECTION_SPACE, env_name)
    bad = ~np.isin(tasks[:, 0], (-1.0, 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{env_name}: task {tasks[i].tolist()} is not a direction: directions are -1 or +1"
        )
    return tasks


class _LocomotionTasks(MetaEnv):
    """The task half of the environments below: which kind of task, its range, sampling.

    :cvar task_kind: velocity or direction.
    :cvar velocity_offset: added to the velocity reward.
    """

    task_kind: TaskKind
    velocity_offset: float = 0.0

    def validate_tasks(self, tasks: np.ndarray) -> np.ndarray:
        """``tasks`` as ``(B, 1)`` float64, refused (ValueError) if not of this task kind."""
        name = type(self).__name__
        if self.task_kind == "direction":
            return check_direction_tasks(tasks, name)
        return check_tasks(tasks, self.task_space, name)

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> np.ndarray:
        if self.task_kind == "direction":
            return rng.choice((-1.0, 1.0), size=(num_tasks, 1))
        return rng.uniform(self.task_space.low, self.task_space.high, size=(num_tasks, 1))

    def set_task(self, task: np.ndarray) -> None:
        self._task = self.validate_tasks(task)[0]

    def _initial_task(self, task: np.ndarray | None) -> np.ndarray:
        """The task to start with: ``task``, or the lowest velocity / forward."""
        if task is not None:
            return self.validate_tasks(task)[0]
        return np.ones(1) if self.task_kind == "direction" else self.task_space.low.copy()

    def _forward_reward(self, x_velocity: float) -> float:
        return float(
            forward_reward(x_velocity, self._task[0], self.task_kind, self.velocity_offset)
        )


class _HalfCheetahMetaEnv(_LocomotionTasks, HalfCheetahEnv):
    """gymnasium's HalfCheetah v5 with MAML's control cost and a task's forward reward.

    :param task: the initial task ``(1,)``; ``None`` for the default (velocity 0, forward).
    :param ctrl_cost_weight: weight of ‖a‖² (MAML's 0.05).
    :param kwargs: passed to gymnasium's ``HalfCheetahEnv`` (``frame_skip``, ``reset_noise_scale``,
        ``exclude_current_positions_from_observation``, ``render_mode``...).
    """

    def __init__(
        self,
        task: np.ndarray | None = None,
        *,
        ctrl_cost_weight: float = CHEETAH_CTRL_COST_WEIGHT,
        **kwargs,
    ):
        HalfCheetahEnv.__init__(self, ctrl_cost_weight=ctrl_cost_weight, **kwargs)
        # gymnasium's EzPickle recorded its own positional arguments; pickling must rebuild this
        # class from this signature instead.
        utils.EzPickle.__init__(self, task, ctrl_cost_weight=ctrl_cost_weight, **kwargs)
        self._task = self._initial_task(task)

    def _get_rew(self, x_velocity: float, action: np.ndarray):
        forward = self._forward_reward(x_velocity)
        ctrl_cost = self.control_cost(action)
        return forward - ctrl_cost, {"reward_forward": forward, "reward_ctrl": -ctrl_cost}

    def step(self, action):
        observation, reward, terminated, truncated, info = super().step(action)
        info["task"] = self._task.copy()
        return observation, reward, terminated, truncated, info

    def batched(self, num_envs: int) -> BatchedHalfCheetah:
        return BatchedHalfCheetah(self, num_envs)


class HalfCheetahVelEnv(_HalfCheetahMetaEnv):
    """HalfCheetah running at a goal velocity, uniform in [0, 2] (see the module docstring)."""

    task_kind = "velocity"
    task_space = HALF_CHEETAH_VELOCITY_SPACE


class HalfCheetahDirEnv(_HalfCheetahMetaEnv):
    """HalfCheetah running forward (+1) or backward (−1) (see the module docstring)."""

    task_kind = "direction"
    task_space = DIRECTION_SPACE


class _AntMetaEnv(_LocomotionTasks, AntEnv):
    """gymnasium's Ant v5 with MAML's costs, survive bonus and a task's forward reward.

    :param task: the initial task ``(1,)``; ``None`` for the default (velocity 0, forward).
    :param ctrl_cost_weight: weight of ‖a‖² (MAML's 0.005).
    :param contact_cost_weight: weight of the clipped contact forces squared (MAML's 5e-4).
    :param healthy_reward: the survive bonus per healthy step (MAML's 0.05).
    :param healthy_z_range: torso heights that count as healthy (MAML's (0.2, 1.0)).
    :param kwargs: passed to gymnasium's ``AntEnv`` (``frame_skip``, ``reset_noise_scale``,
        ``include_cfrc_ext_in_observation``, ``terminate_when_unhealthy``, ``render_mode``...).
    """

    def __init__(
        self,
        task: np.ndarray | None = None,
        *,
        ctrl_cost_weight: float = ANT_CTRL_COST_WEIGHT,
        contact_cost_weight: float = ANT_CONTACT_COST_WEIGHT,
        healthy_reward: float = ANT_SURVIVE_REWARD,
        healthy_z_range: tuple[float, float] = ANT_HEALTHY_Z_RANGE,
        **kwargs,
    ):
        weights = dict(
            ctrl_cost_weight=ctrl_cost_weight,
            contact_cost_weight=contact_cost_weight,
            healthy_reward=healthy_reward,
            healthy_z_range=healthy_z_range,
        )
        AntEnv.__init__(self, **weights, **kwargs)
        utils.EzPickle.__init__(self, task, **weights, **kwargs)
        self._task = self._initial_task(task)

    def _get_rew(self, x_velocity: float, action: np.ndarray):
        forward = self._forward_reward(x_velocity)
        survive = self.healthy_reward
        ctrl_cost = self.control_cost(action)
        contact_cost = self.contact_cost
        reward = forward + survive - ctrl_cost - contact_cost
        return reward, {
            "reward_forward": forward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": survive,
        }

    def step(self, action):
        observation, reward, terminated, truncated, info = super().step(action)
        info["task"] = self._task.copy()
        return observation, reward, terminated, truncated, info

    def batched(self, num_envs: int) -> BatchedAnt:
        return BatchedAnt(self, num_envs)


class AntVelEnv(_AntMetaEnv):
    """Ant running forward at a goal velocity, uniform in [0, 3] (see the module docstring)."""

    task_kind = "velocity"
    task_space = ANT_VELOCITY_SPACE
    velocity_offset = ANT_VELOCITY_OFFSET


class AntDirEnv(_AntMetaEnv):
    """Ant running forward (+1) or backward (−1) along x (see the module docstring)."""

    task_kind = "direction"
    task_space = DIRECTION_SPACE


class _BatchedMujoco(BatchedEnv):
    """``num_envs`` copies of a single MuJoCo meta-environment, one ``MjData`` each, sharing its
    model and settings (read once from it).

    :param env: the single environment (its ``unwrapped``) to copy.
    :param num_envs: copies.

    :ivar qpos: ``(num_envs, nq)`` positions after the last reset or step.
    :ivar qvel: ``(num_envs, nv)`` velocities.
    :ivar tasks: ``(num_envs, 1)`` each copy's task.
    :ivar reward_terms: the last step's reward terms, named as in the single env's ``info``.
    """

    def __init__(self, env: _LocomotionTasks, num_envs: int):
        self.num_envs = int(num_envs)
        self._env_name = type(env).__name__
        self._check_tasks = env.validate_tasks
        self.task_kind: TaskKind = env.task_kind
        self.velocity_offset = env.velocity_offset
        self.model: mujoco.MjModel = env.model
        self.frame_skip: int = env.frame_skip
        self.dt: float = env.dt
        self.init_qpos = env.init_qpos.copy()
        self.init_qvel = env.init_qvel.copy()
        # gymnasium v5 keeps its settings in these attributes; copying them makes the twin follow
        # whatever keyword arguments the single environment was built with.
        self.reset_noise_scale: float = env._reset_noise_scale
        self.ctrl_cost_weight: float = env._ctrl_cost_weight
        self.exclude_current_positions: bool = env._exclude_current_positions_from_observation
        self.datas = [mujoco.MjData(self.model) for _ in range(self.num_envs)]
        self.action_dim = self.model.nu
        self.qpos = np.zeros((self.num_envs, self.model.nq))
        self.qvel = np.zeros((self.num_envs, self.model.nv))
        self.tasks = np.repeat(env._initial_task(None)[None], self.num_envs, axis=0)
        self.reward_terms: dict[str, np.ndarray] = {}
        # MuJoCo releases the GIL while it steps: copies are stepped on every core (each copy
        # has its own MjData, so the result does not depend on the thread count).
        self.threads = max(1, min(os.cpu_count() or 1, self.num_envs))
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def _each(self, step_one, index) -> None:
        """``step_one(i)`` for every copy ``i`` in ``index``, split over the threads."""
        index = list(index)
        if self._pool is None or len(index) < 2 * self.threads:
            for i in index:
                step_one(i)
            return
        chunks = np.array_split(np.asarray(index), self.threads)
        list(self._pool.map(lambda chunk: [step_one(i) for i in chunk], chunks))

    def reset(self, tasks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        tasks = self._check_tasks(tasks)
        if len(tasks) != self.num_envs:
            raise ValueError(f"{len(tasks)} tasks for {self.num_envs} environments")
        self.tasks = tasks.copy()
        # gymnasium's reset_model noise, drawn in the same order: with one copy and
        # rng = np.random.default_rng(seed) this is gymnasium's reset(seed=seed).
        scale = self.reset_noise_scale
        qpos = self.init_qpos + rng.uniform(-scale, scale, size=self.qpos.shape)
        qvel = self.init_qvel + scale * rng.standard_normal(self.qvel.shape)
        return self.set_state(qpos, qvel)

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Put each copy in state ``qpos (num_envs, nq)``, ``qvel (num_envs, nv)`` as gymnasium's
        reset does (a fresh ``MjData``, then ``mj_forward``); the observations."""
        qpos = np.broadcast_to(np.asarray(qpos, np.float64), self.qpos.shape)
        qvel = np.broadcast_to(np.asarray(qvel, np.float64), self.qvel.shape)
        for i, data in enumerate(self.datas):
            # Also clears the solver's warm start and time, so a copy continues exactly as a
            # gymnasium env would after its reset.
            mujoco.mj_resetData(self.model, data)
            data.qpos[:] = qpos[i]
            data.qvel[:] = qvel[i]
            mujoco.mj_forward(self.model, data)
        self._gather()
        return self._observation()

    def step(self, actions: np.ndarray, active: np.ndarray | None = None):
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, self.action_dim):
            raise ValueError(
                f"actions must have shape {(self.num_envs, self.action_dim)}, got {actions.shape}"
            )
        x_before = self._x_position()
        index = range(self.num_envs) if active is None else np.flatnonzero(active)
        self._simulate(actions, index)
        x_velocity = (self._x_position() - x_before) / self.dt
        reward, terminated = self._reward(x_velocity, actions)
        return self._observation(), reward, terminated

    def _forward_reward(self, x_velocity: np.ndarray) -> np.ndarray:
        return forward_reward(x_velocity, self.tasks[:, 0], self.task_kind, self.velocity_offset)

    # What the robots do differently.

    def _gather(self) -> None:
        """Read the stacked state (and anything else observed) from the ``MjData``."""
        for i, data in enumerate(self.datas):
            self.qpos[i] = data.qpos
            self.qvel[i] = data.qvel

    def _simulate(self, actions: np.ndarray, index) -> None:
        """Apply the actions of the copies in ``index`` for ``frame_skip`` MuJoCo steps and
        gather their new state."""
        raise NotImplementedError

    def _x_position(self) -> np.ndarray:
        """``(num_envs,)`` the forward position the velocity is measured from."""
        raise NotImplementedError

    def _observation(self) -> np.ndarray:
        raise NotImplementedError

    def _reward(self, x_velocity: np.ndarray, actions: np.ndarray):
        """``(rewards, terminated)`` after a step; also sets :attr:`reward_terms`."""
        raise NotImplementedError


class BatchedHalfCheetah(_BatchedMujoco):
    """``num_envs`` HalfCheetahs (velocity or direction tasks, as the env they copy).

    :param env: a :class:`HalfCheetahVelEnv` or :class:`HalfCheetahDirEnv` (its ``unwrapped``).
    :param num_envs: copies.
    """

    def __init__(self, env: _HalfCheetahMetaEnv, num_envs: int):
        super().__init__(env, num_envs)
        self.observation_dim = self.model.nq + self.model.nv - self.exclude_current_positions

    def _simulate(self, actions: np.ndarray, index) -> None:
        model, frame_skip = self.model, self.frame_skip

        def step_one(i: int) -> None:
            data = self.datas[i]
            # MuJoCo clamps ctrl to ctrlrange itself, as in gymnasium (which does not clip).
            # gymnasium's mj_rnePostConstraint is left out: nothing here reads its outputs, and
            # it does not change the state.
            data.ctrl[:] = actions[i]
            mujoco.mj_step(model, data, nstep=frame_skip)
            self.qpos[i] = data.qpos
            self.qvel[i] = data.qvel

        self._each(step_one, index)

    def _x_position(self) -> np.ndarray:
        return self.qpos[:, 0].copy()

    def _observation(self) -> np.ndarray:
        positions = self.qpos[:, 1:] if self.exclude_current_positions else self.qpos
        return np.concatenate((positions, self.qvel), axis=1)

    def _reward(self, x_velocity: np.ndarray, actions: np.ndarray):
        forward = self._forward_reward(x_velocity)
        ctrl_cost = self.ctrl_cost_weight * np.square(actions).sum(1)
        self.reward_terms = {"reward_forward": forward, "reward_ctrl": -ctrl_cost}
        return forward - ctrl_cost, np.zeros(self.num_envs, dtype=bool)


class BatchedAnt(_BatchedMujoco):
    """``num_envs`` Ants (velocity or direction tasks, as the env they copy).

    :param env: an :class:`AntVelEnv` or :class:`AntDirEnv` (its ``unwrapped``).
    :param num_envs: copies.

    :ivar cfrc_ext: ``(num_envs, nbody, 6)`` external contact forces (unclipped).
    """

    def __init__(self, env: _AntMetaEnv, num_envs: int):
        super().__init__(env, num_envs)
        self.contact_cost_weight: float = env._contact_cost_weight
        self.healthy_reward: float = env._healthy_reward
        self.healthy_z_range: tuple[float, float] = env._healthy_z_range
        self.contact_force_range: tuple[float, float] = env._contact_force_range
        self.terminate_when_unhealthy: bool = env._terminate_when_unhealthy
        self.include_contact_forces: bool = env._include_cfrc_ext_in_observation
        self.main_body = self.model.body(env._main_body).id
        nbody = self.model.nbody
        self.cfrc_ext = np.zeros((self.num_envs, nbody, 6))
        # The main body's frame position as MuJoCo last computed it (see _simulate).
        self.main_body_xy = np.zeros((self.num_envs, 2))
        self.observation_dim = (
            self.model.nq
            + self.model.nv
            - 2 * self.exclude_current_positions
            + 6 * (nbody - 1) * self.include_contact_forces
        )

    def _gather(self) -> None:
        super()._gather()
        for i, data in enumerate(self.datas):
            self.cfrc_ext[i] = data.cfrc_ext
            self.main_body_xy[i] = data.xpos[self.main_body, :2]

    def _simulate(self, actions: np.ndarray, index) -> None:
        model, frame_skip, body = self.model, self.frame_skip, self.main_body

        def step_one(i: int) -> None:
            data = self.datas[i]
            data.ctrl[:] = actions[i]
            mujoco.mj_step(model, data, nstep=frame_skip)
            # The contact forces are not computed by mj_step (gymnasium calls this too).
            mujoco.mj_rnePostConstraint(model, data)
            self.qpos[i] = data.qpos
            self.qvel[i] = data.qvel
            self.cfrc_ext[i] = data.cfrc_ext
            # xpos is from the kinematics at the start of the last sub-step (mj_step integrates
            # after computing it); gymnasium measures the velocity from it, so we do too.
            self.main_body_xy[i] = data.xpos[body, :2]

        self._each(step_one, index)

    def _x_position(self) -> np.ndarray:
        return self.main_body_xy[:, 0].copy()

    def _contact_forces(self) -> np.ndarray:
        return np.clip(self.cfrc_ext, *self.contact_force_range)

    def _observation(self) -> np.ndarray:
        positions = self.qpos[:, 2:] if self.exclude_current_positions else self.qpos
        parts = [positions, self.qvel]
        if self.include_contact_forces:
            # The world body's row (0) is left out, as gymnasium does.
            parts.append(self._contact_forces()[:, 1:].reshape(self.num_envs, -1))
        return np.concatenate(parts, axis=1)

    def _reward(self, x_velocity: np.ndarray, actions: np.ndarray):
        low, high = self.healthy_z_range
        finite = np.isfinite(self.qpos).all(1) & np.isfinite(self.qvel).all(1)
        healthy = finite & (self.qpos[:, 2] >= low) & (self.qpos[:, 2] <= high)
        forward = self._forward_reward(x_velocity)
        survive = self.healthy_reward * healthy
        ctrl_cost = self.ctrl_cost_weight * np.square(actions).sum(1)
        contact_cost = self.contact_cost_weight * np.square(self._contact_forces()).sum((1, 2))
        self.reward_terms = {
            "reward_forward": forward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": survive,
        }
        terminated = ~healthy & self.terminate_when_unhealthy
        return forward + survive - ctrl_cost - contact_cost, terminated
