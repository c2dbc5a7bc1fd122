"""Runners without Ray: shards, their seeds, the in-process runner and worker-owned tasks."""

import functools
import re
from pathlib import Path

import pyro
import pytest
import torch
from sinusoid_fixtures import small_sinusoid

from pyro_gem import GEMBML, InnerVI, Sinusoid, TaskBatch
from pyro_gem.config import DEFAULTS
from pyro_gem.core.estimators import GradientSum
from pyro_gem.methods.registry import NOT_ON_WORKERS, attach_runner, build
from pyro_gem.runners import LocalRunner, OwnedBatch, WorkerTasks
from pyro_gem.runners.shards import shard_slices
from pyro_gem.training import train


def gem_learner(runner=None, guide="normal"):
    torch.manual_seed(0)
    model, prior = small_sinusoid()
    inner = InnerVI(guide=guide, steps=3, optim=pyro.optim.Adam({"lr": 0.05}))
    optim = torch.optim.Adam(prior.parameters(), lr=1e-2)
    return GEMBML(model, prior, optim, inner=inner, runner=runner)


def trained(learner, tasks=None, iterations=3, meta_batch=6, eval_every=0, **kw):
    train(
        learner,
        Sinusoid() if tasks is None else tasks,
        meta_iterations=iterations,
        meta_batch=meta_batch,
        seed=1,
        eval_every=eval_every,
        progress=False,
        **kw,
    )
    return learner.prior.loc.detach().clone(), learner.prior.log_scale.detach().clone()


@pytest.mark.parametrize("num_tasks,shards", [(6, 2), (7, 3), (2, 5), (1, 1)])
def test_shards_cover_the_tasks_in_order_without_empty_blocks(num_tasks, shards):
    slices = shard_slices(num_tasks, shards)
    covered = [i for s in slices for i in range(s.start, s.stop)]
    assert covered == list(range(num_tasks))
    sizes = [s.stop - s.start for s in slices]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="shards"):
        shard_slices(4, 0)


def test_gradient_sums_add_over_shards_and_count_only_finite_tasks():
    a = GradientSum.of((torch.ones(2, 3),), torch.tensor([True, True]), {"x": torch.zeros(2)})
    a.losses = {"support": [1.0, 2.0]}
    b = GradientSum.of(
        (torch.full((1, 3), 4.0),), torch.tensor([False, True]), {"x": torch.ones(2)}
    )
    b.losses = {"support": [3.0, 4.0]}
    out = GradientSum.cat([a, b])
    assert out.count == 3 and out.finite.tolist() == [True, True, False, True]
    assert torch.equal(out.mean()[0], torch.full((3,), 2.0))
    assert out.per_task["x"].tolist() == [0, 0, 1, 1] and out.losses["support"] == [4.0, 6.0]


def test_a_shard_sends_back_two_vectors_however_many_tasks_it_fits():
    learner = gem_learner()
    batch = Sinusoid().sample(5, torch.Generator().manual_seed(0))
    sums = learner.inner_result(batch)
    assert [t.shape for t in sums.total] == [learner.prior.loc.shape] * 2
    assert sums.finite.shape == (5,) and sums.count == 5


@pytest.mark.parametrize("guide", ["normal", "delta"])
def test_local_runner_is_reproducible_and_learns(guide):
    first = trained(gem_learner(LocalRunner(shards=3), guide))
    again = trained(gem_learner(LocalRunner(shards=3), guide))
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    start = gem_learner().prior.loc.detach()
    assert not torch.equal(first[0], start) and torch.isfinite(first[0]).all()


def test_a_shard_layout_changes_only_the_random_draws():
    # A delta guide's inner loop is deterministic: every layout gives the in-process prior.
    ref = trained(gem_learner(guide="delta"))
    for shards in (1, 2, 4):
        got = trained(gem_learner(LocalRunner(shards), "delta"))
        torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-6)


def test_a_diverged_task_in_one_shard_is_left_out():
    learner = gem_learner(LocalRunner(shards=2), guide="delta")
    batch = Sinusoid().sample(4, torch.Generator().manual_seed(0))
    y = batch.support[1].clone()
    y[3] = 3e38  # its gradient overflows: task 3 (in the second shard) turns NaN
    with pytest.warns(UserWarning, match=r"tasks \[3\]"):
        stats = learner.step(TaskBatch((batch.support[0], y), batch.query))
    assert stats["nan_tasks"] == [3] and torch.isfinite(learner.prior.loc).all()


@pytest.mark.parametrize("method", ["reptile", "fomaml"])
def test_point_estimate_methods_on_a_runner_match_in_process(method):
    # Their supervised inner loops draw nothing: sharded or not, the same update.
    priors = []
    for runner in (None, LocalRunner(shards=2)):
        torch.manual_seed(0)
        model, prior = small_sinusoid()
        config = {**DEFAULTS, "inner_optim": "sgd", "inner_lr": 1e-3, "inner_steps": 2}
        learner = build(method, model, prior, config)
        if runner is not None:
            attach_runner(method, learner, runner)
        priors.append(trained(learner, iterations=2))
    torch.testing.assert_close(priors[0][0], priors[1][0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", sorted(NOT_ON_WORKERS))
def test_methods_that_backpropagate_through_the_inner_loop_are_refused(method):
    model, prior = small_sinusoid()
    config = {**DEFAULTS, "inner_optim": "sgd", "num_particles": 2}
    learner = build(method, model, prior, config)
    with pytest.raises(
        ValueError, match=re.escape(f"{method} cannot run its inner loops on workers")
    ):
        attach_runner(method, learner, LocalRunner())


def test_second_order_maml_refuses_a_runner():
    from pyro_gem.methods.point_estimate import MAML

    model, prior = small_sinusoid()
    with pytest.raises(ValueError, match="backpropagates"):
        MAML(model, prior, runner=LocalRunner())


def owned_family(setting):
    return Sinusoid(setting=setting)


def test_worker_owned_tasks_are_sampled_by_their_families_only():
    factories = [functools.partial(owned_family, "default")] * 2
    ref = trained(
        gem_learner(LocalRunner(families=factories)), LocalRunner(families=factories).tasks
    )
    runner = LocalRunner(families=factories)
    assert runner.shards == 2 and isinstance(runner.tasks, WorkerTasks)
    batch = runner.tasks.sample(5, torch.Generator().manual_seed(0))
    assert isinstance(batch, OwnedBatch) and batch.counts == [3, 2] and len(batch) == 5
    got = trained(gem_learner(runner), runner.tasks)
    assert all(torch.equal(x, y) for x, y in zip(ref, got))
    with pytest.raises(ValueError, match="eval_every"):
        trained(gem_learner(runner), runner.tasks, eval_every=1)
    with pytest.raises(ValueError, match="at least one task per family"):
        runner.tasks.sample(1)
    with pytest.raises(ValueError, match="runner.tasks"):
        gem_learner(runner).step(Sinusoid().sample(2))
    with pytest.raises(ValueError, match="families"):
        _ = LocalRunner(shards=2).tasks
    with pytest.raises(ValueError, match="families"):
        LocalRunner(families=[1, 2])


def test_a_cluster_run_names_its_shard_layout(tmp_path, capsys):
    from pyro_gem.cli import main

    tiny = Path(__file__).resolve().parents[1] / "models" / "tiny_fewshot.py"
    args = ["train", str(tiny), "--ray-address", "auto", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    assert "--ray-address needs --shards" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
