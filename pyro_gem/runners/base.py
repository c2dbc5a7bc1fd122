"""Runners: where a meta-iteration's inner loops run, the meta-update staying with the learner.

A learner that takes a runner (:class:`~pyro_gem.methods.gem.GEMBML`,
:class:`~pyro_gem.methods.point_estimate.Reptile`, first-order
:class:`~pyro_gem.methods.point_estimate.MAML`) hands it the batch in its ``step``; the runner
cuts the batch into shards (:mod:`pyro_gem.runners.shards`), has each fitted (the learner's
``inner_result``: the Gradient-EM estimate summed over each shard's tasks), and returns the sum
over every task, from which ``step`` steps the meta-optimiser. :class:`LocalRunner` fits the
shards one after another in this process, :class:`~pyro_gem.runners.RayRunner` on Ray workers;
with the same shards both give the same prior.

**Tasks that stay with the workers.** Given ``families`` (one task-family factory per worker),
a runner's workers each build and own their family, and the driver's :attr:`Runner.tasks`
draws only seeds: each meta-iteration a worker samples its share of the meta-batch from its
own family and sends back its shard's summed meta-gradient. No task's data reaches the driver,
which also means no held-out evaluation there (train with ``eval_every=0`` and meta-test where
the test tasks are).

Example::

    runner = LocalRunner(shards=4)
    learner = GEMBML(model, prior, runner=runner)
    train(learner, tasks, meta_iterations=100, meta_batch=20)

    runner = LocalRunner(families=[partial(Omniglot, alphabets=[a]) for a in names])
    train(GEMBML(model, prior, runner=runner), runner.tasks, meta_iterations=100,
          meta_batch=20, eval_every=0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from pyro_gem.core.estimators import GradientSum
from pyro_gem.runners.shards import (
    ShardResult,
    draw_seeds,
    fit_shard,
    merge,
    shard_batch,
    shard_slices,
)

__all__ = ["LocalRunner", "OwnedBatch", "Runner", "ShardFailed", "WorkerTasks"]


class ShardFailed(RuntimeError):
    """A shard's worker failed more often than it was allowed to be retried: the
    meta-iteration did not update the prior."""


@dataclass
class OwnedBatch:
    """A meta-batch of tasks that the workers own: how many each family draws, and with what
    seed. It holds no data; ``info`` receives the per-task statistics the workers send back.

    :ivar counts: tasks per family.
    :ivar seeds: each family's task seed.
    """

    counts: list[int]
    seeds: list[int]
    info: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(self.counts)

    def validate(self) -> int:
        """The number of tasks (their data are checked where they are)."""
        return len(self)

    def to(self, device) -> OwnedBatch:
        return self


class WorkerTasks:
    """The driver's stand-in for task families that live with the workers: :meth:`sample`
    splits the meta-batch between the families and draws their seeds from ``generator``
    (the training loop's task stream, which a checkpoint holds).

    :param num_families: the number of families (workers).
    """

    def __init__(self, num_families: int):
        self.num_families = int(num_families)

    def sample(self, num_tasks: int, generator: torch.Generator | None = None) -> OwnedBatch:
        if num_tasks < self.num_families:
            raise ValueError(
                f"a meta-batch of {num_tasks} tasks cannot be shared by {self.num_families} "
                "worker-owned task families: use a meta-batch of at least one task per family"
            )
        slices = shard_slices(num_tasks, self.num_families)
        seeds = torch.randint(2**62, (self.num_families,), generator=generator).tolist()
        return OwnedBatch([s.stop - s.start for s in slices], seeds)


def _check_families(families: Sequence[Callable] | None) -> list[Callable] | None:
    if families is None:
        return None
    families = list(families)
    if not families or not all(callable(f) for f in families):
        raise ValueError(
            "families must be a non-empty list of callables, each building one worker's task "
            "family (e.g. functools.partial(Omniglot, ...))"
        )
    return families


class Runner:
    """What every runner shares: cutting a batch into shards, seeding them, merging results.

    :param shards: shards per meta-batch (ignored with ``families``: one per family). The
        shard layout, not the number of workers, decides the random draws.
    :param families: one task-family factory per worker, for tasks that stay with the workers.
    """

    def __init__(self, shards: int = 1, families: Sequence[Callable] | None = None):
        if int(shards) < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self.families = _check_families(families)
        self.shards = len(self.families) if self.families else int(shards)

    @property
    def tasks(self) -> WorkerTasks:
        """The task family to train on when the workers own the tasks."""
        if self.families is None:
            raise ValueError(
                "this runner has no worker-owned task families: pass families=[...] to own "
                "tasks on the workers, or train on a task family of the driver's"
            )
        return WorkerTasks(len(self.families))

    def inner_result(self, learner, batch) -> GradientSum:
        """``learner.inner_result(batch)``, computed shard by shard: the per-task meta-gradients
        summed over every finite task of the batch
        (:class:`~pyro_gem.core.estimators.GradientSum`)."""
        owned = isinstance(batch, OwnedBatch)
        if owned and self.families is None:
            raise ValueError("this batch's tasks are owned by workers, but this runner has none")
        if not owned and self.families is not None:
            raise ValueError(
                "this runner's workers own their tasks: train on runner.tasks, not on a batch "
                "drawn in the driver"
            )
        if owned:
            jobs = [(i, n, s) for i, (n, s) in enumerate(zip(batch.counts, batch.seeds)) if n]
            seeds = draw_seeds(len(jobs))
        else:
            slices = shard_slices(len(batch), self.shards)
            seeds = draw_seeds(2 * len(slices))
            # Each shard: its fitting seed, and its own data seed (a meta-RL shard's rollouts).
            jobs = [shard_batch(batch, sl, seeds[len(slices) + i]) for i, sl in enumerate(slices)]
            seeds = seeds[: len(slices)]
        parts = self.run(learner, jobs, seeds, owned)
        return merge(parts, batch, learner.device)

    def run(self, learner, jobs: list, seeds: list[int], owned: bool) -> list[ShardResult]:
        """Fit the shards: ``jobs`` are shard batches, or ``(family, num_tasks, task_seed)``
        where the workers own the tasks; ``seeds[i]`` seeds shard ``i``'s fitting."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the runner holds (workers, a runtime it started)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalRunner(Runner):
    """Fit the shards one after another in this process, with the learner itself.

    It gives the same prior as :class:`~pyro_gem.runners.RayRunner` with the same shards (or
    families), which is what it is for: a reference, and a way to run a distributed
    configuration on one machine. Plain in-process training needs no runner.
    """

    def __init__(self, shards: int = 1, families: Sequence[Callable] | None = None):
        super().__init__(shards, families)
        self._built: list | None = None

    def run(self, learner, jobs, seeds, owned):
        if owned and self._built is None:
            self._built = [make() for make in self.families]
        out = []
        for job, seed in zip(jobs, seeds):
            if owned:
                family, num_tasks, task_seed = job
                gen = torch.Generator().manual_seed(task_seed)
                job = self._built[family].sample(num_tasks, gen)
            out.append(fit_shard(learner, job.to(learner.device), seed))
        return out
