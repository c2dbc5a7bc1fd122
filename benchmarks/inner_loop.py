"""Inner-loop speed: one Pyro SVI per task vs pyro_gem's task-vectorised SVI vs hand-written torch.

T sinusoid tasks, K shots, S inner steps of AutoNormal VI (whitened, analytic KL, Adam) on the
MLP 1-40-40-1. Times (medians over repeats, one process):

(a) ``loop``: pyro_gem's inner VI run on one task at a time, in a Python loop (the same lean
    ELBO and whitening, so the ratio a/b measures vectorisation alone); ``plain_pyro_loop`` is
    also reported: stock ``SVI`` + ``AutoNormal`` + ``TraceMeanField_ELBO`` per task, what a user
    would write without pyro_gem;
(b) ``vectorized``: pyro_gem's inner VI on all T tasks at once (one SVI over a ``tasks`` plate);
(c) ``floor``: a hand-written batched-torch loop doing the same ELBO steps.

The last line is JSON: ``{"vectorized_speedup": a/b, "overhead_vs_floor": b/c, ...}``.

    python benchmarks/inner_loop.py [--tasks 25] [--shots 10] [--steps 20] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal

from pyro_gem import InnerVI, Sinusoid
from pyro_gem.modelfile import load_model_file

ROOT = Path(__file__).resolve().parents[1]


def floor_inner_vi(prior, x, y, steps, lr, noise):
    """Hand-written batched VI: the same whitened, analytic-KL ELBO steps, no Pyro."""
    fnet = prior.net
    m, sigma = prior.loc.detach(), prior.scale.detach()
    num_tasks = x.shape[0]
    u_loc = torch.zeros(num_tasks, fnet.num_weights, requires_grad=True)
    # softplus⁻¹(1): the guide starts at the prior (u ~ N(0, 1)), as AutoNormal's scale does.
    u_raw = torch.full((num_tasks, fnet.num_weights), 0.5413248538970947, requires_grad=True)
    opt = torch.optim.Adam([u_loc, u_raw], lr=lr)
    shapes = [(n, s) for n, s in zip(fnet.names, fnet.shapes, strict=True)]
    for _ in range(steps):
        u_scale = F.softplus(u_raw)
        u = u_loc + u_scale * torch.randn_like(u_loc)
        theta = m + sigma * u
        params = dict(zip(fnet.names, torch.split(theta, fnet.sizes, dim=-1), strict=True))
        h = x
        for i, layer in enumerate(("0", "2", "4")):
            w = params[f"{layer}.weight"].reshape(num_tasks, *shapes[2 * i][1])
            b = params[f"{layer}.bias"]
            h = torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))
            if layer != "4":
                h = torch.relu(h)
        loglik = torch.distributions.Normal(h.squeeze(-1), noise).log_prob(y).sum()
        kl = 0.5 * (u_loc.square() + u_scale.square() - 1).sum() - u_scale.log().sum()
        loss = kl - loglik
        opt.zero_grad()
        loss.backward()
        opt.step()
    return u_loc.detach()


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=25)
    p.add_argument("--shots", type=int, default=10)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pyro.set_rng_seed(0)
    mf = load_model_file(ROOT / "models" / "sinusoid.py")
    prior, model = mf.prior, mf.model
    batch = Sinusoid(shots=args.shots).sample(args.tasks, torch.Generator().manual_seed(0))
    x, y = batch.support
    vi = InnerVI(optim=pyro.optim.Adam({"lr": 0.1}), steps=args.steps)
    start = (prior.loc.detach(), prior.scale.detach())
    nesting = 1

    def loop():
        for t in range(args.tasks):
            vi.fit(model, prior.name, (x[t : t + 1], y[t : t + 1]), start, nesting=nesting)

    def plain_pyro_loop():
        for t in range(args.tasks):
            xt, yt = x[t], y[t]
            with pyro.get_param_store().scope():
                guide = AutoNormal(model, init_scale=prior.scale.median().item())
                svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), TraceMeanField_ELBO())
                for _ in range(args.steps):
                    svi.step(xt, yt)

    def vectorized():
        vi.fit(model, prior.name, (x, y), start, nesting=nesting)

    def floor():
        floor_inner_vi(prior, x, y, args.steps, 0.1, mf.module.noise)

    for fn in (vectorized, floor, loop, plain_pyro_loop):  # warm-up
        fn()
    a = median_time(loop, max(1, args.repeats // 2))
    plain = median_time(plain_pyro_loop, max(1, args.repeats // 2))
    b = median_time(vectorized, args.repeats)
    c = median_time(floor, args.repeats)
    result = {
        "vectorized_speedup": a / b,
        "overhead_vs_floor": b / c,
        "speedup_vs_plain_pyro_loop": plain / b,
        "loop_s": a,
        "plain_pyro_loop_s": plain,
        "vectorized_s": b,
        "floor_s": c,
        "tasks": args.tasks,
        "shots": args.shots,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
