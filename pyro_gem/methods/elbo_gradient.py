"""The backpropagation column of the paper's Table 1, for a Gaussian posterior.

Each method fits q_λtr, the posterior given D_tr, from the prior by a differentiable inner VI
(:class:`~pyro_gem.methods.unrolled.UnrolledVI`: the whitened SGD on AutoNormal's parameters that
``InnerVI`` runs through Pyro), and gets the meta-gradient by backpropagating a loss through it:

==============================  =========  ==================================================
method (CLI name)               objective  loss backpropagated to Θ
==============================  =========  ==================================================
:class:`AmortizedBML`           L[1]       −ELBO(λ_tr(Θ); prior Θ; D_tr ∪ D_val): Ravi &
(``abml``)                                 Beatson's Amortized BML, the posterior computed
                                           from D_tr and the ELBO evaluated on all the data
                                           (the paper's "ELBO gradient", eq. 4)
``AmortizedBML(plus=True)``     L[2]       −E_{q_λtr(Θ)} log P(D_val | θ): the L[2] cell, a
(``abml+``)                                bound on log P(D_val | D_tr; Θ) with q' = q_λtr
                                           (the query likelihood under the adapted
                                           posterior, as PMAML and ML-PIP score it)
:class:`KLChaser`               L[2]       KL(stop_grad(q_λtr⊕val) ‖ q_λtr(Θ)), where
(``kl-chaser``)                            q_λtr⊕val continues from q_λtr on D_val (the
                                           sequential update of GEM-BML+), no graph
==============================  =========  ==================================================

Why the KL-chaser sits in the Gradient-EM column: with q_λtr as the prior of D_val, the
gradient of −KL(stop_grad(q_λtr⊕val) ‖ q_λtr) in λ_tr is E_{q_λtr⊕val} ∇ log q_λtr(θ), the
Gradient-EM estimate of ∇_λtr L(λ_tr; D_val). The chain rule through λ_tr(Θ) then gives
∇_Θ L[2] = ∇_Θ L(λ_tr(Θ); D_val), by backpropagation through the first inner run only. It is
BMAML's chaser with the L2 distance between particles replaced by the KL between Gaussians.

Only the first run keeps a graph, so memory grows with its steps. Adaptation at meta-test
(:meth:`adapt`) runs the same whitened SGD through Pyro SVI, which draws the same noise in the
same order and gives the same posterior as :class:`UnrolledVI` (tested).

Example::

    learner = AmortizedBML(model, prior, inner_lr=0.1, inner_steps=5)
    stats = learner.step(batch)
    post = learner.adapt(x_support, y_support)
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import torch

from pyro_gem.core.batch import TaskBatch
from pyro_gem.core.inner import InnerVI
from pyro_gem.core.priors import GaussianPrior
from pyro_gem.methods.base import MetaLearner
from pyro_gem.methods.unrolled import Gaussian, UnrolledVI, gaussian_kl

__all__ = ["AmortizedBML", "KLChaser"]


class _UnrolledGaussianLearner(MetaLearner):
    """A Gaussian posterior fitted by differentiable whitened SGD; meta-gradient by backprop.

    :param model: a single-task Pyro model that draws the network weights from ``prior``.
    :param prior: the learnable prior Θ.
    :param meta_optim: a torch optimiser over ``prior.parameters()``; Adam(1e-3) if omitted.
    :param inner_lr: the inner SGD step size (whitened coordinates).
    :param inner_steps: steps of the inner run on D_tr.
    :param query_steps: steps of the KL-chaser's second run (on D_val); defaults to
        ``inner_steps``.
    :param num_particles: Monte Carlo draws per ELBO estimate.
    :param init_scale: the posterior's starting scale as a fraction of the prior's (``None``:
        the prior's), in the unrolled fit and in :meth:`adapt` alike.
    """

    name = "unrolled"

    def __init__(
        self,
        model: Callable,
        prior: GaussianPrior,
        meta_optim: torch.optim.Optimizer | None = None,
        *,
        inner_lr: float = 0.05,
        inner_steps: int = 5,
        query_steps: int | None = None,
        num_particles: int = 1,
        init_scale: float | None = None,
    ):
        super().__init__(model, prior, meta_optim, lambda p: list(p.parameters()))
        self.unrolled = UnrolledVI(inner_lr, inner_steps, num_particles, init_scale)
        self.query_steps = inner_steps if query_steps is None else int(query_steps)
        # adapt(): the same algorithm through Pyro SVI.
        self.inner = InnerVI(
            guide="normal",
            optim=pyro.optim.SGD({"lr": float(inner_lr)}),
            steps=inner_steps,
            num_particles=num_particles,
            init_scale=init_scale,
        )

    def fit_support(self, batch: TaskBatch) -> Gaussian:
        """q_λtr, the posterior given D_tr, with its graph to Θ."""
        prior = (self.prior.loc, self.prior.scale)
        return self.unrolled.fit(self.log_likelihood(batch.support), prior)


class AmortizedBML(_UnrolledGaussianLearner):
    """The ELBO-gradient row of Table 1: Amortized BML (L[1]) or, with ``plus``, the L[2] cell.

    :param plus: ``False``: ascend ELBO(λ_tr(Θ); Θ; D_tr ∪ D_val), a bound on L[1] (Ravi &
        Beatson's Amortized BML; the paper's eq. 4). ``True``: ascend
        E_{q_λtr(Θ)} log P(D_val | θ), a bound on L[2] = log P(D_val | D_tr; Θ).
    """

    def __init__(self, *args, plus: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.plus = plus

    @property
    def name(self) -> str:
        return "abml+" if self.plus else "abml"

    def task_losses(self, batch: TaskBatch) -> tuple[torch.Tensor, dict]:
        support = self.fit_support(batch)
        if self.plus:
            bound = self.unrolled.expected_log_likelihood(self.log_likelihood(batch.query), support)
        else:
            prior = (self.prior.loc, self.prior.scale)
            bound = self.unrolled.elbo(self.log_likelihood(batch.joint()), support, prior)
        return -bound, {}


class KLChaser(_UnrolledGaussianLearner):
    """The KL-chaser: minimise KL(stop_grad(q_λtr⊕val) ‖ q_λtr(Θ)), backpropagating through the
    inner VI that produced λ_tr (the module docstring says why this estimates ∇_Θ L[2])."""

    name = "kl-chaser"

    def task_losses(self, batch: TaskBatch) -> tuple[torch.Tensor, dict]:
        support = self.fit_support(batch)
        start = tuple(p.detach() for p in support)
        joint = self.unrolled.fit(
            self.log_likelihood(batch.query),
            start,
            init=start,
            steps=self.query_steps,
            create_graph=False,
        )
        # The KL tends to zero; report the bound on L[2] that abml+ ascends, for comparison.
        with torch.no_grad():
            query = self.unrolled.expected_log_likelihood(self.log_likelihood(batch.query), support)
        return gaussian_kl(joint, support), {"meta_objective": query.mean().item()}
