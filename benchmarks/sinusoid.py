"""Sinusoid regression: every method side by side at the paper's budget, in both settings.

Meta-trains each method (``--methods``; all of :data:`pyro_gem.METHODS` by default) on the
default (MAML) and challenging (BMAML) sinusoid settings with the model of ``models/sinusoid.py``
and the per-method settings of its ``config``: the same seeds, network, meta-batch and budget for
every method, and the plain torch.func MAML of ``maml_reference.py`` (``maml-reference``) beside
them. Then meta-tests on held-out tasks: MSE after 0, 1, 5 and 10 inner steps (mean and
95% CI) and the coverage of the 90% predictive interval (for the point-estimate methods that
interval comes from the likelihood noise alone).

Each (setting, method) trains in its own checkpointed run directory,
``<out>/sinusoid_runs/<setting>/<method>/``: stop the script at any time and run the same command
again to continue exactly where it stopped (a finished run is only meta-tested again). Writes
``<out>/sinusoid.json`` (results of other methods already in the file are kept),
``<out>/sinusoid_mse.png`` (MSE against inner steps, as the paper's Fig. 2a) and
``<out>/sinusoid_training.png`` (held-out MSE and median prior scale σ over meta-training). The
last line printed is a JSON summary.

    python benchmarks/sinusoid.py                 # full: 40,000 meta-iterations (hours on 2 cores)
    python benchmarks/sinusoid.py --methods maml imaml --settings challenging
    python benchmarks/sinusoid.py --quick         # smoke test: a few iterations, a few test tasks
    python benchmarks/sinusoid.py --thin          # thin finished runs' histories before committing
    python benchmarks/sinusoid.py --model-file my_variant.py --out my_results   # another model file
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pyro_gem import METHODS, Sinusoid, meta_test  # noqa: E402
from pyro_gem.config import build_learner, resolve_config  # noqa: E402
from pyro_gem.modelfile import load_model_file  # noqa: E402
from pyro_gem.training import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEPS = (0, 1, 5, 10)
# The plain torch.func MAML of benchmarks/maml_reference.py, trained on the same task stream:
# the bar that pyro_gem's MAML is read against.
REFERENCE = "maml-reference"


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (results files stay portable)."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_one(method: str, setting: str, args) -> tuple[dict, list[dict]]:
    # The model file initialises the network when it runs: seed first, so that every method
    # starts from the same weights whatever this process ran before.
    mf = load_model_file(args.model_file, seed=args.seed)
    mf.tasks = Sinusoid(setting, shots=args.shots)
    config = resolve_config(
        mf.config,
        {
            "method": method,
            "seed": args.seed,
            "meta_iterations": args.meta_iterations,
            "meta_batch": args.meta_batch,
        },
    )
    learner = build_learner(mf, config)  # may set the prior's σ₀ (prior_init_scale)
    initial_scale = mf.prior.scale.median().item()
    run_dir = (
        args.out / ("sinusoid_quick_runs" if args.quick else "sinusoid_runs") / setting / method
    )
    history = train(
        learner,
        mf.tasks,
        meta_iterations=args.meta_iterations,
        meta_batch=args.meta_batch,
        seed=args.seed,
        out_dir=run_dir,
        resume=True,
        meta_lr_milestones=config["meta_lr_milestones"],
        meta_lr_gamma=config["meta_lr_gamma"],
        config=config,
        eval_every=args.eval_every,
        eval_tasks=args.eval_tasks,
        progress=not args.no_progress,
    )
    scores = meta_test(
        learner, mf.tasks.test_tasks(args.test_tasks), STEPS, metrics=mf.tasks.metrics
    )
    result = {
        "mse": scores["mse"],
        "diverged": scores["diverged"],
        "coverage90": scores["coverage90"][str(max(STEPS))][0],
        "lpd": scores["lpd"],
        "seconds_per_iteration": median_seconds(history),
        "final_prior_scale_median": learner.prior.scale.median().item(),
        "run_dir": _shown(run_dir),
    }
    inner = {
        "guide": config["guide"],
        "inner_optim": config["inner_optim"],
        "inner_lr": config["inner_lr"],
        "inner_lr_decay": config["inner_lr_decay"],
        "inner_scale_lr": config["inner_scale_lr"],
        "inner_steps": config["inner_steps"],
        "query_steps": config["query_steps"] or config["inner_steps"],
        "update": config["update"],
        "whitened": getattr(getattr(learner, "inner", None), "whiten", None),
        "num_particles": config["num_particles"],
        "guide_init_scale": config["guide_init_scale"],
        "likelihood_noise": getattr(mf.module, "noise", None),
        "initial_prior_scale": initial_scale,
        "meta_lr": config["meta_lr"],
        "meta_lr_scale": config["meta_lr_scale"],
        "meta_lr_milestones": config["meta_lr_milestones"],
        "meta_lr_gamma": config["meta_lr_gamma"],
    }
    result["config"] = inner
    return result, history


def median_seconds(history: list[dict]) -> float:
    """Seconds per meta-iteration: the median over the iterations whose time the history holds
    (committed histories are thinned, and runs begun before per-step timing was logged have
    none for their first part). The median, not the mean: a run paused or sharing its core
    for a while does not shift it."""
    timed = [h["seconds"] for h in history if "seconds" in h]
    return statistics.median(timed) if timed else float("nan")


def run_reference(setting: str, args) -> dict:
    from maml_reference import reference_maml, reference_scores  # this script's directory

    tasks = Sinusoid(setting, shots=args.shots)
    net, params, adapt, per_iteration = reference_maml(
        tasks, args.meta_iterations, args.meta_batch, 0.01, 1, 1e-3, args.seed
    )
    mse, diverged = reference_scores(net, params, adapt, tasks.test_tasks(args.test_tasks), STEPS)
    return {
        "mse": mse,
        "diverged": diverged,
        "coverage90": None,
        "seconds_per_iteration": per_iteration,
        "config": {"inner_optim": "sgd on the MSE", "inner_lr": 0.01, "inner_steps": 1},
    }


def markdown_table(report: dict) -> str:
    """The results table: MSE ± 95% CI after 1 / 5 / 10 steps, 90% coverage and the log
    predictive density of the query set after 10 steps, held-out tasks left out of the means
    because their adaptation diverged, and ms per meta-iteration."""

    def cell(v: list[float] | None) -> str:
        if v is None:  # a row from before the metric was recorded
            return "—"
        mean, ci = v
        if not abs(mean) < 1e3:  # diverged on some held-out tasks (inf/NaN included)
            return f"diverges ({mean:.0e})"
        return f"{mean:#.3g} ± {ci:#.2g}"

    rows = [
        "| setting | method | MSE after 1 step | 5 steps | 10 steps | 90% coverage "
        "| log pred. density, 10 steps | diverged | ms / iteration |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = [*METHODS, REFERENCE]
    for setting, methods in report["results"].items():
        for method, res in sorted(methods.items(), key=lambda kv: order.index(kv[0])):
            cov = res.get("coverage90")
            rows.append(
                f"| {setting} | {method} | "
                + " | ".join(cell(res["mse"][k]) for k in ("1", "5", "10"))
                + f" | {'—' if cov is None else f'{cov:.2f}'}"
                + f" | {cell(res.get('lpd', {}).get('10'))}"
                + f" | {res.get('diverged', '—')}"
                + f" | {1e3 * res['seconds_per_iteration']:.1f} |"
            )
    return "\n".join(rows)


def plot(results: dict, histories: dict, out: Path) -> None:
    settings = list(results)
    fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 3.6), squeeze=False)
    for ax, setting in zip(axes[0], settings, strict=True):
        for method, res in results[setting].items():
            steps = sorted(int(s) for s in res["mse"])
            mean = [res["mse"][str(s)][0] for s in steps]
            ci = [res["mse"][str(s)][1] for s in steps]
            ax.errorbar(steps, mean, yerr=ci, marker="o", capsize=3, label=method)
        ax.set_title(f"sinusoid, {setting}")
        ax.set_xlabel("inner steps at meta-test")
        ax.set_ylabel("held-out MSE")
        ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "sinusoid_mse.png", dpi=110)
    plt.close(fig)

    if not histories:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for (setting, method), history in histories.items():
        it = [h["iteration"] for h in history]
        axes[1].plot(it, [h["prior_scale_median"] for h in history], label=f"{method} ({setting})")
        evals = [(h["iteration"], h["heldout_mse"]) for h in history if "heldout_mse" in h]
        if evals:
            axes[0].plot(*zip(*evals, strict=True), marker=".", label=f"{method} ({setting})")
    axes[0].set_title("held-out MSE during meta-training (training's inner steps)")
    axes[0].set_yscale("log")
    axes[1].set_title("median prior scale σ")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("meta-iteration")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "sinusoid_training.png", dpi=110)
    plt.close(fig)


def thin_finished_runs(root: Path, meta_iterations: int, every: int = 50) -> list[Path]:
    """Keep every ``every``-th iteration (and every held-out evaluation) of the histories of
    finished runs under ``root``, for committing: a full 40,000-iteration history is ~10 MB.
    Unfinished runs are left whole, since resuming reads their history back by iteration."""
    thinned = []
    for path in sorted(root.glob("*/*/history.json")):
        history = json.loads(path.read_text())
        if len(history) != meta_iterations or history[-1].get("iteration") != meta_iterations:
            continue
        kept = [h for h in history if h["iteration"] % every == 0 or "heldout_mse" in h]
        path.write_text(json.dumps(kept, separators=(",", ":")))
        thinned.append(path.parent)
    return thinned


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: few iterations and tasks")
    methods = [*METHODS, REFERENCE]
    p.add_argument("--methods", nargs="+", default=methods, choices=methods)
    p.add_argument("--settings", nargs="+", default=["default", "challenging"])
    p.add_argument("--meta-iterations", type=int, default=40000)
    p.add_argument("--meta-batch", type=int, default=25)
    p.add_argument("--shots", type=int, default=10)
    p.add_argument("--test-tasks", type=int, default=600)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--eval-tasks", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument(
        "--model-file",
        type=Path,
        default=ROOT / "models" / "sinusoid.py",
        help="the model, prior and per-method settings (its tasks are replaced by the setting's)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument(
        "--table", action="store_true", help="print the results file as a Markdown table and exit"
    )
    p.add_argument(
        "--thin",
        action="store_true",
        help="thin the histories of finished runs to every 50th iteration (to commit) and exit",
    )
    args = p.parse_args(argv)
    path = args.out / ("sinusoid_quick.json" if args.quick else "sinusoid.json")
    if args.thin:
        for run in thin_finished_runs(args.out / "sinusoid_runs", args.meta_iterations):
            print(f"thinned {run}")
        return {}
    if args.table:
        print(markdown_table(json.loads(path.read_text())))
        return {}
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.meta_iterations, args.test_tasks = 4, 8
        args.eval_every, args.eval_tasks, args.meta_batch = 2, 4, 5
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for setting in args.settings:
        for method in args.methods:
            if method == REFERENCE:
                result = run_reference(setting, args)
            else:
                result, _ = run_one(method, setting, args)
            results.setdefault(setting, {})[method] = result
            print(f"{setting:>11} {method:>9}: " + json.dumps(result["mse"]), flush=True)
    # Read the file only now: several invocations (one per core) may share it.
    report = json.loads(path.read_text()) if path.is_file() else {"settings": {}, "results": {}}
    for setting, methods in results.items():
        report["results"].setdefault(setting, {}).update(methods)
    histories = {
        (setting, method): json.loads((ROOT / res["run_dir"] / "history.json").read_text())
        for setting, methods in report["results"].items()
        for method, res in methods.items()
        if "run_dir" in res and (ROOT / res["run_dir"] / "history.json").is_file()
    }
    for (setting, method), history in histories.items():
        report["results"][setting][method]["seconds_per_iteration"] = median_seconds(history)
    report["settings"].update(
        {
            "meta_iterations": args.meta_iterations,
            "meta_batch": args.meta_batch,
            "shots": args.shots,
            "test_tasks": args.test_tasks,
            "seed": args.seed,
            "network": "MLP 1-40-40-1 ReLU",
            "model_file": f"{_shown(args.model_file)} (each result's 'config' holds its inner-loop "
            "settings)",
            "threads": torch.get_num_threads(),
        }
    )
    path.write_text(json.dumps(report, indent=2))
    plot(report["results"], histories, args.out)
    summary = {
        f"{setting}/{method}/mse10": res["mse"]["10"][0]
        for setting, methods in report["results"].items()
        for method, res in methods.items()
        if "10" in res["mse"]
    }
    summary["results_file"] = str(path)
    print(json.dumps(summary))
    return report


if __name__ == "__main__":
    main()
