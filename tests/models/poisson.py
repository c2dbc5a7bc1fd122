"""Counts: y ~ Poisson(exp f_θ(x)) per task, scored beside the log predictive density by the
squared error and the 90% interval coverage of the counts, and by a metric of its own: the
absolute error of the posterior mean rate (the README's example of a user's metric)."""

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_gem import GaussianPrior, Metric, TaskBatch, TaskFamily
from pyro_gem.evaluation import IntervalCoverage, SquaredError

prior = GaussianPrior(nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)), init_scale=0.1)


def model(x, y=None):
    rate = pyro.deterministic("rate", prior.sample_net()(x).squeeze(-1).exp())
    with pyro.plate("data", x.shape[-2], dim=-1):
        pyro.sample("y", dist.Poisson(rate), obs=y)


class RateError(Metric):
    name = "rate_mae"

    def __call__(self, query):
        rate = query.sites()["rate"]  # (S, T, N): one value per posterior draw of θ
        return (rate.mean(0) - query.target).abs().mean(-1)


class Counts(TaskFamily):
    metrics = (SquaredError(mean_site="rate"), IntervalCoverage(0.9), RateError())

    def sample(self, num_tasks, generator=None):
        level = 1 + 9 * torch.rand(num_tasks, 1, generator=generator)
        slope = torch.rand(num_tasks, 1, generator=generator)
        x = torch.rand(num_tasks, 20, 1, generator=generator)
        y = torch.poisson(level * (1 + slope * x[..., 0]), generator=generator)
        return TaskBatch((x[:, :10], y[:, :10]), (x[:, 10:], y[:, 10:]))


tasks = Counts()
config = {"inner_optim": "sgd", "inner_lr": 0.05, "inner_steps": 5, "meta_batch": 5}
