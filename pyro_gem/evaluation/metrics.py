"""Metrics of held-out query sets: what a meta-test scores after each number of inner steps.

A :class:`Metric` maps a :class:`Query` (one chunk of adapted tasks and their query sets) to one
value per task. Every model is scored by the :class:`LogPredictiveDensity` of its query sets; a
task family lists the metrics of its own kind in ``metrics`` (regression: :class:`SquaredError`
and :class:`IntervalCoverage`), and a user's family adds one in a few lines.

Example (a metric of a count model whose ``model(x, y=None)`` records ``pyro.deterministic("rate",
...)``)::

    class RateError(Metric):
        name = "rate_mae"

        def __call__(self, query: Query) -> torch.Tensor:
            rate = query.sites()["rate"]                    # (S, T, N): one value per draw of θ
            return (rate.mean(0) - query.target).abs().mean(-1)   # (T,)

    class Counts(TaskFamily):
        metrics = (RateError(),)
        ...
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from pyro_gem.core.likelihood import TaskLogLikelihood, is_factor

if TYPE_CHECKING:
    from pyro_gem.core.posterior import ParticlePosterior, Posterior

__all__ = [
    "IntervalCoverage",
    "LogPredictiveDensity",
    "Metric",
    "MetricError",
    "Query",
    "SquaredError",
    "divergence_counts",
    "mean_ci95",
]


#: Query-data elements evaluated at once by default (the meta-test's chunks and a Query's model
#: runs): 200 sinusoid tasks, 71 episodes of 5-way Omniglot with 15 query images per class, 2 of
#: miniImageNet.
CHUNK_ELEMENTS = 2**22


class MetricError(ValueError):
    """A metric cannot score this model (e.g. it needs an observation site the model lacks)."""


def mean_ci95(values: torch.Tensor) -> list[float]:
    """Mean and the half-width of its normal 95% confidence interval, as a JSON-ready list."""
    values = values.double()
    half = 1.96 * values.std(unbiased=True) / values.numel() ** 0.5 if values.numel() > 1 else 0.0
    return [values.mean().item(), float(half)]


def divergence_counts(finite: dict) -> dict:
    """A meta-test's divergence counts from ``{step: (T,) bool}``, whether each task's scores
    are finite at that step count: ``{"diverged": tasks non-finite at any count,
    "diverged_per_step": {str(step): tasks non-finite at it}}``."""
    anywhere = ~torch.stack(list(finite.values())).all(0)
    per_step = {str(s): int((~ok).sum()) for s, ok in finite.items()}
    return {"diverged": int(anywhere.sum()), "diverged_per_step": per_step}


class Query:
    """The query sets of T adapted tasks, as a metric sees them.

    Everything is computed once and shared by the metrics that ask for it: posterior draws of
    the weights, the model run on the full query data under each draw (its log likelihood and
    the values of its sites), and posterior predictive samples at the query inputs.

    :param posterior: the adapted posterior of the T tasks.
    :param args: the model's query arguments, stacked over tasks ``(T, N, ...)``; the last is
        the observed target.
    :param num_samples: posterior draws (a particle posterior uses its particles instead).
    :param generator: the random stream of the weight draws; the predictive samples of
        :meth:`predictive` come from torch's global stream, as :meth:`Posterior.predict` draws.
    :param max_elements: input elements per model run when evaluating the draws: the draws are
        evaluated in runs of as many copies of the T tasks' query data as fit (bounds memory;
        default :data:`CHUNK_ELEMENTS`).
    """

    def __init__(
        self,
        posterior: Posterior | ParticlePosterior,
        args: Sequence[torch.Tensor],
        num_samples: int = 100,
        generator: torch.Generator | None = None,
        max_elements: int | None = None,
    ):
        self.posterior = posterior
        self.args = tuple(args)
        self.inputs, self.target = self.args[:-1], self.args[-1]
        self.num_samples = num_samples
        self.generator = generator
        self.max_elements = CHUNK_ELEMENTS if max_elements is None else max_elements
        tasks_model = posterior.tasks_model
        self._loglik = TaskLogLikelihood(
            tasks_model.model, posterior.site, self.args, tasks_model.nesting
        )
        self._weights: torch.Tensor | None = None
        self._evaluated: tuple[torch.Tensor, dict] | None = None
        self._predictive: dict[str, torch.Tensor] | None = None
        self._observed: tuple[list[str], list[str]] | None = None

    @property
    def num_tasks(self) -> int:
        return self.posterior.num_tasks

    @property
    def finite(self) -> torch.Tensor:
        """Per task: whether its adapted posterior is finite (``False``: the inner loop diverged)."""
        return self.posterior.finite

    def weights(self) -> torch.Tensor:
        """Posterior draws of the weights θ, ``(S, T, D)``; NaN for a diverged task."""
        if self._weights is None:
            self._weights = self.posterior.weight_draws(self.num_samples, self.generator)
        return self._weights

    def _evaluate(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self._evaluated is None:
            theta = self.weights()
            per_copy = sum(a.numel() for a in self.args if torch.is_tensor(a))
            per_run = max(1, self.max_elements // max(per_copy, 1))
            parts = [
                self._loglik.evaluate(theta[i : i + per_run]) for i in range(0, len(theta), per_run)
            ]
            total = torch.cat([p[0] for p in parts])
            sites = {k: torch.cat([p[1][k] for p in parts]) for k in parts[0][1]}
            self._evaluated = total, sites
        return self._evaluated

    def log_likelihood(self) -> torch.Tensor:
        """log P(D_query | θ_s) of every draw and task, ``(S, T)``: every observed site and
        ``pyro.factor`` of the model, summed over the query points."""
        return self._evaluate()[0]

    def sites(self) -> dict[str, torch.Tensor]:
        """The model's deterministic and observed site values at the full query data under each
        draw of θ, ``{site: (S, T, ...)}`` (e.g. a classifier's ``logits``)."""
        return self._evaluate()[1]

    def require_observation(self, site: str, metric: str) -> None:
        """Check that the model observes ``site`` (a sample site with ``obs=``, not a factor).

        :raises MetricError: naming ``metric`` and ``site`` if it does not.
        """
        if self._observed is None:
            # One draw's model run on the full query data shows the model's sites.
            nodes = self._loglik.trace_nodes(self.weights()[0])
            samples = {n: node for n, node in nodes.items() if node["type"] == "sample"}
            factors = [n for n, node in samples.items() if is_factor(node)]
            observed = [
                n for n, node in samples.items() if node["is_observed"] and n not in factors
            ]
            self._observed = observed, factors
        observed, factors = self._observed
        if site not in observed:
            raise MetricError(
                f"metric {metric!r} needs the observation site {site!r}, which the model does "
                f"not have (its observation sites: {observed}"
                + (f"; pyro.factor sites {factors} hold no observations" if factors else "")
                + "): drop the metric from the task family's metrics, or observe "
                f"{site!r} with pyro.sample({site!r}, ..., obs=...)"
            )

    def predictive(self, site: str, metric: str) -> dict[str, torch.Tensor]:
        """Posterior predictive samples at the query inputs, ``{site: (num_samples, T, ...)}``
        (:meth:`Posterior.predict`: the model is run without its observations).

        :param site: the observation site the caller needs.
        :param metric: the caller's name, for errors.
        :raises MetricError: if the model does not observe ``site`` or cannot run without its
            observations.
        """
        self.require_observation(site, metric)
        if self._predictive is None:
            try:
                self._predictive = self.posterior.predict(
                    *self.inputs, num_samples=self.num_samples
                )
            except TypeError as err:
                raise MetricError(
                    f"metric {metric!r} samples predictions at the query inputs, which runs the "
                    f"model without its observations ({err}): give the model's observations a "
                    "default of None, e.g. def model(x, y=None)"
                ) from err
        return self._predictive


class Metric:
    """A score of the query sets, one value per task.

    Subclasses set :attr:`name` (the key in the meta-test's results) and implement
    :meth:`__call__`; :meth:`summarize` reduces the tasks' values (by default their mean with a
    95% confidence interval).
    """

    name: str = ""

    def __call__(self, query: Query) -> torch.Tensor:
        """The metric of each task, ``(T,)``."""
        raise NotImplementedError

    def summarize(self, values: torch.Tensor) -> list[float]:
        """Summary over the tasks' values (those of the tasks that did not diverge)."""
        return mean_ci95(values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class LogPredictiveDensity(Metric):
    """log P(D_query | D_support) estimated under the adapted posterior: the log of the Monte
    Carlo mean over posterior draws of P(D_query | θ) (log-mean-exp), per task, in nats.

    Computed from the model's own log likelihood, so it scores ``obs=`` sites and
    ``pyro.factor`` alike, for Gaussian, delta and particle posteriors.
    """

    name = "lpd"

    def __call__(self, query: Query) -> torch.Tensor:
        loglik = query.log_likelihood()
        return torch.logsumexp(loglik, 0) - math.log(loglik.shape[0])


class SquaredError(Metric):
    """Squared error of the predictive mean, averaged over each task's query points.

    The predictive mean is the posterior mean of ``mean_site`` where the model records one
    (the noise-free function), else the mean of the sampled observations.

    :param obs_site: the model's observation site.
    :param mean_site: a deterministic site holding the noise-free prediction, if any.
    """

    name = "mse"

    def __init__(self, obs_site: str = "y", mean_site: str = "mean"):
        self.obs_site, self.mean_site = obs_site, mean_site

    def __call__(self, query: Query) -> torch.Tensor:
        draws = query.predictive(self.obs_site, self.name)
        mean = draws.get(self.mean_site, draws[self.obs_site]).mean(0)
        return (mean - query.target).square().flatten(1).mean(1)


class IntervalCoverage(Metric):
    """The share of each task's query targets inside the central predictive interval.

    :param level: the interval's probability (0.9: from the 5% to the 95% quantile).
    :param obs_site: the model's observation site.
    """

    def __init__(self, level: float = 0.9, obs_site: str = "y"):
        if not 0 < level < 1:
            raise ValueError(f"level must lie in (0, 1), got {level}")
        self.level, self.obs_site = level, obs_site
        self.name = f"coverage{round(100 * level)}"

    def __call__(self, query: Query) -> torch.Tensor:
        obs = query.predictive(self.obs_site, self.name)[self.obs_site]
        tail = (1 - self.level) / 2
        q = torch.quantile(obs, torch.tensor([tail, 1 - tail], dtype=obs.dtype), dim=0)
        inside = (query.target >= q[0]) & (query.target <= q[1])
        return inside.flatten(1).float().mean(1)
