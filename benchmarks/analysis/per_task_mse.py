"""Per-task held-out MSE of a trained sinusoid run: how much of a mean is a few blown-up tasks.

The sinusoid benchmark reports the mean MSE over 600 held-out tasks. A method whose adaptation
blows up on one task out of 600 (finite, but 1e6) gets a mean of thousands although it fits the
other 599 well. This script adapts a run's learner on the same held-out tasks and prints, per
step count, the median MSE, the number of tasks above ``--threshold`` (or not finite; the
default, 100, is far above any honest miss on sinusoids of amplitude ≤ 5) and the mean over the
rest. The last line is JSON.

    python benchmarks/analysis/per_task_mse.py benchmarks/results/sinusoid_runs/default/bmaml --setting default
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from pyro_gem import Sinusoid, task_scores
from pyro_gem.config import build_learner
from pyro_gem.modelfile import load_model_file
from pyro_gem.training import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--setting", default="default", choices=["default", "challenging"])
    p.add_argument("--model-file", type=Path, default=ROOT / "models" / "sinusoid.py")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10])
    p.add_argument("--test-tasks", type=int, default=600)
    p.add_argument("--threshold", type=float, default=100.0)
    p.add_argument("--num-samples", type=int, default=20)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    state, config, _ = load_checkpoint(args.run_dir)
    mf = load_model_file(args.model_file, seed=config.get("seed", 0))
    mf.tasks = Sinusoid(args.setting, shots=10)
    learner = build_learner(mf, config)
    learner.load_state_dict(state["learner"])
    tasks = mf.tasks.test_tasks(args.test_tasks)
    per_task = task_scores(
        learner, tasks, args.steps, metrics=Sinusoid().metrics, num_samples=args.num_samples
    )["mse"]
    rows = {}
    for steps, mse in per_task.items():
        ok = torch.isfinite(mse) & (mse <= args.threshold)
        rows[str(steps)] = {
            "median": mse.nanmedian().item(),
            "blown_up": int((~ok).sum()),
            "mean_of_rest": mse[ok].mean().item(),
            "max": mse.max().item(),
        }
        print(f"{steps:>3} steps: " + json.dumps(rows[str(steps)]), flush=True)
    report = {
        "run_dir": str(args.run_dir),
        "setting": args.setting,
        "test_tasks": args.test_tasks,
        "threshold": args.threshold,
        "steps": rows,
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
