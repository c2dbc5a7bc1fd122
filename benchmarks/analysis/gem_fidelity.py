"""How close GEM-BML+'s meta-gradient is to the one a converged inner VI would give.

The Gradient-EM estimate is exact at the true posterior. An inner VI stopped after a few noisy
steps gives a noisy, biased estimate, and the meta-optimiser then follows noise. For a prior (a
checkpoint, or the model file's initial prior) and one fixed batch of tasks, this computes the
batch-mean estimate (ĝ_m, ĝ_s) under several inner-loop configurations, and under a reference
run close to convergence (many small Adam steps, many particles, repeated). For each
configuration it reports:

- ``cos_loc`` / ``cos_log_scale``: cosine of its batch mean with the reference's (mean over
  repeats; 1 is perfect, 0 is no information);
- ``self_cos_loc`` / ``self_cos_log_scale``: cosine between its own repeats (how much is noise:
  high self-cosine with a low reference cosine means bias);
- ``norm_ratio_loc`` / ``norm_ratio_log_scale``: its norm over the reference's;
- ``seconds``: the time of one estimate (both inner runs).

The last line printed is JSON: those numbers per configuration, keyed by a short label.

    python benchmarks/analysis/gem_fidelity.py --checkpoint benchmarks/results/gem_plus_inner_adam_0.2/sinusoid_runs/default/gem-bml+/checkpoint.pt
    python benchmarks/analysis/gem_fidelity.py --quick      # the initial prior, a small reference
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyro
import torch

from pyro_gem.config import build_learner, resolve_config
from pyro_gem.modelfile import load_model_file

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = {"inner_optim": "adam", "inner_lr": 0.02, "inner_steps": 1000, "num_particles": 16}
# Whitened Adam throughout, the model file's GEM-BML+ inner loop when these were measured.
VARIANTS = [
    {"inner_optim": "adam", "inner_lr": 0.2},
    {"inner_optim": "adam", "inner_lr": 0.2, "inner_lr_decay": 0.9, "inner_steps": 20},
    {
        "inner_optim": "adam",
        "inner_lr": 0.2,
        "inner_lr_decay": 0.9,
        "inner_steps": 20,
        "num_particles": 4,
    },
    {"inner_optim": "adam", "inner_lr": 0.1, "inner_lr_decay": 0.95, "inner_steps": 40},
    {"inner_optim": "adam", "inner_lr": 0.1, "inner_steps": 40},
    {"inner_optim": "adam", "inner_lr": 0.05, "inner_steps": 100},
]


def label(variant: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in variant.items()) or "model-file"


def estimates(mf, variant: dict, batch, repeats: int, seed: int) -> tuple[list, float]:
    """``repeats`` batch-mean Gradient-EM estimates ``(ĝ_m, ĝ_s)`` and seconds per estimate."""
    config = resolve_config(mf.config, {"method": "gem-bml+", **variant})
    learner = build_learner(mf, config)
    out, start = [], time.perf_counter()
    for r in range(repeats):
        pyro.set_rng_seed(seed + r)
        support, joint = learner.fit_posteriors(batch)
        g = learner.gradient_em(support, joint, support.finite & joint.finite)
        out.append([x.mean(0) for x in g])
    return out, (time.perf_counter() - start) / repeats


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-file", type=Path, default=ROOT / "models" / "sinusoid.py")
    p.add_argument("--checkpoint", type=Path, help="a training checkpoint (default: no training)")
    p.add_argument("--variants", type=json.loads, help="a JSON list of config overrides")
    p.add_argument("--reference", type=json.loads, default=REFERENCE)
    p.add_argument("--tasks", type=int, default=25)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a smoke run: small reference, 2 variants")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = args.variants if args.variants is not None else VARIANTS
    if args.quick:
        args.reference = {**args.reference, "inner_steps": 20, "num_particles": 2}
        args.tasks, args.repeats = 3, 2
        variants = [{"inner_steps": 2}, {"inner_steps": 2, "inner_lr_decay": 0.5}]

    pyro.set_rng_seed(args.seed)
    mf = load_model_file(args.model_file)
    if args.checkpoint is not None:
        state = torch.load(args.checkpoint, weights_only=True)
        mf.prior.load_state_dict(state["learner"]["prior"])
    batch = mf.tasks.sample(args.tasks, torch.Generator().manual_seed(args.seed + 1))

    reference, ref_seconds = estimates(mf, args.reference, batch, 2, args.seed + 1000)
    ref_mean = [(reference[0][i] + reference[1][i]) / 2 for i in range(2)]
    report = {
        "checkpoint": None if args.checkpoint is None else str(args.checkpoint),
        "prior_scale_median": mf.prior.scale.median().item(),
        "tasks": args.tasks,
        "reference": {
            "config": args.reference,
            "self_cos_loc": cosine(reference[0][0], reference[1][0]),
            "self_cos_log_scale": cosine(reference[0][1], reference[1][1]),
            "seconds": ref_seconds,
        },
        "variants": {},
    }
    for variant in variants:
        reps, seconds = estimates(mf, variant, batch, args.repeats, args.seed + 2000)
        row: dict = {"config": variant, "seconds": seconds}
        for i, part in enumerate(("loc", "log_scale")):
            row[f"cos_{part}"] = mean([cosine(r[i], ref_mean[i]) for r in reps])
            row[f"self_cos_{part}"] = mean(
                [cosine(a[i], b[i]) for j, a in enumerate(reps) for b in reps[j + 1 :]]
            )
            row[f"norm_ratio_{part}"] = mean(
                [(r[i].norm() / ref_mean[i].norm()).item() for r in reps]
            )
        report["variants"][label(variant)] = row
        print(
            f"{label(variant):>60}: "
            + json.dumps({k: round(v, 3) for k, v in row.items() if k != "config"}),
            flush=True,
        )
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
