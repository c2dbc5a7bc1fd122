"""2D navigation (MAML's meta-RL benchmark) as a pyro_gem model file.

Each task is a goal in [−0.5, 0.5]²; its data are rollouts of the policy (horizon 100). The
policy is MAML's Gaussian MLP (2 × 100 ReLU, a learned log standard deviation), every weight
drawn from the learnable prior. The likelihood is the paper's construction
log P(D | θ) = −L(D, f_θ), L the policy-gradient surrogate loss: a ``pyro.factor`` of
``Σ_t w_t log π_θ(a_t | s_t) Â_t`` (Â: advantages over the linear feature baseline, w: MAML's
averaging over each rollout's steps and over rollouts), times ``likelihood_scale``.

Settings (``pyro-gem train models/navigation.py --set rollouts=20``):

- ``rollouts``: K, rollouts per task in D_tr and D_val at meta-training (MAML: 20);
- ``test_rollouts``: rollouts per inner update at the meta-test (MAML: 40);
- ``likelihood_scale``: the surrogate's weight against the prior's KL in the inner VI.

Every setting and why: docs/rl.md.
"""

import pyro

from pyro_gem import GaussianPrior, settings
from pyro_gem.rl import GaussianMLPPolicy, action_log_prob
from pyro_gem.tasks.rl import MetaRLTasks

# likelihood_scale s: the inner VI's optimum moves the mean by about σ² s ∇ (the surrogate's
# gradient), which at the initial prior scale σ = 0.01 and s = 1000 is MAML's step of 0.1.
opts = settings(rollouts=20, test_rollouts=40, likelihood_scale=1000.0)

policy = GaussianMLPPolicy(observation_dim=2, action_dim=2, hidden=(100, 100))
prior = GaussianPrior(policy, init_scale=0.01)


def model(observations, actions, advantages, step_weights):
    """One task's rollouts: a factor of the policy-gradient surrogate, θ ~ prior.
    ``observations``, ``actions``: (n, 2); ``advantages``, ``step_weights``: (n,)."""
    log_prob = action_log_prob(prior.sample_net()(observations), actions)
    with pyro.plate("steps", observations.shape[-2], dim=-1):
        pyro.factor("surrogate", opts.likelihood_scale * step_weights * log_prob * advantages)


tasks = MetaRLTasks(
    "pyro_gem/Navigation2D-v0",
    policy=prior.net,
    rollouts=opts.rollouts,
    test_rollouts=opts.test_rollouts,
)

# MAML's inner step: one vanilla policy-gradient step of 0.1 on the surrogate, which the
# model's log-likelihood scales by likelihood_scale.
MAML_LR = 0.1 / opts.likelihood_scale

config = {
    "method": "gem-bml+",
    "meta_iterations": 500,
    "meta_batch": 20,  # MAML's
    "meta_lr": 1e-3,
    # GEM-BML(+): whitened SGD, one step of 1 reaches the inner VI's optimum in the mean.
    "inner_optim": "sgd",
    "inner_lr": 1.0,
    "inner_steps": 1,
    "test_tasks": 40,
    "eval_steps": [0, 1, 2, 3],  # inner updates, each on 40 fresh rollouts
    "methods": {
        # The guide starts at a tenth of the prior's scale: started at it, the scales' noisy
        # SGD step let first-layer biases widen 20-2000 times, and the next update's step
        # (∝ scale²) blew the policy up (2D navigation: -15.5 after one update, -97 after two).
        "gem-bml+": {"guide_init_scale": 0.1},
        "gem-bml": {"guide_init_scale": 0.1},
        # MAML's own meta-update: TRPO, δ = 0.01, 10 CG iterations (pytorch-maml-rl's config).
        "maml": {
            "inner_optim": "sgd",
            "inner_lr": MAML_LR,
            "inner_steps": 1,
            "meta_update": "trpo",
            "cg_steps": 10,
        },
        "fomaml": {"inner_optim": "sgd", "inner_lr": MAML_LR, "inner_steps": 1},
        "reptile": {"inner_optim": "sgd", "inner_lr": MAML_LR, "inner_steps": 1},
    },
}
