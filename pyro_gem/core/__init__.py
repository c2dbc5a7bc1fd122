"""The building blocks every method is made of: the learnable prior, the batched network, the
task-vectorised inner VI and its guides, the model's log likelihood, the adapted posteriors and
the meta-gradient estimators. Nothing here knows a method, a task family or the CLI.

Example::

    from pyro_gem.core import GaussianPrior, InnerVI
    prior = GaussianPrior(net, init_scale=0.01)
    fit = InnerVI(steps=20).fit(model, prior.name, batch.support, (prior.loc, prior.scale))
"""

from pyro_gem.core.batch import TaskBatch, task_count, validate_task_args
from pyro_gem.core.estimators import GradientEM, gem_gradient, gem_plus_gradient
from pyro_gem.core.inner import InnerFit, InnerVI
from pyro_gem.core.likelihood import TaskLogLikelihood
from pyro_gem.core.nn import FunctionalNet
from pyro_gem.core.posterior import ParticlePosterior, Posterior
from pyro_gem.core.priors import GaussianPrior

__all__ = [
    "FunctionalNet",
    "GaussianPrior",
    "GradientEM",
    "InnerFit",
    "InnerVI",
    "ParticlePosterior",
    "Posterior",
    "TaskBatch",
    "TaskLogLikelihood",
    "gem_gradient",
    "gem_plus_gradient",
    "task_count",
    "validate_task_args",
]
