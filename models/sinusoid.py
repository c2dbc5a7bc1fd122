"""Sinusoid regression (MAML's benchmark) as a pyro_gem model file.

A model file defines, at module level, ``prior`` (a :class:`pyro_gem.GaussianPrior` over the
network's weights), ``model(*inputs, y=None)`` (one task's Pyro model, drawing the weights from
``prior``), ``tasks`` (a task family with ``sample(num_tasks, generator)`` and
``test_tasks(num_tasks)``) and optionally ``config`` (default options, overridden by CLI flags).

Train it with ``pyro-gem train models/sinusoid.py``. Why each setting: docs/sinusoid.md,
"Settings in models/sinusoid.py and why".
"""

import pyro
import pyro.distributions as dist
from torch import nn

from pyro_gem import GaussianPrior
from pyro_gem.tasks import Sinusoid

net = nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))
prior = GaussianPrior(net, init_scale=0.01)
noise = 0.3  # likelihood standard deviation of y
MAML_LR = 0.01 * 2 * noise**2 / 10  # MAML's α = 0.01 on the MSE, in log-likelihood units
GEM_META_LR_MILESTONES = [5000, 20000]  # meta rate ×0.1 at each (GEM-BML and the KL-chaser)
# GEM-BML+'s prior starts at σ₀ = 0.1: wide enough to adapt as far as MAML's steps do (0.01 and
# 0.03 are too tight, docs/sinusoid.md); its whitened SGD step α/σ₀² moves θ by MAML's α.
GEM_PLUS_SIGMA0 = 0.1


def model(x, y=None):
    """One task: y_i ~ N(f_θ(x_i), noise²) with θ ~ prior. ``x``: (N, 1); ``y``: (N,)."""
    f = prior.sample_net()  # one weight set per task, drawn outside the data plate
    mean = pyro.deterministic("mean", f(x).squeeze(-1))
    with pyro.plate("data", x.shape[-2], dim=-1):
        pyro.sample("y", dist.Normal(mean, noise), obs=y)


tasks = Sinusoid("default", shots=10)

config = {
    "method": "gem-bml+",
    "meta_iterations": 1500,
    "meta_batch": 25,
    "meta_lr": 1e-3,
    "inner_optim": "adam",  # in prior-whitened coordinates: θ = m + σ u
    "inner_lr": 0.2,
    "inner_steps": 20,
    # Per-method settings (pyro-gem train --method maml ...); history in docs/sinusoid.md.
    "methods": {
        # Meta rate ×0.1 at the milestones: at a constant rate the noisy GEM estimate lets the
        # prior random-walk once the signal is learned.
        "gem-bml": {"meta_lr_milestones": GEM_META_LR_MILESTONES},
        # One support and one query step of whitened SGD at MAML's step in θ (the delta limit
        # of this is first-order MAML), from a guide a tenth of the prior's scale; σ meta-learnt
        # ten times slower than m (unconverged posteriors bias it upwards), at a constant rate.
        "gem-bml+": {
            "prior_init_scale": GEM_PLUS_SIGMA0,
            "inner_optim": "sgd",
            "inner_lr": MAML_LR / GEM_PLUS_SIGMA0**2,
            "inner_steps": 1,
            "query_steps": 1,
            "guide_init_scale": 0.1,
            "meta_lr_scale": 1e-4,
        },
        # MAML's own setting: one SGD step of α (Reptile: five).
        "maml": {"inner_optim": "sgd", "inner_lr": MAML_LR, "inner_steps": 1},
        "fomaml": {"inner_optim": "sgd", "inner_lr": MAML_LR, "inner_steps": 1},
        "reptile": {"inner_optim": "sgd", "inner_lr": MAML_LR, "inner_steps": 5},
        # Fine-tuning at meta-test by MAML's steps.
        "pretrain": {"inner_optim": "sgd", "inner_lr": MAML_LR, "inner_steps": 1},
        # Proximal Newton-CG, λ = 10 on the log-likelihood: SGD inner steps let iMAML's m move
        # where they are unstable, and λ = 10 was best of the pilots.
        "imaml": {"inner_optim": "newton", "inner_steps": 5, "cg_steps": 10, "reg": 10.0},
        # SGD on AutoNormal's whitened parameters, backpropagated; 0.1 because 0.3 turned
        # unstable late in the 40,000-iteration runs.
        "abml": {"inner_optim": "sgd", "inner_lr": 0.1, "inner_steps": 10},
        "abml+": {"inner_optim": "sgd", "inner_lr": 0.1, "inner_steps": 10},
        # As ABML's (0.3 made tasks NaN), plus GEM-BML+'s meta schedule: a constant rate
        # collapsed late, and the two then differ only in the estimator and inner optimiser.
        "kl-chaser": {
            "inner_optim": "sgd",
            "inner_lr": 0.1,
            "inner_steps": 10,
            "meta_lr_milestones": GEM_META_LR_MILESTONES,
        },
        # SVGD with 5 particles, one step of 3 × MAML's: MAML's own step barely moves them,
        # larger ones blow up on some tasks over ten steps.
        "bmaml": {
            "inner_optim": "sgd",
            "inner_lr": 3 * MAML_LR,
            "inner_steps": 1,
            "num_particles": 5,
        },
    },
}
