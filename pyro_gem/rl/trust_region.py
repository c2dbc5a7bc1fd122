"""A trust-region inner update for the VI of a policy (TRPO's step, on the posterior's mean).

The inner VI of GEM-BML(+) on meta-RL tasks may step like TRPO instead of by gradient: each
step moves every task's posterior mean along the natural gradient of the ELBO, the direction
``F⁻¹ ∇ELBO`` with F the Fisher matrix of the policy (the Hessian of the mean KL between the
current policy and the new one over the task's own states), found by conjugate gradient on
Fisher-vector products; the step is scaled to the trust region's boundary, a mean KL of
``max_kl``, then backtracked until the task's objective improves and the KL is within the
region (Schulman et al. 2015; the inner step the GEM-BML paper found best on 2D navigation). The
ELBO also holds the prior's KL, exactly quadratic in the whitened mean: the step is never longer
than that quadratic's optimum along the direction. A task whose step is never accepted does not
move. The guide's scales take a plain gradient step
of ``scale_lr``.

The objective of the line search is each task's ELBO with the likelihood at the posterior mean
(deterministic, so that the test is not Monte Carlo noise): log P(D | μ) − KL(q ‖ prior). Every
task has its own trust region; all are solved at once.

Example::

    inner = TrustRegionVI(policy=prior.net, max_kl=0.01, steps=1)
    learner = GEMBML(model, prior, plus=True, inner=inner)        # on MetaRLTasks

The data must be laid out as :class:`~pyro_gem.tasks.rl.MetaRLTasks` gives them
(``observations, actions, advantages, step_weights``): the KL is averaged with the step weights.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.optim
import torch
from pyro.infer import SVI

from pyro_gem.core.estimators import conjugate_gradient
from pyro_gem.core.inner import InnerProblem, InnerVI
from pyro_gem.core.likelihood import task_log_likelihood
from pyro_gem.rl.policy import policy_kl

__all__ = ["TrustRegionVI"]


class TrustRegionVI(InnerVI):
    """Inner VI whose steps are trust-region steps on the posterior means (see the module).

    :param policy: ``(theta (T, D), observations (T, N, obs)) -> (T, N, 2 · A)``, the policy
        network on batched weights (``prior.net``).
    :param max_kl: δ, the mean KL of one step's policy change.
    :param cg_steps: conjugate-gradient iterations.
    :param cg_damping: added to the Fisher-vector products.
    :param line_search_steps: backtracking steps.
    :param backtrack_ratio: the factor of each backtracking step.
    :param scale_lr: the gradient step of the guide's (unconstrained) scales.
    :param kwargs: :class:`~pyro_gem.core.inner.InnerVI`'s (``steps``, ``init_scale``, ...);
        the guide is whitened and mean-field Normal.
    """

    def __init__(
        self,
        policy: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        max_kl: float = 0.01,
        cg_steps: int = 10,
        cg_damping: float = 1e-5,
        line_search_steps: int = 15,
        backtrack_ratio: float = 0.8,
        scale_lr: float = 0.01,
        **kwargs,
    ):
        kwargs.setdefault("optim", pyro.optim.SGD({"lr": scale_lr}))
        super().__init__(**kwargs)
        if self.guide_cls.__name__ != "AutoNormal" or not self.whiten:
            raise ValueError("TrustRegionVI steps a whitened AutoNormal guide")
        if not max_kl > 0 or not 0 < backtrack_ratio < 1:
            raise ValueError(
                f"need max_kl > 0 and 0 < backtrack_ratio < 1, got {max_kl}, {backtrack_ratio}"
            )
        self.policy, self.max_kl = policy, float(max_kl)
        self.cg_steps, self.cg_damping = int(cg_steps), float(cg_damping)
        self.line_search_steps, self.backtrack_ratio = int(line_search_steps), backtrack_ratio
        self.scale_lr = float(scale_lr)

    def svi_step(self, svi: SVI, problem: InnerProblem) -> float:
        params = dict(problem.guide.named_parameters())
        u = params[f"locs.{problem.guide_site}_unconstrained"]
        s_raw = params[f"scales.{problem.guide_site}_unconstrained"]
        shape = u.shape
        num_tasks = shape[0]
        elbo = self._elbo(problem.nesting)
        loss = elbo.differentiable_loss(svi.model, svi.guide, *problem.args)
        g_u, g_s = torch.autograd.grad(loss, [u, s_raw])
        p_loc = problem.prior_loc.reshape(-1, shape[-1]).expand(num_tasks, -1)
        p_scale = problem.prior_scale.reshape(-1, shape[-1]).expand(num_tasks, -1)
        observations, _, _, step_weights = problem.args
        u0 = u.detach().reshape(num_tasks, -1)
        with torch.no_grad():
            old = self.policy(p_loc + p_scale * u0, observations)

        def step_kl(u_flat: torch.Tensor) -> torch.Tensor:
            new = self.policy(p_loc + p_scale * u_flat, observations)
            return (step_weights * policy_kl(old, new)).sum(-1)  # (T,)

        point = u0.clone().requires_grad_()
        (grad_kl,) = torch.autograd.grad(step_kl(point).sum(), point, create_graph=True)

        def fisher_vector(v: torch.Tensor) -> torch.Tensor:
            (hv,) = torch.autograd.grad((grad_kl * v).sum(), point, retain_graph=True)
            return hv + self.cg_damping * v

        ascent = -g_u.reshape(num_tasks, -1)
        direction = conjugate_gradient(fisher_vector, ascent, self.cg_steps)
        direction = direction.detach()
        curvature = (direction * fisher_vector(direction)).sum(-1, keepdim=True).detach()
        to_boundary = (2 * self.max_kl / curvature.clamp_min(1e-12)).sqrt()
        # The prior's KL is exactly quadratic in the whitened mean (curvature I): no longer
        # than its Newton step along the direction, where the ELBO's gain turns to loss.
        to_prior_optimum = (ascent * direction).sum(-1, keepdim=True) / direction.square().sum(
            -1, keepdim=True
        ).clamp_min(1e-12)
        full_step = direction * torch.minimum(to_boundary, to_prior_optimum.clamp_min(0))
        scale = torch.nn.functional.softplus(s_raw.detach()).reshape(num_tasks, -1)

        def objective(u_flat: torch.Tensor) -> torch.Tensor:
            """Per task: log P(D | μ) − KL(q ‖ prior), whitened (the prior is N(0, I))."""
            loglik = task_log_likelihood(
                problem.model, problem.site, p_loc + p_scale * u_flat, problem.args, problem.nesting
            )
            kl = 0.5 * (u_flat**2 + scale**2 - 1 - 2 * scale.log()).sum(-1)
            return loglik - kl

        with torch.no_grad():
            before = objective(u0)
            fraction = torch.ones(num_tasks, 1, dtype=u0.dtype, device=u0.device)
            accepted = torch.zeros(num_tasks, dtype=torch.bool, device=u0.device)
            for _ in range(self.line_search_steps):
                candidate = u0 + fraction * full_step
                ok = (objective(candidate) > before) & (step_kl(candidate) <= self.max_kl)
                accepted |= ok
                if accepted.all():
                    break
                fraction = torch.where(accepted[:, None], fraction, fraction * self.backtrack_ratio)
            new_u = torch.where(accepted[:, None], u0 + fraction * full_step, u0)
            u.copy_(new_u.reshape(shape))
            s_raw.sub_(self.scale_lr * g_s)
        return loss.item()
