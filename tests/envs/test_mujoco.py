"""MAML's MuJoCo tasks: registration, task sampling and checking, the reward formulas, and the
batched twins reproducing gymnasium's single environments step for step."""

import gymnasium as gym
import numpy as np
import pytest

import pyro_gem.envs  # noqa: F401  (registers the ids)
from pyro_gem.envs.base import MetaEnv

VELOCITY_IDS = ["pyro_gem/HalfCheetahVel-v0", "pyro_gem/AntVel-v0"]
DIRECTION_IDS = ["pyro_gem/HalfCheetahDir-v0", "pyro_gem/AntDir-v0"]
ENV_IDS = VELOCITY_IDS + DIRECTION_IDS
#: The velocity tasks' ranges, as MAML draws them.
VELOCITY_RANGE = {"pyro_gem/HalfCheetahVel-v0": (0.0, 2.0), "pyro_gem/AntVel-v0": (0.0, 3.0)}

#: MAML's weights, written out again so that a changed default shows here.
CTRL_COST_WEIGHT = {"HalfCheetah": 0.05, "Ant": 0.005}
CONTACT_COST_WEIGHT = 5e-4
SURVIVE_REWARD = 0.05


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """MuJoCo writes its warnings (gymnasium's HalfCheetah model uses the deprecated
    ``settotalmass``) to MUJOCO_LOG.TXT in the working directory: keep it out of the repo."""
    monkeypatch.chdir(tmp_path)


def _make(env_id: str):
    return gym.make(env_id).unwrapped


def _is_ant(env_id: str) -> bool:
    return "Ant" in env_id


def _three_tasks(env) -> np.ndarray:
    """Three different tasks of the env's kind."""
    if env.task_kind == "direction":
        return np.array([[1.0], [-1.0], [1.0]])
    return env.task_space.low + np.array([[0.1], [0.5], [0.9]]) * env.task_space.high


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_builds_a_meta_env_with_horizon_200(env_id):
    env = gym.make(env_id)
    assert env.spec.max_episode_steps == 200
    assert isinstance(env.unwrapped, MetaEnv)
    assert env.unwrapped.dt == pytest.approx(0.05)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, *_ = env.step(env.action_space.sample())
    assert obs.shape == env.observation_space.shape


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sample_tasks_is_reproducible_and_in_range(env_id):
    env = _make(env_id)
    tasks = env.sample_tasks(200, np.random.default_rng(3))
    assert tasks.shape == (200, 1) and tasks.dtype == np.float64
    assert np.array_equal(tasks, env.sample_tasks(200, np.random.default_rng(3)))
    assert not np.array_equal(tasks, env.sample_tasks(200, np.random.default_rng(4)))
    if env_id in DIRECTION_IDS:
        assert set(np.unique(tasks)) == {-1.0, 1.0}
    else:
        low, high = VELOCITY_RANGE[env_id]
        assert tasks.min() >= low and tasks.max() <= high
        assert tasks.max() - tasks.min() > 0.8 * (high - low)  # spread over the range


@pytest.mark.parametrize("env_id", VELOCITY_IDS)
def test_set_task_refuses_a_velocity_outside_the_range(env_id):
    env = _make(env_id)
    low, high = VELOCITY_RANGE[env_id]
    with pytest.raises(ValueError, match=rf"outside the task range \[\[{low}\], \[{high}\]\]"):
        env.set_task(np.array([high + 0.5]))
    with pytest.raises(ValueError, match="outside the task range"):
        env.batched(2).reset(np.array([[1.0], [-0.1]]), np.random.default_rng(0))
    env.set_task(np.array([high]))
    assert env.task.tolist() == [high]


@pytest.mark.parametrize("env_id", DIRECTION_IDS)
def test_set_task_refuses_anything_but_plus_or_minus_one(env_id):
    env = _make(env_id)
    with pytest.raises(ValueError, match=r"directions are -1 or \+1"):
        env.set_task(np.array([0.5]))
    with pytest.raises(ValueError, match=r"outside the task range \[\[-1.0\], \[1.0\]\]"):
        env.set_task(np.array([2.0]))
    with pytest.raises(ValueError, match=r"directions are -1 or \+1"):
        env.batched(2).reset(np.array([[1.0], [0.0]]), np.random.default_rng(0))
    env.set_task(np.array([-1.0]))
    assert env.task.tolist() == [-1.0]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_reward_is_its_formula_of_the_info_terms(env_id):
    env = _make(env_id)
    robot = "Ant" if _is_ant(env_id) else "HalfCheetah"
    task = float(_three_tasks(env)[1, 0])
    env.set_task(np.array([task]))
    env.reset(seed=1)
    rng = np.random.default_rng(2)
    for _ in range(5):
        x_before = env.data.qpos[0]
        action = rng.uniform(-1.2, 1.2, size=env.action_space.shape)  # beyond the range too
        _, reward, terminated, _, info = env.step(action)
        velocity = info["x_velocity"]
        if robot == "HalfCheetah":
            assert velocity == pytest.approx((env.data.qpos[0] - x_before) / 0.05, abs=1e-9)
        if env_id in DIRECTION_IDS:
            forward = task * velocity
        else:
            forward = -abs(velocity - task) + (1.0 if robot == "Ant" else 0.0)
        assert info["reward_forward"] == pytest.approx(forward, abs=1e-12)
        # The control cost is on the action as given, not clipped to the control range.
        ctrl = -CTRL_COST_WEIGHT[robot] * np.sum(action**2)
        assert info["reward_ctrl"] == pytest.approx(ctrl, abs=1e-12)
        expected = forward + ctrl
        if robot == "Ant":
            contact = -CONTACT_COST_WEIGHT * np.sum(np.clip(env.data.cfrc_ext, -1, 1) ** 2)
            assert info["reward_contact"] == pytest.approx(contact, abs=1e-12)
            assert info["reward_survive"] == (0.0 if terminated else SURVIVE_REWARD)
            expected += contact + info["reward_survive"]
        else:
            assert not terminated
        assert reward == pytest.approx(expected, abs=1e-12)
        assert info["task"].tolist() == [task]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_batched_reproduces_the_single_env(env_id):
    """Three gymnasium envs with different tasks and the twin started in their states, fed the
    same 50 random actions: the same observations, rewards, terminations and reward terms."""
    singles = [_make(env_id) for _ in range(3)]
    tasks = _three_tasks(singles[0])
    for i, env in enumerate(singles):
        env.set_task(tasks[i])
        env.reset(seed=10 + i)
    if _is_ant(env_id):
        # Copy 0 starts above the healthy range (1.0), so it terminates at once in both.
        lifted = singles[0].data.qpos.copy()
        lifted[2] = 1.3
        singles[0].set_state(lifted, singles[0].data.qvel.copy())
    batched = singles[0].batched(3)
    batched.reset(tasks, np.random.default_rng(0))
    obs = batched.set_state(
        np.stack([env.data.qpos for env in singles]), np.stack([env.data.qvel for env in singles])
    )
    assert obs.shape == (3, batched.observation_dim)
    np.testing.assert_allclose(obs, np.stack([env._get_obs() for env in singles]), atol=1e-10)

    rng = np.random.default_rng(5)
    terminated_ever = np.zeros(3, dtype=bool)
    for _ in range(50):
        actions = rng.uniform(-1.2, 1.2, size=(3, batched.action_dim))
        steps = [env.step(actions[i]) for i, env in enumerate(singles)]
        obs, reward, terminated = batched.step(actions)
        np.testing.assert_allclose(obs, np.stack([s[0] for s in steps]), atol=1e-10, rtol=0)
        np.testing.assert_allclose(reward, [s[1] for s in steps], atol=1e-10, rtol=0)
        assert terminated.tolist() == [s[2] for s in steps]
        for name, values in batched.reward_terms.items():
            np.testing.assert_allclose(values, [s[4][name] for s in steps], atol=1e-10, rtol=0)
        terminated_ever |= terminated
    assert terminated_ever[0] == _is_ant(env_id)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_batched_reset_follows_the_rng(env_id):
    env = _make(env_id)
    batched = env.batched(4)
    tasks = np.repeat(_three_tasks(env)[:2], 2, axis=0)
    first = batched.reset(tasks, np.random.default_rng(7))
    assert np.array_equal(first, batched.reset(tasks, np.random.default_rng(7)))
    assert not np.array_equal(first, batched.reset(tasks, np.random.default_rng(8)))
    assert len(np.unique(first, axis=0)) == 4  # each copy its own noise
    # One copy drawn from default_rng(seed) is gymnasium's reset(seed=seed).
    single_obs, _ = env.reset(seed=7)
    one = env.batched(1).reset(tasks[:1], np.random.default_rng(7))
    np.testing.assert_array_equal(one[0], single_obs)


@pytest.mark.parametrize("env_id", ["pyro_gem/HalfCheetahVel-v0", "pyro_gem/AntDir-v0"])
def test_inactive_copies_are_not_simulated(env_id):
    env = _make(env_id).unwrapped
    full, masked = env.batched(3), env.batched(3)
    tasks = _three_tasks(env)
    full.reset(tasks, np.random.default_rng(0))
    masked.reset(tasks, np.random.default_rng(0))
    frozen = masked.qpos[1].copy()
    actions = np.random.default_rng(1).uniform(-1, 1, size=(3, full.action_dim))
    obs, reward, _ = full.step(actions)
    obs_m, reward_m, _ = masked.step(actions, np.array([True, False, True]))
    np.testing.assert_array_equal(masked.qpos[1], frozen)
    np.testing.assert_array_equal(obs_m[[0, 2]], obs[[0, 2]])
    np.testing.assert_array_equal(reward_m[[0, 2]], reward[[0, 2]])


@pytest.mark.parametrize("env_id", ["pyro_gem/HalfCheetahDir-v0", "pyro_gem/AntVel-v0"])
def test_stepping_on_threads_changes_nothing(env_id):
    env = _make(env_id)
    threaded, serial = env.batched(16), env.batched(16)
    serial._pool = None  # one thread
    tasks = np.repeat(_three_tasks(env)[:2], 8, axis=0)
    threaded.reset(tasks, np.random.default_rng(0))
    serial.reset(tasks, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for _ in range(5):
        actions = rng.uniform(-1, 1, size=(16, threaded.action_dim))
        for a, b in zip(threaded.step(actions), serial.step(actions)):
            np.testing.assert_array_equal(a, b)
