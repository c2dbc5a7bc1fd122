import gymnasium as gym
import numpy as np
import pytest

import pyro_gem.envs  # noqa: F401
from pyro_gem.envs.navigation import MAX_STEP, Navigation2DEnv
from pyro_gem.rl import make_meta_env


def test_registered_with_maml_horizon():
    env = gym.make("pyro_gem/Navigation2D-v0")
    assert env.spec.max_episode_steps == 100
    assert isinstance(env.unwrapped, Navigation2DEnv)


def test_reward_is_minus_distance_after_a_clipped_step():
    env = Navigation2DEnv()
    env.set_task(np.array([0.3, -0.2]))
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0, 0])
    obs, reward, terminated, truncated, _ = env.step(np.array([0.5, -0.05]))
    np.testing.assert_allclose(obs, [MAX_STEP, -0.05])
    assert reward == pytest.approx(-np.hypot(0.3 - 0.1, -0.2 + 0.05))
    assert not terminated and not truncated


def test_episode_ends_within_tolerance_of_the_goal():
    env = Navigation2DEnv(goal=np.array([0.1, 0.1]))
    env.reset()
    *_, terminated, _, _ = env.step(np.array([0.095, 0.105]))
    assert terminated


def test_tasks_are_seeded_and_in_range():
    env = Navigation2DEnv()
    a = env.sample_tasks(50, np.random.default_rng(3))
    b = env.sample_tasks(50, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (50, 2) and np.abs(a).max() <= 0.5


@pytest.mark.parametrize("task", [[0.6, 0.0], [0.0, -0.51], [np.nan, 0.0]])
def test_task_outside_the_range_is_refused(task):
    with pytest.raises(ValueError, match=r"outside the task range \[\[-0.5, -0.5\]"):
        Navigation2DEnv().set_task(np.array(task))


def test_batched_twin_matches_the_environment():
    rng = np.random.default_rng(0)
    env = Navigation2DEnv()
    goals = env.sample_tasks(3, rng)
    batched = env.batched(3)
    obs = batched.reset(goals, rng)
    singles = [Navigation2DEnv(goal=g) for g in goals]
    for e in singles:
        e.reset()
    for _ in range(30):
        actions = rng.normal(0, 0.1, size=(3, 2))
        obs, reward, terminated = batched.step(actions)
        for i, e in enumerate(singles):
            o, r, term, _, _ = e.step(actions[i])
            np.testing.assert_allclose(obs[i], o, atol=1e-6)
            assert reward[i] == pytest.approx(r)
            assert terminated[i] == term


def test_unknown_id_names_the_registered_ones():
    with pytest.raises(ValueError, match="unknown environment id 'pyro_gem/Nope-v0'.*Navigation2D"):
        make_meta_env("pyro_gem/Nope-v0")


def test_an_environment_without_tasks_is_refused():
    with pytest.raises(ValueError, match="not a meta-RL environment"):
        make_meta_env("CartPole-v1")
