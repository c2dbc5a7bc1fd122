"""A few-shot classifier end to end: model-file settings from the CLI, the classification
metrics in the meta-test, the reliability diagram, and a loaded run adapting to a user's
episode (with the family's checks on the user's data)."""

import json
import re
from pathlib import Path

import pytest
import torch

from pyro_gem import load_run
from pyro_gem.cli import main
from pyro_gem.evaluation import metric_names
from pyro_gem.methods.registry import METHODS
from pyro_gem.modelfile import load_model_file, parse_settings

MODEL = Path(__file__).resolve().parent / "models" / "tiny_fewshot.py"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("fewshot") / "run"
    argv = ["train", str(MODEL), "--set", "ways=4", "shots=2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    return out


def test_settings_reach_the_model_file_and_the_run_records_them(trained):
    config = json.loads((trained / "config.json").read_text())
    assert config["settings"] == {"ways": 4, "shots": 2, "query": 2}
    scores = json.loads((trained / "metatest.json").read_text())
    assert metric_names(scores) == [
        "lpd", "accuracy", "nll", "calibration",
    ]  # fmt: skip
    for step in ("0", "2"):
        mean, ci = scores["accuracy"][step]
        assert 0 <= mean <= 1 and ci >= 0
        calibration = scores["calibration"][step]
        assert 0 <= calibration["ece"] <= calibration["mce"] <= 1
        assert calibration["bins"] == 15
        assert sum(c[0] for c in calibration["counts"]) == 6 * 4 * 2  # episodes × ways × query
    assert (trained / "reliability.png").is_file()


def test_the_cli_prints_the_calibration_errors(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", str(MODEL), "--set", "ways=2", "--out", str(out), "--no-progress"]
    assert main(argv + ["--meta-iterations", "1"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"inner steps +lpd +accuracy +nll +calibration$", printed, re.M), printed
    assert re.search(r"ece \d\.\d{4}, mce \d\.\d{4}", printed)


def test_a_loaded_run_rebuilds_the_network_of_its_settings_and_adapts_to_a_users_episode(trained):
    run = load_run(trained)
    assert run.model_file.settings["ways"] == 4
    episode = run.tasks.test_tasks(1).select(slice(0, 1))
    images, labels = episode.support  # a user's own: (1, 8, 1, 8, 8) floats, labels 0..3
    draws = run.predict((images, labels), (episode.query[0],), num_samples=3)
    assert draws["logits"].shape == (3, 1, 8, 4)
    with pytest.raises(ValueError, match=r"labels must lie in 0..3 \(ways=4\), got \[4\]"):
        run.adapt(images, labels + 1)
    with pytest.raises(ValueError, match=r"images have the wrong size: got \(1, 9, 9\)"):
        run.adapt(torch.rand(1, 8, 1, 9, 9), labels)
    with pytest.raises(ValueError, match=r"wrong channels"):
        run.predict((images, labels), (torch.rand(1, 8, 3, 8, 8),))


def test_bad_settings_are_named(tmp_path, capsys):
    assert main(["train", str(MODEL), "--set", "way=4", "--out", str(tmp_path)]) == 2
    assert "unknown setting(s) ['way']: this model file takes ['query', 'shots', 'ways']" in (
        capsys.readouterr().err
    )
    assert main(["train", str(MODEL), "--set", "ways=four", "--out", str(tmp_path)]) == 2
    assert "setting ways='four': expected a int like its default 3" in capsys.readouterr().err
    assert main(["train", str(MODEL), "--set", "ways", "--out", str(tmp_path)]) == 2
    assert "--set takes name=value pairs, got 'ways'" in capsys.readouterr().err
    sinusoid = Path(__file__).resolve().parents[1] / "models" / "sinusoid.py"
    with pytest.raises(ValueError, match="takes no settings .* \\['ways'\\] were given"):
        load_model_file(sinusoid, settings={"ways": 2})


def test_too_many_ways_for_the_classes_is_an_error_before_training(tmp_path, capsys):
    code = main(["train", str(MODEL), "--set", "ways=5", "--out", str(tmp_path / "r")])
    assert code == 2
    assert "ways=5 but the validation split has only 4 classes" in capsys.readouterr().err
    assert parse_settings(["data=/a=b"]) == {"data": "/a=b"}


ROOT = Path(__file__).resolve().parents[1]
OMNIGLOT = ROOT.parent / "shared" / "data" / "omniglot"


def _resolved(model_file: str, settings: dict, method: str) -> dict:
    from pyro_gem.config import load_seeded, resolve_config

    mf = load_seeded(ROOT / "models" / model_file, settings=settings)
    assert set(mf.config["methods"]) == set(METHODS), "a method without settings of its own"
    return resolve_config(mf.config, {"method": method})


@pytest.mark.skipif(
    not OMNIGLOT.is_dir(), reason=f"the real Omniglot subsets are not at {OMNIGLOT}"
)
@pytest.mark.parametrize(
    "ways,shots,alpha,steps,test_steps,meta_batch",
    [(5, 1, 0.4, 1, [1, 3], 32), (20, 5, 0.1, 5, [5], 16)],
)
def test_the_omniglot_model_file_takes_mamls_settings(
    ways, shots, alpha, steps, test_steps, meta_batch
):
    settings = {"ways": ways, "shots": shots}
    maml = _resolved("omniglot.py", settings, "maml")
    # MAML's α is on the support loss divided by K; pyro_gem steps the summed log-likelihood.
    assert maml["inner_optim"] == "sgd" and maml["inner_lr"] == pytest.approx(alpha / shots)
    assert maml["inner_steps"] == steps and maml["test_steps"] == test_steps
    assert maml["meta_batch"] == meta_batch
    for gem in ("gem-bml+", "gem-bml"):
        assert _resolved("omniglot.py", settings, gem)["inner_optim"] == "adam"  # as the paper


def test_the_miniimagenet_model_file_takes_mamls_settings(tmp_path):
    from pyro_gem.tasks.miniimagenet import write_fixture

    settings = {"data": str(write_fixture(tmp_path / "mini")), "shots": 1}
    maml = _resolved("miniimagenet.py", settings, "maml")
    assert maml["inner_lr"] == pytest.approx(0.01) and maml["inner_steps"] == 5
    assert maml["test_steps"] == 10 and maml["meta_batch"] == 4
    assert _resolved("miniimagenet.py", settings, "gem-bml+")["inner_optim"] == "adam"
