"""The meta-RL model files load, and one meta-iteration of GEM-BML+ and MAML runs on each."""

from pathlib import Path

import pytest
import torch

from pyro_gem.config import build_learner, load_seeded, resolve_config

MODELS = Path(__file__).resolve().parents[2] / "models"
FILES = ["navigation", "halfcheetah_vel", "halfcheetah_dir", "ant_vel", "ant_dir"]


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo's MUJOCO_LOG.TXT lands here


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("method", ["gem-bml+", "maml"])
def test_model_file_meta_trains(name, method):
    mf = load_seeded(MODELS / f"{name}.py", 0, {"rollouts": 1})
    config = resolve_config(mf.config, {"method": method, "cg_steps": 2})
    learner = build_learner(mf, config)
    before = mf.prior.loc.detach().clone()
    stats = learner.step(mf.tasks.sample(1, torch.Generator().manual_seed(0)))
    assert stats["nan_tasks"] == [] and torch.isfinite(torch.tensor(stats["return_support"]))
    assert not torch.equal(mf.prior.loc.detach(), before)
