"""Sinusoid regression (MAML's benchmark) as a pyro_gem model file.

A model file defines, at module level:

- ``prior``: a :class:`pyro_gem.GaussianPrior` over the network's weights;
- ``model(*inputs, y=None)``: one task's Pyro model, drawing the weights from ``prior``;
- ``tasks``: a task family with ``sample(num_tasks, generator)`` and ``test_tasks(num_tasks)``;
- ``config`` (optional): default training options, overridden by the CLI's flags.

Train it with ``pyro-gem train models/sinusoid.py``.
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
GEM_META_LR_MILESTONES = [5000, 20000]  # meta rate ×0.1 at each (GEM-BML(+) and the KL-chaser)


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
    # Per-method settings (pyro-gem train --method maml ...). MAML's step of 0.01 on the mean
    # squared error of K = 10 points is 0.01 * 2 * noise**2 / 10 on the log-likelihood.
    "methods": {
        # Gradient-EM's estimate is noisy per iteration and Adam turns noise into steps of about
        # its learning rate: at a constant 1e-3 the prior random-walks away once the signal is
        # learned (held-out MSE 0.42 at 6,000 iterations, 1.17 at 17,000). A step schedule.
        "gem-bml": {"meta_lr_milestones": GEM_META_LR_MILESTONES},
        # GEM-BML+ adapts by whitened SGD: Gradient-EM does not care which optimiser fits the
        # posteriors, and 20 SGD steps learn a better prior than Adam 0.2 (40,000 iterations at
        # SGD 0.05: held-out MSE after 10 steps 0.30 default, against Adam's 0.70) at under half
        # the time per iteration; plain SGD does not turn gradient noise into steps of lr. A step
        # of 0.05 is at the edge of stability where the prior's scale is large (σ up to 1.7 on a
        # few weights: σ²-scaled curvature): on its own 40,000-iteration priors 0.03 adapts
        # better (10 steps: default 0.20 against 0.33, challenging 1.44 against 1.59 with 5 of
        # 600 tasks diverged; benchmarks/results/gem_plus_inner_sgd_0.05/). Even at 0.03 a few
        # tasks nearly diverge (challenging 2.16 +- 0.78 after 10 steps, a heavy tail), so each
        # task's step is cut to norm 1 (one prior σ): on the 0.03 runs' priors that adapts
        # better after 10 steps (default 0.21 against 0.29) and 20 (challenging 1.36 against 1.60);
        # trained with it for 40,000 iterations: 0.250 / 1.94 after 10 steps (plain: 0.272 / 2.16).
        "gem-bml+": {
            "meta_lr_milestones": GEM_META_LR_MILESTONES,
            "inner_optim": "clipped-sgd",
            "inner_lr": 0.03,
        },
        "maml": {"inner_optim": "sgd", "inner_lr": MAML_LR, "inner_steps": 1},
        "fomaml": {"inner_optim": "sgd", "inner_lr": MAML_LR, "inner_steps": 1},
        "reptile": {"inner_optim": "sgd", "inner_lr": MAML_LR, "inner_steps": 5},
        # Fine-tuning at meta-test by MAML's steps.
        "pretrain": {"inner_optim": "sgd", "inner_lr": MAML_LR, "inner_steps": 1},
        # Proximal Newton-CG, λ = 10 on the log-likelihood (0.18 on the mean squared error).
        # Five SGD steps of MAML's α (λ = 100) diverged after ~2,000 iterations: iMAML's m moved
        # where that step is unstable. 5,000-iteration pilots, MSE after 10 steps: Newton λ = 10
        # 0.61, λ = 30 0.81, λ = 100 1.29; inner Adam 1e-3 × 20 3.1, 3e-3 × 10 3.8.
        "imaml": {"inner_optim": "newton", "inner_steps": 5, "cg_steps": 10, "reg": 10.0},
        # SGD on AutoNormal's whitened parameters, backpropagated. A step of 0.3 (the first
        # runs') turned unstable on the challenging setting: ABML's held-out MSE went from 1.46
        # at 29,000 iterations to 3.8 at 33,000, ABML+'s from 1.6 at 12,000 to 5.5 at 16,000
        # (benchmarks/results/abml_plus_inner_lr_0.3/); the family now steps 0.1, as the
        # KL-chaser below.
        "abml": {"inner_optim": "sgd", "inner_lr": 0.1, "inner_steps": 10},
        "abml+": {"inner_optim": "sgd", "inner_lr": 0.1, "inner_steps": 10},
        # The KL-chaser's second run whitens by q_λtr's scale, so a step of 0.3 that one posterior
        # scale overshoots to ~0 makes that task NaN: the 40,000-iteration run at 0.3 had a
        # diverged task in 36% of its iterations and its held-out MSE rose from 0.77 (22,000)
        # to 3.39 after 10 steps at 40,000 (benchmarks/results/kl_chaser_inner_lr_0.3/).
        # A 3,000-iteration pilot at 0.1 (benchmarks/inner_vi_sweep.py): MSE after 10 steps
        # 0.525 at 1,800 (100 tasks), 6 iterations with a diverged task. At 0.1 and a constant
        # meta rate of 1e-3 it held 0.12-0.22 from 10,000 to 28,000 iterations, then one
        # meta-gradient spike (norm 3e4 against ~25) moved the prior to where the inner step
        # diverges on most tasks: 5.37 at 29,000 (benchmarks/results/kl_chaser_constant_meta_lr/).
        # It shares GEM-BML+'s objective and posterior, so it takes GEM-BML+'s meta schedule too:
        # the two then differ only in the meta-gradient estimator and the inner optimiser.
        "kl-chaser": {
            "inner_optim": "sgd",
            "inner_lr": 0.1,
            "inner_steps": 10,
            "meta_lr_milestones": GEM_META_LR_MILESTONES,
        },
        # SVGD with 5 particles, the step 3 × MAML's. MAML's own step barely moves them (held-out
        # MSE 3.7 at 500 iterations); 10 × and 5 × adapt best over one step but, by 40,000
        # iterations, diverge on some tasks over ten (5 ×: 12 of 600 default, 26 challenging):
        # the particles settle where a step that size is barely stable.
        "bmaml": {
            "inner_optim": "sgd",
            "inner_lr": 3 * MAML_LR,
            "inner_steps": 1,
            "num_particles": 5,
        },
    },
}
