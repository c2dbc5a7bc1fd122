"""A binary classifier whose likelihood is a ``pyro.factor`` (no observation site), as a user
would write it from the README: the model takes its labels as a required argument.

Tasks: points x ∈ [-2, 2]² labelled by a random line through the origin. Scored beside the log
predictive density by the accuracy of the posterior mean probability, read from the model's
``pyro.deterministic("logits", ...)`` site.
"""

import pyro
import torch
import torch.nn.functional as F
from torch import nn

from pyro_gem import GaussianPrior, Metric, TaskBatch, TaskFamily

prior = GaussianPrior(nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)), init_scale=0.3)


def model(x, y):
    """One task: log P(y | x, θ) = Σ Bernoulli log-likelihood, added as a factor."""
    logits = pyro.deterministic("logits", prior.sample_net()(x).squeeze(-1))
    pyro.factor("loglik", -F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(-1))


class Accuracy(Metric):
    """Share of query points whose posterior mean probability is on the right side of 1/2."""

    name = "accuracy"

    def __call__(self, query):
        prob = torch.sigmoid(query.sites()["logits"]).mean(0)  # (T, N)
        return ((prob > 0.5).float() == query.target).float().mean(-1)


class Lines(TaskFamily):
    metrics = (Accuracy(),)

    def __init__(self, shots: int = 10, query: int = 10):
        self.shots, self.query = shots, query

    def sample(self, num_tasks, generator=None):
        angle = 2 * torch.pi * torch.rand(num_tasks, 1, generator=generator)
        normal = torch.cat([angle.cos(), angle.sin()], -1)  # (T, 2)
        x = 4 * torch.rand(num_tasks, self.shots + self.query, 2, generator=generator) - 2
        y = ((x * normal[:, None]).sum(-1) > 0).float()
        k = self.shots
        return TaskBatch((x[:, :k], y[:, :k]), (x[:, k:], y[:, k:]))


tasks = Lines()
config = {"inner_optim": "sgd", "inner_lr": 0.05, "inner_steps": 5, "meta_batch": 5}
