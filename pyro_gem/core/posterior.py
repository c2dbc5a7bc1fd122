"""An adapted posterior for a batch of tasks, with predictions through Pyro's ``Predictive``.

A learner's ``adapt`` returns a :class:`Posterior`: the fitted autoguide, the tasks-plated model it
was fitted to, and the per-task mean and standard deviation of the weights.

Example::

    post = learner.adapt(x_support, y_support)        # (T, K, 1), (T, K)
    draws = post.predict(x_query, num_samples=200)    # {"y": (200, T, N), "mean": ...}
    post.history[1].predict(x_query)                  # the posterior after one inner step
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import torch
from pyro.infer import Predictive

from pyro_gem.core.batch import validate_task_args
from pyro_gem.core.inner import InnerFit, finite_tasks

__all__ = ["ParticlePosterior", "Posterior"]


def _nan_diverged(draws: dict[str, torch.Tensor], diverged: torch.Tensor) -> None:
    """Replace the draws of diverged tasks (dimension 1 of each per-task value) by NaN."""
    if not diverged.any():
        return
    for name, value in draws.items():
        if value.is_floating_point() and value.dim() > 1 and value.shape[1] == diverged.numel():
            mask = diverged.reshape((1, -1) + (1,) * (value.dim() - 2))
            draws[name] = torch.where(mask, torch.nan, value)


def _reset_tasks(value: torch.Tensor, diverged: torch.Tensor) -> torch.Tensor:
    value = torch.nan_to_num(value, nan=0.0, posinf=0.0, neginf=0.0)
    if value.dim() and value.shape[0] == diverged.numel():
        mask = diverged.reshape((-1,) + (1,) * (value.dim() - 1))
        value = torch.where(mask, torch.zeros_like(value), value)
    return value


class Posterior:
    """q(θ) for T tasks after an inner VI run.

    :param fit: the inner VI run (its guide, models and parameters).
    :param site: the prior's sample site.
    :param steps: the inner steps that produced this posterior.
    :param snapshot: ``(loc, scale, guide state)`` of an intermediate step; defaults to the end.
    """

    def __init__(self, fit: InnerFit, site: str, steps: int, snapshot: tuple | None = None):
        self.tasks_model = fit.tasks_model
        self.model = fit.model
        self.guide = fit.guide
        self.site = site
        self.steps = steps
        # Plate dims of the tasks-plated model: Predictive's draws plate goes left of them.
        self.nesting = fit.tasks_model.nesting + 1
        self.history: dict[int, Posterior] = {}
        if snapshot is None:
            state = {k: v.detach().clone() for k, v in fit.guide.state_dict().items()}
            snapshot = (fit.loc, fit.scale, state)
            self.history = {k: Posterior(fit, site, k, s) for k, s in fit.snapshots.items()}
        self.loc, self.scale, self.state = snapshot

    @property
    def num_tasks(self) -> int:
        return self.loc.shape[0]

    @property
    def finite(self) -> torch.Tensor:
        """Per task: whether its posterior is finite, ``(T,)`` (``False``: its VI diverged)."""
        return finite_tasks(self.loc, self.scale)

    def weight_draws(
        self, num_samples: int = 100, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draws of the weights θ from q, ``(S, T, D)``: the guide's mean-field Normal
        N(loc, scale²) (its whitened parameters mapped back), or ``loc`` once (``S = 1``) for a
        delta guide. A diverged task's draws are NaN.

        :param num_samples: S, for a Gaussian posterior.
        :param generator: the random stream of the draws (torch's global one if omitted).
        """
        if self.scale is None:
            draws = self.loc[None]
        else:
            # The generator may live on another device (a CPU stream for CUDA weights).
            on = self.loc.device if generator is None else generator.device
            noise = torch.randn(
                (num_samples, *self.loc.shape), generator=generator, dtype=self.loc.dtype, device=on
            ).to(self.loc.device)
            draws = self.loc + self.scale * noise
        return torch.where(self.finite[:, None], draws, torch.nan)

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
        n = validate_task_args(args, "prediction input")
        if n != self.num_tasks:
            raise ValueError(f"the posterior is over {self.num_tasks} tasks, got inputs for {n}")
        # A task whose inner VI diverged predicts NaN. Its parameters (NaN, or finite but with a
        # scale that underflowed to 0) are reset to the guide's unconstrained zero so that
        # sampling can run for the other tasks; per-task parameters lead with the task dim.
        diverged = ~self.finite
        state = self.state
        if diverged.any():
            state = {k: _reset_tasks(v, diverged) for k, v in state.items()}
        with pyro.settings.context(module_local_params=True), torch.no_grad():
            self.guide.load_state_dict(state)
            predictive = Predictive(
                self.model,
                guide=self.guide,
                num_samples=num_samples,
                return_sites=return_sites,
                parallel=True,
            )
            draws = predictive(*args, **kwargs)
        _nan_diverged(draws, diverged)
        # The whitened inner VI's auxiliary site is ours, not the user's.
        draws.pop(f"{self.site}_decentered", None)
        return draws


class ParticlePosterior:
    """An empirical posterior of M weight particles per task (BMAML's SVGD particles).

    Predictions go through Pyro's ``Predictive`` with the particles as posterior samples; a
    request for ``num_samples`` draws cycles through the particles, each weighted equally.

    :param tasks_model: the user's model under the tasks plate (:class:`~pyro_gem.core.inner.TasksModel`).
    :param site: the prior's sample site.
    :param particles: ``(T, M, D)``.
    :param steps: the inner steps that produced them.
    :param snapshots: particles ``(T, M, D)`` after intermediate steps, by step; they become
        the posteriors of ``history``.
    """

    def __init__(
        self,
        tasks_model,
        site: str,
        particles: torch.Tensor,
        steps: int,
        snapshots: dict[int, torch.Tensor] | None = None,
    ):
        self.tasks_model = self.model = tasks_model
        self.site = site
        self.particles = particles.detach()
        self.steps = steps
        self.nesting = tasks_model.nesting + 1
        self.history = {
            k: ParticlePosterior(tasks_model, site, v, k) for k, v in (snapshots or {}).items()
        }
        self.loc = self.particles.mean(1)
        self.scale = self.particles.std(1) if particles.shape[1] > 1 else None

    @property
    def num_tasks(self) -> int:
        return self.particles.shape[0]

    @property
    def finite(self) -> torch.Tensor:
        """Per task: whether every particle is finite, ``(T,)``."""
        return torch.isfinite(self.particles).flatten(1).all(1)

    def weight_draws(
        self, num_samples: int = 100, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The particles themselves, ``(M, T, D)``: the empirical posterior exactly, each particle
        weighted equally (``num_samples`` and ``generator`` are not needed)."""
        return self.particles.transpose(0, 1)

    def predict(
        self, *args, num_samples: int = 100, return_sites: Sequence[str] | None = None, **kwargs
    ) -> dict[str, torch.Tensor]:
        """Predictive samples at new inputs, laid out as :meth:`Posterior.predict` lays them out."""
        n = validate_task_args(args, "prediction input")
        if n != self.num_tasks:
            raise ValueError(f"the posterior is over {self.num_tasks} tasks, got inputs for {n}")
        index = torch.arange(num_samples) % self.particles.shape[1]
        draws = self.particles[:, index].transpose(0, 1)  # (S, T, D)
        slots = (1,) * (self.nesting - 1)
        draws = draws.reshape(draws.shape[:2] + slots + draws.shape[-1:])
        diverged = ~self.finite
        if diverged.any():
            mask = diverged.reshape((1, -1) + (1,) * (draws.dim() - 2))
            draws = torch.where(mask, 0.0, draws)
        with pyro.settings.context(module_local_params=True), torch.no_grad():
            predictive = Predictive(
                self.tasks_model,
                posterior_samples={self.site: draws},
                return_sites=return_sites,
                parallel=True,
            )
            out = predictive(*args, **kwargs)
        out.setdefault(self.site, draws)
        _nan_diverged(out, diverged)
        return out
