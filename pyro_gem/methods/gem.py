"""GEM-BML and GEM-BML+: Gaussian posteriors by Pyro SVI, the prior learned by Gradient-EM.

:class:`GEMBML` runs the paper's method. Per meta-iteration on a batch of T tasks:

1. λ_tr = VI(prior Θ, data D_tr, start at Θ);
2. λ_tr⊕val = VI(prior q_λtr, data D_val, start at λ_tr)  (``update="sequential"``, the paper's), or
   VI(prior Θ, data D_tr ∪ D_val, start at λ_tr)           (``update="joint"``);
3. the Gradient-EM estimate, averaged over tasks, is written into the prior's ``.grad`` (as the
   gradient of the loss −L) and the meta-optimiser steps.

Tasks whose inner VI produced non-finite values are left out of step 3 and reported.

Example: GEM-BML+ as ``models/sinusoid.py`` configures it (docs/sinusoid.md, "GEM-BML+
redesigned"): a prior of σ₀ = 0.1, one support and one query step of whitened SGD that moves θ
by MAML's step α (whitened SGD moves θ by lr·σ²), the guide started at a tenth of the prior's
scale, and the prior's σ meta-learnt ten times slower than its mean::

    prior.reset_scale(0.1)
    inner = InnerVI(optim=pyro.optim.SGD({"lr": alpha / 0.1**2}), steps=1, init_scale=0.1)
    learner = GEMBML(model, prior, prior_optimizer(prior, 1e-3, scale_lr=1e-4), plus=True,
                     inner=inner, query_steps=1)
    for it in range(40000):
        stats = learner.step(tasks.sample(25, gen))
    post = learner.adapt(x_support, y_support, steps=10)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pyro_gem.core.batch import TaskBatch
from pyro_gem.core.estimators import GradientEM, GradientSum
from pyro_gem.core.inner import InnerFit, InnerVI
from pyro_gem.core.priors import GaussianPrior
from pyro_gem.methods.base import MetaLearner, rollout_stats, warn_diverged

__all__ = ["GEMBML"]


class GEMBML(MetaLearner):
    """GEM-BML (L[1]) and GEM-BML+ (L[2]) with task-vectorised Pyro SVI in the inner loop.

    :param model: a single-task Pyro model that draws the network weights from ``prior``.
    :param prior: the learnable prior Θ.
    :param meta_optim: a torch optimiser over ``prior.parameters()``; Adam(1e-3) if omitted.
    :param plus: ``True`` for GEM-BML+ (L[2]), ``False`` for GEM-BML (L[1]).
    :param inner: the inner VI (guide, optimiser, steps, particles).
    :param query_steps: steps of the second inner run (λ_tr⊕val); defaults to ``inner.steps``.
    :param update: ``"sequential"`` (the paper's) or ``"joint"``.
    :param runner: where the inner loops run (:mod:`pyro_gem.runners`: in shards in this
        process, or on Ray workers); ``None`` fits every task here in one vectorised SVI. The
        meta-update happens here either way, from the Gradient-EM estimates alone.
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
        runner=None,
    ):
        if update not in ("sequential", "joint"):
            raise ValueError(f"update must be 'sequential' or 'joint', got {update!r}")
        super().__init__(model, prior, meta_optim, lambda p: list(p.parameters()))
        self.inner = InnerVI() if inner is None else inner
        self.query_steps = self.inner.steps if query_steps is None else int(query_steps)
        self.update = update
        self.estimator = GradientEM(plus=plus)
        self.runner = runner

    @property
    def name(self) -> str:
        return "gem-bml+" if self.estimator.plus else "gem-bml"

    def adapt_from(self, posterior, *support: torch.Tensor, steps: int | None = None):
        """As :meth:`MetaLearner.adapt_from`, with the second inner run's steps (``query_steps``):
        the sequential update of meta-training."""
        steps = self.query_steps if steps is None else steps
        return super().adapt_from(posterior, *support, steps=steps)

    def fit_posteriors(self, batch: TaskBatch) -> tuple[InnerFit, InnerFit]:
        """The two inner VI runs of one meta-iteration: (q_λtr, q_λtr⊕val).

        On meta-RL tasks D_tr is collected by the prior mean's policy and D_val by the policy
        of q_λtr's mean (``batch.collect_support``, ``batch.collect_query``).
        """
        m, sigma = self.adapt_prior()
        batch.collect_support(m.expand(len(batch), -1))
        nesting = self.nesting(batch.support)
        site, vi = self.prior.name, self.inner
        support = vi.fit(self.model, site, batch.support, self.adapt_prior(), nesting=nesting)
        # A task that diverged is left out of the meta-gradient; the query run restarts it from
        # the prior so that its NaNs cannot reach anything else.
        ok = support.finite[:, None]
        loc = torch.where(ok, support.loc, m)
        scale = None if support.scale is None else torch.where(ok, support.scale, sigma)
        start = (loc, scale)
        batch.collect_query(loc)
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

    def inner_result(self, batch: TaskBatch) -> GradientSum:
        """What a runner's worker computes for a shard of tasks and sends back: the
        Gradient-EM ascent directions (ĝ_m, ĝ_s) summed over the shard's finite tasks (two
        vectors however many tasks), which tasks counted, and the two inner runs' losses."""
        support, joint = self.fit_posteriors(batch)
        ok = support.finite & joint.finite
        losses = {"support": list(support.losses), "query": list(joint.losses)}
        return GradientSum.of(self.gradient_em(support, joint, ok), ok, losses=losses)

    def gradient_em(self, support, joint, tasks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
        if self.runner is None:
            support, joint = self.fit_posteriors(batch)
            ok = support.finite & joint.finite
            losses = support.losses, joint.losses

            def ascent():
                return tuple(g.mean(0) for g in self.gradient_em(support, joint, ok))

        else:
            # The workers send the directions summed over their shards' finite tasks.
            sums = self.runner.inner_result(self, batch)
            ok, ascent = sums.finite, sums.mean
            losses = sums.losses["support"], sums.losses["query"]
        bad = (~ok).nonzero().flatten().tolist()
        stats = {
            "elbo_support": _last(losses[0], -1.0 / num_tasks),
            "elbo_query": _last(losses[1], -1.0 / num_tasks),
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
            g_loc, g_log_scale = ascent()
            # The optimiser minimises −L: the gradient is minus the ascent direction.
            self.prior.loc.grad = -g_loc
            self.prior.log_scale.grad = -g_log_scale
            stats["grad_norm_loc"] = self.prior.loc.grad.norm().item()
            stats["grad_norm_log_scale"] = self.prior.log_scale.grad.norm().item()
            self.meta_optim.step()
        stats["prior_scale_median"] = self.prior.scale.median().item()
        rollout_stats(batch, stats)
        return stats


def _last(losses: list[float], factor: float) -> float:
    return losses[-1] * factor if losses else float("nan")
