"""Small sinusoid models shared by the tests."""

import pyro
import pyro.distributions as dist
from torch import nn

from pyro_gem import GaussianPrior


def small_sinusoid(hidden=16, init_scale=0.05, noise=0.3):
    net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    prior = GaussianPrior(net, init_scale=init_scale)

    def model(x, y=None):
        f = prior.sample_net()
        mean = pyro.deterministic("mean", f(x).squeeze(-1))
        with pyro.plate("data", x.shape[-2], dim=-1):
            pyro.sample("y", dist.Normal(mean, noise), obs=y)

    return model, prior
