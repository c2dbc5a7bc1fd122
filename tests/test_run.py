"""Tests for :mod:`pyro_gem.run`: a run trained by the CLI, loaded as objects, gives the numbers
and predictions of the CLI; run directories it cannot use get errors that say why."""

import json
import shutil
from pathlib import Path

import pyro
import pytest
import torch

import pyro_gem
from pyro_gem.cli import main
from pyro_gem.config import build_learner
from pyro_gem.modelfile import load_model_file

MODELS = Path(__file__).resolve().parent / "models"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short CLI run of the Poisson model file, with its meta-test from the in-memory learner."""
    out = tmp_path_factory.mktemp("runs") / "poisson"
    argv = ["train", str(MODELS / "poisson.py"), "--meta-iterations", "4", "--test-tasks", "6"]
    assert main(argv + ["--out", str(out), "--no-progress"]) == 0
    return out, json.loads((out / "metatest.json").read_text())


def test_a_loaded_run_gives_the_numbers_of_train_and_evaluate(trained):
    out, after_training = trained
    run = pyro_gem.load_run(out)
    assert isinstance(run, pyro_gem.Run) and run.iteration == 4
    assert run.config["method"] == "gem-bml+" and run.model_file.path == MODELS / "poisson.py"
    # The loaded learner scores as the learner that training left in memory...
    assert run.meta_test() == after_training
    # ... and as `pyro-gem evaluate`, which loads the run the same way.
    assert main(["evaluate", str(out)]) == 0
    assert json.loads((out / "metatest.json").read_text()) == after_training
    assert set(run.meta_test(num_tasks=3, steps=(2,))["rate_mae"]) == {"2"}


def test_a_loaded_run_adapts_to_tensors_a_user_brings_and_predicts(trained):
    out, _ = trained
    run = pyro_gem.load_run(out)
    batch = run.tasks.sample(3, torch.Generator().manual_seed(11))  # tasks it never saw
    x_query = batch.query[0]
    pyro.set_rng_seed(0)
    draws = run.adapt(*batch.support, steps=3).predict(x_query, num_samples=20)
    assert draws["y"].shape == (20, 3, 10) and draws["rate"].shape == (20, 3, 10)
    pyro.set_rng_seed(0)
    again = run.predict(batch.support, (x_query,), steps=3, num_samples=20)
    assert torch.equal(draws["rate"], again["rate"])
    # The same predictions as a learner rebuilt by hand from the files the CLI wrote.
    config = json.loads((out / "config.json").read_text())
    learner = build_learner(load_model_file(MODELS / "poisson.py"), config)
    learner.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=True)["learner"])
    assert torch.equal(learner.prior.loc, run.prior.loc)
    pyro.set_rng_seed(0)
    by_hand = learner.adapt(*batch.support, steps=3).predict(x_query, num_samples=20)
    assert torch.equal(by_hand["rate"], draws["rate"])


def test_load_run_overrides_the_adaptation(trained):
    out, _ = trained
    run = pyro_gem.load_run(out, overrides={"inner_lr": 0.01, "inner_optim": None})
    assert run.config["inner_lr"] == 0.01 and run.config["inner_optim"] == "sgd"


def _copy(trained, tmp_path) -> Path:
    run = tmp_path / "copy"
    shutil.copytree(trained[0], run)
    return run


def test_run_directories_it_cannot_use_get_errors_that_say_why(trained, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no run directory"):
        pyro_gem.load_run(tmp_path / "nowhere")
    run = _copy(trained, tmp_path)
    (run / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a pyro-gem run directory: it has no config"):
        pyro_gem.load_run(run)

    run = _copy(trained, tmp_path / "a")
    config = json.loads((run / "config.json").read_text())
    config["model_file"] = str(tmp_path / "moved.py")
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match="model file .*moved.py is missing"):
        pyro_gem.load_run(run)
    assert main(["evaluate", str(run)]) == 2
    assert "is missing" in capsys.readouterr().err
    assert pyro_gem.load_run(run, model_file=MODELS / "poisson.py").iteration == 4
    del config["model_file"]
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="names no model file"):
        pyro_gem.load_run(run)
    with pytest.raises(ValueError, match=r"prior is over \(25,\) weights.*has \(33,\)"):
        pyro_gem.load_run(run, model_file=MODELS / "factor_classifier.py")


@pytest.mark.parametrize(
    "state",
    [
        {"prior": {"loc": torch.zeros(3)}},  # no iteration, no learner: another layout
        {"layout": 2, "iteration": 1, "learner": {}},
    ],
)
def test_another_layout_is_named(trained, tmp_path, state):
    run = _copy(trained, tmp_path)
    torch.save(state, run / "checkpoint.pt")
    with pytest.raises(ValueError, match="run directory of another layout"):
        pyro_gem.load_run(run)


def test_a_checkpoint_torch_cannot_read_safely_is_named(trained, tmp_path):
    run = _copy(trained, tmp_path)
    torch.save({"learner": object()}, run / "checkpoint.pt")  # not plain tensors
    with pytest.raises(ValueError, match=r"cannot be read with torch.load\(weights_only=True\)"):
        pyro_gem.load_run(run)
