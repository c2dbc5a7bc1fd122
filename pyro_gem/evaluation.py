"""Meta-testing: adapt to held-out tasks and score the predictions.

Example::

    scores = meta_test(learner, tasks.test_tasks(600), steps=(0, 1, 5, 10))
    scores["mse"]["10"]          # [mean, 95% CI half-width] over tasks
    scores["coverage90"]         # share of query targets inside the 90% predictive interval
    task_scores(learner, tasks.test_tasks(600), steps=(10,))["mse"][10]   # one MSE per task
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from pyro_gem.tasks.base import TaskBatch

if TYPE_CHECKING:
    from pyro_gem.posterior import ParticlePosterior, Posterior

__all__ = ["meta_test", "mean_ci95", "predictive_summary", "task_scores"]


def mean_ci95(values: torch.Tensor) -> list[float]:
    """Mean and the half-width of its normal 95% confidence interval, as a JSON-ready list."""
    values = values.double()
    half = 1.96 * values.std(unbiased=True) / values.numel() ** 0.5 if values.numel() > 1 else 0.0
    return [values.mean().item(), float(half)]


def predictive_summary(
    posterior: Posterior | ParticlePosterior,
    inputs: Sequence[torch.Tensor],
    num_samples: int,
    obs_site: str,
    mean_site: str,
) -> dict[str, torch.Tensor]:
    """Predictive mean and 5% / 95% quantiles of the observations, per task and point.

    The mean is the posterior mean of ``mean_site`` when the model records it (the noise-free
    function), otherwise the mean of the sampled observations.

    :param posterior: an adapted posterior over T tasks.
    :param inputs: the model's inputs at the prediction points (its arguments without the
        observations), stacked over the T tasks.
    :param num_samples: posterior draws.
    :param obs_site: the model's observation site.
    :param mean_site: a deterministic site holding the noise-free prediction, if the model has one.
    :returns: ``{"mean", "lower", "upper": (T, N, ...), "samples": (num_samples, T, N, ...)}``.
    """
    draws = posterior.predict(*inputs, num_samples=num_samples)
    if obs_site not in draws:
        raise ValueError(f"the model has no observation site {obs_site!r}")
    obs = draws[obs_site]
    mean = draws[mean_site] if mean_site in draws else obs
    q = torch.quantile(obs, torch.tensor([0.05, 0.95], dtype=obs.dtype), dim=0)
    return {"mean": mean.mean(0), "lower": q[0], "upper": q[1], "samples": obs}


def task_scores(
    learner,
    tasks: TaskBatch,
    steps: Sequence[int] = (0, 1, 5, 10),
    num_samples: int = 100,
    obs_site: str = "y",
    mean_site: str = "mean",
    chunk: int = 200,
) -> dict[str, dict[int, torch.Tensor]]:
    """Adapt to held-out tasks from their support sets and score each task's query predictions.

    One adaptation run per chunk of tasks, recorded at every step count in ``steps``.

    :param learner: any learner with ``adapt(*support, steps=, record=)``.
    :param tasks: held-out tasks; the last model argument of each set is the observed target.
    :param steps: the inner-step counts to score.
    :param num_samples: posterior draws per prediction.
    :param obs_site: the model's observation site.
    :param mean_site: a deterministic site holding the noise-free prediction, if the model has one.
    :param chunk: tasks adapted at once (bounds memory).
    :returns: ``{"mse": {step: (T,)}, "coverage90": {step: (T,)}}``: per task, the squared
        error of the predictive mean and the share of query targets inside the 90% predictive
        interval, averaged over the task's query points. Not finite where adaptation diverged.
    """
    tasks.validate()  # the query sets too: bad query data is not a diverged inner loop
    steps = sorted(set(int(s) for s in steps))
    if not steps or steps[0] < 0:
        raise ValueError(f"steps must be non-negative inner-step counts, got {steps}")
    scores: dict[str, dict[int, list[torch.Tensor]]] = {"mse": {}, "coverage90": {}}
    for start in range(0, len(tasks), chunk):
        part = tasks.select(slice(start, start + chunk))
        post = learner.adapt(*part.support, steps=max(steps), record=steps)
        inputs, target = part.query[:-1], part.query[-1]
        for s in steps:
            summary = predictive_summary(post.history[s], inputs, num_samples, obs_site, mean_site)
            sq_err = (summary["mean"] - target).square().flatten(1).mean(1)
            inside = (target >= summary["lower"]) & (target <= summary["upper"])
            # A diverged task's interval says nothing: mark its coverage as not finite too.
            coverage = inside.flatten(1).float().mean(1).masked_fill(~sq_err.isfinite(), torch.nan)
            scores["mse"].setdefault(s, []).append(sq_err)
            scores["coverage90"].setdefault(s, []).append(coverage)
    return {k: {s: torch.cat(v) for s, v in per_step.items()} for k, per_step in scores.items()}


def meta_test(
    learner,
    tasks: TaskBatch,
    steps: Sequence[int] = (0, 1, 5, 10),
    num_samples: int = 100,
    obs_site: str = "y",
    mean_site: str = "mean",
    chunk: int = 200,
) -> dict:
    """Adapt to held-out tasks from their support sets and summarise the query scores.

    The arguments are those of :func:`task_scores`.

    :returns: ``{"mse": {str(step): [mean, ci95]}, "coverage90": float, "num_tasks": T,
        "diverged": n}``; the coverage is for the largest step count. Tasks whose inner VI
        diverged (non-finite predictions at any step) are counted in ``diverged`` and left out
        of the means.
    """
    scores = task_scores(learner, tasks, steps, num_samples, obs_site, mean_site, chunk)
    mse = scores["mse"]
    finite = torch.stack([e.isfinite() for e in mse.values()]).all(0)
    return {
        "mse": {str(s): mean_ci95(e[finite]) for s, e in mse.items()},
        "coverage90": scores["coverage90"][max(mse)][finite].mean().item(),
        "num_tasks": len(tasks),
        "diverged": int((~finite).sum()),
    }
