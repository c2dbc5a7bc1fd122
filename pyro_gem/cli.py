"""The ``pyro-gem`` command: meta-train a model file, then meta-test it.

Example::

    pyro-gem train models/sinusoid.py                       # defaults from the file's config
    pyro-gem train models/sinusoid.py --method gem-bml --meta-iterations 500 --out runs/a
    pyro-gem train models/sinusoid.py --out runs/a --resume  # continue an interrupted run
    pyro-gem train models/omniglot.py --set ways=20 shots=5 data=~/omniglot   # file settings
    pyro-gem train models/sinusoid.py --workers 2             # inner loops on 2 Ray workers
    pyro-gem evaluate runs/a                                 # meta-test a checkpoint again
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pyro_gem.config import DEFAULTS, build_learner, load_seeded, resolve_config
from pyro_gem.evaluation.meta_test import metric_names
from pyro_gem.methods.registry import INNER_OPTIMS, METHODS, NEWTON, attach_runner, check_on_workers
from pyro_gem.modelfile import parse_settings
from pyro_gem.run import load_run, run_meta_test
from pyro_gem.runners import LocalRunner, ShardFailed
from pyro_gem.training import train

__all__ = ["format_scores", "main"]

#: Options a resumed run may change: they do not change what training does.
EVALUATION_ONLY = ("meta_iterations", "test_tasks", "test_samples", "test_steps", "eval_steps")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyro-gem", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="meta-train a model file, then meta-test it")
    t.add_argument("model_file", type=Path, help="a Python file defining model, prior, tasks")
    t.add_argument(
        "--set",
        nargs="+",
        metavar="NAME=VALUE",
        dest="settings",
        help="the model file's settings (those it declares with pyro_gem.settings), e.g. "
        "ways=20 shots=5 data=PATH",
    )
    t.add_argument("--method", choices=METHODS)
    t.add_argument("--meta-iterations", type=int)
    t.add_argument("--meta-batch", type=int)
    t.add_argument("--meta-lr", type=float)
    t.add_argument(
        "--meta-lr-milestones",
        type=int,
        nargs="*",
        help="iterations at which the meta learning rate is multiplied by --meta-lr-gamma",
    )
    t.add_argument("--meta-lr-gamma", type=float)
    t.add_argument("--inner-optim", choices=[*sorted(INNER_OPTIMS), NEWTON])
    t.add_argument("--inner-lr", type=float)
    t.add_argument(
        "--inner-lr-decay", type=float, help="per-step factor on the inner learning rate"
    )
    t.add_argument("--inner-steps", type=int)
    t.add_argument("--query-steps", type=int)
    t.add_argument("--guide", choices=["normal", "delta"])
    t.add_argument("--update", choices=["sequential", "joint"])
    t.add_argument(
        "--num-particles", type=int, help="Monte Carlo draws per ELBO; BMAML: SVGD particles"
    )
    t.add_argument("--reg", type=float, help="iMAML's proximal strength λ")
    t.add_argument("--cg-steps", type=int, help="iMAML's conjugate-gradient iterations")
    t.add_argument("--seed", type=int)
    t.add_argument("--test-tasks", type=int, help="held-out tasks in the final meta-test")
    t.add_argument("--out", type=Path, default=Path("runs/latest"), help="output directory")
    t.add_argument(
        "--device",
        help="where the learner runs, e.g. cuda or cuda:1 (default: cpu); a run resumes and "
        "loads on any device",
    )
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.add_argument(
        "--workers",
        type=int,
        help="run the inner loops on N Ray workers (a local Ray runtime with N CPUs; needs "
        "pyro-gem[ray]); GEM-BML(+), Reptile and first-order MAML",
    )
    t.add_argument(
        "--ray-address", help="join a running Ray cluster instead (e.g. auto, ray://host:10001)"
    )
    t.add_argument(
        "--shards",
        type=int,
        help="shards per meta-batch (default: --workers); each is seeded on its own, so a run "
        "with the same shards gives the same prior on any number of workers; alone, the "
        "shards run in this process",
    )
    e = sub.add_parser("evaluate", help="meta-test a checkpoint on held-out tasks")
    e.add_argument("run_dir", type=Path, help="a directory written by 'pyro-gem train'")
    e.add_argument("--model-file", type=Path, help="defaults to the one the run was trained on")
    e.add_argument("--test-tasks", type=int)
    e.add_argument("--steps", type=int, nargs="+", help="inner-step counts to score")
    e.add_argument(
        "--inner-optim",
        choices=[*sorted(INNER_OPTIMS), NEWTON],
        help="adapt with this inner optimiser instead",
    )
    e.add_argument("--inner-lr", type=float, help="adapt with this inner step instead")
    e.add_argument("--inner-lr-decay", type=float, help="adapt with this step decay instead")
    e.add_argument("--out", type=Path, help="where the results go (default: run_dir)")
    e.add_argument(
        "--device",
        help="where the learner runs, e.g. cuda or cuda:1 (default: cpu); a run resumes and "
        "loads on any device",
    )
    return p


def _format_summary(summary) -> str:
    if isinstance(summary, (list, tuple)) and len(summary) == 2:
        return f"{summary[0]:.4f} ± {summary[1]:.4f}"
    if isinstance(summary, dict):  # e.g. the calibration errors: their scalar entries
        return ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if isinstance(v, float))
    return f"{summary:.4f}" if isinstance(summary, float) else str(summary)


def format_scores(scores: dict) -> str:
    """A meta-test's results as a table: one row per inner-step count, one column per metric."""
    names = metric_names(scores)
    rows = [["inner updates" if "return" in scores else "inner steps", *names]]
    for step in map(str, scores["steps"]):
        rows.append([step, *(_format_summary(scores[n][step]) for n in names)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        f"meta-test on {scores['num_tasks']} held-out tasks (mean ± 95% CI over tasks; "
        + (
            "return: each update on fresh rollouts of its policy)"
            if "return" in scores
            else "lpd: log predictive density of the query set)"
        )
    ]
    lines += ["  " + "   ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    if scores["diverged"]:
        per_step = scores.get("diverged_per_step", {})
        counts = ", ".join(f"{n} at {s}" for s, n in per_step.items() if n)
        lines.append(
            f"  {scores['diverged']} tasks diverged in the inner loop ({counts}); each row leaves "
            "out those diverged at its step count"
        )
    return "\n".join(lines)


def _meta_test_and_plot(learner, tasks, config: dict, out_dir: Path, history: list[dict]) -> dict:
    from pyro_gem.diagnostics import plot_reliability, plot_returns, plot_tasks, plot_training

    if history:
        print(f"wrote {plot_training(history, out_dir / 'training.png')}")
    scores = run_meta_test(learner, tasks, config)
    print(format_scores(scores))
    (out_dir / "metatest.json").write_text(json.dumps(scores, indent=2))
    if "calibration" in scores:  # a classifier: how far to trust its probabilities
        panels = {f"after {s} inner steps": scores["calibration"][str(s)] for s in scores["steps"]}
        print(
            f"wrote {plot_reliability(panels, out_dir / 'reliability.png', getattr(learner, 'name', ''))}"
        )
        return scores
    if getattr(tasks, "on_policy", False):  # meta-RL: return against inner updates
        name = getattr(learner, "name", "")
        print(f"wrote {plot_returns({name: scores['return']}, out_dir / 'returns.png', name)}")
        return scores
    heldout = tasks.test_tasks(4)
    png = plot_tasks(learner, tasks, heldout, out_dir / "tasks.png")
    if png is not None:
        print(f"wrote {png}")
    return scores


def _train(args) -> int:
    mf = load_seeded(args.model_file, args.seed, parse_settings(args.settings))
    config = resolve_config(mf.config, {key: getattr(args, key, None) for key in DEFAULTS})
    config["model_file"] = str(args.model_file.resolve())
    config["settings"] = mf.settings
    if config["shards"] is None and args.workers:
        config["shards"] = args.workers
    if args.ray_address and config["shards"] is None:
        # The layout decides the random draws: a run must not depend on the cluster's size.
        raise ValueError(
            "--ray-address needs --shards N (or --workers N): the shard layout decides the "
            "random draws, so it is part of the run"
        )
    out = args.out
    if args.resume and (out / "config.json").is_file():
        saved = json.loads((out / "config.json").read_text())
        changed = {
            k
            for k in DEFAULTS
            if k not in EVALUATION_ONLY and saved.get(k, DEFAULTS[k]) != config.get(k)
        }
        if saved.get("settings", {}) != config["settings"]:
            changed.add("--set")
        if changed:
            raise SystemExit(
                f"--resume: options {sorted(changed)} differ from the checkpoint's; resuming "
                "continues the same run, so they must match"
            )
    if args.workers or args.ray_address or config["shards"]:
        check_on_workers(config["method"])  # before a Ray runtime starts
    learner = build_learner(mf, config, args.device)
    runner = _runner(args, config)
    try:
        if runner is not None:
            attach_runner(config["method"], learner, runner)
        return _train_and_test(args, mf, config, learner)
    finally:
        if runner is not None:
            runner.close()


def _runner(args, config: dict):
    """The runner ``--workers`` / ``--ray-address`` / ``--shards`` ask for (``None``: none)."""
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.workers is None and args.ray_address is None:
        return None if config["shards"] is None else LocalRunner(config["shards"])
    try:
        from pyro_gem.runners.ray_runner import RayRunner
    except ImportError as err:
        raise ValueError(
            f"--workers and --ray-address need Ray: pip install 'pyro-gem[ray]' ({err})"
        ) from err
    return RayRunner(args.workers, address=args.ray_address, shards=config["shards"])


def _train_and_test(args, mf, config: dict, learner) -> int:
    out = args.out
    history = train(
        learner,
        mf.tasks,
        meta_iterations=config["meta_iterations"],
        meta_batch=config["meta_batch"],
        seed=config["seed"],
        out_dir=out,
        resume=args.resume,
        meta_lr_milestones=config["meta_lr_milestones"],
        meta_lr_gamma=config["meta_lr_gamma"],
        eval_samples=min(50, config["test_samples"]),
        config=config,
        progress=not args.no_progress,
    )
    print(f"checkpoint: {out / 'checkpoint.pt'}")
    _meta_test_and_plot(learner, mf.tasks, config, out, history)
    return 0


def _evaluate(args) -> int:
    # The adaptation may differ from training's: e.g. more, smaller steps, closer to the
    # posterior that the prior was meta-learned for. A flag left out keeps the run's setting.
    overrides = {key: getattr(args, key) for key in ("inner_optim", "inner_lr", "inner_lr_decay")}
    overrides.update(test_tasks=args.test_tasks, eval_steps=args.steps)
    run = load_run(
        args.run_dir, model_file=args.model_file, overrides=overrides, device=args.device
    )
    print(f"{run.config['method']} after {run.iteration} meta-iterations")
    out = args.run_dir if args.out is None else args.out
    out.mkdir(parents=True, exist_ok=True)
    _meta_test_and_plot(run.learner, run.tasks, run.config, out, run.history)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _train(args) if args.command == "train" else _evaluate(args)
    except (ValueError, FileNotFoundError, ShardFailed) as err:
        print(f"pyro-gem: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
