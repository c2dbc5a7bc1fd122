"""Sinusoid regression tasks (MAML's and BMAML's settings).

``default`` (MAML): y = A sin(x + b), A ∈ [0.1, 5], b ∈ [0, π], x ∈ [−5, 5], no noise.
``challenging`` (BMAML): y = A sin(w x + b) + ε, A ∈ [0.1, 5], w ∈ [0.5, 2], b ∈ [0, 2π],
ε ~ N(0, (0.01 A)²).

Example::

    tasks = Sinusoid("default", shots=10)
    gen = torch.Generator().manual_seed(0)
    batch = tasks.sample(25, gen)          # TaskBatch: support (x, y), query (x, y)
    batch.support[0].shape                 # (25, 10, 1)
    test = tasks.test_tasks(600)           # a fixed held-out set (its own seed)
"""

from __future__ import annotations

import math

import torch

from pyro_gem.core.batch import TaskBatch
from pyro_gem.evaluation.metrics import IntervalCoverage, SquaredError
from pyro_gem.tasks.base import TaskFamily

__all__ = ["Sinusoid"]

_SETTINGS = {
    "default": dict(amplitude=(0.1, 5.0), frequency=(1.0, 1.0), phase=(0.0, math.pi), noise=0.0),
    "challenging": dict(
        amplitude=(0.1, 5.0), frequency=(0.5, 2.0), phase=(0.0, 2 * math.pi), noise=0.01
    ),
}


class Sinusoid(TaskFamily):
    """A family of sinusoid regression tasks.

    :param setting: ``"default"`` or ``"challenging"``.
    :param shots: support points per task (K).
    :param query: query points per task; defaults to ``shots``.
    :param x_range: the input interval.
    """

    # Scored on the predictive mean's squared error and the 90% interval's coverage of y.
    metrics = (SquaredError(obs_site="y", mean_site="mean"), IntervalCoverage(0.9, obs_site="y"))

    def __init__(
        self,
        setting: str = "default",
        shots: int = 10,
        query: int | None = None,
        x_range: tuple[float, float] = (-5.0, 5.0),
    ):
        if setting not in _SETTINGS:
            raise ValueError(f"unknown sinusoid setting {setting!r}: use one of {list(_SETTINGS)}")
        if shots < 1:
            raise ValueError(f"shots must be >= 1, got {shots}")
        self.setting = setting
        self.shots = shots
        self.query = shots if query is None else query
        self.x_range = x_range
        self.params = _SETTINGS[setting]

    def function(self, info: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The noise-free task functions at ``x`` ``(T, N, 1)``, returned as ``(T, N)``."""
        a, w, b = (info[k][:, None] for k in ("amplitude", "frequency", "phase"))
        return a * torch.sin(w * x[..., 0] + b)

    def sample(self, num_tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Draw ``num_tasks`` new tasks with support and query sets."""
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")

        def uniform(lo_hi, *shape):
            lo, hi = lo_hi
            return lo + (hi - lo) * torch.rand(*shape, generator=generator)

        info = {
            "amplitude": uniform(self.params["amplitude"], num_tasks),
            "frequency": uniform(self.params["frequency"], num_tasks),
            "phase": uniform(self.params["phase"], num_tasks),
        }
        n = self.shots + self.query
        x = uniform(self.x_range, num_tasks, n, 1)
        y = self.function(info, x)
        noise_sd = self.params["noise"] * info["amplitude"][:, None]
        y = y + noise_sd * torch.randn(y.shape, generator=generator)
        k = self.shots
        return TaskBatch((x[:, :k], y[:, :k]), (x[:, k:], y[:, k:]), info)
