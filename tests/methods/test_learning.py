"""A short meta-training run on sinusoid tasks must measurably lower the held-out adapted MSE,
for every method, with the settings of ``models/sinusoid.py``."""

from pathlib import Path

import pytest
import torch

from pyro_gem import METHODS, meta_test
from pyro_gem.config import build_learner, resolve_config
from pyro_gem.modelfile import load_model_file
from pyro_gem.training import train

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("method", METHODS)
def test_short_meta_training_beats_the_untrained_prior(method):
    mf = load_model_file(ROOT / "models" / "sinusoid.py")
    config = resolve_config(mf.config, {"method": method})
    learner = build_learner(mf, config)
    heldout = mf.tasks.test_tasks(200)
    steps = 10  # the meta-test's step count, for every method

    def score():
        with torch.random.fork_rng():
            return meta_test(learner, heldout, (steps,), metrics=mf.tasks.metrics, num_samples=50)[
                "mse"
            ][str(steps)]

    before = score()
    # Some methods learn more slowly at first with their sinusoid settings: BMAML's SVGD step
    # (3 × MAML's α) and iMAML's proximal Newton steps, whose untrained adaptation also varies
    # so much from task to task (95% interval ±0.86) that 300 iterations cannot clear it.
    iterations = {"bmaml": 3000, "imaml": 600}.get(method, 300)
    train(
        learner,
        mf.tasks,
        meta_iterations=iterations,
        meta_batch=25,
        seed=0,
        eval_every=0,
        progress=False,
    )
    after = score()
    # A clear margin: the means differ by more than both 95% intervals together, and by >10%.
    assert after[0] + after[1] + before[1] < before[0], (before, after)
    assert after[0] < 0.9 * before[0], (before, after)
