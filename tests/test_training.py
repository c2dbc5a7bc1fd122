import json

import pyro
import pytest
import torch
from sinusoid_fixtures import small_sinusoid

from pyro_gem import GEMBML, InnerVI, Sinusoid
from pyro_gem.training import load_checkpoint, train


def make_learner():
    torch.manual_seed(0)
    model, prior = small_sinusoid()
    return GEMBML(
        model,
        prior,
        torch.optim.Adam(prior.parameters(), lr=1e-3),
        inner=InnerVI(steps=2, optim=pyro.optim.Adam({"lr": 0.1})),
    )


def run(out_dir, iterations, resume=False, learner=None, milestones=()):
    learner = learner or make_learner()
    history = train(
        learner,
        Sinusoid(),
        meta_iterations=iterations,
        meta_batch=4,
        seed=3,
        out_dir=out_dir,
        resume=resume,
        checkpoint_every=2,
        eval_every=3,
        eval_tasks=5,
        meta_lr_milestones=milestones,
        meta_lr_gamma=0.5,
        progress=False,
    )
    return learner, history


def test_resume_continues_the_same_run(tmp_path):
    straight, history = run(tmp_path / "a", 6)
    run(tmp_path / "b", 4)  # "interrupted" after 4 iterations
    resumed, resumed_history = run(tmp_path / "b", 6, resume=True)
    torch.testing.assert_close(resumed.prior.loc, straight.prior.loc, rtol=0, atol=0)
    torch.testing.assert_close(resumed.prior.log_scale, straight.prior.log_scale, rtol=0, atol=0)
    assert [h["iteration"] for h in resumed_history] == list(range(1, 7))
    assert [h["meta_objective"] for h in resumed_history] == [h["meta_objective"] for h in history]
    assert "heldout_mse" in history[2] and "heldout_mse" in history[5]


def test_checkpoint_is_plain_tensors_and_json(tmp_path):
    learner, _ = run(tmp_path, 2)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == 2
    torch.testing.assert_close(state["learner"]["prior"]["loc"], learner.prior.loc.detach())
    state, config, history = load_checkpoint(tmp_path)
    assert isinstance(config, dict) and len(history) == 2
    json.loads((tmp_path / "history.json").read_text())


def test_evaluation_does_not_change_the_trajectory(tmp_path):
    a, _ = run(None, 4)
    learner = make_learner()
    train(
        learner, Sinusoid(), meta_iterations=4, meta_batch=4, seed=3, eval_every=0, progress=False
    )
    torch.testing.assert_close(learner.prior.loc, a.prior.loc, rtol=0, atol=0)


def test_train_rejects_bad_options():
    with pytest.raises(ValueError, match="meta_batch"):
        train(make_learner(), Sinusoid(), meta_iterations=1, meta_batch=0, progress=False)


def test_meta_lr_schedule_is_followed_and_resumes_exactly(tmp_path):
    straight, _ = run(tmp_path / "a", 6, milestones=(2, 5))
    assert [g["lr"] for g in straight.meta_optim.param_groups] == [1e-3 * 0.25]
    run(tmp_path / "b", 3, milestones=(2, 5))  # stopped between the milestones
    resumed, _ = run(tmp_path / "b", 6, resume=True, milestones=(2, 5))
    torch.testing.assert_close(resumed.prior.loc, straight.prior.loc, rtol=0, atol=0)
    constant, _ = run(None, 6)
    assert not torch.equal(constant.prior.loc, straight.prior.loc)


def test_resuming_a_longer_run_with_fewer_iterations_is_refused(tmp_path):
    run(tmp_path, 4)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match="past meta_iterations=2"):
        run(tmp_path, 2, resume=True)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
