"""MAML with its TRPO meta-update (Finn et al. 2017, meta-RL): the meta-step on the prior mean m
is a trust-region step on the post-update surrogate, backpropagated through the inner
policy-gradient step.

Per meta-iteration on T tasks: D_tr is rolled out with m, θ'_τ(m) = m + α ∇ log P(D_tr | m) (the
model's surrogate; second order, the graph kept), D_val is rolled out with θ'_τ. The meta-loss is
the importance-weighted surrogate ``L(m) = −mean_τ Σ_t w_t r_t(m) Â_t`` with the ratio
``r_t = π_θ'(m)(a_t | s_t) / π_old(a_t | s_t)`` (π_old: the policy that collected D_val), and the
constraint the mean KL(π_θ'(m) ‖ π_old) over D_val's steps ≤ δ. The step direction solves
F s = −∇L by conjugate gradient on Fisher-vector products (the Hessian of the KL through the
inner step, plus damping), scaled to the constraint's boundary, then backtracked until the loss
improves and the KL is within δ (pytorch-maml-rl's choices: δ = 0.01, 10 CG iterations, damping
1e-5, 15 backtracks of 0.8). No step is taken if none is accepted.

Example::

    learner = MAMLTRPO(model, prior, inner_lr=0.1, inner_steps=1)
    stats = learner.step(tasks.sample(20, gen))     # tasks: a MetaRLTasks family
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pyro_gem.core.estimators import conjugate_gradient, sgd_adapt
from pyro_gem.core.priors import GaussianPrior
from pyro_gem.methods.base import rollout_stats, warn_diverged
from pyro_gem.methods.point_estimate import MAML
from pyro_gem.rl.policy import action_log_prob, policy_kl

__all__ = ["MAMLTRPO"]


class MAMLTRPO(MAML):
    """MAML for meta-RL with the TRPO meta-update (see the module docstring).

    :param model: the task model; its log-likelihood is the policy-gradient surrogate.
    :param prior: the prior; only its mean m is meta-learned.
    :param meta_optim: applies the accepted step to m (its gradient is set to −step); plain SGD
        with rate 1 if omitted.
    :param max_kl: δ, the trust region's mean KL.
    :param cg_steps: conjugate-gradient iterations.
    :param cg_damping: added to the Fisher-vector products.
    :param line_search_steps: backtracking steps.
    :param backtrack_ratio: the factor of each backtracking step.
    """

    def __init__(
        self,
        model: Callable,
        prior: GaussianPrior,
        meta_optim: torch.optim.Optimizer | None = None,
        *,
        max_kl: float = 0.01,
        cg_steps: int = 10,
        cg_damping: float = 1e-5,
        line_search_steps: int = 15,
        backtrack_ratio: float = 0.8,
        **kwargs,
    ):
        if meta_optim is None:
            meta_optim = torch.optim.SGD([prior.loc], lr=1.0)
        super().__init__(model, prior, meta_optim, **kwargs)
        if not max_kl > 0 or not 0 < backtrack_ratio < 1:
            raise ValueError(
                f"need max_kl > 0 and 0 < backtrack_ratio < 1, got {max_kl}, {backtrack_ratio}"
            )
        self.max_kl, self.cg_steps, self.cg_damping = float(max_kl), int(cg_steps), cg_damping
        self.line_search_steps, self.backtrack_ratio = int(line_search_steps), backtrack_ratio

    def _adapted(self, loc: torch.Tensor, support: tuple, create_graph: bool) -> torch.Tensor:
        theta = loc.expand(len(support[0]), -1)
        return sgd_adapt(
            self.log_likelihood(support), theta, self.inner.steps, self.inner_lr, create_graph
        )

    def step(self, batch) -> dict:
        """One meta-iteration: rollouts before and after the inner step, then a TRPO step on m.

        :raises ValueError: for tasks that are not meta-RL tasks (there is no policy to
            constrain).
        """
        if not getattr(batch, "on_policy", False):
            raise ValueError(
                "MAML's TRPO meta-update constrains a policy's KL: it needs meta-RL tasks "
                "(pyro_gem.tasks.rl.MetaRLTasks); use the gradient meta-update for others"
            )
        num_tasks = batch.validate()
        loc = self.prior.loc
        batch.collect_support(loc.detach().expand(num_tasks, -1))
        batch.collect_query(self._adapted(loc.detach(), batch.support, create_graph=False))
        policy = batch.family.sampler.policy

        def objective(tasks) -> tuple:
            """The post-update surrogate and KL of ``tasks`` as functions of their adapted
            weights, and the weights θ'(m) with their graph to m."""
            obs, actions, adv, weights = tasks.query
            theta = self._adapted(loc, tasks.support, create_graph=True)
            with torch.no_grad():
                old = policy(theta.detach(), obs)
                old_log_prob = action_log_prob(old, actions)

            def loss_and_kl(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                out = policy(theta, obs)
                ratio = (action_log_prob(out, actions) - old_log_prob).exp()
                loss = -(weights * ratio * adv).sum(-1)  # (T,)
                return loss, (weights * policy_kl(out, old)).sum(-1)

            return loss_and_kl, theta

        loss_and_kl, theta = objective(batch)
        losses, kls = loss_and_kl(theta)
        ok = losses.detach().isfinite() & kls.detach().isfinite()
        bad = (~ok).nonzero().flatten().tolist()
        warn_diverged(bad, num_tasks, stacklevel=2)
        stats: dict = {"nan_tasks": bad}
        if not ok.any():
            stats["meta_objective"] = float("nan")
            return self._finish(stats, batch)
        kept = batch
        if not ok.all():
            # Rebuilt on the finite tasks alone: a NaN in the shared graph would reach m's
            # gradient (a zero times NaN), and every Fisher-vector product with it.
            kept = batch.select(ok.nonzero().flatten())
            loss_and_kl, theta = objective(kept)
            losses, kls = loss_and_kl(theta)
        loss, kl = losses.mean(), kls.mean()
        (grad,) = torch.autograd.grad(loss, loc, retain_graph=True)
        (grad_kl,) = torch.autograd.grad(kl, loc, create_graph=True)

        def fisher_vector(v: torch.Tensor) -> torch.Tensor:
            (hv,) = torch.autograd.grad((grad_kl * v[0]).sum(), loc, retain_graph=True)
            return (hv + self.cg_damping * v[0])[None]

        direction = conjugate_gradient(fisher_vector, -grad[None].detach(), self.cg_steps)[0]
        curvature = (direction * fisher_vector(direction[None])[0]).sum()
        full_step = direction * torch.sqrt(2 * self.max_kl / curvature.clamp_min(1e-12))
        old_loss = loss.item()
        accepted, fraction = None, 1.0
        for _ in range(self.line_search_steps):
            candidate = loc.detach() + fraction * full_step
            theta_new = self._adapted(candidate, kept.support, create_graph=False)
            with torch.no_grad():
                new_losses, new_kls = loss_and_kl(theta_new)
            new_loss, new_kl = new_losses.mean().item(), new_kls.mean().item()
            if new_loss < old_loss and new_kl <= self.max_kl:
                accepted = fraction
                break
            fraction *= self.backtrack_ratio
        stats.update(
            meta_objective=-old_loss,
            grad_norm_loc=grad.norm().item(),
            kl=new_kl if accepted is not None else float("nan"),
            step_fraction=accepted if accepted is not None else 0.0,
        )
        if accepted is not None:
            self.meta_optim.zero_grad()
            self.prior.loc.grad = -(accepted * full_step).detach()
            self.meta_optim.step()
        return self._finish(stats, batch)

    def _finish(self, stats: dict, batch) -> dict:
        stats["prior_scale_median"] = self.prior.scale.median().item()
        rollout_stats(batch, stats)
        return stats
