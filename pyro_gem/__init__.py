"""pyro_gem: Bayesian meta-learning with the Gradient-EM estimator, for Pyro.

Example::

    prior = pyro_gem.GaussianPrior(net, init_scale=0.01)
    learner = pyro_gem.GEMBML(model, prior, plus=True)
    for it in range(1000):
        learner.step(tasks.sample(25, generator))
    posterior = learner.adapt(x_support, y_support)
"""

from pyro_gem.estimators import GradientEM, gem_gradient, gem_plus_gradient
from pyro_gem.evaluation import meta_test, task_scores
from pyro_gem.inner import InnerVI
from pyro_gem.learners import GEMBML
from pyro_gem.methods import METHOD_TABLE, METHODS
from pyro_gem.nn import FunctionalNet
from pyro_gem.posterior import Posterior
from pyro_gem.priors import GaussianPrior
from pyro_gem.tasks import Sinusoid, TaskBatch

__all__ = [
    "GEMBML",
    "METHODS",
    "METHOD_TABLE",
    "FunctionalNet",
    "GaussianPrior",
    "GradientEM",
    "InnerVI",
    "Posterior",
    "Sinusoid",
    "TaskBatch",
    "gem_gradient",
    "gem_plus_gradient",
    "meta_test",
    "task_scores",
]

__version__ = "0.1.0"
