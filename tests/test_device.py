"""Learners run where their prior lives (``build_learner(..., device)``, ``--device``): tasks are
drawn on the CPU and moved, checkpoints load onto any device. The CUDA comparison runs only
where a GPU is; on the CPU the device path must change nothing."""

from pathlib import Path

import pytest
import torch

from pyro_gem import TaskBatch
from pyro_gem.config import build_learner, load_seeded, resolve_config
from pyro_gem.evaluation import meta_test
from pyro_gem.training import train

SINUSOID = Path(__file__).resolve().parents[1] / "models" / "sinusoid.py"
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def _learner(method: str, device: str | None):
    mf = load_seeded(SINUSOID, 0)
    config = resolve_config(mf.config, {"method": method, "inner_steps": 3})
    return build_learner(mf, config, device), mf.tasks


def _trained(method: str, device: str | None, out_dir=None, iterations: int = 3):
    learner, tasks = _learner(method, device)
    kw = dict(meta_batch=4, seed=1, eval_every=0, progress=False, checkpoint_every=2)
    train(learner, tasks, meta_iterations=iterations, out_dir=out_dir, resume=True, **kw)
    scores = meta_test(learner, tasks.test_tasks(5), steps=(0, 3), metrics=tasks.metrics)
    return learner, scores


def test_task_batch_moves_every_tensor_and_is_itself_where_it_already_is():
    batch = TaskBatch((torch.zeros(2, 3, 1), torch.ones(2, 3)), (torch.zeros(2, 4, 1),) * 2)
    batch.info["amplitude"] = torch.ones(2)
    assert batch.to("cpu") is batch
    moved = batch.to("meta")  # a device without storage: every tensor goes, shapes kept
    assert {a.device.type for a in (*moved.support, *moved.query, moved.info["amplitude"])} == {
        "meta"
    }
    assert moved.support[0].shape == (2, 3, 1) and len(moved) == 2


@pytest.mark.parametrize("method", ["gem-bml+", "maml", "bmaml"])
def test_naming_the_cpu_changes_nothing(method):
    default, default_scores = _trained(method, None)
    named, named_scores = _trained(method, "cpu")
    assert named.device == torch.device("cpu")
    torch.testing.assert_close(named.prior.loc, default.prior.loc, rtol=0, atol=0)
    assert named_scores == default_scores


def test_a_cuda_device_where_there_is_none_is_named():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(ValueError, match="no CUDA device"):
        _learner("gem-bml+", "cuda")


def test_cli_and_benchmark_take_a_device(tmp_path):
    from pyro_gem.cli import main

    out = tmp_path / "run"
    argv = ["train", str(SINUSOID), "--meta-iterations", "2", "--meta-batch", "3"]
    argv += ["--test-tasks", "3", "--device", "cpu", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert main(["evaluate", str(out), "--test-tasks", "3", "--device", "cpu"]) == 0


@CUDA
def test_maml_on_cuda_matches_the_cpu():
    # MAML draws nothing: the same tasks give the same prior, to CUDA's rounding.
    cpu, cpu_scores = _trained("maml", "cpu")
    gpu, gpu_scores = _trained("maml", "cuda")
    assert gpu.prior.loc.device.type == "cuda"
    torch.testing.assert_close(gpu.prior.loc.cpu(), cpu.prior.loc, rtol=1e-4, atol=1e-5)
    for steps, (mean, _) in cpu_scores["mse"].items():
        assert gpu_scores["mse"][steps][0] == pytest.approx(mean, rel=1e-3)


@CUDA
@pytest.mark.parametrize("method", ["gem-bml+", "bmaml"])
def test_cuda_runs_resume_exactly_and_on_the_cpu(method, tmp_path):
    # Guides draw from CUDA's stream there (its state is in the checkpoint).
    straight, _ = _trained(method, "cuda", iterations=4)
    _trained(method, "cuda", out_dir=tmp_path / "a", iterations=2)
    resumed, _ = _trained(method, "cuda", out_dir=tmp_path / "a", iterations=4)
    torch.testing.assert_close(resumed.prior.loc, straight.prior.loc, rtol=0, atol=0)
    on_cpu, scores = _trained(method, "cpu", out_dir=tmp_path / "a", iterations=5)
    assert on_cpu.prior.loc.device.type == "cpu" and scores["diverged"] == 0
