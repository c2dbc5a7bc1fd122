"""Per-task log-likelihoods of a Pyro model at given weights: the objectives of the inner loops
that are not Pyro SVI (MAML, Reptile, iMAML's implicit gradient, the unrolled VI of ABML, SVGD).

A point-estimate inner loop adapts the weights θ of each task by gradient steps on the task's
negative log-likelihood. :func:`task_log_likelihood` evaluates log P(D_τ | θ_τ) for T tasks at once
from the user's own Pyro model: the prior site is conditioned on θ, and every observed site and
``pyro.factor`` contributes, summed over everything right of the tasks plate. The meta-test's
log predictive density and its metrics read the same model run (:meth:`TaskLogLikelihood.evaluate`).

Example::

    loglik = task_log_likelihood(model, "theta", theta, (x, y), nesting=1)   # (T,)
    loglik = TaskLogLikelihood(model, "theta", (x, y), nesting=1)
    loglik(theta)                       # (T,) for theta (T, D); (P, T) for particles (P, T, D)
    total, sites = loglik.evaluate(theta)   # and the model's sites, e.g. sites["mean"] (P, T, N)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample

from pyro_gem.core.batch import task_count
from pyro_gem.core.inner import TasksModel

__all__ = ["TaskLogLikelihood", "is_factor", "task_log_likelihood"]


def is_factor(node: dict) -> bool:
    """Whether a trace node is a ``pyro.factor`` (a Unit site: a log density, no observation)."""
    fn = node["fn"]
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return isinstance(fn, dist.Unit)


def _trace(model: Callable, site: str, theta: torch.Tensor, args: Sequence, nesting: int):
    """The tasks-plated model run on ``args`` with the prior site conditioned on ``theta``."""
    tasks_model = TasksModel(model, nesting)
    value = theta.reshape(theta.shape[:1] + (1,) * nesting + theta.shape[1:])
    with pyro.settings.context(module_local_params=True), pyro.validation_enabled(False):
        return poutine.trace(poutine.condition(tasks_model, data={site: value})).get_trace(*args)


def _trace_log_likelihood(trace, site: str, theta: torch.Tensor, nesting: int) -> torch.Tensor:
    """Sum of every observed site's (and ``pyro.factor``'s) log density per task, ``(T,)``."""
    total = theta.new_zeros(theta.shape[0])
    for name, node in trace.nodes.items():
        if node["type"] != "sample" or site_is_subsample(node) or name == site:
            continue
        if not node["is_observed"]:
            raise ValueError(
                f"latent site {name!r}: point-estimate learners and the meta-test's log "
                f"likelihood need a model whose only latent site is the prior site {site!r}"
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
    trace = _trace(model, site, theta, args, nesting)
    return _trace_log_likelihood(trace, site, theta, nesting)


class TaskLogLikelihood:
    """log P(D_τ | θ_τ) of fixed tasks' data as a function of the weights.

    Leading dimensions of ``theta`` left of ``(T, D)`` (Monte Carlo particles, SVGD particles)
    are evaluated as extra copies of the tasks, in one vectorised model run.

    :param model: the user's single-task model.
    :param site: the prior's sample site.
    :param args: the model's arguments, stacked over tasks ``(T, N, ...)``.
    :param nesting: the model's plate nesting.
    """

    def __init__(self, model: Callable, site: str, args: Sequence, nesting: int):
        self.model, self.site, self.args, self.nesting = model, site, tuple(args), nesting
        self.num_tasks = task_count(self.args)
        self._repeated: dict[int, tuple] = {1: self.args}

    def _flat(self, theta: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """``theta (..., T, D)`` as ``(copies · T, D)`` and the arguments repeated to match."""
        if theta.dim() < 2 or theta.shape[-2] != self.num_tasks:
            raise ValueError(
                f"theta must have shape (..., {self.num_tasks}, D), got {tuple(theta.shape)}"
            )
        flat = theta.reshape(-1, theta.shape[-1])
        copies = flat.shape[0] // self.num_tasks
        if copies not in self._repeated:
            self._repeated[copies] = tuple(
                a.repeat(copies, *(1,) * (a.dim() - 1)) if torch.is_tensor(a) else a
                for a in self.args
            )
        return flat, self._repeated[copies]

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        flat, args = self._flat(theta)
        return task_log_likelihood(self.model, self.site, flat, args, self.nesting).reshape(
            theta.shape[:-1]
        )

    def evaluate(self, theta: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The log likelihood and the model's site values at ``theta (..., T, D)``.

        :returns: ``(log_lik (..., T), {site: (..., T, ...)})`` with every deterministic and
            observed site of the model except ``pyro.factor`` sites (values as the model's
            tasks plate lays them out, the leading dims of ``theta`` in front).
        """
        flat, args = self._flat(theta)
        trace = _trace(self.model, self.site, flat, args, self.nesting)
        loglik = _trace_log_likelihood(trace, self.site, flat, self.nesting)
        lead = theta.shape[:-2]
        sites = {
            name: node["value"].reshape(lead + (self.num_tasks,) + node["value"].shape[1:])
            for name, node in trace.nodes.items()
            if node["type"] == "sample"
            and name != self.site
            and not site_is_subsample(node)
            and not is_factor(node)
            and torch.is_tensor(node["value"])
            and node["value"].dim() > 0
            and node["value"].shape[0] == flat.shape[0]
        }
        return loglik.reshape(theta.shape[:-1]), sites

    def trace_nodes(self, theta: torch.Tensor) -> dict[str, dict]:
        """The model's trace nodes at weights ``theta (T, D)`` (to inspect its sites)."""
        flat, args = self._flat(theta)
        return dict(_trace(self.model, self.site, flat, args, self.nesting).nodes)
