"""What the MuJoCo locomotion model files share (models/halfcheetah_vel.py, halfcheetah_dir.py,
ant_vel.py, ant_dir.py): MAML's policy under the learnable prior, the surrogate likelihood, the
task family and the per-method settings of one environment.

Rollouts of 200 steps on gymnasium's MuJoCo v5 model (pyro_gem.envs.mujoco says how it differs
from MAML's rllab model). The policy is MAML's Gaussian MLP (2 × 100 ReLU, a learned log standard
deviation), every weight drawn from the learnable prior; the likelihood is the paper's
log P(D | θ) = −L(D, f_θ), a ``pyro.factor`` of the policy-gradient surrogate (as in
models/navigation.py, which explains it). The budget here and the paper's: docs/rl.md.
"""

from types import SimpleNamespace

import pyro

from pyro_gem import GaussianPrior
from pyro_gem.rl import GaussianMLPPolicy, action_log_prob, make_meta_env
from pyro_gem.tasks.rl import MetaRLTasks


def build(env_id: str, opts: SimpleNamespace):
    """``(prior, model, tasks, config)`` of a model file for ``env_id``, with its settings
    ``opts`` (``rollouts``, ``test_rollouts``, ``likelihood_scale``)."""
    spaces = make_meta_env(env_id)
    policy = GaussianMLPPolicy(
        spaces.observation_space.shape[0], spaces.action_space.shape[0], hidden=(100, 100)
    )
    prior = GaussianPrior(policy, init_scale=0.01)

    def model(observations, actions, advantages, step_weights):
        """One task's rollouts: a factor of the policy-gradient surrogate, θ ~ prior."""
        log_prob = action_log_prob(prior.sample_net()(observations), actions)
        with pyro.plate("steps", observations.shape[-2], dim=-1):
            pyro.factor("surrogate", opts.likelihood_scale * step_weights * log_prob * advantages)

    tasks = MetaRLTasks(
        env_id, policy=prior.net, rollouts=opts.rollouts, test_rollouts=opts.test_rollouts
    )

    # MAML's inner step: one vanilla policy-gradient step of 0.1 on the surrogate (its locomotion
    # setting), which the model's log-likelihood scales by likelihood_scale.
    MAML_LR = 0.1 / opts.likelihood_scale

    config = {
        "method": "gem-bml+",
        "meta_iterations": 500,  # the paper's (MAML: up to 500)
        "meta_batch": 40,  # MAML's
        "meta_lr": 1e-3,
        # GEM-BML(+): whitened SGD, one step of 1 reaches the inner VI's optimum in the mean, a
        # policy-gradient step of σ² · likelihood_scale = MAML's 0.1 at the initial prior scale.
        "inner_optim": "sgd",
        "inner_lr": 1.0,
        "inner_steps": 1,
        "test_tasks": 40,
        "eval_steps": [0, 1, 2, 3],  # inner updates, each on fresh rollouts
        "methods": {
            # The guide starts at a tenth of the prior's scale: started at it, the scales' noisy
            # SGD step let first-layer biases widen 20-2000 times, and the next update's step
            # (∝ scale²) blew the policy up (2D navigation: -15.5 after one update, -97 after two).
            "gem-bml+": {"guide_init_scale": 0.1},
            "gem-bml": {"guide_init_scale": 0.1},
            "maml": {
                "inner_optim": "sgd",
                "inner_lr": MAML_LR,
                "inner_steps": 1,
                "meta_update": "trpo",
                "cg_steps": 10,
            },
            "reptile": {"inner_optim": "sgd", "inner_lr": MAML_LR, "inner_steps": 1},
        },
    }
    return prior, model, tasks, config
