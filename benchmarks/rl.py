"""Meta-RL benchmarks (the paper's Fig. 3 and MAML's Fig. 5): GEM-BML+, GEM-BML, MAML (TRPO
meta-update) and Reptile on 2D navigation and MuJoCo locomotion, same seeds, tasks and policy.

Each method meta-trains in its own resumable run directory (``rl_runs/ENV/METHOD``), then is
meta-tested on 40 held-out tasks: the average return after 0, 1, 2 and 3 inner updates of 40
fresh rollouts each. Writes ``benchmarks/results/rl.json``
(``{"settings", "results": {ENV: {METHOD: {"return": {"0".."3": [mean, ci95]}, ...}}}}``) and
``rl_<ENV>.png`` (return against inner updates).

``--sampler-speed`` measures the batched rollout sampler against a plain gymnasium loop (one
environment at a time, the policy evaluated per step) on the same tasks; ``--cost`` measures a
meta-iteration's time and peak memory of GEM-BML+ and MAML at 1 and 5 inner updates.

Usage::

    python benchmarks/rl.py --envs navigation                      # the paper's budget
    python benchmarks/rl.py --envs halfcheetah_vel --meta-iterations 50 --meta-batch 10 --rollouts 10
    python benchmarks/rl.py --envs halfcheetah_vel --full          # MAML's budget, a big machine
    python benchmarks/rl.py --sampler-speed
    python benchmarks/rl.py --cost
    python benchmarks/rl.py --table
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from fewshot import check_resumable  # noqa: E402

from pyro_gem.config import build_learner, load_seeded, resolve_config  # noqa: E402
from pyro_gem.diagnostics import plot_returns  # noqa: E402
from pyro_gem.evaluation import rollout_meta_test  # noqa: E402
from pyro_gem.rl import action_distribution  # noqa: E402
from pyro_gem.training import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENVS = ("navigation", "halfcheetah_vel", "halfcheetah_dir", "ant_vel", "ant_dir")
METHODS = ("gem-bml+", "gem-bml", "maml", "reptile")
#: MAML's 2D-navigation results (Finn et al. 2017, 40 held-out goals), the bar for our MAML.
MAML_NAVIGATION = {"0": -40.4, "1": -11.7, "2": -3.3, "3": -3.2}


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_one(env: str, method: str, args) -> dict:
    """Meta-train ``method`` on ``env`` (resuming its run directory), then meta-test it."""
    given = {} if args.rollouts is None else {"rollouts": args.rollouts}
    mf = load_seeded(ROOT / "models" / f"{env}.py", args.seed, given)
    overrides = {"method": method, "seed": args.seed}
    if not args.full:
        overrides["meta_iterations"] = args.meta_iterations
        overrides["meta_batch"] = args.meta_batch
    config = resolve_config(mf.config, overrides)
    config["settings"] = mf.settings
    learner = build_learner(mf, config)
    run_dir = args.out / ("rl_quick_runs" if args.quick else "rl_runs") / env / method
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
        meta_lr_milestones=config["meta_lr_milestones"],
        meta_lr_gamma=config["meta_lr_gamma"],
        config=config,
        progress=not args.no_progress,
    )
    tick = time.perf_counter()
    scores = rollout_meta_test(
        learner,
        mf.tasks.test_tasks(args.test_tasks),
        updates=(0, 1, 2, 3),
        seed=args.seed,
        later_step_scale=args.later_step_scale,
    )
    timed = [h["seconds"] for h in history]
    return {
        "return": scores["return"],
        "diverged": scores["diverged"],
        "test_tasks": scores["num_tasks"],
        "test_rollouts": mf.tasks.test_rollouts,
        "meta_iterations": len(history),
        "meta_batch": config["meta_batch"],
        "rollouts": mf.tasks.rollouts,
        "horizon": mf.tasks.sampler.horizon,
        "seconds_per_iteration": statistics.median(timed) if timed else None,
        "meta_test_seconds": time.perf_counter() - tick,
        "training_returns": [
            [h["iteration"], h.get("return_support"), h.get("return_query")] for h in history
        ],
        "config": {
            k: config.get(k)
            for k in ("inner_optim", "inner_lr", "inner_steps", "meta_lr", "meta_update", "update")
        },
        "settings": mf.settings,
        "run_dir": _shown(run_dir),
    }


def sampler_speed(env: str, num_tasks: int, rollouts: int, seed: int = 0) -> dict:
    """Environment steps per second of one meta-batch's rollouts: the batched sampler against a
    plain gymnasium loop over the same tasks (one environment at a time, the policy evaluated
    on each observation as it comes), the same policy weights."""
    mf = load_seeded(ROOT / "models" / f"{env}.py", seed)
    sampler = mf.tasks.sampler
    tasks = sampler.sample_tasks(num_tasks, np.random.default_rng(seed))
    theta = mf.prior.loc.detach().expand(num_tasks, -1)
    sampler.sample(tasks, theta, rollouts, torch.Generator().manual_seed(seed))  # warm up
    tick = time.perf_counter()
    batched = sampler.sample(tasks, theta, rollouts, torch.Generator().manual_seed(seed))
    batched_rate = batched.num_steps / (time.perf_counter() - tick)
    policy = mf.prior.net.module  # the same network with the prior mean's weights
    torch.nn.utils.vector_to_parameters(mf.prior.loc.detach(), policy.parameters())
    env_obj = gym.make(sampler.env_id)
    gen = torch.Generator().manual_seed(seed)
    steps, tick = 0, time.perf_counter()
    for t, task in enumerate(tasks):
        env_obj.unwrapped.set_task(task)
        for k in range(rollouts):
            obs, _ = env_obj.reset(seed=seed + 1000 * t + k)
            done = False
            while not done:
                with torch.no_grad():
                    out = policy(torch.as_tensor(obs, dtype=torch.float32))
                    dist = action_distribution(out)
                    noise = torch.randn(dist.base_dist.loc.shape, generator=gen)
                    action = (dist.base_dist.loc + dist.base_dist.scale * noise).numpy()
                obs, _, terminated, truncated, _ = env_obj.step(action)
                steps += 1
                done = terminated or truncated
    plain_rate = steps / (time.perf_counter() - tick)
    return {
        "tasks": num_tasks,
        "rollouts": rollouts,
        "batched_steps_per_second": batched_rate,
        "plain_steps_per_second": plain_rate,
        "speedup": batched_rate / plain_rate,
    }


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cost_worker(env: str, method: str, steps: int, meta_batch: int, rollouts: int) -> dict:
    """One process: a meta-iteration of ``method`` with ``steps`` inner updates (its time, and
    the peak resident memory it added)."""
    mf = load_seeded(ROOT / "models" / f"{env}.py", 0, {"rollouts": rollouts})
    overrides = {"method": method, "inner_steps": steps, "meta_batch": meta_batch}
    if method.startswith("gem"):
        # the same total step as one update of 1, split into ``steps`` steps
        overrides["inner_lr"] = 1.0 / steps
    learner = build_learner(mf, resolve_config(mf.config, overrides))
    gen = torch.Generator().manual_seed(0)
    before = _peak_rss_mib()  # the process's high-water mark before any meta-iteration
    learner.step(mf.tasks.sample(meta_batch, gen))  # warm up
    tick = time.perf_counter()
    learner.step(mf.tasks.sample(meta_batch, gen))
    return {"seconds": time.perf_counter() - tick, "peak_mib_added": _peak_rss_mib() - before}


def cost(args) -> dict:
    out = {}
    for method in ("gem-bml+", "maml"):
        for steps in (1, 5):
            cmd = [sys.executable, __file__, "--cost-worker", args.cost_env, method, str(steps)]
            cmd += [str(args.meta_batch), str(args.rollouts or 20)]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if done.returncode:
                raise SystemExit(done.stderr[-3000:])
            out[f"{method}/{steps}"] = json.loads(done.stdout.strip().splitlines()[-1])
            print(method, steps, out[f"{method}/{steps}"], flush=True)
    return out


def markdown_table(report: dict) -> str:
    lines = [
        "| environment | method | 0 updates | 1 | 2 | 3 | budget |",
        "|---|---|---|---|---|---|---|",
    ]
    for env, per_method in report["results"].items():
        for method, r in per_method.items():
            cells = [f"{r['return'][u][0]:.1f} ± {r['return'][u][1]:.1f}" for u in "0123"]
            budget = (
                f"{r['meta_iterations']} × {r['meta_batch']} tasks × {r['rollouts']} rollouts, "
                f"H {r['horizon']}"
            )
            lines.append(f"| {env} | {method} | {' | '.join(cells)} | {budget} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--envs", nargs="+", choices=ENVS, help="default: navigation (--sampler-speed: all)"
    )
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 iterations, 2 tasks")
    p.add_argument("--full", action="store_true", help="the model files' (the papers') budget")
    p.add_argument("--meta-iterations", type=int, default=500)
    p.add_argument("--meta-batch", type=int, default=20)
    p.add_argument("--rollouts", type=int, help="rollouts per task (the model file's: 20)")
    p.add_argument("--test-tasks", type=int, default=40)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-tasks", type=int, default=20)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--later-step-scale",
        type=float,
        default=1.0,
        help="meta-test with the inner step of updates 2 and 3 scaled so (MAML's test: 0.5); "
        "recorded beside the result as return_later_step_<scale>",
    )
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--table", action="store_true", help="print rl.json as Markdown")
    p.add_argument("--sampler-speed", action="store_true")
    p.add_argument("--cost", action="store_true")
    p.add_argument("--cost-env", default="navigation", choices=ENVS)
    p.add_argument("--cost-worker", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cost_worker:
        env, method, steps, meta_batch, rollouts = args.cost_worker
        print(json.dumps(cost_worker(env, method, int(steps), int(meta_batch), int(rollouts))))
        return {}
    name = "rl_quick" if args.quick else "rl"
    path = args.out / f"{name}.json"
    if args.table:
        print(markdown_table(json.loads(path.read_text())))
        return {}
    args.out.mkdir(parents=True, exist_ok=True)
    if args.sampler_speed:
        envs = args.envs or ENVS
        rollouts = args.rollouts or (2 if args.quick else 20)
        num_tasks = 2 if args.quick else args.meta_batch
        speeds = {e: sampler_speed(e, num_tasks, rollouts, args.seed) for e in envs}
        for e, s in speeds.items():
            print(e, {k: round(v, 1) for k, v in s.items()}, flush=True)
        (args.out / f"{name}_sampler_speed.json").write_text(json.dumps(speeds, indent=1))
        summary = {"sampler_speedup": min(s["speedup"] for s in speeds.values())}
        summary.update({f"{e}/sampler_speedup": s["speedup"] for e, s in speeds.items()})
        print(json.dumps(summary))
        return summary
    if args.cost:
        costs = cost(args)
        (args.out / f"{name}_cost_{args.cost_env}.json").write_text(json.dumps(costs, indent=1))
        summary = {
            "gem_over_maml_seconds_1": costs["gem-bml+/1"]["seconds"] / costs["maml/1"]["seconds"],
            "gem_over_maml_seconds_5": costs["gem-bml+/5"]["seconds"] / costs["maml/5"]["seconds"],
        }
        print(json.dumps(summary))
        return summary
    if args.quick:
        args.meta_iterations, args.meta_batch, args.test_tasks = 2, 2, 2
        args.rollouts, args.eval_every, args.checkpoint_every = args.rollouts or 2, 0, 1
    report = json.loads(path.read_text()) if path.is_file() else {"results": {}}
    report["settings"] = {
        "seed": args.seed,
        "test_updates": [0, 1, 2, 3],
        "reference": {"maml_navigation": MAML_NAVIGATION},
        # Each result records its own budget: meta_iterations, meta_batch, rollouts, horizon.
    }
    summary = {}
    for env in args.envs or ["navigation"]:
        for method in args.methods:
            result = run_one(env, method, args)
            if path.is_file():  # another process may have written other results since
                report["results"] = json.loads(path.read_text())["results"]
            entries = report["results"].setdefault(env, {})
            if args.later_step_scale != 1.0:  # beside the same-step meta-test, not instead
                key = f"return_later_step_{args.later_step_scale:g}"
                entries[method] = {**entries.get(method, {}), key: result["return"]}
            else:
                entries[method] = {**entries.get(method, {}), **result}
            path.write_text(json.dumps(report, indent=1))
            returns = result["return"]
            summary[f"{env}/{method}/return_0"] = returns["0"][0]
            summary[f"{env}/{method}/return_1"] = returns["1"][0]
            print(
                f"{env} {method}: return "
                + ", ".join(f"{u}: {m:.2f} ± {c:.2f}" for u, (m, c) in returns.items()),
                flush=True,
            )
        plot_returns(
            {m: r["return"] for m, r in report["results"][env].items()},
            args.out / f"{name}_{env}.png",
            title=f"{env}: return after inner updates",
        )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
