"""A task family: where tasks come from, and what they are scored on.

A task family draws batches of tasks (:class:`~pyro_gem.core.batch.TaskBatch`: support and query
sets stacked over tasks) and lists the metrics of its kind; every meta-test also scores the
held-out log predictive density. Subclass :class:`TaskFamily` and write :meth:`~TaskFamily.sample`;
any object with ``sample(num_tasks, generator)`` and ``test_tasks(num_tasks)`` (and optionally
``metrics``) serves as well.

Example (Poisson counts, scored by a metric of their own)::

    class Counts(TaskFamily):
        metrics = (RateError(),)          # a pyro_gem.evaluation.Metric

        def sample(self, num_tasks, generator=None):
            rate = 1 + 9 * torch.rand(num_tasks, 1, generator=generator)
            x = torch.rand(num_tasks, 20, 1, generator=generator)
            y = torch.poisson(rate * (1 + x[..., 0]), generator=generator)
            return TaskBatch((x[:, :10], y[:, :10]), (x[:, 10:], y[:, 10:]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pyro_gem.core.batch import TaskBatch
from pyro_gem.evaluation.metrics import Metric

__all__ = ["TaskFamily"]


class TaskFamily:
    """A family of tasks: :meth:`sample` draws new ones, :meth:`test_tasks` a fixed held-out set.

    :cvar metrics: what the family's tasks are scored on beside the log predictive density.
    :cvar test_seed: the seed of the held-out tasks.
    """

    metrics: Sequence[Metric] = ()
    test_seed: int = 2020

    def sample(self, num_tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Draw ``num_tasks`` new tasks with support and query sets."""
        raise NotImplementedError

    def test_tasks(self, num_tasks: int = 600, seed: int | None = None) -> TaskBatch:
        """A fixed set of held-out tasks, the same on every call with the same seed."""
        gen = torch.Generator().manual_seed(self.test_seed if seed is None else seed)
        return self.sample(num_tasks, gen)

    def validation_tasks(self, num_tasks: int = 100, seed: int | None = None) -> TaskBatch:
        """The held-out tasks of the curve during training: by default :meth:`test_tasks`
        (drawn with the test seed); a family with a validation split of its own draws there."""
        return self.test_tasks(num_tasks, seed)
