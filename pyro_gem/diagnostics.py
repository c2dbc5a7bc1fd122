"""Posterior diagnostics: ArviZ InferenceData export and plots.

Example::

    post = learner.adapt(*test.support)
    idata = to_inference_data(post, test.query[:-1], observed=test.query[-1])
    az.summary(idata, var_names=["mean"])
    az.plot_forest(idata, var_names=["mean"], coords={"task": [0], "point": [0, 1, 2]})
    plot_tasks(learner, tasks, test.select(slice(0, 4)), "tasks.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import arviz as az
import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import Predictive

from pyro_gem.core.posterior import Posterior
from pyro_gem.evaluation.metrics import SquaredError

if TYPE_CHECKING:
    from pyro_gem.core.batch import TaskBatch
    from pyro_gem.methods.base import MetaLearner

__all__ = ["plot_reliability", "plot_tasks", "plot_training", "to_inference_data"]


def _np(value: torch.Tensor) -> np.ndarray:
    return value.detach().cpu().numpy()


def _flat_weights(theta: torch.Tensor) -> torch.Tensor:
    """Draws of the prior site ``(S, T, 1, ..., D)`` as ``(S, T, D)``."""
    return theta.reshape(theta.shape[0], theta.shape[1], theta.shape[-1])


def _log_likelihood(
    posterior: Posterior, inputs, observed: torch.Tensor, theta: torch.Tensor, obs_site: str
) -> torch.Tensor:
    """log p(observed point | θ_s) for every draw, task and point, ``(S, T, N)``."""
    nesting = posterior.nesting
    conditioned = poutine.condition(posterior.tasks_model, data={posterior.site: theta})
    with (
        torch.no_grad(),
        pyro.settings.context(module_local_params=True),
        pyro.plate("draws", theta.shape[0], dim=-(nesting + 1)),
    ):
        trace = poutine.trace(conditioned).get_trace(*inputs, observed)
    site = trace.nodes[obs_site]
    return site["fn"].log_prob(site["value"])


def to_inference_data(
    posterior: Posterior,
    inputs: Sequence[torch.Tensor],
    observed: torch.Tensor | None = None,
    num_samples: int = 200,
    obs_site: str = "y",
    weights: bool = True,
) -> az.InferenceData:
    """ArviZ InferenceData for an adapted posterior over T tasks, at the given inputs.

    Groups: ``posterior`` (the weights ``theta`` with dims ``(task, weight)`` and every
    deterministic or latent site of the model, e.g. the function values ``mean`` with dims
    ``(task, point)``), ``prior`` (the same sites under the learnable prior),
    ``posterior_predictive`` and ``prior_predictive`` (the observation site), and, when
    ``observed`` is given, ``observed_data`` and ``log_likelihood``.

    :param posterior: a posterior from a learner's ``adapt``.
    :param inputs: the model's inputs for the points to predict, e.g. ``(x_query,)``.
    :param observed: the observed targets at those inputs, ``(T, N)``.
    :param num_samples: draws per group (one chain).
    :param obs_site: the model's observation site.
    :param weights: include the network weights (``D`` values per draw and task).
    """
    inputs = tuple(inputs)
    post = posterior.predict(*inputs, num_samples=num_samples)
    with torch.no_grad(), pyro.settings.context(module_local_params=True):
        prior = Predictive(
            posterior.tasks_model,
            num_samples=num_samples,
            parallel=True,
        )(*inputs)
    site = posterior.site
    dims, groups = {}, {"posterior": {}, "prior": {}}
    for name, draws in (("posterior", post), ("prior", prior)):
        for key, value in draws.items():
            if key == obs_site:
                continue
            if key == site:
                if not weights:
                    continue
                value = _flat_weights(value)
                dims[key] = ["task", "weight"]
            elif value.dim() == 3:
                dims[key] = ["task", "point"]
            groups[name][key] = _np(value)[None]
    dims[obs_site] = ["task", "point"]
    kwargs = {
        "posterior": groups["posterior"],
        "prior": groups["prior"],
        "posterior_predictive": {obs_site: _np(post[obs_site])[None]},
        "prior_predictive": {obs_site: _np(prior[obs_site])[None]},
    }
    if observed is not None:
        loglik = _log_likelihood(posterior, inputs, observed, post[site], obs_site)
        kwargs["observed_data"] = {obs_site: _np(observed)}
        kwargs["log_likelihood"] = {obs_site: _np(loglik)[None]}
    return az.from_dict(**kwargs, dims=dims)


def plot_tasks(
    learner: MetaLearner,
    tasks,
    batch: TaskBatch,
    path: str | Path | None = None,
    steps: int | None = None,
    num_samples: int = 200,
    grid_points: int = 200,
    mean_site: str | None = None,
    obs_site: str = "y",
):
    """Plot adapted predictions for a few 1-D regression tasks.

    Shows the support points, the true function (when the task family has ``function``), and
    the posterior predictive mean with its 90% band over a grid spanning the inputs, after
    ``steps`` inner steps (the learner's default when omitted).

    :param learner: a trained learner; its ``adapt`` gives the posteriors.
    :param tasks: the task family, for the true function (its ``function(info, x)``, if any).
    :param batch: the tasks to plot, one panel each.
    :param path: where to write the PNG; ``None`` returns the figure instead.
    :param steps: inner steps of adaptation.
    :param num_samples: posterior draws for the band.
    :param grid_points: prediction points per panel.
    :param mean_site: a deterministic site holding the noise-free prediction, if the model has
        one; by default the one the family's squared error reads (``"mean"`` without one).
    :param obs_site: the observation site, plotted where the model records no ``mean_site``.
    :returns: the path written, or the figure when ``path`` is ``None``; ``None`` when the
        tasks do not have scalar inputs or the model cannot predict from inputs alone.
    """
    import matplotlib.pyplot as plt

    x_s, y_s = batch.support[0], batch.support[-1]
    if len(batch.support) != 2 or x_s.dim() != 3 or x_s.shape[-1] != 1:
        return None
    post = learner.adapt(*batch.support, steps=steps)
    lo, hi = getattr(tasks, "x_range", (x_s.min().item(), x_s.max().item()))
    grid = torch.linspace(lo, hi, grid_points).expand(len(batch), grid_points)[..., None]
    try:
        draws = post.predict(grid, num_samples=num_samples)
    except TypeError:  # the model needs its observations (e.g. a pyro.factor likelihood)
        return None
    if mean_site is None:
        scored = [m for m in getattr(tasks, "metrics", ()) if isinstance(m, SquaredError)]
        mean_site = scored[0].mean_site if scored else "mean"
    f = draws.get(mean_site, draws.get(obs_site))
    if f is None:
        return None
    band = torch.quantile(f, torch.tensor([0.05, 0.95]), dim=0)
    n = len(batch)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.2), squeeze=False)
    for t, ax in enumerate(axes[0]):
        gx = _np(grid[t, :, 0])
        if hasattr(tasks, "function") and batch.info:
            truth = tasks.function(batch.select(slice(t, t + 1)).info, grid[t : t + 1])[0]
            ax.plot(gx, _np(truth), "k--", lw=1.2, label="true function")
        ax.fill_between(gx, _np(band[0, t]), _np(band[1, t]), alpha=0.3, label="90% band")
        ax.plot(gx, _np(f.mean(0)[t]), lw=1.6, label="predictive mean")
        ax.scatter(_np(x_s[t, :, 0]), _np(y_s[t]), c="C3", s=18, zorder=3, label="support")
        ax.set_title(f"task {t}")
        ax.set_xlabel("x")
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{getattr(learner, 'name', '')}: held-out tasks after {post.steps} inner steps")
    return _finish(fig, path)


def _finish(fig, path: str | Path | None):
    """Return the figure, or save it to ``path``, close it and return the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    if path is None:
        return fig
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_training(history: list[dict], path: str | Path | None = None):
    """Plot the meta-objective, the held-out score (``heldout_<metric>``, e.g. the MSE) and the
    median prior scale over training.

    The prior scale is worth watching: an unconverged inner VI can bias ĝ_s upwards, and the
    scale then runs away while the held-out error climbs back.
    """
    import matplotlib.pyplot as plt

    it = np.array([h["iteration"] for h in history])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    axes[0].plot(it, [h["meta_objective"] for h in history], lw=0.6)
    axes[0].set_title("meta-objective estimate")
    key = next((k for h in history for k in h if k.startswith("heldout_")), "heldout_mse")
    evals = [(h["iteration"], h[key]) for h in history if key in h]
    if evals:
        axes[1].plot(*zip(*evals, strict=True), marker="o")
        if all(v > 0 for _, v in evals):
            axes[1].set_yscale("log")
    axes[1].set_title(f"held-out {key.removeprefix('heldout_')}")
    axes[2].plot(it, [h["prior_scale_median"] for h in history])
    axes[2].set_title("median prior scale σ")
    for ax in axes:
        ax.set_xlabel("meta-iteration")
    return _finish(fig, path)


def plot_returns(
    returns: dict[str, dict[str, list[float]]], path: str | Path | None = None, title: str = ""
):
    """Average return against the number of inner updates, one line per method (MAML's Fig. 5).

    :param returns: ``{method: {str(updates): [mean, ci95]}}``, e.g. a meta-test's ``"return"``.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for method, by_update in returns.items():
        updates = sorted(by_update, key=int)
        mean = [by_update[u][0] for u in updates]
        ci = [by_update[u][1] for u in updates]
        ax.errorbar([int(u) for u in updates], mean, yerr=ci, marker="o", capsize=3, label=method)
    ax.set_xlabel("inner updates")
    ax.set_ylabel("average return")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def plot_reliability(calibration: dict[str, dict], path: str | Path | None = None, title: str = ""):
    """Reliability diagrams, one panel per entry: the accuracy of each confidence bin against
    its mean confidence, with the bins' share of the predictions below, and the ECE and MCE.

    :param calibration: ``{label: summary}``, each the meta-test's ``"calibration"`` summary of
        one step count (:class:`~pyro_gem.evaluation.classification.CalibrationError`:
        ``{"ece", "mce", "bins", "counts"}``), e.g. ``{"maml": scores["calibration"]["3"]}``.
    :param path: where to write the PNG; ``None`` returns the figure instead.
    :param title: the figure's title.
    """
    import matplotlib.pyplot as plt

    from pyro_gem.evaluation.classification import reliability

    n = len(calibration)
    fig, axes = plt.subplots(
        2, n, figsize=(3.2 * n, 4.2), squeeze=False, gridspec_kw={"height_ratios": [3, 1]},
        sharex=True,
    )  # fmt: skip
    for (label, summary), top, bottom in zip(calibration.items(), axes[0], axes[1]):
        stats = reliability(torch.tensor(summary["counts"]))
        edges = _np(stats["edges"])
        width = edges[1] - edges[0]
        centres = edges[:-1] + width / 2
        acc = np.nan_to_num(_np(stats["accuracy"]))
        top.bar(centres, acc, width=width, edgecolor="k", lw=0.5, label="accuracy")
        conf = _np(stats["confidence"])
        filled = ~np.isnan(conf)
        top.bar(
            centres[filled], conf[filled] - acc[filled], bottom=acc[filled], width=width,
            color="C3", alpha=0.35, label="gap to confidence",
        )  # fmt: skip
        top.plot([0, 1], [0, 1], "k--", lw=1)
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_title(f"{label}\nECE {summary['ece']:.4f}, MCE {summary['mce']:.4f}", fontsize=9)
        share = _np(stats["count"] / stats["count"].sum().clamp_min(1))
        bottom.bar(centres, share, width=width, color="grey", edgecolor="k", lw=0.5)
        bottom.set_xlabel("confidence")
    axes[0][0].set_ylabel("accuracy")
    axes[1][0].set_ylabel("share")
    axes[0][0].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    return _finish(fig, path)
