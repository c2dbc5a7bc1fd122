"""pyro_gem: Bayesian meta-learning with the Gradient-EM estimator, for Pyro.

Example::

    prior = pyro_gem.GaussianPrior(net, init_scale=0.01)
    learner = pyro_gem.GEMBML(model, prior, plus=True)
    for it in range(1000):
        learner.step(tasks.sample(25, generator))
    posterior = learner.adapt(x_support, y_support)

    run = pyro_gem.load_run("runs/latest")        # a run trained by ``pyro-gem train``
    run.adapt(x_support, y_support).predict(x_query)

The package is layered: :mod:`pyro_gem.core` (priors, networks, inner VI, posteriors,
estimators) under :mod:`pyro_gem.methods` (the paper's matrix) and :mod:`pyro_gem.evaluation`
(meta-test metrics), :mod:`pyro_gem.tasks` (task families) over the metrics, and the runners
on top (``training``, ``run``, ``config``, ``modelfile``, ``diagnostics``, ``cli``).
"""

import pyro_gem.envs  # noqa: F401  (registers the meta-RL environments in gymnasium)
from pyro_gem.core.batch import TaskBatch
from pyro_gem.core.estimators import GradientEM, gem_gradient, gem_plus_gradient
from pyro_gem.core.inner import InnerVI
from pyro_gem.core.nn import FunctionalNet
from pyro_gem.core.posterior import ParticlePosterior, Posterior
from pyro_gem.core.priors import GaussianPrior, prior_optimizer
from pyro_gem.evaluation import Metric, Query, meta_test, task_scores
from pyro_gem.methods import GEMBML, METHOD_TABLE, METHODS, build
from pyro_gem.modelfile import settings
from pyro_gem.run import Run, load_run
from pyro_gem.tasks import Sinusoid, TaskFamily

__all__ = [
    "GEMBML",
    "METHODS",
    "METHOD_TABLE",
    "FunctionalNet",
    "GaussianPrior",
    "GradientEM",
    "InnerVI",
    "Metric",
    "ParticlePosterior",
    "Posterior",
    "Query",
    "Run",
    "Sinusoid",
    "TaskBatch",
    "TaskFamily",
    "build",
    "gem_gradient",
    "gem_plus_gradient",
    "load_run",
    "meta_test",
    "prior_optimizer",
    "settings",
    "task_scores",
]

__version__ = "0.1.0"
