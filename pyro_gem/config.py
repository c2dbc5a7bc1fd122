"""A run's options: the defaults, a model file's ``config`` over them, the CLI's flags over that,
and the learner they describe.

Example::

    mf = load_seeded("models/sinusoid.py")
    config = resolve_config(mf.config, {"method": "maml"})    # per-method settings applied
    learner = build_learner(mf, config)
"""

from __future__ import annotations

from pathlib import Path

import torch

from pyro_gem.methods.base import MetaLearner
from pyro_gem.methods.registry import build
from pyro_gem.modelfile import ModelFile, load_model_file

__all__ = ["DEFAULTS", "build_learner", "load_seeded", "resolve_config"]

#: Options a model file's ``config`` may set and the CLI may override.
DEFAULTS = {
    "method": "gem-bml+",
    "meta_iterations": 1500,
    "meta_batch": 25,
    "meta_lr": 1e-3,
    # GEM-BML(+): the meta rate of the prior's log-scale (None: meta_lr). A slow one keeps σ from
    # running away on the upward bias of unconverged posteriors (docs/sinusoid.md).
    "meta_lr_scale": None,
    "meta_lr_milestones": [],
    "meta_lr_gamma": 0.1,
    # MAML's meta-update: "gradient" (the meta-optimiser, Adam) or "trpo" (meta-RL: a trust
    # region of mean KL max_kl on the post-update policy, solved by CG with cg_damping)
    "meta_update": "gradient",
    "max_kl": 0.01,
    "cg_damping": 1e-5,
    "inner_optim": "adam",
    "inner_lr": 0.2,
    "inner_lr_decay": 1.0,
    # GEM-BML(+): the step of the guide's scales where it differs from inner_lr (None: inner_lr)
    "inner_scale_lr": None,
    "inner_steps": 20,
    "query_steps": None,
    "guide": "normal",
    "guide_init_scale": None,  # VI methods: the guide starts at this fraction of the prior scale
    # the prior's initial scale σ₀ for this method (None: the model file's GaussianPrior's)
    "prior_init_scale": None,
    "update": "sequential",
    "num_particles": 1,
    "reg": 1.0,
    "cg_steps": 5,
    "seed": 0,
    # shards per meta-batch when the inner loops run through a runner (--workers / --shards):
    # each shard is seeded on its own, so the layout, not the workers, decides the draws
    "shards": None,
    "test_tasks": 600,
    "test_samples": 100,
    "eval_steps": [0, 1, 5, 10],
    "test_steps": None,  # the inner steps a benchmark reports (None: the learner's own)
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


def build_learner(
    model_file: ModelFile, config: dict, device: torch.device | str | None = None
) -> MetaLearner:
    """The learner a run's options describe, over the model file's model and prior.

    :param model_file: the loaded model file (its ``model`` and ``prior``).
    :param config: the run's resolved options (``method`` and the method's settings).
    :param device: where the prior (and so the learner) lives, e.g. ``"cuda"``; the prior's own
        device if omitted. Training and meta-testing move each batch of tasks there.
    """
    if device is not None:
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: no CUDA device is available here")
        model_file.prior.to(device)  # before the optimisers take its parameters
    return build(config["method"], model_file.model, model_file.prior, config)


def load_seeded(path: Path, seed: int | None = None, settings: dict | None = None):
    """Load a model file with the random state seeded first.

    A model file builds its network when it runs, and the prior starts from the network's own
    initialisation: without a seed, every process would start a run from different weights. The
    seed is ``seed`` (the CLI's), else the file's ``config["seed"]``, else the default; a file
    that sets its own seed is run twice, the second time under that seed.

    :param settings: the model file's settings (``--set``; see :func:`pyro_gem.settings`).
    """
    first = DEFAULTS["seed"] if seed is None else seed
    mf = load_model_file(path, seed=first, settings=settings)
    wanted = resolve_config(mf.config, {"seed": seed})["seed"]
    return mf if wanted == first else load_model_file(path, seed=wanted, settings=settings)
