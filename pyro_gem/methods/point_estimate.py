"""Point-estimate meta-learners of the paper's comparison: MAML, first-order MAML, Reptile,
iMAML and pre-training.

Each task's posterior is a point (a delta), adapted from the prior mean m by K steps of gradient
ascent on the task's log-likelihood (``pyro_gem.core.likelihood.TaskLogLikelihood`` of the user's own
Pyro model). Only m is meta-learned; the prior's scale is not used (iMAML reads a fixed one from
its proximal strength). Each method is a per-task loss whose gradient in m is its meta-gradient;
:meth:`~pyro_gem.methods.base.MetaLearner.backprop_step` backpropagates it and leaves out tasks
whose inner loop diverged.

- :class:`MAML` (objective L[2], gradient by backpropagation through the K steps; second order,
  or first order with ``first_order=True``): minimise −log P(D_val | θ_K(D_tr)).
- :class:`Reptile` (objective L[1], the Gradient-EM direction of a delta posterior with fixed
  variance): move m towards θ_K(D_tr ∪ D_val); the ascent direction is θ_K − m.
- :class:`IMAML` (objective L[2], implicit gradient of a proximal MAP inner problem, any inner
  optimiser).
- :class:`PreTraining` (the prior collapsed to a point: fit m to all tasks' data pooled).

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

from pyro_gem.core.batch import TaskBatch, validate_task_args
from pyro_gem.core.estimators import GradientSum, implicit_gradient, proximal_newton, sgd_adapt
from pyro_gem.core.inner import InnerVI, TasksModel
from pyro_gem.core.posterior import ParticlePosterior
from pyro_gem.core.priors import GaussianPrior
from pyro_gem.methods.base import MetaLearner, rollout_stats, warn_diverged

__all__ = ["IMAML", "MAML", "PreTraining", "Reptile"]

# The adapt path runs Pyro SVI with a delta guide under a prior this wide: its pull, (θ − m)/σ²,
# is 1e-8 of the distance, so the steps are plain gradient steps on the log-likelihood.
_FLAT_PRIOR_SCALE = 1e4

#: The ``inner_optim`` that selects iMAML's proximal Newton-CG solver
#: (:func:`~pyro_gem.core.estimators.proximal_newton`); it needs the proximal problem itself, so only
#: iMAML takes it.
NEWTON = "newton"


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

    def adapt_weights(self, args: Sequence, create_graph: bool = False) -> torch.Tensor:
        """θ_K for every task in ``args``, from θ_0 = m."""
        num_tasks = validate_task_args(args)
        start = self.prior.loc if create_graph else self.prior.loc.detach()
        theta = start.expand(num_tasks, -1)
        return sgd_adapt(
            self.log_likelihood(args), theta, self.inner.steps, self.inner_lr, create_graph
        )

    def adapt_prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        # adapt() runs the same K gradient steps through Pyro SVI with a delta guide.
        return self.prior.loc.detach(), torch.full_like(self.prior.loc, _FLAT_PRIOR_SCALE)

    runner = None

    def step(self, batch: TaskBatch) -> dict:
        if self.runner is None:
            return super().step(batch)
        # The workers send the per-task meta-gradients summed over their shards' finite tasks
        # (inner_result); the others are left out and reported.
        num_tasks = batch.validate()
        sums = self.runner.inner_result(self, batch)
        ok = sums.finite
        bad = (~ok).nonzero().flatten().tolist()
        warn_diverged(bad, num_tasks, stacklevel=3)
        self.meta_optim.zero_grad()
        stats = {"meta_objective": float("nan"), "nan_tasks": bad}
        if ok.any():
            (self.prior.loc.grad,) = sums.mean()
            loglik = sums.per_task["loglik"][ok]
            stats["meta_objective"] = loglik[loglik.isfinite()].mean().item()
            stats["grad_norm_loc"] = self.prior.loc.grad.norm().item()
            self.meta_optim.step()
        stats["prior_scale_median"] = self.prior.scale.median().item()
        rollout_stats(batch, stats)
        return stats


def _finite_sum(grads: torch.Tensor, loglik: torch.Tensor, loss_is_loglik: bool) -> GradientSum:
    """Per-task gradients ``(T, D)`` summed over the tasks whose gradient is finite, and whose
    log-likelihood is finite where it is the task's loss (first-order MAML; Reptile's loss is
    ½‖m − θ_K‖²): in-process leaves out the tasks of non-finite loss. One difference: a task
    of finite loss and non-finite gradient is left out here, where in-process skips the step."""
    ok = torch.isfinite(grads).all(-1)
    if loss_is_loglik:
        ok &= torch.isfinite(loglik)
    return GradientSum.of((grads[ok],), ok, per_task={"loglik": loglik})


class MAML(_PointEstimateLearner):
    """MAML: backpropagation through K inner gradient steps, objective L[2].

    :param first_order: drop the second-order terms (first-order MAML): the meta-gradient is the
        query loss's gradient at θ_K.
    """

    def __init__(self, *args, first_order: bool = False, runner=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.first_order = first_order
        if runner is not None and not first_order:
            raise ValueError(
                "MAML backpropagates its meta-gradient through the inner loop (second order): "
                "its inner loops cannot run on other workers. First-order MAML "
                "(first_order=True), Reptile and GEM-BML(+) need only each task's inner result"
            )
        self.runner = runner

    @property
    def name(self) -> str:
        return "fomaml" if self.first_order else "maml"

    def task_losses(self, batch: TaskBatch) -> tuple[torch.Tensor, dict]:
        # Meta-RL: D_tr from m's policy, D_val from θ_K's (no-ops for supervised tasks).
        batch.collect_support(self.prior.loc.detach().expand(len(batch), -1))
        theta = self.adapt_weights(batch.support, create_graph=not self.first_order)
        batch.collect_query(theta.detach())
        if self.first_order:
            # dθ_K/dm taken as the identity: the query gradient at θ_K reaches m unchanged.
            loc = self.prior.loc
            theta = loc + (theta - loc).detach()
        return -self.log_likelihood(batch.query)(theta), {}

    def inner_result(self, batch: TaskBatch) -> GradientSum:
        """First-order MAML's per-task meta-gradient, the query loss's gradient at θ_K, summed
        over the finite tasks, and the query log-likelihood ``(T,)``: what a runner's worker
        sends back."""
        batch.collect_support(self.prior.loc.detach().expand(len(batch), -1))
        theta = self.adapt_weights(batch.support)
        batch.collect_query(theta)
        theta = theta.detach().requires_grad_()
        loglik = self.log_likelihood(batch.query)(theta)
        (grad,) = torch.autograd.grad(-loglik.sum(), theta)
        return _finite_sum(grad, loglik.detach(), loss_is_loglik=True)


class Reptile(_PointEstimateLearner):
    """Reptile: move the prior mean towards the adapted weights θ_K(D_tr ∪ D_val).

    The meta-optimiser receives −mean_τ(θ_K − m) as the gradient (Reptile with an optimiser, as
    in Nichol et al.'s implementation): it is the gradient of ½‖m − stop_grad(θ_K)‖². Plain SGD
    with step ε gives m ← m + ε·mean(θ_K − m).

    :param runner: where the inner loops run (:mod:`pyro_gem.runners`): the update needs only
        each task's θ_K, so they may run on other workers.
    """

    name = "reptile"

    def __init__(self, *args, runner=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.runner = runner

    def _adapted(self, batch: TaskBatch) -> tuple[torch.Tensor, tuple]:
        if getattr(batch, "on_policy", False):
            # Meta-RL: K steps on D_tr (m's rollouts), then K more on D_val (the rollouts of
            # the adapted policy), each on the data of the policy it updates.
            batch.collect_support(self.prior.loc.detach().expand(len(batch), -1))
            first = self.adapt_weights(batch.support)
            batch.collect_query(first)
            data = batch.query
            theta = sgd_adapt(
                self.log_likelihood(data), first, self.inner.steps, self.inner_lr, False
            )
            return theta, data
        data = batch.joint()
        return self.adapt_weights(data), data

    def task_losses(self, batch: TaskBatch) -> tuple[torch.Tensor, dict]:
        theta, data = self._adapted(batch)
        loglik = self.log_likelihood(data)(theta)
        stats = {"meta_objective": loglik[loglik.isfinite()].mean().item()}
        return 0.5 * (self.prior.loc - theta).square().sum(-1), stats

    def inner_result(self, batch: TaskBatch) -> GradientSum:
        """The gradient of ½‖m − θ_K‖², m − θ_K, summed over the finite tasks, and
        log P(D | θ_K) ``(T,)``: what a runner's worker computes for a shard and sends back."""
        theta, data = self._adapted(batch)
        loglik = self.log_likelihood(data)(theta)
        return _finite_sum(
            (self.prior.loc.detach() - theta).detach(), loglik.detach(), loss_is_loglik=False
        )


class PreTraining(_PointEstimateLearner):
    """Pre-training: one network fitted to every task's data pooled (the prior collapsed to a
    point, σ → 0: the meta-gradient is ∇_m log P(D_tr ∪ D_val | m)). At meta-test it is
    fine-tuned by the same K gradient steps as MAML."""

    name = "pretrain"

    def task_losses(self, batch: TaskBatch) -> tuple[torch.Tensor, dict]:
        data = batch.joint()
        theta = self.prior.loc.expand(validate_task_args(data), -1)
        return -self.log_likelihood(data)(theta), {}


class IMAML(_PointEstimateLearner):
    """iMAML: a proximal inner problem solved by any optimiser, differentiated implicitly.

    The inner problem is MAP under the prior N(m, I/λ): minimise −log P(D_tr | θ) + λ/2 ‖θ − m‖²
    from θ = m. It is solved either by Pyro SVI with a delta guide and any PyroOptim, or, with
    ``inner_optim="newton"``, by :func:`~pyro_gem.core.estimators.proximal_newton` (Newton-CG with a
    backtracking search; ``inner_steps`` Newton steps of ``cg_steps`` CG iterations each), which
    converges where a fixed gradient step diverges. The meta-gradient of −log P(D_val | θ*) is
    :func:`~pyro_gem.core.estimators.implicit_gradient`: conjugate gradient on Hessian-vector
    products, exact for a converged inner problem. :meth:`adapt` runs the same solver.

    :param reg: the proximal strength λ (in units of the log-likelihood).
    :param cg_steps: conjugate-gradient iterations (implicit gradient and Newton steps).
    :param inner_optim: a PyroOptim, ``"newton"``, or ``None`` for plain SGD at ``inner_lr``.
    """

    name = "imaml"

    def __init__(
        self,
        *args,
        reg: float = 1.0,
        cg_steps: int = 5,
        inner_optim: pyro.optim.PyroOptim | str | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if reg <= 0:
            raise ValueError(f"reg (the proximal strength λ) must be > 0, got {reg}")
        if isinstance(inner_optim, str) and inner_optim != NEWTON:
            raise ValueError(f"inner_optim must be a PyroOptim or {NEWTON!r}, got {inner_optim!r}")
        self.reg = float(reg)
        self.cg_steps = int(cg_steps)
        self.newton = inner_optim == NEWTON
        if isinstance(inner_optim, pyro.optim.PyroOptim):
            self.inner = InnerVI(
                guide="delta", optim=inner_optim, steps=self.inner.steps, whiten=False
            )

    def adapt_prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.prior.loc.detach(), torch.full_like(self.prior.loc, self.reg**-0.5)

    def solve(
        self, args: Sequence, steps: int | None = None, record: Sequence[int] = ()
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """θ* ``(T, D)`` of every task in ``args`` by Newton-CG, and ``{step: θ}`` for ``record``."""
        loglik = self.log_likelihood(args)
        start = self.prior.loc.detach().expand(loglik.num_tasks, -1)
        steps = self.inner.steps if steps is None else int(steps)
        return proximal_newton(lambda t: -loglik(t), start, self.reg, steps, self.cg_steps, record)

    def adapt(self, *support: torch.Tensor, steps: int | None = None, record: Sequence[int] = ()):
        """The adapted point θ* of new tasks (a one-particle :class:`ParticlePosterior` when the
        solver is Newton-CG, otherwise the delta guide's :class:`~pyro_gem.core.posterior.Posterior`)."""
        if not self.newton:
            return super().adapt(*support, steps=steps, record=record)
        validate_task_args(support, "support")
        steps = self.inner.steps if steps is None else int(steps)
        theta, snapshots = self.solve(support, steps, record)
        model = TasksModel(self.model, self.nesting(support))
        points = {k: v[:, None] for k, v in snapshots.items()}  # one particle per task
        return ParticlePosterior(model, self.prior.name, theta[:, None], steps, points)

    def task_losses(self, batch: TaskBatch) -> tuple[torch.Tensor, dict]:
        if self.newton:
            theta, _ = self.solve(batch.support)
        else:
            theta = self.inner.fit(
                self.model,
                self.prior.name,
                batch.support,
                self.adapt_prior(),
                nesting=self.nesting(batch.support),
            ).loc
        theta = theta.detach().requires_grad_()
        val_loss = -self.log_likelihood(batch.query)(theta)
        (grad_val,) = torch.autograd.grad(val_loss.sum(), theta)
        train = self.log_likelihood(batch.support)
        g = implicit_gradient(lambda t: -train(t), grad_val, theta, self.reg, self.cg_steps)
        # A surrogate whose gradient in m is g; its value is not the objective.
        ok = val_loss.isfinite() & g.isfinite().all(-1)
        surrogate = torch.where(ok, (self.prior.loc * g).sum(-1), torch.nan)
        stats = {"meta_objective": -val_loss.detach()[val_loss.isfinite()].mean().item()}
        return surrogate, stats
