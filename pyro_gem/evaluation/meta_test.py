"""Meta-testing: adapt to held-out tasks from their support sets and score their query sets.

Every model is scored by the held-out log predictive density (``"lpd"``); the task family's
``metrics`` add the scores of its kind (regression: ``"mse"`` and ``"coverage90"``).

Example::

    scores = meta_test(learner, tasks.test_tasks(600), steps=(0, 1, 5, 10), metrics=tasks.metrics)
    scores["mse"]["10"]          # [mean, 95% CI half-width] over tasks, after 10 inner steps
    scores["lpd"]["10"]          # the same for the log predictive density
    per_task = task_scores(learner, tasks.test_tasks(600), steps=(10,), metrics=tasks.metrics)
    per_task["mse"][10]          # one value per task
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pyro_gem.core.batch import TaskBatch
from pyro_gem.evaluation.metrics import (
    CHUNK_ELEMENTS,
    LogPredictiveDensity,
    Metric,
    Query,
    divergence_counts,
)
from pyro_gem.evaluation.returns import rollout_meta_test

__all__ = ["meta_test", "metric_names", "score_metrics", "task_scores"]

#: Keys of a meta-test's results that are not metrics.
RESERVED = ("num_tasks", "diverged", "diverged_per_step", "steps")


def metric_names(scores: dict) -> list[str]:
    """The metrics in a meta-test's results (:func:`meta_test`), in their order."""
    return [k for k in scores if k not in RESERVED]


def score_metrics(metrics: Sequence[Metric] = ()) -> tuple[Metric, ...]:
    """The metrics a meta-test computes: the log predictive density, then ``metrics``.

    :raises ValueError: for an object that is not a named :class:`Metric`, or a name that is
        reserved or used twice.
    """
    chosen = (LogPredictiveDensity(), *(m for m in metrics if type(m) is not LogPredictiveDensity))
    names = [getattr(m, "name", None) for m in chosen]
    for m, name in zip(chosen, names):
        if not isinstance(m, Metric) or not name:
            raise ValueError(f"{m!r} is not a named Metric (subclass pyro_gem.evaluation.Metric)")
        if name in RESERVED or names.count(name) > 1:
            raise ValueError(f"metric name {name!r} is reserved or used twice: {names}")
    return chosen


def task_scores(
    learner,
    tasks: TaskBatch,
    steps: Sequence[int] = (0, 1, 5, 10),
    *,
    metrics: Sequence[Metric] = (),
    num_samples: int = 100,
    chunk: int | None = None,
    seed: int = 0,
) -> dict[str, dict[int, torch.Tensor]]:
    """Adapt to held-out tasks from their support sets and score each task's query set.

    One adaptation run per chunk of tasks, recorded at every step count in ``steps``.

    :param learner: any learner with ``adapt(*support, steps=, record=)``.
    :param tasks: held-out tasks; the last model argument of each set is the observed target.
    :param steps: the inner-step counts to score.
    :param metrics: the task family's metrics; the log predictive density is always scored.
    :param num_samples: posterior draws per prediction.
    :param chunk: tasks adapted at once (bounds memory); by default as many as hold
        :data:`CHUNK_ELEMENTS` elements of query data, at most 200.
    :param seed: seeds the weight draws of the log predictive density, a stream of their own:
        the predictive samples of the other metrics are torch's global stream, drawn as before.
    :returns: ``{metric: {step: (T, ...)}}``, per task (a metric may give a row per task, e.g.
        the calibration error's bin counts); NaN where adaptation diverged.
    """
    tasks.validate()  # the query sets too: bad query data is not a diverged inner loop
    steps = sorted(set(int(s) for s in steps))
    if not steps or steps[0] < 0:
        raise ValueError(f"steps must be non-negative inner-step counts, got {steps}")
    chosen = score_metrics(metrics)
    generator = torch.Generator().manual_seed(seed)
    device = getattr(learner, "device", None)
    scores: dict[str, dict[int, list[torch.Tensor]]] = {m.name: {} for m in chosen}
    if chunk is None:
        one = tasks.select(slice(0, 1)).query
        per_task = sum(a.numel() for a in one if torch.is_tensor(a))
        chunk = min(200, max(1, CHUNK_ELEMENTS // max(per_task, 1)))
    for start in range(0, len(tasks), chunk):
        part = tasks.select(slice(start, start + chunk))
        if device is not None:
            part = part.to(device)
        post = learner.adapt(*part.support, steps=max(steps), record=steps)
        for s in steps:
            query = Query(post.history[s], part.query, num_samples, generator)
            diverged = ~query.finite  # its scores say nothing: marked as not finite
            for m in chosen:
                value = m(query)
                if not value.is_floating_point():
                    value = value.float()
                if value.dim() == 0 or len(value) != len(part):
                    raise ValueError(
                        f"metric {m.name!r} returned a value of shape {tuple(value.shape)}: "
                        f"expected one value (or one row) per task, ({len(part)}, ...)"
                    )
                mask = diverged.reshape(-1, *(1,) * (value.dim() - 1))
                scores[m.name].setdefault(s, []).append(value.masked_fill(mask, torch.nan))
    return {k: {s: torch.cat(v) for s, v in per_step.items()} for k, per_step in scores.items()}


def meta_test(
    learner,
    tasks: TaskBatch,
    steps: Sequence[int] = (0, 1, 5, 10),
    *,
    metrics: Sequence[Metric] = (),
    num_samples: int = 100,
    chunk: int | None = None,
    seed: int = 0,
) -> dict:
    """Adapt to held-out tasks from their support sets and summarise every metric of their
    query sets after each step count. The arguments are those of :func:`task_scores`.

    :returns: ``{metric: {str(step): summary}, "steps": [...], "num_tasks": T, "diverged": n,
        "diverged_per_step": {str(step): n}}``, the summary a metric's own (by default ``[mean,
        95% CI half-width]`` over tasks). Each step count is summarised over the tasks whose
        scores are finite at that count (a task whose inner loop diverges at 10 steps still
        counts at 1 step); ``diverged_per_step`` counts the others, and ``diverged`` the tasks
        that diverged at any step count.

    Meta-RL tasks (an :class:`~pyro_gem.tasks.rl.OnPolicyBatch`) have no query set: they are
    scored by :func:`~pyro_gem.evaluation.returns.rollout_meta_test`, ``steps`` counting inner
    updates of fresh rollouts.
    """
    if getattr(tasks, "on_policy", False):
        return rollout_meta_test(learner, tasks, steps, seed=seed)
    chosen = score_metrics(metrics)
    scores = task_scores(
        learner, tasks, steps, metrics=chosen, num_samples=num_samples, chunk=chunk, seed=seed
    )
    steps = sorted(scores[chosen[0].name])
    finite = {
        s: torch.stack(
            [per[s].reshape(len(per[s]), -1).isfinite().all(1) for per in scores.values()]
        ).all(0)
        for s in steps
    }
    out: dict = {"steps": steps, "num_tasks": len(tasks), **divergence_counts(finite)}
    for m in chosen:
        out[m.name] = {str(s): m.summarize(v[finite[s]]) for s, v in scores[m.name].items()}
    return out
