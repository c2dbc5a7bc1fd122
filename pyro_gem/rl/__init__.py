"""Meta-RL machinery: the Gaussian MLP policy, batched rollouts, and advantages.

Example::

    policy = GaussianMLPPolicy(2, 2)
    prior = GaussianPrior(policy, init_scale=0.01)
    sampler = RolloutSampler("pyro_gem/Navigation2D-v0", policy=prior.net)
    rollouts = sampler.sample(tasks, theta, rollouts=20, generator=gen)
    adv = advantages(rollouts)                      # GAE over the linear feature baseline
"""

from pyro_gem.rl.advantages import advantages, discounted_returns, linear_baseline
from pyro_gem.rl.policy import GaussianMLPPolicy, action_distribution, action_log_prob
from pyro_gem.rl.sampler import Rollouts, RolloutSampler, make_meta_env

__all__ = [
    "GaussianMLPPolicy",
    "RolloutSampler",
    "Rollouts",
    "action_distribution",
    "action_log_prob",
    "advantages",
    "discounted_returns",
    "linear_baseline",
    "make_meta_env",
]
