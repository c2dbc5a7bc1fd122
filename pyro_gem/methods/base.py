"""What every meta-learner shares: the model, the learnable prior, the meta-optimiser, adaptation
to new tasks through the inner VI, and the meta-step of a method whose meta-gradient is
backpropagated (leaving out tasks whose inner loop diverged).

A method is a small subclass: :class:`~pyro_gem.methods.gem.GEMBML` overrides :meth:`MetaLearner.step`
with the closed-form Gradient-EM update; the backpropagation methods implement
:meth:`MetaLearner.task_losses`.

Example::

    class MyMethod(MetaLearner):
        def task_losses(self, batch):          # per-task losses whose gradient is the meta-gradient
            theta = ...                        # adapted weights with a graph to the prior
            return -self.log_likelihood(batch.query)(theta), {}
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

from pyro_gem.core.batch import TaskBatch, validate_task_args
from pyro_gem.core.inner import plate_nesting
from pyro_gem.core.likelihood import TaskLogLikelihood
from pyro_gem.core.posterior import Posterior
from pyro_gem.core.priors import GaussianPrior

__all__ = ["MetaLearner", "rollout_stats", "warn_diverged"]


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
    def device(self) -> torch.device:
        """Where the learner's parameters live: tasks are moved there to be learned from."""
        return self.meta_optim.param_groups[0]["params"][0].device

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
        :returns: a :class:`~pyro_gem.core.posterior.Posterior`.
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

    def adapt_from(
        self, posterior: Posterior, *support: torch.Tensor, steps: int | None = None
    ) -> Posterior:
        """Adapt further: ``posterior`` (of an earlier :meth:`adapt`) is the prior and the start
        of the learner's inner loop on new data (sequential updating; a meta-RL update adapts
        to rollouts of the policy the previous update produced).

        :param posterior: the earlier posterior of the same T tasks.
        :param support: the new data, stacked over tasks ``(T, N, ...)``.
        :param steps: inner steps (defaults to the learner's).
        """
        validate_task_args(support, "support")
        loc, scale = posterior.loc, posterior.scale
        # A delta posterior keeps the learner's own prior scale (flat for gradient steps).
        prior_scale = self.adapt_prior()[1].expand_as(loc) if scale is None else scale
        fit = self.inner.fit(
            self.model,
            self.prior.name,
            support,
            (loc, prior_scale),
            init=(loc, scale),
            steps=steps,
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
        rollout_stats(batch, stats)
        return stats

    def state_dict(self) -> dict:
        return {"prior": self.prior.state_dict(), "meta_optim": self.meta_optim.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.prior.load_state_dict(state["prior"])
        self.meta_optim.load_state_dict(state["meta_optim"])


def rollout_stats(batch, stats: dict) -> None:
    """Add a meta-RL batch's mean returns of D_tr and D_val (before and after the inner update)
    to ``stats``, as ``return_support`` and ``return_query``."""
    for which in ("support", "query"):
        returns = batch.info.get(f"{which}_returns")
        if returns is not None:
            finite = returns[returns.isfinite()]
            stats[f"return_{which}"] = finite.mean().item() if len(finite) else float("nan")


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
