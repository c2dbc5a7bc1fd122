"""The sinusoid metrics are unchanged by the package re-layout and the metric interface: the same
seed gives the numbers the code gave before (recorded in tests/data/ at commit 48d19f8)."""

import json
from pathlib import Path

import pytest
import torch

from pyro_gem import meta_test
from pyro_gem.config import build_learner, resolve_config
from pyro_gem.modelfile import load_model_file
from pyro_gem.training import train

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = json.loads((ROOT / "tests" / "data" / "sinusoid_reference_48d19f8.json").read_text())


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference was recorded on one thread
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("method", [m for m in REFERENCE if not m.startswith("_")])
def test_sinusoid_metrics_match_the_numbers_before_the_refactor(method, one_thread):
    mf = load_model_file(ROOT / "models" / "sinusoid.py", seed=0)
    learner = build_learner(mf, resolve_config(mf.config, {"method": method}))
    train(learner, mf.tasks, meta_iterations=5, meta_batch=10, seed=0, eval_every=0, progress=False)
    torch.manual_seed(1)
    scores = meta_test(
        learner,
        mf.tasks.test_tasks(40),
        (0, 1, 3),
        metrics=mf.tasks.metrics,
        num_samples=30,
        chunk=25,
    )
    expected = REFERENCE[method]
    for step, (mean, ci) in expected["mse"].items():
        assert scores["mse"][step] == pytest.approx([mean, ci], rel=1e-6), step
    # Before, the coverage was averaged in float32; now in float64.
    assert scores["coverage90"]["3"][0] == pytest.approx(expected["coverage90_last"], abs=1e-6)
    assert scores["diverged"] == 0 and set(scores["lpd"]) == {"0", "1", "3"}
