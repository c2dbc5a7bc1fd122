"""One point of the inner-VI sweep: GEM-BML(+) on sinusoid with a given inner optimiser setting.

Meta-trains on the default sinusoid setting with ``models/sinusoid.py`` and overrides, and every
fifth of the run meta-tests on 100 held-out tasks. Prints one JSON line per evaluation (MSE after
0/1/5/10 inner steps, 90% coverage, median prior scale σ, diverged tasks); the last line is the
final one. The README's inner-VI table comes from runs of this script.

    python benchmarks/analysis/inner_vi_sweep.py inner_optim=adam inner_lr=0.2 inner_steps=20 meta_iterations=3000
    python benchmarks/analysis/inner_vi_sweep.py inner_optim=sgd inner_lr=0.3 learn_scale=0

Keys: any option of ``pyro_gem.config.DEFAULTS`` plus ``noise`` (likelihood sd), ``init_scale``,
``whiten`` (0/1), ``learn_scale`` (0 keeps σ fixed: only the prior mean is meta-learned),
``adam_eps`` (the inner Adam's ε) and ``threads``.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import pyro
import torch

from pyro_gem import meta_test
from pyro_gem.config import build_learner, load_seeded, resolve_config
from pyro_gem.training import train

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> dict:
    mf = load_seeded(ROOT / "models" / "sinusoid.py")
    config = resolve_config(mf.config)
    extra = {
        "noise": mf.module.noise,
        "init_scale": 0.01,
        "whiten": 1,
        "learn_scale": 1,
        "adam_eps": 1e-8,
        "threads": 1,
    }
    for item in argv:
        key, value = item.split("=", 1)
        if key in extra:
            extra[key] = type(extra[key])(float(value)) if key != "whiten" else int(value)
        elif key in config:
            default = config[key]
            config[key] = value if isinstance(default, str) else type(default or 0)(float(value))
        else:
            raise SystemExit(f"unknown key {key!r}")
    torch.set_num_threads(int(extra["threads"]))
    mf.module.noise = extra["noise"]
    with torch.no_grad():
        mf.prior.log_scale.fill_(torch.tensor(extra["init_scale"]).log())
    learner = build_learner(mf, config)
    learner.inner.whiten = bool(extra["whiten"])
    if extra["adam_eps"] != 1e-8:
        # Adam's ε as a noise floor: gradients well below it move a weight like SGD with step
        # lr / ε instead of by about lr, so weights the data barely inform stop random-walking.
        # This replaces the learner's inner optimiser, so it cannot also carry a step decay.
        if config["inner_optim"] != "adam" or float(config["inner_lr_decay"]) != 1.0:
            raise SystemExit("adam_eps needs inner_optim=adam and no inner_lr_decay")
        learner.inner.optim = pyro.optim.Adam({"lr": config["inner_lr"], "eps": extra["adam_eps"]})
    if not extra["learn_scale"]:
        learner.meta_optim = torch.optim.Adam([mf.prior.loc], lr=config["meta_lr"])
    pyro.set_rng_seed(config["seed"])
    heldout = mf.tasks.test_tasks(100)
    total, every = int(config["meta_iterations"]), max(1, int(config["meta_iterations"]) // 5)
    start, line = time.perf_counter(), {}
    for done in range(every, total + 1, every):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            history = train(
                learner,
                mf.tasks,
                meta_iterations=every,
                meta_batch=config["meta_batch"],
                seed=config["seed"] + done,
                eval_every=0,
                progress=False,
            )
        scores = meta_test(
            learner, heldout, (0, 1, 5, 10), metrics=mf.tasks.metrics, num_samples=50
        )
        line = {
            "args": argv,
            "iteration": done,
            "seconds": round(time.perf_counter() - start),
            "mse": {k: round(v[0], 3) for k, v in scores["mse"].items()},
            "coverage90": round(scores["coverage90"]["10"][0], 3),
            "sigma_median": round(learner.prior.scale.median().item(), 4),
            "diverged_in_training": sum(len(h["nan_tasks"]) for h in history),
        }
        print(json.dumps(line), flush=True)
    return line


if __name__ == "__main__":
    main(sys.argv[1:])
