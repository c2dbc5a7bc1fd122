"""Bayesian MAML (Yoon et al., 2018): SVGD particles in the inner loop and the chaser loss.

The posterior family is M weight particles per task. The meta-parameters are the M initial
particles Θ₀ (initialised as draws from the :class:`~pyro_gem.core.priors.GaussianPrior`). Per task:

1. the chaser: n SVGD steps from Θ₀ on D_tr, Θ_n(Θ₀), keeping the graph;
2. the leader: s more SVGD steps from Θ_n on D_tr ∪ D_val, with no graph;
3. the chaser loss ‖Θ_n − stop_grad(Θ_{n+s})‖², summed over particles, backpropagated to Θ₀
   through the n steps (objective L[2]: pull the posterior given D_tr towards the one given
   D_tr ∪ D_val).

SVGD targets the task's log-likelihood (``pyro_gem.core.likelihood.TaskLogLikelihood`` of the user's
model); the steps are x ← x + α φ(x) with the RBF kernel of :mod:`pyro_gem.methods.svgd`. BMAML's own
sinusoid code also places Gamma hyper-priors on the likelihood and weight precisions; here the
likelihood is the user's model as written and the particles carry no weight prior, so that
BMAML and the other methods score the same model.

Example::

    learner = BMAML(model, prior, num_particles=5, inner_lr=1e-3, inner_steps=1)
    stats = learner.step(batch)
    post = learner.adapt(x_support, y_support)    # a ParticlePosterior, predictions via Predictive
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from pyro_gem.core.batch import TaskBatch, validate_task_args
from pyro_gem.core.inner import TasksModel
from pyro_gem.core.likelihood import TaskLogLikelihood
from pyro_gem.core.posterior import ParticlePosterior
from pyro_gem.core.priors import GaussianPrior
from pyro_gem.methods.base import MetaLearner
from pyro_gem.methods.svgd import svgd_direction

__all__ = ["BMAML", "svgd_adapt"]


def svgd_adapt(
    loglik: TaskLogLikelihood,
    particles: torch.Tensor,
    steps: int,
    lr: float,
    create_graph: bool,
    record: Sequence[int] = (),
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """SVGD steps on every task's log-likelihood.

    :param loglik: the tasks' log-likelihood (weights ``(M, T, D)``).
    :param particles: ``(T, M, D)``, possibly with a graph to the meta-parameters.
    :param steps: the number of SVGD steps.
    :param lr: the SVGD step size.
    :param create_graph: keep every step's graph (backpropagation through the loop).
    :param record: steps after which to keep a copy of the particles.
    :returns: the final particles and ``{step: particles}`` for ``record``.
    """
    snapshots = {}
    for i in range(steps + 1):
        if i in record:
            snapshots[i] = particles.detach().clone()
        if i == steps:
            break
        if not particles.requires_grad:
            particles = particles.detach().requires_grad_()
        total = loglik(particles.transpose(0, 1)).sum()
        (grad,) = torch.autograd.grad(total, particles, create_graph=create_graph)
        particles = particles + lr * svgd_direction(particles, grad)
        if not create_graph:
            particles = particles.detach()
    return particles, snapshots


class BMAML(MetaLearner):
    """BMAML: M SVGD particles per task, meta-learned initial particles, the chaser loss.

    :param model: a single-task Pyro model that draws the network weights from ``prior``.
    :param prior: the prior the initial particles are drawn from (its parameters are not
        meta-learned: the particles are).
    :param meta_optim: a torch optimiser over ``[learner.particles]``; Adam(1e-3) if omitted.
    :param num_particles: M.
    :param inner_lr: the SVGD step size α.
    :param inner_steps: n, the chaser's SVGD steps on D_tr (also the steps of :meth:`adapt`).
    :param leader_steps: s, the leader's further steps on D_tr ∪ D_val (defaults to n).
    """

    name = "bmaml"

    def __init__(
        self,
        model: Callable,
        prior: GaussianPrior,
        meta_optim: torch.optim.Optimizer | None = None,
        *,
        num_particles: int = 5,
        inner_lr: float = 1e-3,
        inner_steps: int = 1,
        leader_steps: int | None = None,
    ):
        if num_particles < 1 or inner_steps < 1:
            raise ValueError(
                f"need num_particles >= 1 and inner_steps >= 1, got {num_particles}, {inner_steps}"
            )
        with torch.no_grad():
            draws = prior.loc + prior.scale * torch.randn(num_particles, prior.num_weights)
        self.particles = nn.Parameter(draws)
        super().__init__(model, prior, meta_optim, lambda p: [self.particles])
        self.inner_lr = float(inner_lr)
        self.steps = int(inner_steps)
        self.leader_steps = self.steps if leader_steps is None else int(leader_steps)

    @property
    def adapt_steps(self) -> int:
        return self.steps

    def meta_parameters(self) -> dict[str, torch.Tensor]:
        return {"particles": self.particles}

    def _start(self, num_tasks: int) -> torch.Tensor:
        return self.particles.expand(num_tasks, *self.particles.shape)

    def task_losses(self, batch: TaskBatch) -> tuple[torch.Tensor, dict]:
        chaser, _ = svgd_adapt(
            self.log_likelihood(batch.support),
            self._start(len(batch)),
            self.steps,
            self.inner_lr,
            create_graph=True,
        )
        leader, _ = svgd_adapt(
            self.log_likelihood(batch.joint()),
            chaser.detach(),
            self.leader_steps,
            self.inner_lr,
            create_graph=False,
        )
        query = self.log_likelihood(batch.query)(chaser.detach().transpose(0, 1)).mean(0)
        stats = {"meta_objective": query[query.isfinite()].mean().item()}
        return (chaser - leader).square().sum((-2, -1)), stats

    def adapt(
        self, *support: torch.Tensor, steps: int | None = None, record: Sequence[int] = ()
    ) -> ParticlePosterior:
        """SVGD from the meta-learned particles on new tasks' support sets.

        :returns: a :class:`~pyro_gem.core.posterior.ParticlePosterior` (and its ``history``).
        """
        num_tasks = validate_task_args(support, "support")
        steps = self.steps if steps is None else int(steps)
        tasks_model = TasksModel(self.model, self.nesting(support))
        particles, snapshots = svgd_adapt(
            self.log_likelihood(support),
            self._start(num_tasks).detach(),
            steps,
            self.inner_lr,
            create_graph=False,
            record=record,
        )
        return ParticlePosterior(tasks_model, self.prior.name, particles, steps, snapshots)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "particles": self.particles.detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.particles.copy_(state["particles"])
        super().load_state_dict(state)
