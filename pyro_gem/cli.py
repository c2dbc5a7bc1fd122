"""The ``pyro-gem`` command: meta-train a model file, then meta-test it.

Example::

    pyro-gem train models/sinusoid.py                       # defaults from the file's config
    pyro-gem train models/sinusoid.py --method gem-bml --meta-iterations 500 --out runs/a
    pyro-gem train models/sinusoid.py --out runs/a --resume  # continue an interrupted run
    pyro-gem evaluate runs/a                                 # meta-test a checkpoint again
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyro

from pyro_gem.evaluation import meta_test
from pyro_gem.learners import MetaLearner
from pyro_gem.methods import INNER_OPTIMS, METHODS, NEWTON, build
from pyro_gem.modelfile import ModelFile, load_model_file
from pyro_gem.training import load_checkpoint, train

__all__ = ["main", "build_learner", "resolve_config"]

#: Options a model file's ``config`` may set and the CLI may override.
DEFAULTS = {
    "method": "gem-bml+",
    "meta_iterations": 1500,
    "meta_batch": 25,
    "meta_lr": 1e-3,
    "meta_lr_milestones": [],
    "meta_lr_gamma": 0.1,
    "inner_optim": "adam",
    "inner_lr": 0.2,
    "inner_lr_decay": 1.0,
    "inner_steps": 20,
    "query_steps": None,
    "guide": "normal",
    "update": "sequential",
    "num_particles": 1,
    "reg": 1.0,
    "cg_steps": 5,
    "seed": 0,
    "test_tasks": 600,
    "eval_steps": [0, 1, 5, 10],
}


def resolve_config(file_config: dict, overrides: dict | None = None) -> dict:
    """A run's options: DEFAULTS < the model file's ``config`` < its ``config["methods"][method]``
    (per-method settings, e.g. MAML's step size) < ``overrides`` (the CLI's flags; ``None``
    values are ignored)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    config = {**DEFAULTS, **{k: v for k, v in file_config.items() if k != "methods"}}
    method = overrides.get("method", config["method"])
    config.update(file_config.get("methods", {}).get(method, {}))
    config.update(overrides)
    return config


def build_learner(model_file: ModelFile, config: dict) -> MetaLearner:
    """The learner a run's options describe, over the model file's model and prior.

    :param model_file: the loaded model file (its ``model`` and ``prior``).
    :param config: the run's resolved options (``method`` and the method's settings).
    """
    return build(config["method"], model_file.model, model_file.prior, config)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyro-gem", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="meta-train a model file, then meta-test it")
    t.add_argument("model_file", type=Path, help="a Python file defining model, prior, tasks")
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
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
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
    return p


def _report(scores: dict, out_dir: Path) -> None:
    print(f"meta-test on {scores['num_tasks']} held-out tasks (MSE, mean ± 95% CI):")
    for step, (mean, ci) in scores["mse"].items():
        print(f"  after {step:>3} inner steps: {mean:.4f} ± {ci:.4f}")
    print(f"  90% predictive interval coverage: {scores['coverage90']:.3f}")
    if scores["diverged"]:
        print(f"  {scores['diverged']} tasks diverged in the inner VI and are left out")
    (out_dir / "metatest.json").write_text(json.dumps(scores, indent=2))


def _meta_test_and_plot(learner, mf, config: dict, out_dir: Path, history: list[dict]) -> dict:
    from pyro_gem.diagnostics import plot_tasks, plot_training

    if history:
        print(f"wrote {plot_training(history, out_dir / 'training.png')}")
    heldout = mf.tasks.test_tasks(config["test_tasks"])
    scores = meta_test(learner, heldout, steps=config["eval_steps"])
    _report(scores, out_dir)
    png = plot_tasks(learner, mf.tasks, heldout.select(slice(0, 4)), out_dir / "tasks.png")
    if png is not None:
        print(f"wrote {png}")
    return scores


def load_seeded(path: Path, seed: int | None = None):
    """Load a model file with the random state seeded first.

    A model file builds its network when it runs, and the prior starts from the network's own
    initialisation: without a seed, every process would start a run from different weights. The
    seed is ``seed`` (the CLI's), else the file's ``config["seed"]``, else the default; a file
    that sets its own seed is run twice, the second time under that seed.
    """
    first = DEFAULTS["seed"] if seed is None else seed
    mf = load_model_file(path, seed=first)
    wanted = resolve_config(mf.config, {"seed": seed})["seed"]
    return mf if wanted == first else load_model_file(path, seed=wanted)


def _train(args) -> int:
    mf = load_seeded(args.model_file, args.seed)
    config = resolve_config(mf.config, {key: getattr(args, key, None) for key in DEFAULTS})
    config["model_file"] = str(args.model_file.resolve())
    out = args.out
    if args.resume and (out / "config.json").is_file():
        saved = json.loads((out / "config.json").read_text())
        changed = {
            k
            for k in DEFAULTS
            if k not in ("meta_iterations", "test_tasks") and saved.get(k) != config.get(k)
        }
        if changed:
            raise SystemExit(
                f"--resume: options {sorted(changed)} differ from the checkpoint's; resuming "
                "continues the same run, so they must match"
            )
    learner = build_learner(mf, config)
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
        config=config,
        progress=not args.no_progress,
    )
    print(f"checkpoint: {out / 'checkpoint.pt'}")
    _meta_test_and_plot(learner, mf, config, out, history)
    return 0


def _evaluate(args) -> int:
    state, config, history = load_checkpoint(args.run_dir)
    if args.model_file is None and "model_file" not in config:
        raise ValueError(
            f"{args.run_dir / 'config.json'} names no model file (benchmark runs set the tasks "
            "themselves): pass --model-file"
        )
    mf = load_model_file(args.model_file or config["model_file"])
    if args.test_tasks is not None:
        config["test_tasks"] = args.test_tasks
    if args.steps is not None:
        config["eval_steps"] = args.steps
    # The adaptation may differ from training's: e.g. more, smaller steps, closer to the
    # posterior that the prior was meta-learned for.
    # A flag left out (None) keeps the run's own setting, not the default's.
    adaptation = {key: getattr(args, key) for key in ("inner_optim", "inner_lr", "inner_lr_decay")}
    config = resolve_config(config, adaptation)
    learner = build_learner(mf, config)
    learner.load_state_dict(state["learner"])
    pyro.set_rng_seed(config["seed"])  # the same draws every time a checkpoint is evaluated
    print(f"{config['method']} after {state['iteration']} meta-iterations")
    out = args.run_dir if args.out is None else args.out
    out.mkdir(parents=True, exist_ok=True)
    _meta_test_and_plot(learner, mf, config, out, history)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _train(args) if args.command == "train" else _evaluate(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"pyro-gem: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
