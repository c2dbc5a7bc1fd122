"""What the few-shot image classification benchmarks share: meta-train each method in each
setting in its own resumable run directory, pick its test-time inner steps on validation
episodes where the model file offers several, meta-test on fixed test episodes, and report
accuracy, NLL, ECE, MCE, timings and reliability diagrams. ``omniglot.py`` and
``miniimagenet.py`` are thin scripts over :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pyro  # noqa: E402
import torch  # noqa: E402

from pyro_gem import METHOD_TABLE, meta_test  # noqa: E402
from pyro_gem.cli import EVALUATION_ONLY  # noqa: E402
from pyro_gem.config import DEFAULTS, build_learner, load_seeded, resolve_config  # noqa: E402
from pyro_gem.diagnostics import plot_reliability  # noqa: E402
from pyro_gem.run import run_meta_test  # noqa: E402
from pyro_gem.training import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Benchmark:
    """One few-shot benchmark: its model file's name, settings, methods and reference figures.

    :ivar settings: ``{"5w1s": (ways, shots), ...}``.
    :ivar paper: ``{method: (accuracy % per setting)}``, the papers' full-data figures.
    :ivar quick_data: writes a stand-in data folder for ``--quick`` (``None``: the default data).
    """

    name: str
    title: str
    description: str
    settings: dict[str, tuple[int, int]]
    methods: tuple[str, ...]
    paper: dict[str, tuple[float, ...]]
    full_iterations: int
    default_data: str
    data_help: str
    quick_data: Callable[[Path], Path] | None = field(default=None)

    def output(self, args) -> str:
        return f"{self.name}_quick" if args.quick else self.name


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu, {threads} thread{'s' if threads > 1 else ''}"


def sampler_rate(tasks, meta_batch: int, repeats: int = 20) -> float:
    """Episodes per second of the task family's sampler, assembling meta-batches."""
    gen = torch.Generator().manual_seed(0)
    tasks.sample(meta_batch, gen)
    start = time.perf_counter()
    for _ in range(repeats):
        tasks.sample(meta_batch, gen)
    return repeats * meta_batch / (time.perf_counter() - start)


def run_one(bench: Benchmark, setting: str, method: str, args) -> tuple[dict, dict]:
    """Meta-train ``method`` in ``setting`` (resuming its run directory), then meta-test it."""
    ways, shots = bench.settings[setting]
    given = {"ways": ways, "shots": shots, "bins": args.bins}
    if args.data is not None:
        given["data"] = str(args.data)
    if args.query is not None:
        given["query"] = args.query
    # Seeded before the file runs: every method starts from the same network weights.
    mf = load_seeded(args.model_file, args.seed, given)
    overrides = {"method": method, "seed": args.seed, "test_tasks": args.test_episodes}
    if args.test_samples is not None:
        overrides["test_samples"] = args.test_samples
    if args.full:
        overrides["meta_iterations"] = bench.full_iterations
    else:
        overrides["meta_iterations"] = args.meta_iterations
        overrides["meta_batch"] = args.meta_batch
    config = resolve_config(mf.config, overrides)
    config["settings"] = mf.settings
    learner = build_learner(mf, config, args.device)
    run_dir = args.out / f"{bench.output(args)}_runs" / setting / method
    check_resumable(run_dir, config)
    history = train(
        learner,
        mf.tasks,
        meta_iterations=config["meta_iterations"],
        meta_batch=config["meta_batch"],
        seed=args.seed,
        out_dir=run_dir,
        resume=True,
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        eval_tasks=args.eval_tasks,
        eval_samples=min(10, config["test_samples"]),
        meta_lr_milestones=config["meta_lr_milestones"],
        meta_lr_gamma=config["meta_lr_gamma"],
        config=config,
        progress=not args.no_progress,
    )
    steps, validation = choose_test_steps(learner, mf.tasks, config, args)
    tick = time.perf_counter()
    scores = run_meta_test(learner, mf.tasks, {**config, "eval_steps": [steps]})
    test_seconds = time.perf_counter() - tick
    key = str(steps)
    calibration = scores["calibration"][key]
    timed = [h["seconds"] for h in history if "seconds" in h]
    seconds = statistics.median(timed) if timed else float("nan")
    episodes_per_second = sampler_rate(mf.tasks, config["meta_batch"])
    sampling = config["meta_batch"] / episodes_per_second
    result = {
        "accuracy": scores["accuracy"][key],
        "nll": scores["nll"][key][0],
        "ece": calibration["ece"],
        "mce": calibration["mce"],
        "lpd": scores["lpd"][key][0],
        "test_steps": steps,
        "validation_accuracy_by_steps": validation,
        # A Gaussian posterior's predictive averages test_samples draws; a delta posterior has
        # one point, BMAML's its particles.
        "posterior": METHOD_TABLE[method].posterior,
        "test_samples": config["test_samples"],
        "test_episodes": config["test_tasks"],
        "diverged": scores["diverged"],
        "meta_iterations": len(history),
        "meta_batch": config["meta_batch"],
        "device": _device_name(learner.device),
        "seconds_per_iteration": seconds,
        "sampler_episodes_per_second": episodes_per_second,
        "sampling_share_of_iteration": sampling / seconds if timed else None,
        "meta_test_seconds": test_seconds,
        "reliability_counts": calibration["counts"],
        "config": {
            k: config[k]
            for k in (
                "inner_optim",
                "inner_lr",
                "inner_steps",
                "query_steps",
                "num_particles",
                "meta_lr",
                "reg",
                "cg_steps",
            )
        },  # fmt: skip
        "settings": mf.settings,  # the model file's, the data folder among them
        "run_dir": _shown(run_dir),
    }
    return result, calibration


def check_resumable(run_dir: Path, config: dict) -> None:
    """Refuse to continue a run directory trained with other options or settings, or further
    than ``config["meta_iterations"]``: the run would not be the one asked for."""
    if not (run_dir / "config.json").is_file():
        return
    saved = json.loads((run_dir / "config.json").read_text())
    changed = sorted(
        k
        for k in (*DEFAULTS, "settings")
        if k not in EVALUATION_ONLY and saved.get(k, DEFAULTS.get(k)) != config.get(k)
    )
    done = len(json.loads((run_dir / "history.json").read_text()))
    if changed or done > config["meta_iterations"]:
        raise SystemExit(
            f"{run_dir} holds a run with other options ({changed}) or more iterations ({done} > "
            f"{config['meta_iterations']}): remove it or write elsewhere (--out)"
        )


def choose_test_steps(learner, tasks, config: dict, args) -> tuple[int, dict]:
    """The inner steps of the meta-test: the model file's ``test_steps`` for the method, the one
    count or, given several (e.g. the training steps and MAML's 3), the count with the best
    accuracy on ``--eval-tasks`` validation episodes (never the test episodes)."""
    candidates = config["test_steps"]
    if candidates is None:
        candidates = [learner.adapt_steps]
    elif isinstance(candidates, int):
        candidates = [candidates]
    if len(candidates) == 1:
        return int(candidates[0]), {}
    pyro.set_rng_seed(args.seed)
    scores = meta_test(
        learner,
        tasks.validation_tasks(args.eval_tasks),
        steps=candidates,
        metrics=tasks.metrics[:1],
        num_samples=min(10, config["test_samples"]),
        seed=args.seed,
    )
    accuracy = {int(k): v[0] for k, v in scores["accuracy"].items()}
    return max(accuracy, key=lambda k: (accuracy[k], -k)), {str(k): v for k, v in accuracy.items()}


def markdown_table(bench: Benchmark, report: dict) -> str:
    """Accuracy ± 95% CI, NLL, ECE and MCE per setting and method, with the paper's figure."""
    lines = [
        "| setting | method | accuracy (%) | NLL | ECE | MCE | budget | paper (full data, %) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting, per_method in report["results"].items():
        column = list(bench.settings).index(setting)
        for method, r in per_method.items():
            mean, ci = (100 * v for v in r["accuracy"])
            paper = bench.paper.get(method)
            # meta-iterations × episodes; test episodes; posterior draws where there are several
            draws = "" if r["posterior"] == "delta" else f", {r['test_samples']} draws"
            budget = (
                f"{r['meta_iterations']} × {r['meta_batch']}, "
                f"{r.get('test_episodes', 600)} test{draws}"
            )
            lines.append(
                f"| {setting} | {method} | {mean:.2f} ± {ci:.2f} | {r['nll']:.3f} | "
                f"{r['ece']:.4f} | {r['mce']:.4f} | {budget} | {paper[column] if paper else ''} |"
            )
    return "\n".join(lines)


def main(bench: Benchmark, argv=None) -> dict:
    """The command line of a few-shot benchmark script."""
    p = argparse.ArgumentParser(description=bench.description)
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 iterations, 10 episodes")
    p.add_argument("--full", action="store_true", help="MAML's budget (use with --data)")
    p.add_argument("--settings", nargs="+", default=["5w1s"], choices=list(bench.settings))
    p.add_argument("--methods", nargs="+", default=list(bench.methods))
    p.add_argument("--data", type=Path, help=bench.data_help)
    p.add_argument("--model-file", type=Path, default=ROOT / "models" / f"{bench.name}.py")
    p.add_argument("--meta-iterations", type=int, default=500)
    p.add_argument("--meta-batch", type=int, default=8)
    p.add_argument("--query", type=int, help="query images per class (the model file's default)")
    p.add_argument("--test-episodes", type=int, default=600)
    p.add_argument(
        "--test-samples", type=int, help="posterior draws per test episode (the model file's)"
    )
    p.add_argument("--bins", type=int, default=15, help="confidence bins of ECE and MCE")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-tasks", type=int, default=50)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="where the learners run, e.g. cuda")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--table", action="store_true", help=f"print {bench.name}.json as Markdown")
    args = p.parse_args(argv)
    if bench.quick_data is not None and args.data is None and not (args.quick or args.table):
        p.error(f"--data is required: no {bench.title} copy is on this machine ({bench.data_help})")
    name = bench.output(args)
    path = args.out / f"{name}.json"
    if args.table:
        print(markdown_table(bench, json.loads(path.read_text())))
        return {}
    if args.quick:
        args.meta_iterations, args.meta_batch, args.test_episodes = 2, 2, 10
        args.eval_every, args.checkpoint_every = 0, 1
        args.query = args.query or 2
        if bench.quick_data is not None and args.data is None:
            args.data = bench.quick_data(args.out / f"{name}_data")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    report = json.loads(path.read_text()) if path.is_file() else {"results": {}}
    report["settings"] = {
        "data": _shown(args.data) if args.data else bench.default_data,
        "model_file": _shown(args.model_file),
        "calibration_bins": args.bins,
        "seed": args.seed,
        # Each result records its own budget and device: meta_iterations, meta_batch,
        # test_episodes, test_samples, device.
    }
    summary = {}
    for setting in args.settings:
        calibrations = {}
        for method in args.methods:
            result, calibration = run_one(bench, setting, method, args)
            # Re-read first: another process may have written other methods or settings since.
            if path.is_file():
                report["results"] = json.loads(path.read_text())["results"]
            report["results"].setdefault(setting, {})[method] = result
            calibrations[method] = calibration
            path.write_text(json.dumps(report, indent=1))
            summary[f"{setting}/{method}/accuracy"] = result["accuracy"][0]
            summary[f"{setting}/{method}/ece"] = result["ece"]
            print(
                f"{setting} {method}: accuracy {100 * result['accuracy'][0]:.2f} ± "
                f"{100 * result['accuracy'][1]:.2f} %, nll {result['nll']:.3f}, ece "
                f"{result['ece']:.4f}, mce {result['mce']:.4f}",
                flush=True,
            )
        plot_reliability(
            {m: {"ece": r["ece"], "mce": r["mce"], "counts": r["reliability_counts"]}
             for m, r in report["results"][setting].items()},
            args.out / f"{name}_reliability_{setting}.png",
            title=f"{bench.title} {setting}: reliability on its test episodes",
        )  # fmt: skip
    print(json.dumps(summary))
    return summary
