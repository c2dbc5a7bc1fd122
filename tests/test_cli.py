import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from pyro_gem.cli import main
from pyro_gem.evaluation import metric_names
from pyro_gem.modelfile import load_model_file

ROOT = Path(__file__).resolve().parents[1]

TINY = textwrap.dedent(
    """
    from __future__ import annotations

    from dataclasses import dataclass

    import pyro
    import pyro.distributions as dist
    from torch import nn

    from pyro_gem import GaussianPrior, Sinusoid

    prior = GaussianPrior(nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1)), 0.05)


    @dataclass
    class Noise:  # module-level dataclass: the loader must register the module
        sd: float = 0.3


    def model(x, y=None):
        mean = pyro.deterministic("mean", prior.sample_net()(x).squeeze(-1))
        with pyro.plate("data", x.shape[-2], dim=-1):
            pyro.sample("y", dist.Normal(mean, Noise().sd), obs=y)


    tasks = Sinusoid("challenging", shots=5)
    config = {"inner_steps": 2, "meta_batch": 3, "test_tasks": 4}
    """
)


@pytest.fixture
def tiny_model(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(TINY)
    return path


def test_train_evaluate_and_resume(tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", str(tiny_model), "--meta-iterations", "3", "--out", str(out), "--no-progress"]
    assert main(args + ["--method", "gem-bml", "--seed", "4"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"inner steps +lpd +mse +coverage90", printed)
    for steps in (0, 1, 5, 10):  # a row per step count: a number ± its CI for each metric
        assert re.search(rf"^ +{steps} +(-?[\d.]+ ± [\d.]+ +){{2}}[\d.]+ ± [\d.]+$", printed, re.M)
    assert (out / "tasks.png").stat().st_size > 1000
    assert (out / "training.png").stat().st_size > 1000  # objective, held-out MSE, prior scale
    scores = json.loads((out / "metatest.json").read_text())
    assert set(scores["mse"]) == {"0", "1", "5", "10"}
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "gem-bml" and config["inner_steps"] == 2 and config["seed"] == 4
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == 3

    resumed = args[:3] + ["5", "--out", str(out), "--no-progress", "--resume"]
    assert main(resumed + ["--method", "gem-bml", "--seed", "4"]) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == 5
    with pytest.raises(SystemExit, match="differ from the checkpoint"):
        main(resumed + ["--method", "gem-bml+", "--seed", "4"])

    assert main(["evaluate", str(out), "--test-tasks", "3", "--steps", "0", "2"]) == 0
    printed = capsys.readouterr().out
    assert "gem-bml after 5 meta-iterations" in printed and re.search(r"^ +2 +-?\d", printed, re.M)
    # Adapting with another inner loop than training's, results elsewhere.
    other = tmp_path / "eval"
    argv = ["evaluate", str(out), "--test-tasks", "3", "--steps", "2", "--out", str(other)]
    assert main(argv + ["--inner-lr", "0.05", "--inner-lr-decay", "0.9"]) == 0
    assert set(json.loads((other / "metatest.json").read_text())["mse"]) == {"2"}
    mse = {}
    for optim in ("adam", "sgd"):
        assert main(argv + ["--inner-optim", optim, "--inner-lr", "0.05"]) == 0
        mse[optim] = json.loads((other / "metatest.json").read_text())["mse"]
    assert mse["adam"] != mse["sgd"]
    assert main(argv + ["--inner-lr-decay", "2"]) == 2
    assert "inner_lr_decay must lie in [0, 1]" in capsys.readouterr().err


def test_evaluate_keeps_the_runs_inner_loop_where_no_flag_says_otherwise(tiny_model, tmp_path):
    """A flag left out means the run's own setting (before, it meant the default's: a run that
    adapts by SGD was evaluated with Adam, and ``--inner-lr`` alone switched it to Adam)."""
    out, other = tmp_path / "run", tmp_path / "eval"
    train = ["train", str(tiny_model), "--meta-iterations", "2", "--out", str(out)]
    assert main(train + ["--no-progress", "--inner-optim", "sgd", "--inner-lr", "0.01"]) == 0

    def evaluate(*flags):
        argv = ["evaluate", str(out), "--test-tasks", "3", "--steps", "3", "--out", str(other)]
        assert main(argv + list(flags)) == 0
        return json.loads((other / "metatest.json").read_text())["mse"]

    assert evaluate() == evaluate("--inner-optim", "sgd", "--inner-lr", "0.01")
    assert evaluate() != evaluate("--inner-optim", "adam", "--inner-lr", "0.01")
    assert evaluate("--inner-lr", "0.02") == evaluate("--inner-optim", "sgd", "--inner-lr", "0.02")


def test_evaluate_asks_for_the_model_file_a_run_does_not_name(tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    train = ["train", str(tiny_model), "--meta-iterations", "1", "--out", str(out)]
    assert main(train + ["--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    del config["model_file"]  # as benchmarks/sinusoid.py writes it
    (out / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", str(out), "--test-tasks", "2"]) == 2
    assert "names no model file" in capsys.readouterr().err
    assert main(["evaluate", str(out), "--test-tasks", "2", "--model-file", str(tiny_model)]) == 0


def test_runs_from_one_seed_start_from_the_same_network_and_end_the_same(tiny_model, tmp_path):
    """The model file builds its network when it is loaded: the CLI seeds before that, so two
    runs of one command are the same run (before, each process drew its own initial weights)."""
    results = []
    for name in ("a", "b"):
        torch.manual_seed(int(name, 16))  # whatever state the process happens to be in
        out = tmp_path / name
        argv = ["train", str(tiny_model), "--meta-iterations", "2", "--out", str(out)]
        assert main(argv + ["--no-progress", "--seed", "3"]) == 0
        results.append(
            (
                torch.load(out / "checkpoint.pt", weights_only=True)["learner"]["prior"],
                json.loads((out / "metatest.json").read_text()),
            )
        )
        torch.manual_seed(int(name, 16) + 1)
        assert main(["evaluate", str(out), "--test-tasks", "3", "--steps", "2"]) == 0
        results[-1] += (json.loads((out / "metatest.json").read_text()),)
    (prior_a, test_a, eval_a), (prior_b, test_b, eval_b) = results
    assert torch.equal(prior_a["loc"], prior_b["loc"])
    assert torch.equal(prior_a["log_scale"], prior_b["log_scale"])
    assert test_a == test_b and eval_a == eval_b


def test_a_model_file_seed_seeds_the_network(tiny_model):
    from pyro_gem.config import load_seeded

    seeded = tiny_model.read_text().replace('"test_tasks": 4}', '"test_tasks": 4, "seed": 7}')
    tiny_model.write_text(seeded)
    a, b = load_seeded(tiny_model), load_seeded(tiny_model)
    assert torch.equal(a.prior.loc, b.prior.loc)
    assert not torch.equal(a.prior.loc, load_seeded(tiny_model, seed=8).prior.loc)


def test_model_file_errors(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("model = None\n")
    with pytest.raises(ValueError, match="does not define prior, tasks"):
        load_model_file(bad)
    assert main(["train", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "does not define" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.py")]) == 2


def test_example_model_file_and_entry_point():
    mf = load_model_file(ROOT / "models" / "sinusoid.py")
    assert mf.prior.num_weights == 1761 and mf.config["method"] == "gem-bml+"
    assert load_model_file(ROOT / "models" / "sinusoid.py").prior is not mf.prior
    done = subprocess.run(
        [sys.executable, "-m", "pyro_gem.cli", "train", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "--inner-steps" in done.stdout


MODELS = Path(__file__).resolve().parent / "models"


@pytest.mark.parametrize(
    ("model_file", "metrics"),
    [
        ("factor_classifier.py", ["lpd", "accuracy"]),
        ("poisson.py", ["lpd", "mse", "coverage90", "rate_mae"]),
    ],
)
def test_any_likelihood_trains_and_meta_tests_through_the_cli(
    model_file, metrics, tmp_path, capsys
):
    """A pyro.factor classifier (no observation site, labels a required argument) and a Poisson
    count model, each with a task family of its own: every metric is printed after every step
    count and lands in metatest.json."""
    out = tmp_path / "run"
    argv = ["train", str(MODELS / model_file), "--meta-iterations", "6", "--test-tasks", "8"]
    assert main(argv + ["--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"inner steps +" + " +".join(metrics) + "$", printed, re.M), printed
    scores = json.loads((out / "metatest.json").read_text())
    assert metric_names(scores) == metrics
    for name in metrics:
        assert set(scores[name]) == {"0", "1", "5", "10"}
        for mean, ci in scores[name].values():
            assert math.isfinite(mean) and ci >= 0
    if "accuracy" in scores:
        assert all(0 <= mean <= 1 for mean, _ in scores["accuracy"].values())
    assert main(["evaluate", str(out), "--steps", "2"]) == 0
    assert list(json.loads((out / "metatest.json").read_text())["lpd"]) == ["2"]


def test_a_metric_the_model_cannot_give_fails_before_training_with_a_clear_error(tmp_path, capsys):
    """The factor classifier scored as regression: the error names the metric and the site."""
    path = tmp_path / "factor_as_regression.py"
    text = (MODELS / "factor_classifier.py").read_text()
    path.write_text(text.replace("    metrics = (Accuracy(),)", "    metrics = Sinusoid().metrics"))
    path.write_text(
        path.read_text().replace("from pyro_gem import ", "from pyro_gem import Sinusoid, ")
    )
    code = main(["train", str(path), "--meta-iterations", "2", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "metric 'mse' needs the observation site 'y'" in err
    assert "Traceback" not in err and not (tmp_path / "r" / "checkpoint.pt").exists()


@pytest.mark.parametrize("method", ["gem-bml+", "maml"])
def test_meta_rl_trains_and_evaluates_through_the_cli(method, tmp_path, capsys):
    model_file = Path(__file__).resolve().parents[1] / "models" / "navigation.py"
    out = tmp_path / method
    common = ["--set", "rollouts=1", "test_rollouts=1", "--test-tasks", "2"]
    args = ["train", str(model_file), "--method", method, "--meta-iterations", "1"]
    assert main([*args, "--meta-batch", "2", "--out", str(out), "--no-progress", *common]) == 0
    printed = capsys.readouterr().out
    assert "inner updates" in printed and "return" in printed
    assert (out / "returns.png").is_file()
    scores = json.loads((out / "metatest.json").read_text())
    assert set(scores["return"]) == {"0", "1", "2", "3"}
    assert main(["evaluate", str(out), "--test-tasks", "2", "--steps", "0", "1"]) == 0
