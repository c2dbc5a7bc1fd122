"""A short meta-training run on sinusoid tasks must measurably lower the held-out adapted MSE."""

from pathlib import Path

import torch

from pyro_gem import meta_test
from pyro_gem.cli import DEFAULTS, build_learner
from pyro_gem.modelfile import load_model_file
from pyro_gem.training import train

ROOT = Path(__file__).resolve().parents[1]


def test_short_meta_training_beats_the_untrained_prior():
    mf = load_model_file(ROOT / "models" / "sinusoid.py")
    config = {**DEFAULTS, **mf.config}
    learner = build_learner(mf, config)
    heldout = mf.tasks.test_tasks(200)
    steps = config["inner_steps"]
    with torch.random.fork_rng():
        before = meta_test(learner, heldout, steps=(steps,), num_samples=50)["mse"][str(steps)]
    train(
        learner, mf.tasks, meta_iterations=300, meta_batch=25, seed=0, eval_every=0, progress=False
    )
    with torch.random.fork_rng():
        after = meta_test(learner, heldout, steps=(steps,), num_samples=50)["mse"][str(steps)]
    # A clear margin: the means differ by more than both 95% intervals together, and by >10%.
    assert after[0] + after[1] + before[1] < before[0], (before, after)
    assert after[0] < 0.9 * before[0], (before, after)
