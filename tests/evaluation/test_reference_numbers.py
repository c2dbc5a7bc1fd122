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
# The redesigned GEM-BML+ of models/sinusoid.py (issue 26), recorded at commit bad86a7.
REDESIGN = json.loads(
    (ROOT / "tests" / "data" / "sinusoid_reference_gem_plus_bad86a7.json").read_text()
)
#: Settings the model file gave a method when its reference was recorded, where they changed
#: since: GEM-BML+ then adapted by 20 + 20 whitened SGD steps of 0.03 cut to norm 1 per task.
RECORDED_WITH = {
    "gem-bml+": {
        "inner_optim": "clipped-sgd",
        "inner_lr": 0.03,
        "inner_steps": 20,
        "query_steps": None,
        "prior_init_scale": None,
        "guide_init_scale": None,
        "meta_lr_scale": None,
        "meta_lr_milestones": [5000, 20000],
    }
}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference was recorded on one thread
    yield
    torch.set_num_threads(threads)


def reference_scores(method: str, settings: dict | None = None) -> dict:
    """The recording procedure: 5 meta-iterations of 10 tasks from seed 0, then the meta-test
    of 40 held-out tasks at 0 / 1 / 3 steps (30 draws, chunks of 25) after torch.manual_seed(1)."""
    mf = load_model_file(ROOT / "models" / "sinusoid.py", seed=0)
    config = resolve_config(mf.config, {"method": method})
    config.update(settings or {})
    learner = build_learner(mf, config)
    train(learner, mf.tasks, meta_iterations=5, meta_batch=10, seed=0, eval_every=0, progress=False)
    torch.manual_seed(1)
    return meta_test(
        learner,
        mf.tasks.test_tasks(40),
        (0, 1, 3),
        metrics=mf.tasks.metrics,
        num_samples=30,
        chunk=25,
    )


@pytest.mark.parametrize("method", [m for m in REFERENCE if not m.startswith("_")])
def test_sinusoid_metrics_match_the_numbers_before_the_refactor(method, one_thread):
    scores = reference_scores(method, RECORDED_WITH.get(method))
    expected = REFERENCE[method]
    for step, (mean, ci) in expected["mse"].items():
        assert scores["mse"][step] == pytest.approx([mean, ci], rel=1e-6), step
    # Before, the coverage was averaged in float32; now in float64.
    assert scores["coverage90"]["3"][0] == pytest.approx(expected["coverage90_last"], abs=1e-6)
    assert scores["diverged"] == 0 and set(scores["lpd"]) == {"0", "1", "3"}


def test_redesigned_gem_plus_matches_its_recorded_numbers(one_thread):
    scores = reference_scores("gem-bml+")
    for name in ("mse", "lpd", "coverage90"):
        for step, summary in REDESIGN[name].items():
            assert scores[name][step] == pytest.approx(summary, rel=1e-6), (name, step)
