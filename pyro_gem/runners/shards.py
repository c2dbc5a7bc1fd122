"""A meta-iteration's inner loops cut into shards: what a worker receives, runs and returns.

Gradient-EM needs from each task only its two fitted posteriors, q_λtr and q_λtr⊕val, and its
estimate is a mean over tasks: a shard of tasks can be fitted anywhere, and its worker sends
back the estimate summed over the shard's finite tasks
(:meth:`GEMBML.inner_result <pyro_gem.methods.gem.GEMBML.inner_result>`): two vectors of the
prior's size however many tasks the shard held, a flag per task and the inner losses (Reptile,
first-order MAML: their per-task meta-gradients, summed likewise). A shard is a contiguous
block of the meta-batch; its inner VI (and its rollouts, on meta-RL tasks) runs under seeds of its
own, drawn by the driver from its random stream, so a shard's result depends on the shard layout
and the driver's seed, never on which process or machine fits it. The in-process
:class:`~pyro_gem.runners.LocalRunner` and the :class:`~pyro_gem.runners.RayRunner` with any
number of workers therefore give the same prior, bit for bit on the same arithmetic.

This module is the functional core both runners share.

Example::

    replica = inner_replica(learner)                       # what a worker keeps
    seeds = draw_seeds(2)                                  # from the driver's stream
    parts = [fit_shard(replica, shard_batch(batch, s, seed), seed, prior_state(learner))
             for s, seed in zip(shard_slices(len(batch), 2), seeds)]
    sums = merge(parts, batch)                             # what GEMBML.step reads
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from pyro_gem.core.estimators import GradientSum

__all__ = [
    "ShardResult",
    "draw_seeds",
    "fit_shard",
    "inner_replica",
    "merge",
    "prior_state",
    "shard_batch",
    "shard_slices",
]


@dataclass
class ShardResult:
    """A fitted shard: the learner's inner result for its tasks and its batch's per-task
    statistics.

    :ivar result: ``learner.inner_result(batch)``: the per-task meta-gradients summed over the
        shard's finite tasks, with which tasks counted
        (:class:`~pyro_gem.core.estimators.GradientSum`).
    :ivar info: the shard's per-task entries of ``batch.info`` that fitting produced (the
        returns of the rollouts a meta-RL shard collected).
    """

    result: GradientSum
    info: dict[str, torch.Tensor] = field(default_factory=dict)


def shard_slices(num_tasks: int, shards: int) -> list[slice]:
    """``num_tasks`` tasks cut into at most ``shards`` contiguous blocks of near-equal size
    (the first ``num_tasks % shards`` one task larger; no empty block)."""
    if int(shards) < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    base, extra = divmod(int(num_tasks), int(shards))
    out, start = [], 0
    for s in range(int(shards)):
        size = base + (s < extra)
        if size:
            out.append(slice(start, start + size))
        start += size
    return out


def draw_seeds(num: int) -> list[int]:
    """``num`` seeds from torch's global random stream (the driver's, which a checkpoint holds,
    so that a resumed run draws the same ones)."""
    return torch.randint(2**62, (int(num),)).tolist()


def prior_state(learner) -> tuple[torch.Tensor, torch.Tensor]:
    """The prior's ``(loc, log_scale)`` as plain CPU tensors: what travels each iteration."""
    return learner.prior.loc.detach().cpu(), learner.prior.log_scale.detach().cpu()


def inner_replica(learner):
    """A copy of ``learner`` that fits posteriors and nothing else (no meta-optimiser, no
    runner): what a worker keeps between meta-iterations, on the CPU."""
    replica = copy.copy(learner)
    replica.meta_optim = None
    replica.runner = None
    replica.prior = copy.deepcopy(learner.prior).cpu()
    return replica


def shard_batch(batch, index: slice, seed: int):
    """The tasks ``index`` of ``batch`` as a shard of their own.

    A supervised batch is cut (its data travel with the shard); a meta-RL batch
    (:class:`~pyro_gem.tasks.rl.OnPolicyBatch`) is cut into its tasks alone, their rollouts to
    be collected where the shard is fitted, seeded by ``seed``.
    """
    if getattr(batch, "on_policy", False):
        return batch.family.batch(batch.tasks[index], seed, batch.rollouts)
    return batch.select(index)


def fit_shard(
    learner, batch, seed: int, prior: tuple[torch.Tensor, torch.Tensor] | None = None
) -> ShardResult:
    """Fit one shard's two posteriors with ``learner`` (the learner itself, in-process, or an
    :func:`inner_replica` on a worker, given the driver's ``prior`` first) under ``seed``; the
    caller's random state is left as it was."""
    device = learner.prior.loc.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        if prior is not None:
            with torch.no_grad():
                learner.prior.loc.copy_(prior[0])
                learner.prior.log_scale.copy_(prior[1])
        before = set(batch.info)
        result = learner.inner_result(batch)
    info = {k: v for k, v in batch.info.items() if k not in before}
    return ShardResult(result, info)


def merge(parts: list[ShardResult], batch, device: torch.device | None = None) -> GradientSum:
    """The shards' sums as one sum over the whole batch (on ``device``); the per-task
    statistics are written into ``batch.info`` as fitting in-process would."""
    for key in parts[0].info:
        batch.info[key] = torch.cat([p.info[key] for p in parts])
    out = GradientSum.cat([p.result for p in parts])
    return out if device is None else out.to(device)
