"""The meta-RL meta-test: average return on held-out tasks after 0, 1, 2, ... inner updates,
each update adapting to fresh rollouts of the policy it produced (MAML's protocol: 40 rollouts
per update, up to 3 updates).

Before any update the policy acts with the prior mean m; update u adapts the posterior of
update u − 1 (the prior for the first) to the rollouts of its own policy, by the learner's inner
loop (``learner.adapt`` then ``learner.adapt_from``), and the policy of every update acts with
its posterior mean. A task's score is its rollouts' mean undiscounted return. MAML's own test
(``maml_examples/test_maml_point.py`` of its code) halves the step after the first update:
``later_step_scale=0.5`` scales the inner optimiser's learning rate of updates 2, 3, ... so.

Example::

    scores = rollout_meta_test(learner, tasks.test_tasks(40), updates=(0, 1, 2, 3))
    scores["return"]["1"]            # [mean, 95% CI half-width] over tasks, after one update
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from pyro_gem.evaluation.metrics import Metric, MetricError, divergence_counts, mean_ci95
from pyro_gem.rl.advantages import rollout_data
from pyro_gem.rl.trust_region import TrustRegionVI

__all__ = ["AverageReturn", "rollout_meta_test", "rollout_scores", "scaled_inner"]


class AverageReturn(Metric):
    """A task's mean undiscounted return over its rollouts (scored by
    :func:`rollout_meta_test`, which :func:`~pyro_gem.evaluation.meta_test` calls for meta-RL
    tasks; it has no query set to score)."""

    name = "return"

    def __call__(self, query) -> torch.Tensor:
        raise MetricError(
            "the average return is scored from fresh rollouts of the adapted policy, not from a "
            "query set: meta-test on-policy tasks with pyro_gem.evaluation.rollout_meta_test"
        )


def scaled_inner(learner, factor: float):
    """``learner``'s inner loop with its optimiser's learning rate times ``factor`` (the inner
    loop itself for a factor of 1).

    :raises ValueError: for an inner loop without a learning rate to scale (a trust-region
        step's size is its KL bound).
    """
    inner = learner.inner
    if factor == 1.0:
        return inner
    args = getattr(getattr(inner, "optim", None), "pt_optim_args", None)
    if isinstance(inner, TrustRegionVI) or not isinstance(args, dict) or "lr" not in args:
        raise ValueError(
            f"later_step_scale={factor}: {learner.name}'s inner loop ({type(inner).__name__}) "
            "has no learning rate to scale; use later_step_scale=1"
        )
    scaled = copy.copy(inner)
    scaled.optim = copy.deepcopy(inner.optim)
    scaled.optim.pt_optim_args = {**args, "lr": args["lr"] * factor}
    return scaled


def rollout_scores(
    learner,
    tasks,
    updates: Sequence[int] = (0, 1, 2, 3),
    seed: int = 0,
    trajectories: bool = False,
    later_step_scale: float = 1.0,
) -> dict:
    """Each held-out task's average return after each number of inner updates.

    :param learner: a meta-RL learner (``adapt``, ``adapt_from``, ``adapt_prior``).
    :param tasks: an :class:`~pyro_gem.tasks.rl.OnPolicyBatch` of held-out tasks; its
        ``rollouts`` per update.
    :param updates: the update counts to score.
    :param seed: seeds the rollouts' noise.
    :param trajectories: also return the rollouts of every update (``"rollouts"``: {u: Rollouts}).
    :param later_step_scale: the inner learning rate of the updates after the first, as a
        multiple of the learner's (MAML's test: 0.5).
    :returns: ``{"return": {u: (T,)}}`` (NaN for a task whose policy turned non-finite).
    """
    updates = sorted(set(int(u) for u in updates))
    if not updates or updates[0] < 0:
        raise ValueError(f"updates must be non-negative counts, got {updates}")
    if not later_step_scale > 0:
        raise ValueError(f"later_step_scale must be > 0, got {later_step_scale}")
    later_inner = scaled_inner(learner, later_step_scale)  # fails here, before any rollout
    family, gen = tasks.family, torch.Generator().manual_seed(seed)
    device = getattr(learner, "device", torch.device("cpu"))
    theta = learner.adapt_prior()[0].expand(len(tasks), -1)
    post = None
    diverged = torch.zeros(len(tasks), dtype=torch.bool, device=device)
    out: dict = {"return": {}}
    if trajectories:
        out["rollouts"] = {}
    for u in range(updates[-1] + 1):
        rollouts = family.sampler.sample(tasks.tasks, theta, tasks.rollouts, gen)
        if u in updates:
            out["return"][u] = rollouts.returns.mean(1).cpu()
            if trajectories:
                out["rollouts"][u] = rollouts
        if u == updates[-1]:
            break
        data = rollout_data(rollouts, family.discount, family.gae_lambda)
        # A task whose policy diverged stays diverged (NaN returns); its data are zeroed so
        # that the others adapt as usual.
        diverged |= ~(
            rollouts.finite & torch.stack([a.flatten(1).isfinite().all(1) for a in data]).all(0)
        )
        data = tuple(torch.where(_rows(diverged, a), 0.0, a).to(device) for a in data)
        if post is None:
            post = learner.adapt(*data)
        else:
            own, learner.inner = learner.inner, later_inner
            try:
                post = learner.adapt_from(post, *data)
            finally:
                learner.inner = own
        theta = torch.where(diverged[:, None], torch.nan, post.loc.detach())
    return out


def _rows(mask: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return mask.reshape(-1, *(1,) * (a.dim() - 1)).to(a.device)


def rollout_meta_test(
    learner,
    tasks,
    updates: Sequence[int] = (0, 1, 2, 3),
    seed: int = 0,
    later_step_scale: float = 1.0,
) -> dict:
    """:func:`rollout_scores` summarised: ``{"return": {str(u): [mean, ci95]}, "steps": [...],
    "num_tasks": T, "diverged": n, "diverged_per_step": {str(u): n}}``; each update count over
    the tasks whose return is finite at that count, the others counted (``diverged``: the tasks
    non-finite at any count)."""
    scores = rollout_scores(learner, tasks, updates, seed, later_step_scale=later_step_scale)[
        "return"
    ]
    finite = {u: v.isfinite() for u, v in scores.items()}
    return {
        "steps": sorted(scores),
        "num_tasks": len(tasks),
        **divergence_counts(finite),
        "return": {str(u): mean_ci95(v[finite[u]]) for u, v in scores.items()},
    }
