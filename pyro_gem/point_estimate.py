"""Point-estimate meta-learners of the paper's comparison: MAML, first-order MAML and Reptile.

Each task's posterior is a point (a delta), adapted from the prior mean m by K steps of gradient
ascent on the task's log-likelihood (``pyro_gem.objectives.task_log_likelihood`` of the user's own
Pyro model). Only m is meta-learned; the prior's scale is not used.

- :class:`MAML` (objective L[2], gradient by backpropagation through the K steps; second order,
  or first order with ``first_order=True``): minimise −log P(D_val | θ_K(D_tr)).
- :class:`Reptile` (objective L[1], the Gradient-EM direction of a delta posterior with fixed
  variance): move m towards θ_K(D_tr ∪ D_val); the ascent direction is θ_K − m.

The inner step size is in log-likelihood units: with a Gaussian likelihood of noise s and K points,
MAML's step α on the mean squared error is ``lr = α · 2 s² / K`` here.

Example::

    learner = MAML(model, prior, torch.optim.Adam([prior.loc], 1e-3), inner_lr=1.8e-4, inner_steps=1)
    stats = learner.step(batch)
    post = learner.adapt(x_support, y_support)      # a delta posterior, predictions via Predictive
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import torch

from pyro_gem.estimators import sgd_adapt
from pyro_gem.inner import InnerVI
from pyro_gem.learners import MetaLearner
from pyro_gem.objectives import task_log_likelihood
from pyro_gem.posterior import Posterior
from pyro_gem.priors import GaussianPrior
from pyro_gem.tasks.base import TaskBatch, validate_task_args

__all__ = ["MAML", "Reptile"]

# The adapt path runs Pyro SVI with a delta guide under a prior this wide: its pull, (θ − m)/σ²,
# is 1e-8 of the distance, so the steps are plain gradient steps on the log-likelihood.
_FLAT_PRIOR_SCALE = 1e4


class _PointEstimateLearner(MetaLearner):
    name = "point-estimate"

    def __init__(
        self,
        model: Callable,
        prior: GaussianPrior,
        meta_optim: torch.optim.Optimizer | None = None,
        *,
        inner_lr: float = 1e-3,
        inner_steps: int = 1,
    ):
        if inner_steps < 1:
            raise ValueError(f"inner_steps must be >= 1, got {inner_steps}")
        super().__init__(model, prior, meta_optim, lambda p: [p.loc])
        self.inner_lr = float(inner_lr)
        # The same steps through Pyro SVI with a delta guide, for adapt() and predictions.
        self.inner = InnerVI(
            guide="delta",
            optim=pyro.optim.SGD({"lr": self.inner_lr}),
            steps=inner_steps,
            whiten=False,
        )

    def log_likelihood(self, args: Sequence):
        """``theta (T, D) -> log P(D_τ | θ_τ)`` for the tasks in ``args``."""
        nesting = self.nesting(args)
        return lambda theta: task_log_likelihood(self.model, self.prior.name, theta, args, nesting)

    def adapt_weights(self, args: Sequence, create_graph: bool = False) -> torch.Tensor:
        """θ_K for every task in ``args``, from θ_0 = m."""
        num_tasks = validate_task_args(args)
        start = self.prior.loc if create_graph else self.prior.loc.detach()
        theta = start.expand(num_tasks, -1)
        return sgd_adapt(
            self.log_likelihood(args), theta, self.inner.steps, self.inner_lr, create_graph
        )

    def adapt(self, *support: torch.Tensor, steps: int | None = None, record: Sequence[int] = ()):
        """A delta posterior for new tasks: K gradient steps from m, run through Pyro SVI."""
        validate_task_args(support, "support")
        flat = torch.full_like(self.prior.loc, _FLAT_PRIOR_SCALE)
        fit = self.inner.fit(
            self.model,
            self.prior.name,
            support,
            (self.prior.loc.detach(), flat),
            steps=steps,
            record=record,
            nesting=self.nesting(support),
        )
        return Posterior(fit, self.prior.name, self.inner.steps if steps is None else steps)

    def _finish(self, stats: dict) -> dict:
        self.meta_optim.step()
        stats["grad_norm_loc"] = self.prior.loc.grad.norm().item()
        stats["prior_scale_median"] = self.prior.scale.median().item()
        stats.setdefault("nan_tasks", [])
        return stats


class MAML(_PointEstimateLearner):
    """MAML: backpropagation through K inner gradient steps, objective L[2].

    :param first_order: drop the second-order terms (first-order MAML): the meta-gradient is the
        query loss's gradient at θ_K.
    """

    def __init__(self, *args, first_order: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.first_order = first_order

    @property
    def name(self) -> str:
        return "fomaml" if self.first_order else "maml"

    def step(self, batch: TaskBatch) -> dict:
        """One meta-iteration on a batch of tasks; returns the query log-likelihood."""
        batch.validate()
        self.meta_optim.zero_grad()
        theta = self.adapt_weights(batch.support, create_graph=not self.first_order)
        query = self.log_likelihood(batch.query)
        if self.first_order:
            theta = theta.detach().requires_grad_()
            loss = -query(theta).mean()
            (grad,) = torch.autograd.grad(loss, theta)
            self.prior.loc.grad = grad.sum(0)  # d(mean over tasks)/dm without 2nd-order terms
            value = -loss.item()
        else:
            loss = -query(theta).mean()
            loss.backward()
            value = -loss.item()
        return self._finish({"meta_objective": value})


class Reptile(_PointEstimateLearner):
    """Reptile: move the prior mean towards the adapted weights θ_K(D_tr ∪ D_val).

    The meta-optimiser receives −mean_τ(θ_K − m) as the gradient (Reptile with an optimiser, as
    in Nichol et al.'s implementation); plain SGD with step ε gives m ← m + ε·mean(θ_K − m).
    """

    name = "reptile"

    def step(self, batch: TaskBatch) -> dict:
        batch.validate()
        self.meta_optim.zero_grad()
        data = batch.joint()
        theta = self.adapt_weights(data)
        self.prior.loc.grad = -(theta - self.prior.loc.detach()).mean(0)
        loglik = self.log_likelihood(data)(theta).mean().item()
        return self._finish({"meta_objective": loglik})
