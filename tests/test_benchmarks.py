"""The benchmark scripts run end to end in their quick modes (numbers are not checked here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, env=None):
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_sinusoid_quick(tmp_path):
    methods = ("gem-bml", "gem-bml+", "abml", "bmaml", "maml")  # one of each kind
    reference = "maml-reference"
    summary = run(
        "benchmarks/sinusoid.py",
        "--quick",
        "--no-progress",
        "--out",
        str(tmp_path),
        "--methods",
        *methods,
        reference,
    )
    report = json.loads((tmp_path / "sinusoid_quick.json").read_text())
    for setting in ("default", "challenging"):
        for method in methods:
            res = report["results"][setting][method]
            assert set(res["mse"]) == {"0", "1", "5", "10"} and 0 <= res["coverage90"] <= 1
            assert set(res["lpd"]) == {"0", "1", "5", "10"}  # the log predictive density
            assert f"{setting}/{method}/mse10" in summary
        assert set(report["results"][setting][reference]["mse"]) == {"0", "1", "5", "10"}
    # The model file's GEM-BML+ settings are what the result records (σ₀ after the learner set it).
    recorded = report["results"]["default"]["gem-bml+"]["config"]
    assert (recorded["inner_optim"], recorded["inner_steps"], recorded["query_steps"]) == (
        "sgd",
        1,
        1,
    )
    assert recorded["initial_prior_scale"] == pytest.approx(0.1)
    assert (recorded["meta_lr_scale"], recorded["guide_init_scale"]) == (1e-4, 0.1)
    assert (tmp_path / "sinusoid_mse.png").is_file()
    assert (tmp_path / "sinusoid_training.png").is_file()
    table = subprocess.run(
        [sys.executable, "benchmarks/sinusoid.py", "--quick", "--table", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(table) == 2 + 2 * (len(methods) + 1)  # header, rule, a row per setting and method
    assert "| default | gem-bml+ |" in "\n".join(table)


def test_sinusoid_quick_with_another_model_file(tmp_path):
    variant = tmp_path / "variant.py"
    source = (ROOT / "models" / "sinusoid.py").read_text()
    change = 'config["methods"]["gem-bml+"] = {"inner_optim": "sgd", "inner_lr": 0.05}'
    variant.write_text(f"{source}\n{change}\n")
    argv = ["--quick", "--no-progress", "--out", str(tmp_path), "--settings", "default"]
    run("benchmarks/sinusoid.py", *argv, "--methods", "gem-bml+", "--model-file", str(variant))
    report = json.loads((tmp_path / "sinusoid_quick.json").read_text())
    config = report["results"]["default"]["gem-bml+"]["config"]
    assert (config["inner_optim"], config["inner_lr"], config["meta_lr_milestones"]) == (
        "sgd",
        0.05,
        [],
    )
    assert report["settings"]["model_file"].startswith(str(variant.resolve()))


def test_inner_loop_small():
    result = run("benchmarks/inner_loop.py", "--tasks", "3", "--steps", "2", "--repeats", "1")
    assert result["vectorized_speedup"] > 0 and result["overhead_vs_floor"] > 0


def test_maml_reference_small():
    result = run("benchmarks/maml_reference.py", "--meta-iterations", "3", "--test-tasks", "5")
    assert set(result["reference_mse"]) == set(result["pyro_gem_maml_mse"]) == {"1", "5", "10"}
    assert result["pyro_gem_vs_reference_time"] > 0


def test_cost_quick(tmp_path):
    summary = run("benchmarks/cost.py", "--quick", "--out", str(tmp_path))
    for key in (
        "gem_plus_mem_growth",
        "maml_mem_growth",
        "gem_plus_vs_maml_time_at_100",
        "gem_plus_vs_abml_time_at_100",
    ):
        assert summary[key] > 0
    assert (tmp_path / "cost_quick.json").is_file() and (tmp_path / "cost_quick.png").is_file()


def test_gem_fidelity_quick():
    report = run("benchmarks/analysis/gem_fidelity.py", "--quick")
    assert len(report["variants"]) == 2
    for row in report["variants"].values():
        assert -1 <= row["cos_loc"] <= 1 and -1 <= row["cos_log_scale"] <= 1
        assert row["norm_ratio_loc"] > 0 and row["seconds"] > 0


def test_cost_table(tmp_path):
    entry = {"seconds": 2.0, "peak_mib": 100.0}
    oom = {"seconds": None, "peak_mib": None, "error": "out of memory"}
    results = {
        "conv4": {
            "gem-bml+": {"1": entry, "10": entry, "100": {"seconds": 4.0, "peak_mib": 110.0}},
            "maml": {"1": entry, "10": {"seconds": 3.0, "peak_mib": 500.0}, "100": oom},
        }
    }
    (tmp_path / "cost.json").write_text(json.dumps(results))
    table = subprocess.run(
        [sys.executable, "benchmarks/cost.py", "--table", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "| gem-bml+ | 2 s / 2 s / 4 s | 100 MiB / 100 MiB / 110 MiB | ×1.10 (1 → 100) |" in table
    assert "| maml | 2 s / 3 s / OOM | 100 MiB / 500 MiB / OOM | ×5.00 (1 → 10) |" in table


def test_sinusoid_thin_keeps_every_50th_iteration_of_finished_runs_only(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sinusoid import thin_finished_runs

    def write(run, iterations):
        (tmp_path / run).mkdir(parents=True)
        history = [{"iteration": i} for i in range(1, iterations + 1)]
        history[66]["heldout_mse"] = 0.5  # an evaluation off the thinning grid is kept
        (tmp_path / run / "history.json").write_text(json.dumps(history))

    write("default/finished", 120)
    write("default/running", 90)
    assert thin_finished_runs(tmp_path, 120) == [tmp_path / "default/finished"]
    kept = json.loads((tmp_path / "default/finished/history.json").read_text())
    assert [h["iteration"] for h in kept] == [50, 67, 100]
    assert len(json.loads((tmp_path / "default/running/history.json").read_text())) == 90


def test_converged_adaptation_quick():
    report = run("benchmarks/analysis/converged_adaptation.py", "--quick")
    (row,) = report["rows"]
    assert set(row["mse"]) == {"2", "5"} and 0 <= row["coverage90"] <= 1


def test_per_task_mse_on_a_short_run(tmp_path):
    from pyro_gem.cli import main

    out = tmp_path / "maml"
    argv = ["train", str(ROOT / "models" / "sinusoid.py"), "--method", "maml"]
    argv += ["--meta-iterations", "3"]
    assert main(argv + ["--test-tasks", "4", "--out", str(out), "--no-progress"]) == 0
    report = run(
        "benchmarks/analysis/per_task_mse.py", str(out), "--test-tasks", "5", "--steps", "1", "3"
    )
    assert set(report["steps"]) == {"1", "3"}
    row = report["steps"]["3"]
    assert row["blown_up"] == 0 and row["median"] <= row["max"]


def test_prior_drift_quick():
    report = run("benchmarks/analysis/prior_drift.py", "--quick")
    first, last = report["rows"]
    assert (first["iteration"], last["iteration"]) == (0, 2)
    assert first["loc_moved"] == 0 and last["loc_moved"] > 0  # GEM-BML+ trained in between
    # 10 steps and the training's own (the model file's GEM-BML+: 1)
    assert set(last["training_loop"]["mse"]) == {"1", "10"}
    assert set(last["converged"]["mse"]) == {"5"}


OMNIGLOT = ROOT.parent / "shared" / "data" / "omniglot"


def check_fewshot_report(report: dict, methods, setting="5w1s"):
    for method in methods:
        res = report["results"][setting][method]
        mean, ci = res["accuracy"]
        assert 0 <= mean <= 1 and ci >= 0
        assert 0 <= res["ece"] <= res["mce"] <= 1 and res["nll"] > 0
        assert res["sampler_episodes_per_second"] > 0 and res["seconds_per_iteration"] > 0
        assert sum(c[0] for c in res["reliability_counts"]) == 10 * 5 * 2  # episodes×ways×query
    assert report["settings"]["calibration_bins"] == 15


@pytest.mark.skipif(not OMNIGLOT.is_dir(), reason=f"the Omniglot subsets are not at {OMNIGLOT}")
def test_omniglot_quick(tmp_path):
    methods = ("maml", "gem-bml+")
    argv = ["--quick", "--no-progress", "--out", str(tmp_path), "--methods", *methods]
    env = {**os.environ, "PYRO_GEM_CACHE": str(tmp_path / "cache")}  # not the user's cache
    summary = run("benchmarks/omniglot.py", *argv, env=env)
    report = json.loads((tmp_path / "omniglot_quick.json").read_text())
    check_fewshot_report(report, methods)
    maml = report["results"]["5w1s"]["maml"]
    by_steps = maml["validation_accuracy_by_steps"]  # MAML's 1 training step or its 3 at test
    assert set(by_steps) == {"1", "3"}
    assert maml["test_steps"] == int(max(sorted(by_steps, key=int), key=by_steps.get))
    assert "5w1s/gem-bml+/ece" in summary
    assert (tmp_path / "omniglot_quick_reliability_5w1s.png").is_file()


def test_miniimagenet_quick_on_a_generated_copy(tmp_path):
    methods = ("maml", "gem-bml+")
    argv = ["--quick", "--no-progress", "--out", str(tmp_path), "--methods", *methods]
    run("benchmarks/miniimagenet.py", *argv)
    report = json.loads((tmp_path / "miniimagenet_quick.json").read_text())
    check_fewshot_report(report, methods)
    assert (tmp_path / "miniimagenet_quick_data" / "mini-imagenet-cache-train.pkl").is_file()
    table = subprocess.run(
        [sys.executable, "benchmarks/miniimagenet.py", "--quick", "--table", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "| 5w1s | gem-bml+ |" in table and "50.03" in table


def test_a_fewshot_run_directory_of_other_options_is_not_resumed(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from fewshot import check_resumable
    finally:
        sys.path.pop(0)
    from pyro_gem.config import resolve_config

    config = resolve_config({}, {"meta_iterations": 10})
    config["settings"] = {"ways": 5}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "history.json").write_text(json.dumps([{}] * 4))
    check_resumable(tmp_path, {**config, "test_samples": 7})  # evaluation-only: resumable
    with pytest.raises(SystemExit, match=r"other options \(\['inner_lr', 'settings'\]\)"):
        check_resumable(tmp_path, {**config, "inner_lr": 9.0, "settings": {"ways": 20}})
    with pytest.raises(SystemExit, match=r"more iterations \(4 > 3\)"):
        check_resumable(tmp_path, {**config, "meta_iterations": 3})


@pytest.mark.slow
def test_distributed_quick(tmp_path):
    summary = run("benchmarks/distributed.py", "--quick", "--out", str(tmp_path))
    assert summary["speedup_2_workers"] > 0 and summary["bytes_per_task"] > 0
    report = json.loads((tmp_path / "distributed_quick.json").read_text())
    sinusoid = report["results"]["sinusoid"]
    assert set(sinusoid["seconds_per_iteration"]) == {
        "in_process",
        "in_process_2_shards",
        "1_worker",
        "2_workers_2_shards",
        "2_workers_owned",
    }
    # Tasks that stay with the workers send no data: fewer bytes than shipping them.
    assert sinusoid["bytes"]["owned"]["to_workers"] < sinusoid["bytes"]["shipped"]["to_workers"]


def test_rl_quick_and_mamls_test_protocol_beside_it(tmp_path):
    common = ["benchmarks/rl.py", "--quick", "--no-progress", "--out", str(tmp_path)]
    run(*common)
    run(*common, "--methods", "maml", "--later-step-scale", "0.5")
    results = json.loads((tmp_path / "rl_quick.json").read_text())["results"]["navigation"]
    assert set(results) == {"gem-bml+", "gem-bml", "maml", "reptile"}
    for method, result in results.items():
        assert set(result["return"]) == {"0", "1", "2", "3"}, method
    assert set(results["maml"]["return_later_step_0.5"]) == {"0", "1", "2", "3"}
    assert (tmp_path / "rl_quick_navigation.png").is_file()


def test_rl_sampler_speed_quick(tmp_path):
    summary = run(
        "benchmarks/rl.py", "--sampler-speed", "--quick", "--envs", "navigation",
        "halfcheetah_vel", "--out", str(tmp_path),
    )  # fmt: skip
    assert summary["sampler_speedup"] > 0 and "halfcheetah_vel/sampler_speedup" in summary


def test_gem_plus_configs_quick(tmp_path):
    argv = ["benchmarks/analysis/gem_plus_configs.py", "--quick", "--out", str(tmp_path)]
    summary = run(*argv, "--configs", "matched", "matched-sigma0-0.3")
    assert set(summary) == {"default/gem-bml+/matched/0", "default/gem-bml+/matched-sigma0-0.3/0"}
    rows = json.loads((tmp_path / "gem_plus_configs_quick.json").read_text())
    assert [r["config"] for r in rows] == ["matched", "matched-sigma0-0.3"]
    for row in rows:
        assert set(row["mse"]) == set(row["lpd"]) == set(row["diverged_per_step"]) == {"1", "2"}
        assert row["meta_iterations"] == 3 and row["test_tasks"] == 6
    # each configuration's σ₀ reached the prior (only the mean and σ's slow rate moved it)
    assert rows[0]["prior_scale_median"] == pytest.approx(0.1, rel=1e-3)
    assert rows[1]["prior_scale_median"] == pytest.approx(0.3, rel=1e-3)
