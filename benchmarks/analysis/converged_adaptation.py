"""How far Bayesian adaptation can go from a learned prior: held-out MSE near convergence.

GEM-BML+'s held-out MSE after 10 inner steps mixes two limits: how fast the inner VI adapts and
how good the adapted posterior can be at all. This script measures the second. It loads the prior
of a training checkpoint (GEM-BML+'s, or any method's: a point-estimate method's learned
initialisation becomes the prior mean, with the prior scales given by ``--scales``), then adapts
GEM-BML+'s inner VI (AutoNormal, whitened Adam, a decaying step) for many steps on held-out
tasks and reports the MSE and 90% coverage at each recorded step count, for each likelihood noise
of ``--noises`` (the model file's ``noise``).

If a point-estimate method's initialisation, used as a Gaussian prior mean and adapted to
convergence, cannot reach that method's own few-step MSE, the gap lies in the posterior family
and likelihood (mean-field Gaussian, fixed noise), not in how GEM-BML+ learns the prior.

    python benchmarks/analysis/converged_adaptation.py --run benchmarks/results/gem_plus_inner_adam_0.2/sinusoid_runs/default/gem-bml+
    python benchmarks/analysis/converged_adaptation.py --run benchmarks/results/sinusoid_runs/default/maml \\
        --scales 0.01 0.03 0.1 --noises 0.3 0.1
    python benchmarks/analysis/converged_adaptation.py --quick

The last line is JSON: one row per (prior scale, noise) with the MSE ``[mean, ci95]`` per step.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyro
import torch

from pyro_gem import meta_test
from pyro_gem.config import build_learner, resolve_config
from pyro_gem.modelfile import load_model_file

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-file", type=Path, default=ROOT / "models" / "sinusoid.py")
    p.add_argument("--run", type=Path, help="a run directory with checkpoint.pt (default: none)")
    p.add_argument(
        "--scales",
        type=float,
        nargs="*",
        help="prior scales σ to set on every weight (default: the checkpoint's own scales)",
    )
    p.add_argument("--noises", type=float, nargs="+", help="likelihood noise sd (default: file's)")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 100, 300])
    p.add_argument("--inner-lr", type=float, default=0.1)
    p.add_argument("--inner-lr-decay", type=float, default=0.99)
    p.add_argument("--test-tasks", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="the initial prior, few tasks and steps")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.run, args.steps, args.test_tasks = None, [2, 5], 8

    mf = load_model_file(args.model_file, seed=args.seed)
    if args.run is not None:
        state = torch.load(args.run / "checkpoint.pt", weights_only=True)
        mf.prior.load_state_dict(state["learner"]["prior"])
    learned_log_scale = mf.prior.log_scale.detach().clone()
    tasks = mf.tasks.test_tasks(args.test_tasks)
    rows = []
    for scale in args.scales or [None]:
        for noise in args.noises or [mf.module.noise]:
            mf.module.noise = noise
            with torch.no_grad():
                if scale is None:
                    mf.prior.log_scale.copy_(learned_log_scale)
                else:
                    mf.prior.log_scale.fill_(torch.tensor(float(scale)).log())
            config = resolve_config(
                mf.config,
                {
                    "method": "gem-bml+",
                    # Adam whatever the model file's GEM-BML+ uses: the report says so.
                    "inner_optim": "adam",
                    "inner_lr": args.inner_lr,
                    "inner_lr_decay": args.inner_lr_decay,
                },
            )
            learner = build_learner(mf, config)
            pyro.set_rng_seed(args.seed)
            scores = meta_test(learner, tasks, args.steps, metrics=mf.tasks.metrics, num_samples=50)
            row = {
                "prior_scale": scale,
                "prior_scale_median": mf.prior.scale.median().item(),
                "noise": noise,
                "mse": scores["mse"],
                "coverage90": scores["coverage90"][str(max(args.steps))][0],
                "diverged": scores["diverged"],
            }
            rows.append(row)
            shown = {k: round(v[0], 3) for k, v in scores["mse"].items()}
            print(f"σ {row['prior_scale_median']:.4g}, noise {noise}: {shown}", flush=True)
    report = {
        "run": None if args.run is None else str(args.run),
        "inner": {
            "optim": "adam (whitened)",
            "lr": args.inner_lr,
            "lr_decay": args.inner_lr_decay,
        },
        "test_tasks": args.test_tasks,
        "rows": rows,
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
