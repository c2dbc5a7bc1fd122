"""The methods of the paper's matrix (its Table 1, plus the methods around it), one module per
family, each a small class over :mod:`pyro_gem.core`; :mod:`~pyro_gem.methods.registry` names
them and builds one from a run's options.

========================  ==================================================================
module                    methods
========================  ==================================================================
``base``                  :class:`MetaLearner`: what every method shares
``gem``                   GEM-BML, GEM-BML+ (Gradient-EM, closed form, no backpropagation)
``elbo_gradient``         ABML, ABML+, the KL-chaser (backprop through ``unrolled``'s VI)
``point_estimate``        MAML, first-order MAML, Reptile, iMAML, pre-training
``bmaml``                 BMAML (``svgd``'s particles, the chaser loss)
``registry``              the matrix: name → (posterior, objective, meta-gradient, builder)
========================  ==================================================================

Example::

    from pyro_gem.methods import build
    learner = build("imaml", model, prior, config)
"""

from pyro_gem.methods.base import MetaLearner
from pyro_gem.methods.bmaml import BMAML
from pyro_gem.methods.elbo_gradient import AmortizedBML, KLChaser
from pyro_gem.methods.gem import GEMBML
from pyro_gem.methods.point_estimate import IMAML, MAML, PreTraining, Reptile
from pyro_gem.methods.registry import INNER_OPTIMS, METHOD_TABLE, METHODS, Method, build

__all__ = [
    "BMAML",
    "GEMBML",
    "IMAML",
    "INNER_OPTIMS",
    "MAML",
    "METHODS",
    "METHOD_TABLE",
    "AmortizedBML",
    "KLChaser",
    "MetaLearner",
    "Method",
    "PreTraining",
    "Reptile",
    "build",
]
