"""Per-task log-likelihoods of a Pyro model at given weights: the objectives of point-estimate
inner loops (MAML, first-order MAML, Reptile).

A point-estimate inner loop adapts the weights θ of each task by gradient steps on the task's
negative log-likelihood. :func:`task_log_likelihood` evaluates log P(D_τ | θ_τ) for T tasks at once
from the user's own Pyro model: the prior site is conditioned on θ, and every observed site and
``pyro.factor`` contributes, summed over everything right of the tasks plate.

Example::

    loglik = task_log_likelihood(model, "theta", theta, (x, y), nesting=1)   # (T,)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample

from pyro_gem.inner import TasksModel

__all__ = ["task_log_likelihood"]


def task_log_likelihood(
    model: Callable, site: str, theta: torch.Tensor, args: Sequence, nesting: int
) -> torch.Tensor:
    """log P(D_τ | θ_τ) for every task, differentiable in ``theta``.

    :param model: the user's single-task model.
    :param site: the prior's sample site.
    :param theta: weights ``(T, D)``.
    :param args: the model's arguments, stacked over tasks ``(T, N, ...)``.
    :param nesting: the model's plate nesting.
    :returns: ``(T,)``.
    :raises ValueError: if the model has latent sites other than ``site`` (a point-estimate
        inner loop has nothing to do with them).
    """
    tasks_model = TasksModel(model, nesting)
    value = theta.reshape(theta.shape[:1] + (1,) * nesting + theta.shape[1:])
    with pyro.settings.context(module_local_params=True), pyro.validation_enabled(False):
        trace = poutine.trace(poutine.condition(tasks_model, data={site: value})).get_trace(*args)
    total = theta.new_zeros(theta.shape[0])
    for name, node in trace.nodes.items():
        if node["type"] != "sample" or site_is_subsample(node) or name == site:
            continue
        if not node["is_observed"]:
            raise ValueError(
                f"latent site {name!r}: point-estimate learners need a model whose only latent "
                f"site is the prior site {site!r}"
            )
        log_p = scale_and_mask(node["fn"].log_prob(node["value"]), node["scale"], node["mask"])
        if not torch.is_tensor(log_p):
            continue
        while log_p.dim() < nesting + 1:
            log_p = log_p.unsqueeze(0)
        # The tasks dim sits left of the model's plates; sum what is right of it.
        tasks_idx = log_p.dim() - (nesting + 1)
        if tasks_idx:
            log_p = log_p.sum(tuple(range(tasks_idx)))
        total = total + log_p.reshape(log_p.shape[0], -1).sum(-1)
    return total
