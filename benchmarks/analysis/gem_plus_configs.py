"""GEM-BML+ (or GEM-BML) on sinusoid under named inner-loop and meta-schedule configurations, seeds and settings.

Which ingredients make GEM-BML+ accurate? Each configuration below is a set of run options over
``models/sinusoid.py``'s GEM-BML+ settings. Every (setting, configuration, seed) meta-trains in a
checkpointed run directory of its own (run the same command again to continue a stopped run; a
finished one is only meta-tested again), then meta-tests on held-out tasks after each of
``--steps`` inner steps at its own training step: MSE, log predictive density (nats per task of
10 query points) and 90% coverage, each step count over the tasks finite at that count, with the
number that diverged at it. Results go to ``<out>/gem_plus_configs.json`` (rows already in the
file are kept); ``--table`` prints them as Markdown, one row per configuration and setting with
the mean over seeds.

    python benchmarks/analysis/gem_plus_configs.py --configs model-file matched --settings default
    python benchmarks/analysis/gem_plus_configs.py --configs matched --seeds 0 1 2 --meta-iterations 40000
    python benchmarks/analysis/gem_plus_configs.py --table
    python benchmarks/analysis/gem_plus_configs.py --plot gem-bml+/default/matched/seed0_40000it
    python benchmarks/analysis/gem_plus_configs.py --quick

The last line printed is JSON: MSE after the most steps per run.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from pyro_gem import Sinusoid, meta_test
from pyro_gem.config import build_learner, resolve_config
from pyro_gem.modelfile import load_model_file
from pyro_gem.training import train

ROOT = Path(__file__).resolve().parents[2]
MAML_ALPHA = 0.01 * 2 * 0.3**2 / 10  # MAML's α on the MSE, in log-likelihood units (noise 0.3)

#: The issue's pilot: σ₀ 0.1, one support and one query step of whitened SGD at α/σ₀², the guide
#: started at a tenth of the prior scale, σ meta-learned ten times slower than m, no milestones.
MATCHED = {
    "prior_init_scale": 0.1,
    "inner_optim": "sgd",
    "inner_lr": MAML_ALPHA / 0.1**2,
    "inner_steps": 1,
    "query_steps": 1,
    "guide_init_scale": 0.1,
    "meta_lr": 1e-3,
    "meta_lr_scale": 1e-4,
    "meta_lr_milestones": [],
}


def _matched(sigma0: float, **changes) -> dict:
    """MATCHED at another σ₀, with the whitened step kept at α/σ₀² (the same step in θ)."""
    return {**MATCHED, "prior_init_scale": sigma0, "inner_lr": MAML_ALPHA / sigma0**2, **changes}


#: GEM-BML+'s settings in the model file before MATCHED (σ₀ 0.01, 20 + 20 whitened SGD steps of
#: 0.03 cut to norm 1 per task, one meta rate for m and σ, ×0.1 at 5,000 and 20,000).
CLIPPED_SGD_20 = {
    "prior_init_scale": 0.01,
    "inner_optim": "clipped-sgd",
    "inner_lr": 0.03,
    "inner_steps": 20,
    "query_steps": 20,
    "guide_init_scale": None,
    "meta_lr": 1e-3,
    "meta_lr_scale": None,
    "meta_lr_milestones": [5000, 20000],
}

#: Name -> run options over the model file's settings for the method.
CONFIGS: dict[str, dict] = {
    "model-file": {},
    "clipped-sgd-20+20": CLIPPED_SGD_20,
    "matched": MATCHED,
    # one ingredient of MATCHED changed at a time
    "matched-sigma0-0.01": _matched(0.01),
    "matched-sigma0-0.03": _matched(0.03),
    "matched-sigma0-0.3": _matched(0.3),
    "matched-step-x3": {**MATCHED, "inner_lr": 3 * MATCHED["inner_lr"]},
    "matched-step-x0.3": {**MATCHED, "inner_lr": 0.3 * MATCHED["inner_lr"]},
    "matched-scale-rate-1e-3": {**MATCHED, "meta_lr_scale": 1e-3},
    "matched-scale-frozen": {**MATCHED, "meta_lr_scale": 0.0},
    "matched-guide-at-prior": {**MATCHED, "guide_init_scale": None},
    "matched-milestones": {**MATCHED, "meta_lr_milestones": [5000, 20000]},
    "matched-5+5": {**MATCHED, "inner_steps": 5, "query_steps": 5},
    "matched-5+1": {**MATCHED, "inner_steps": 5, "query_steps": 1},
}


def run_dir(out: Path, method: str, setting: str, name: str, seed: int, iterations: int) -> Path:
    runs = out / "gem_plus_config_runs" / method / setting / name
    return runs / f"seed{seed}_{iterations}it"


def run_one(name: str, setting: str, seed: int, args) -> dict:
    mf = load_model_file(args.model_file, seed=seed)
    mf.tasks = Sinusoid(setting, shots=10)
    config = resolve_config(mf.config, {"method": args.method, "seed": seed})
    config.update(CONFIGS[name])
    config["meta_iterations"] = args.meta_iterations
    learner = build_learner(mf, config)
    history = train(
        learner,
        mf.tasks,
        meta_iterations=args.meta_iterations,
        meta_batch=25,
        seed=seed,
        out_dir=run_dir(args.out, args.method, setting, name, seed, args.meta_iterations),
        resume=True,
        meta_lr_milestones=config["meta_lr_milestones"],
        meta_lr_gamma=config["meta_lr_gamma"],
        config=config,
        eval_every=args.eval_every,
        eval_tasks=100,
        progress=not args.no_progress,
    )
    timed = [h["seconds"] for h in history if "seconds" in h]
    row = scored_row(
        learner, mf.tasks, args, name, args.method, setting, seed, args.meta_iterations
    )
    return {
        **row,
        "options": CONFIGS[name],
        "training_iterations_with_a_diverged_task": sum(bool(h.get("nan_tasks")) for h in history),
        "seconds_per_iteration": statistics.median(timed) if timed else None,
    }


def scored_row(
    learner, tasks, args, config: str, method: str, setting: str, seed: int, iterations: int
) -> dict:
    """A results row: which run it is, and its meta-test under this script's protocol."""
    scores = meta_test(
        learner, tasks.test_tasks(args.test_tasks), args.steps, metrics=tasks.metrics
    )
    scale = learner.prior.scale.detach()
    return {
        "config": config,
        "method": method,
        "setting": setting,
        "seed": seed,
        "meta_iterations": iterations,
        "test_tasks": args.test_tasks,
        **{k: scores[k] for k in ("mse", "lpd", "coverage90", "diverged_per_step")},
        "prior_scale_median": scale.median().item(),
        "prior_scale_max": scale.max().item(),
    }


def score_committed(method: str, setting: str, args) -> dict:
    """A finished run of ``benchmarks/sinusoid.py`` (its checkpoint and saved options) scored
    under this script's protocol, as the row of configuration ``committed``."""
    path = args.out / "sinusoid_runs" / setting / method
    state = torch.load(path / "checkpoint.pt", weights_only=True)
    config = json.loads((path / "config.json").read_text())
    mf = load_model_file(args.model_file, seed=config["seed"])
    mf.tasks = Sinusoid(setting, shots=10)
    learner = build_learner(mf, config)
    learner.load_state_dict(state["learner"])
    row = scored_row(
        learner,
        mf.tasks,
        args,
        "committed",
        method,
        setting,
        config["seed"],
        int(state["iteration"]),
    )
    return {**row, "options": {"run": str(path.relative_to(ROOT))}}


def markdown_table(rows: list[dict]) -> str:
    """One line per (setting, method, configuration, budget): the mean over seeds of each
    figure, the MSE after 10 steps of each seed, the held-out tasks that diverged (summed over
    seeds, at the step count where most did) and the median prior scale."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["setting"], r["method"], r["config"], r["meta_iterations"])
        groups.setdefault(key, []).append(r)
    steps = sorted({int(s) for r in rows for s in r["mse"]})

    def mean(rs, metric, s):
        return statistics.mean(r[metric][str(s)][0] for r in rs)

    head = ["setting", "method", "configuration", "iterations", "seeds"]
    cov_steps = [s for s in (10, steps[-1]) if s in steps]
    head += [f"MSE {s}" for s in steps] + [f"lpd {s}" for s in steps]
    head += [f"cov90 {s}" for s in dict.fromkeys(cov_steps)]
    head += ["MSE 10 by seed", "diverged", "σ median"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for (setting, method, name, its), rs in sorted(groups.items()):
        cells = [setting, method, name, str(its), str(len(rs))]
        cells += [f"{mean(rs, 'mse', s):#.3g}" for s in steps]
        cells += [f"{mean(rs, 'lpd', s):#.3g}" for s in steps]
        cells += [f"{mean(rs, 'coverage90', s):.2f}" for s in dict.fromkeys(cov_steps)]
        by_seed = sorted(rs, key=lambda r: r["seed"])
        cells.append(" / ".join(f"{r['mse']['10'][0]:#.3g}" for r in by_seed if "10" in r["mse"]))
        cells.append(str(sum(max(r["diverged_per_step"].values()) for r in rs)))
        cells.append(f"{statistics.mean(r['prior_scale_median'] for r in rs):.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_training(out: Path, runs: list[str]) -> Path:
    """Held-out MSE after the training's inner steps (100 tasks) and the median prior scale over
    meta-training, for the run directories ``runs`` (``method/setting/config/seedN_Mit`` under
    ``<out>/gem_plus_config_runs``): ``<out>/gem_plus_configs_training.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for run in runs:
        history = json.loads((out / "gem_plus_config_runs" / run / "history.json").read_text())
        evals = [(h["iteration"], h["heldout_mse"]) for h in history if "heldout_mse" in h]
        axes[0].plot(*zip(*evals, strict=True), marker=".", label=run)
        thin = history[::50]
        axes[1].plot([h["iteration"] for h in thin], [h["prior_scale_median"] for h in thin])
    axes[0].set_title("held-out MSE after the training's steps (100 tasks)")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=6)
    axes[1].set_title("median prior scale σ")
    for ax in axes:
        ax.set_xlabel("meta-iteration")
    fig.tight_layout()
    path = out / "gem_plus_configs_training.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=["model-file", "matched"], choices=CONFIGS)
    p.add_argument("--method", default="gem-bml+", choices=["gem-bml+", "gem-bml"])
    p.add_argument(
        "--committed",
        nargs="+",
        metavar="METHOD",
        help="instead of training: score these methods' committed 40,000-iteration runs "
        "(benchmarks/results/sinusoid_runs) under the same protocol",
    )
    p.add_argument("--settings", nargs="+", default=["default"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--meta-iterations", type=int, default=3000)
    p.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10, 20])
    p.add_argument("--test-tasks", type=int, default=600)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--model-file", type=Path, default=ROOT / "models" / "sinusoid.py")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--table", action="store_true", help="print the results as Markdown and exit")
    p.add_argument(
        "--plot",
        nargs="+",
        metavar="RUN",
        help="plot these runs' training curves (method/setting/config/seedN_Mit) and exit",
    )
    p.add_argument("--quick", action="store_true", help="a smoke run: few iterations and tasks")
    args = p.parse_args(argv)
    name = "gem_plus_configs_quick.json" if args.quick else "gem_plus_configs.json"
    path = args.out / name
    if args.table:
        print(markdown_table(json.loads(path.read_text())))
        return []
    if args.plot:
        print(plot_training(args.out, args.plot))
        return []
    torch.set_num_threads(args.threads)
    if args.quick:
        args.meta_iterations, args.test_tasks, args.eval_every, args.steps = 3, 6, 0, [1, 2]
    rows = []
    for setting in args.settings:
        if args.committed:
            for method in args.committed:
                rows.append(score_committed(method, setting, args))
                print(json.dumps(rows[-1]), flush=True)
            continue
        for config in args.configs:
            for seed in args.seeds:
                row = run_one(config, setting, seed, args)
                rows.append(row)
                print(json.dumps(row), flush=True)
    # Read the file only now: several invocations (one per core) may share it.
    kept = json.loads(path.read_text()) if path.is_file() else []
    key = ("setting", "method", "config", "seed", "meta_iterations")
    done = {tuple(r[k] for k in key) for r in rows}
    kept = [r for r in kept if tuple(r[k] for k in key) not in done] + rows
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(kept, indent=1))
    last = str(max(args.steps))
    print(
        json.dumps(
            {
                f"{r['setting']}/{r['method']}/{r['config']}/{r['seed']}": r["mse"][last][0]
                for r in rows
            }
        )
    )
    return rows


if __name__ == "__main__":
    main()
