"""Does GEM-BML+'s estimator hold a good prior? Train GEM-BML+ from another run's learned prior.

The KL-chaser learns its prior with GEM-BML+'s objective, posterior family and meta schedule, but
backpropagates through the inner VI instead of applying the Gradient-EM estimator; its prior,
adapted to convergence, is better than GEM-BML+'s (``converged_adaptation.py``). This script
starts GEM-BML+ from such a prior (``--start``: any run directory whose checkpoint holds a
Gaussian prior) and meta-trains it with the model file's GEM-BML+ inner loop at a constant meta
learning rate. At each of ``--at`` it reports the held-out MSE after the training's inner steps
and after ``--converged-steps`` steps of a slow, decaying inner VI (near convergence). If the
prior stays good, the estimator's fixed point is as good a prior as the KL-chaser's; if it
drifts back towards GEM-BML+'s own level, the estimate from the short inner run is biased away
from it.

    python benchmarks/analysis/prior_drift.py --start benchmarks/results/sinusoid_runs/default/kl-chaser \\
        --meta-lr 1e-4 --at 0 1000 2000
    python benchmarks/analysis/prior_drift.py --quick

The last line is JSON: one row per iteration of ``--at``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pyro
import torch

from pyro_gem import Sinusoid, meta_test
from pyro_gem.config import build_learner, load_seeded, resolve_config
from pyro_gem.training import train

ROOT = Path(__file__).resolve().parents[2]
SLOW_INNER = {"inner_optim": "adam", "inner_lr": 0.1, "inner_lr_decay": 0.99}


def _scores(learner, tasks, steps: list[int], seed: int) -> dict:
    pyro.set_rng_seed(seed)
    scores = meta_test(learner, tasks, steps, metrics=Sinusoid().metrics, num_samples=50)
    coverage = scores["coverage90"][str(max(steps))][0]  # after the most steps
    return {"mse": scores["mse"], "coverage90": coverage, "diverged": scores["diverged"]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-file", type=Path, default=ROOT / "models" / "sinusoid.py")
    p.add_argument("--start", type=Path, help="run directory whose prior GEM-BML+ starts from")
    p.add_argument("--meta-lr", type=float, default=1e-4, help="constant meta-Adam rate")
    p.add_argument("--at", type=int, nargs="+", default=[0, 1000, 2000], help="iterations")
    p.add_argument("--converged-steps", type=int, default=300)
    p.add_argument("--test-tasks", type=int, default=200)
    p.add_argument("--out", type=Path, help="run directory for the training (default: temporary)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="the initial prior, few tasks and steps")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.start, args.at, args.test_tasks, args.converged_steps = None, [0, 2], 8, 5
    at = sorted(set(args.at))
    if at[0] < 0:
        p.error(f"--at: iterations must be >= 0, got {at[0]}")

    mf = load_seeded(args.model_file, args.seed)
    if args.start is not None:
        state = torch.load(args.start / "checkpoint.pt", weights_only=True)
        mf.prior.load_state_dict(state["learner"]["prior"])
    config = resolve_config(
        mf.config, {"method": "gem-bml+", "meta_lr": args.meta_lr, "seed": args.seed}
    )
    config["meta_lr_milestones"] = []
    learner = build_learner(mf, config)
    # The near-convergence evaluation: whitened Adam, slow and decaying, over the same prior
    # (converged_adaptation.py's inner loop, whatever the model file's GEM-BML+ adapts by).
    converged = build_learner(mf, {**config, **SLOW_INNER})
    tasks = mf.tasks.test_tasks(args.test_tasks)
    start_loc = mf.prior.loc.detach().clone()
    train_steps = [10, config["inner_steps"]]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        for iteration in at:
            if iteration > 0:
                train(
                    learner,
                    mf.tasks,
                    meta_iterations=iteration,
                    meta_batch=config["meta_batch"],
                    seed=args.seed,
                    out_dir=out,
                    resume=True,
                    config=config,
                    progress=False,
                )
            row = {
                "iteration": iteration,
                "prior_scale_median": mf.prior.scale.median().item(),
                # How far the prior mean moved from the start, relative to its size.
                "loc_moved": ((mf.prior.loc - start_loc).norm() / start_loc.norm()).item(),
                "training_loop": _scores(learner, tasks, train_steps, args.seed),
                "converged": _scores(converged, tasks, [args.converged_steps], args.seed),
            }
            rows.append(row)
            mse = {k: round(v[0], 3) for k, v in row["training_loop"]["mse"].items()}
            conv = round(row["converged"]["mse"][str(args.converged_steps)][0], 3)
            print(
                f"iteration {iteration}: σ {row['prior_scale_median']:.4g}, training loop {mse}, "
                f"{args.converged_steps} slow steps {conv}",
                flush=True,
            )
    report = {
        "start": None if args.start is None else str(args.start),
        "method": "gem-bml+",
        "meta_lr": args.meta_lr,
        # The model file's GEM-BML+ inner loop, which trains the prior and scores "training_loop".
        "training_inner": {
            k: config[k] for k in ("inner_optim", "inner_lr", "inner_lr_decay", "inner_steps")
        },
        "converged_inner": {**SLOW_INNER, "whitened": True},
        "test_tasks": args.test_tasks,
        "rows": rows,
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
