"""An adapted posterior for a batch of tasks, with predictions through Pyro's ``Predictive``.

A learner's ``adapt`` returns a :class:`Posterior`: the fitted autoguide, the tasks-plated model it
was fitted to, and the per-task mean and standard deviation of the weights.

Example::

    post = learner.adapt(x_support, y_support)        # (T, K, 1), (T, K)
    draws = post.predict(x_query, num_samples=200)    # {"y": (200, T, N), "mean": ...}
    post.history[1].predict(x_query)                  # the posterior after one inner step
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import torch
from pyro.infer import Predictive
from pyro.infer.autoguide import AutoGuide

__all__ = ["Posterior"]


class Posterior:
    """q(θ) for T tasks after an inner VI run.

    :param model: the tasks-plated model the guide was fitted to.
    :param guide: the fitted autoguide.
    :param site: the prior's sample site.
    :param loc: posterior means of the weights, ``(T, D)``.
    :param scale: posterior standard deviations ``(T, D)`` (``None`` for a delta guide).
    :param nesting: the plate nesting of the tasks-plated model.
    :param state: the guide's parameters for this posterior (defaults to the guide's current).
    :param steps: the inner steps that produced it.
    """

    def __init__(
        self,
        model: Callable,
        guide: AutoGuide,
        site: str,
        loc: torch.Tensor,
        scale: torch.Tensor | None,
        nesting: int,
        state: dict | None = None,
        steps: int | None = None,
    ):
        self.model = model
        self.guide = guide
        self.site = site
        self.loc = loc
        self.scale = scale
        self.nesting = nesting
        self.state = (
            {k: v.detach().clone() for k, v in guide.state_dict().items()}
            if state is None
            else state
        )
        self.steps = steps
        self.history: dict[int, Posterior] = {}

    @property
    def num_tasks(self) -> int:
        return self.loc.shape[0]

    def predict(
        self, *args, num_samples: int = 100, return_sites: Sequence[str] | None = None, **kwargs
    ) -> dict[str, torch.Tensor]:
        """Posterior predictive samples at new inputs.

        :param args: the model's arguments without the observations (they default to ``None``
            in the model), stacked over the same T tasks: e.g. ``x_query`` ``(T, N, 1)``.
        :param num_samples: draws of θ (vectorised as one extra plate).
        :param return_sites: sites to return; defaults to every sample and deterministic site.
        :returns: ``{site: (num_samples, T, ...)}`` as Predictive lays them out (the prior site
            keeps its plate slots: ``(num_samples, T, 1, D)`` for a model with one data plate).
        """
        n = next(a for a in args if isinstance(a, torch.Tensor)).shape[0]
        if n != self.num_tasks:
            raise ValueError(f"the posterior is over {self.num_tasks} tasks, got inputs for {n}")
        with pyro.settings.context(module_local_params=True), torch.no_grad():
            self.guide.load_state_dict(self.state)
            predictive = Predictive(
                self.model,
                guide=self.guide,
                num_samples=num_samples,
                return_sites=return_sites,
                parallel=True,
            )
            return predictive(*args, **kwargs)

    def sample_weights(self, num_samples: int, generator: torch.Generator | None = None):
        """Draws of θ from q, ``(num_samples, T, D)``."""
        eps = torch.randn((num_samples,) + self.loc.shape, generator=generator)
        return self.loc if self.scale is None else self.loc + self.scale * eps
