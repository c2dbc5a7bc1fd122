"""The plain MAML reference: a straightforward torch.func MAML, and pyro_gem's MAML beside it.

The reference is what anyone would write in 40 lines (vmap over tasks, functional_call, MSE loss,
K SGD steps at α, Adam on the initialisation). pyro_gem's MAML runs the same algorithm on the
user's Pyro model (Gaussian log-likelihood, step α·2s²/K). Both train on the same task stream for
the same number of iterations; the script reports time per meta-iteration and held-out MSE after
1, 5 and 10 steps (600 tasks). The last line is JSON.

    python benchmarks/maml_reference.py --meta-iterations 2000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from pyro_gem import Sinusoid, meta_test
from pyro_gem.config import build_learner, resolve_config
from pyro_gem.evaluation import mean_ci95
from pyro_gem.modelfile import load_model_file

ROOT = Path(__file__).resolve().parents[1]


def reference_maml(tasks, iterations, batch, alpha, steps, meta_lr, seed):
    """Plain MAML with torch.func: returns the network, its initialisation and seconds/iteration."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))
    params = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
    opt = torch.optim.Adam(params.values(), lr=meta_lr)

    def loss(p, x, y):
        return ((functional_call(net, p, (x,)).squeeze(-1) - y) ** 2).mean()

    def adapt(p, x, y, k):
        for _ in range(k):
            g = grad(loss)(p, x, y)
            p = {n: p[n] - alpha * g[n] for n in p}
        return p

    def query_loss(p, xs, ys, xq, yq):
        return loss(adapt(p, xs, ys, steps), xq, yq)

    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(iterations):
        b = tasks.sample(batch, gen)
        losses = vmap(query_loss, in_dims=(None, 0, 0, 0, 0))(params, *b.support, *b.query)
        opt.zero_grad()
        losses.mean().backward()
        opt.step()
    per_iteration = (time.perf_counter() - start) / max(iterations, 1)
    return net, params, adapt, per_iteration


def reference_scores(net, params, adapt, test, ks=(1, 5, 10)):
    """MSE ± 95% CI after each of ``ks`` steps, and the tasks left out as diverged.

    As :func:`pyro_gem.meta_test` does: a task whose predictions are not finite after some step
    count is counted in ``diverged`` and left out of every mean.
    """
    p = {n: v.detach() for n, v in params.items()}
    errors = {}
    for k in ks:
        fit = vmap(lambda xs, ys, k=k: adapt(p, xs, ys, k))(*test.support)
        pred = vmap(lambda q, xq: functional_call(net, q, (xq,)))(fit, test.query[0]).squeeze(-1)
        errors[k] = (pred - test.query[1]).square().mean(1)
    finite = torch.stack([e.isfinite() for e in errors.values()]).all(0)
    scores = {str(k): mean_ci95(e[finite]) for k, e in errors.items()}
    return scores, int((~finite).sum())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--meta-iterations", type=int, default=2000)
    p.add_argument("--setting", default="default")
    p.add_argument("--test-tasks", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = Sinusoid(args.setting)
    test = tasks.test_tasks(args.test_tasks)
    net, params, adapt, ref_time = reference_maml(
        tasks, args.meta_iterations, 25, 0.01, 1, 1e-3, args.seed
    )
    ref, ref_diverged = reference_scores(net, params, adapt, test)

    mf = load_model_file(ROOT / "models" / "sinusoid.py", seed=args.seed)
    mf.tasks = tasks
    learner = build_learner(mf, resolve_config(mf.config, {"method": "maml"}))
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for _ in range(args.meta_iterations):
        learner.step(tasks.sample(25, gen))
    ours_time = (time.perf_counter() - start) / max(args.meta_iterations, 1)
    ours = meta_test(learner, test, (1, 5, 10), metrics=tasks.metrics, num_samples=20)
    result = {
        "setting": args.setting,
        "meta_iterations": args.meta_iterations,
        "reference_mse": ref,
        "reference_diverged": ref_diverged,
        "pyro_gem_maml_mse": ours["mse"],
        "pyro_gem_maml_diverged": ours["diverged"],
        "reference_s_per_iteration": ref_time,
        "pyro_gem_maml_s_per_iteration": ours_time,
        "pyro_gem_vs_reference_time": ours_time / ref_time,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
