"""Meta-learners: a posterior family (inner VI), an objective and a meta-gradient estimator.

:class:`GEMBML` runs the paper's method. Per meta-iteration on a batch of T tasks:

1. λ_tr = VI(prior Θ, data D_tr, start at Θ);
2. λ_tr⊕val = VI(prior q_λtr, data D_val, start at λ_tr)  (``update="sequential"``, the paper's), or
   VI(prior Θ, data D_tr ∪ D_val, start at λ_tr)           (``update="joint"``);
3. the Gradient-EM estimate, averaged over tasks, is written into the prior's ``.grad`` (as the
   gradient of the loss −L) and the meta-optimiser steps.

Tasks whose inner VI produced non-finite values are left out of step 3 and reported.

Example::

    learner = GEMBML(model, prior, torch.optim.Adam(prior.parameters(), 1e-3), plus=True,
                     inner=InnerVI(optim=pyro.optim.Adam({"lr": 0.1}), steps=10))
    for it in range(1000):
        stats = learner.step(tasks.sample(25, gen))
    post = learner.adapt(x_support, y_support)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

from pyro_gem.estimators import GradientEM
from pyro_gem.inner import InnerFit, InnerVI, plate_nesting
from pyro_gem.objectives import TaskLogLikelihood
from pyro_gem.posterior import Posterior
from pyro_gem.priors import GaussianPrior
from pyro_gem.tasks.base import TaskBatch, validate_task_args

__all__ = ["GEMBML", "MetaLearner"]


class MetaLearner:
    """What every learner shares: the model, the learnable prior, the meta-optimiser, the
    model's plate nesting (traced once) and the state a checkpoint holds.

    :param meta_params: ``prior -> parameters`` that the default meta-optimiser (Adam 1e-3) steps.
    """

    def __init__(
        self,
        model: Callable,
        prior: GaussianPrior,
        meta_optim: torch.optim.Optimizer | None,
        meta_params: Callable[[GaussianPrior], Sequence[torch.Tensor]],
    ):
        if not isinstance(prior, GaussianPrior):
            raise ValueError(f"prior must be a GaussianPrior, got {type(prior).__name__}")
        self.model = model
        self.prior = prior
        self.meta_optim = (
            torch.optim.Adam(meta_params(prior), lr=1e-3) if meta_optim is None else meta_optim
        )
        self._nesting: int | None = None

    def nesting(self, args: Sequence) -> int:
        """The model's plate nesting (traced once, then cached); checks the prior site exists."""
        if self._nesting is None:
            self._nesting = plate_nesting(
                self.model, args, self.prior.name, num_weights=self.prior.num_weights
            )
        return self._nesting

    @property
    def adapt_steps(self) -> int:
        """The inner steps :meth:`adapt` takes unless told otherwise."""
        return self.inner.steps

    def adapt_prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The prior ``(loc, scale)`` that :meth:`adapt` starts from and regularises towards."""
        return self.prior.loc.detach(), self.prior.scale.detach()

    def adapt(self, *support: torch.Tensor, steps: int | None = None, record: Sequence[int] = ()):
        """The posterior of new tasks given their support sets: the learner's inner loop, run
        through Pyro SVI (``self.inner``) from the prior.

        :param support: the model's arguments, stacked over tasks ``(T, K, ...)``.
        :param steps: inner steps (defaults to the learner's).
        :param record: steps whose intermediate posteriors to keep in ``posterior.history``.
        :returns: a :class:`~pyro_gem.posterior.Posterior`.
        """
        validate_task_args(support, "support")
        fit = self.inner.fit(
            self.model,
            self.prior.name,
            support,
            self.adapt_prior(),
            steps=steps,
            record=record,
            nesting=self.nesting(support),
        )
        return Posterior(fit, self.prior.name, self.adapt_steps if steps is None else steps)

    def log_likelihood(self, args: Sequence) -> TaskLogLikelihood:
        """``theta (..., T, D) -> log P(D_τ | θ_τ)`` for the tasks in ``args``."""
        return TaskLogLikelihood(self.model, self.prior.name, args, self.nesting(args))

    def meta_parameters(self) -> dict[str, torch.Tensor]:
        """The tensors the meta-optimiser learns, by name (for statistics)."""
        return {"loc": self.prior.loc, "log_scale": self.prior.log_scale}

    def step(self, batch: TaskBatch) -> dict:
        """One meta-iteration on a batch of tasks: :meth:`backprop_step` of :meth:`task_losses`
        (learners whose meta-gradient is not backpropagated, like :class:`GEMBML`, override it).

        :returns: statistics: the meta-objective estimate, gradient norms, the median prior
            scale and the tasks left out for non-finite values.
        """
        return self.backprop_step(batch, self.task_losses)

    def task_losses(self, batch: TaskBatch) -> tuple[torch.Tensor, dict]:
        """Per-task losses ``(T,)`` whose gradient is the method's meta-gradient, and statistics."""
        raise NotImplementedError

    def backprop_step(
        self, batch: TaskBatch, task_losses: Callable[[TaskBatch], tuple[torch.Tensor, dict]]
    ) -> dict:
        """One meta-iteration of a method whose meta-gradient is backpropagation of a loss.

        ``task_losses(batch)`` returns the per-task losses ``(T,)`` (with their graph to the
        prior) and statistics. Tasks whose loss is not finite are left out: the losses are
        computed again on the healthy tasks alone (a NaN would otherwise reach the prior's
        gradient through the shared graph), until every remaining loss is finite. The update is
        the one of those tasks; if the gradient itself is not finite, no step is taken.
        """
        batch.validate()
        self.meta_optim.zero_grad()
        index = torch.arange(len(batch))
        losses, stats = task_losses(batch)
        bad: list[int] = []
        while True:
            ok = torch.isfinite(losses.detach())
            if ok.all():
                break
            bad += index[~ok].tolist()
            index = index[ok]
            losses = None  # free the graph before building the next one
            if not len(index):
                break
            losses, stats = task_losses(batch.select(index))
        stats["nan_tasks"] = sorted(bad)
        warn_diverged(stats["nan_tasks"], len(batch), stacklevel=4)
        if losses is None:
            stats["meta_objective"] = float("nan")
        else:
            stats.setdefault("meta_objective", -losses.detach().mean().item())
            losses.mean().backward()
            finite = True
            for name, param in self.meta_parameters().items():
                if param.grad is not None:
                    stats[f"grad_norm_{name}"] = param.grad.norm().item()
                    finite &= bool(torch.isfinite(param.grad).all())
            if finite:
                self.meta_optim.step()
            else:
                self.meta_optim.zero_grad()
                warnings.warn(
                    "the meta-gradient is not finite; the prior was not updated", stacklevel=3
                )
        stats["prior_scale_median"] = self.prior.scale.median().item()
        return stats

    def state_dict(self) -> dict:
        return {"prior": self.prior.state_dict(), "meta_optim": self.meta_optim.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.prior.load_state_dict(state["prior"])
        self.meta_optim.load_state_dict(state["meta_optim"])


class GEMBML(MetaLearner):
    """GEM-BML (L[1]) and GEM-BML+ (L[2]) with task-vectorised Pyro SVI in the inner loop.

    :param model: a single-task Pyro model that draws the network weights from ``prior``.
    :param prior: the learnable prior Θ.
    :param meta_optim: a torch optimiser over ``prior.parameters()``; Adam(1e-3) if omitted.
    :param plus: ``True`` for GEM-BML+ (L[2]), ``False`` for GEM-BML (L[1]).
    :param inner: the inner VI (guide, optimiser, steps, particles).
    :param query_steps: steps of the second inner run (λ_tr⊕val); defaults to ``inner.steps``.
    :param update: ``"sequential"`` (the paper's) or ``"joint"``.
    """

    def __init__(
        self,
        model: Callable,
        prior: GaussianPrior,
        meta_optim: torch.optim.Optimizer | None = None,
        *,
        plus: bool = True,
        inner: InnerVI | None = None,
        query_steps: int | None = None,
        update: str = "sequential",
    ):
        if update not in ("sequential", "joint"):
            raise ValueError(f"update must be 'sequential' or 'joint', got {update!r}")
        super().__init__(model, prior, meta_optim, lambda p: list(p.parameters()))
        self.inner = InnerVI() if inner is None else inner
        self.query_steps = self.inner.steps if query_steps is None else int(query_steps)
        self.update = update
        self.estimator = GradientEM(plus=plus)

    @property
    def name(self) -> str:
        return "gem-bml+" if self.estimator.plus else "gem-bml"

    def fit_posteriors(self, batch: TaskBatch) -> tuple[InnerFit, InnerFit]:
        """The two inner VI runs of one meta-iteration: (q_λtr, q_λtr⊕val)."""
        nesting = self.nesting(batch.support)
        site, vi = self.prior.name, self.inner
        support = vi.fit(self.model, site, batch.support, self.adapt_prior(), nesting=nesting)
        # A task that diverged is left out of the meta-gradient; the query run restarts it from
        # the prior so that its NaNs cannot reach anything else.
        m, sigma = self.adapt_prior()
        ok = support.finite[:, None]
        loc = torch.where(ok, support.loc, m)
        scale = None if support.scale is None else torch.where(ok, support.scale, sigma)
        start = (loc, scale)
        if self.update == "sequential":
            # q_λtr is the prior of the query update; a delta posterior keeps the prior's scale.
            prior2 = (loc, (sigma if scale is None else scale).expand_as(loc))
            args = batch.query
        else:
            prior2, args = self.adapt_prior(), batch.joint()
        joint = vi.fit(
            self.model, site, args, prior2, init=start, steps=self.query_steps, nesting=nesting
        )
        return support, joint

    def gradient_em(
        self, support: InnerFit, joint: InnerFit, tasks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-task Gradient-EM ascent directions (ĝ_m, ĝ_s) of L[1] or L[2] at the prior.

        :param support: q_λtr, from :meth:`fit_posteriors`.
        :param joint: q_λtr⊕val, from :meth:`fit_posteriors`.
        :param tasks: a boolean mask ``(T,)`` of the tasks to estimate for (the finite ones).
        :returns: ``(g_loc, g_log_scale)``, each ``(tasks.sum(), D)``.
        """

        def select(fit: InnerFit) -> tuple[torch.Tensor, torch.Tensor | None]:
            return fit.loc[tasks], None if fit.scale is None else fit.scale[tasks]

        return self.estimator(self.prior.loc, self.prior.log_scale, select(joint), select(support))

    def step(self, batch: TaskBatch) -> dict:
        """One meta-iteration: inner VI on every task, Gradient-EM, one meta-optimiser step.

        :returns: statistics: the ELBOs, the meta-objective estimate (per task), the gradient
            norms, the median prior scale and the tasks left out for non-finite values.
        """
        num_tasks = batch.validate()
        support, joint = self.fit_posteriors(batch)
        ok = support.finite & joint.finite
        bad = (~ok).nonzero().flatten().tolist()
        stats = {
            "elbo_support": _last(support.losses, -1.0 / num_tasks),
            "elbo_query": _last(joint.losses, -1.0 / num_tasks),
            "nan_tasks": bad,
        }
        if self.update == "sequential":
            # The query ELBO under prior q_λtr bounds log P(D_val | D_tr) = L[2].
            l2 = stats["elbo_query"]
            l1 = stats["elbo_support"] + stats["elbo_query"]
        else:
            l1 = stats["elbo_query"]
            l2 = l1 - stats["elbo_support"]
        stats["meta_objective"] = l2 if self.estimator.plus else l1
        self.meta_optim.zero_grad()
        warn_diverged(bad, num_tasks, stacklevel=3)
        if ok.any():
            g_loc, g_log_scale = self.gradient_em(support, joint, ok)
            # The optimiser minimises −L: the gradient is minus the ascent direction.
            self.prior.loc.grad = -g_loc.mean(0)
            self.prior.log_scale.grad = -g_log_scale.mean(0)
            stats["grad_norm_loc"] = self.prior.loc.grad.norm().item()
            stats["grad_norm_log_scale"] = self.prior.log_scale.grad.norm().item()
            self.meta_optim.step()
        stats["prior_scale_median"] = self.prior.scale.median().item()
        return stats


def warn_diverged(bad: list[int], num_tasks: int, stacklevel: int) -> None:
    """Warn that tasks ``bad`` (of ``num_tasks``) diverged and are left out of the update.

    :param stacklevel: as for :func:`warnings.warn` called here (3 names a method's caller).
    """
    if len(bad) == num_tasks:
        warnings.warn(
            "every task's inner loop diverged; the prior was not updated", stacklevel=stacklevel
        )
    elif bad:
        warnings.warn(
            f"inner loop diverged on tasks {bad}; they are left out of the meta-gradient",
            stacklevel=stacklevel,
        )


def _last(losses: list[float], factor: float) -> float:
    return losses[-1] * factor if losses else float("nan")
