"""Metrics of classifiers: accuracy, predictive NLL and calibration errors (ECE, MCE).

The predicted class probabilities are the posterior predictive: the mean over posterior draws
of θ of the model's class probabilities, ``softmax(logits)``, where the model records its logits
as a deterministic site (``pyro.deterministic("logits", ...)``). A delta posterior (MAML and the
other point estimates) has one draw; a particle posterior (BMAML) averages its particles.

Calibration is pooled over every query prediction of every task: each task contributes per-bin
counts (:meth:`CalibrationError.__call__`), and :meth:`CalibrationError.summarize` adds them up,
so the ECE is that of all predictions at once (tested against torchmetrics'
``multiclass_calibration_error``).

Example::

    class Episodes(TaskFamily):
        metrics = (Accuracy(), PredictiveNLL(), CalibrationError(bins=15))
"""

from __future__ import annotations

import math

import torch

from pyro_gem.evaluation.metrics import Metric, MetricError, Query

__all__ = ["Accuracy", "CalibrationError", "PredictiveNLL", "predictive_log_probs", "reliability"]


def predictive_log_probs(
    query: Query, logits_site: str = "logits", metric: str = ""
) -> torch.Tensor:
    """The log posterior predictive class probabilities at the query inputs, ``(T, N, C)``: the
    log of the mean over the posterior draws of ``softmax`` of the model's ``logits_site``.

    Cached on the query, so the classification metrics share one computation.

    :raises MetricError: if the model records no such site.
    """
    cache = query.__dict__.setdefault("_class_probs", {})
    if logits_site not in cache:
        sites = query.sites()
        if logits_site not in sites:
            raise MetricError(
                f"metric {metric!r} reads the class logits from the site {logits_site!r}, which "
                f"the model does not record (its sites: {sorted(sites)}): add "
                f"pyro.deterministic({logits_site!r}, logits) to the model"
            )
        logits = sites[logits_site]  # (S, T, N, C)
        cache[logits_site] = torch.logsumexp(logits.log_softmax(-1), 0) - math.log(len(logits))
    return cache[logits_site]


def _labels(query: Query, num_classes: int) -> torch.Tensor:
    labels = query.target.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise MetricError(f"query labels outside 0..{num_classes - 1}")
    return labels


class _ClassMetric(Metric):
    """A metric of the predictive class probabilities and the query labels.

    :param logits_site: the model's deterministic site holding the class logits.
    """

    def __init__(self, logits_site: str = "logits"):
        self.logits_site = logits_site

    def log_probs_and_labels(self, query: Query) -> tuple[torch.Tensor, torch.Tensor]:
        """The log posterior predictive probabilities ``(T, N, C)`` and the labels ``(T, N)``."""
        log_probs = predictive_log_probs(query, self.logits_site, self.name)
        return log_probs, _labels(query, log_probs.shape[-1])


class Accuracy(_ClassMetric):
    """The share of each task's query points whose most probable class is the label."""

    name = "accuracy"

    def __call__(self, query: Query) -> torch.Tensor:
        log_probs, labels = self.log_probs_and_labels(query)
        return (log_probs.argmax(-1) == labels).float().flatten(1).mean(1)


class PredictiveNLL(_ClassMetric):
    """The negative log posterior predictive probability of each query label, averaged over a
    task's query points (nats per point): −log mean_s p(y | x, θ_s)."""

    name = "nll"

    def __call__(self, query: Query) -> torch.Tensor:
        log_probs, labels = self.log_probs_and_labels(query)
        return -log_probs.gather(-1, labels[..., None]).squeeze(-1).flatten(1).mean(1)


def reliability(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-bin statistics from pooled counts ``(bins, 3)`` (predictions, summed confidence,
    correct predictions): ``{"count", "confidence", "accuracy", "edges"}``, the bins' mean
    confidence and accuracy NaN where a bin is empty."""
    counts = counts.double()
    n = counts[:, 0]
    safe = n.clamp_min(1)
    empty = n == 0
    bins = len(counts)
    return {
        "count": n,
        "confidence": (counts[:, 1] / safe).masked_fill(empty, math.nan),
        "accuracy": (counts[:, 2] / safe).masked_fill(empty, math.nan),
        "edges": torch.linspace(0, 1, bins + 1, dtype=torch.float64),
    }


class CalibrationError(_ClassMetric):
    """Expected and maximum calibration error (ECE, MCE) of the top-class confidence, with
    ``bins`` equal-width confidence bins over (0, 1], pooled over every query prediction.

    ECE = Σ_b (n_b / n) |acc_b − conf_b|; MCE = max over non-empty bins of |acc_b − conf_b|.
    Per task it returns the bins' counts ``(T, bins, 3)`` (predictions, summed confidence,
    correct); :meth:`summarize` pools them over tasks into ``{"ece", "mce", "bins",
    "counts"}``, the last the pooled table behind a reliability diagram.

    :param bins: the number of equal-width confidence bins.
    :param logits_site: the model's deterministic site holding the class logits.
    """

    name = "calibration"

    def __init__(self, bins: int = 15, logits_site: str = "logits"):
        if int(bins) != bins or bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins!r}")
        super().__init__(logits_site)
        self.bins = int(bins)

    def __call__(self, query: Query) -> torch.Tensor:
        log_probs, labels = self.log_probs_and_labels(query)
        confidence, predicted = log_probs.max(-1)
        confidence = confidence.exp()
        confidence = confidence.double().flatten(1)
        correct = (predicted == labels).double().flatten(1)
        # Bin b holds confidences in (b/B, (b+1)/B] (Guo et al., 2017); torchmetrics puts a
        # confidence of exactly 1 in a bin of its own, and agrees everywhere else.
        # (A diverged task's NaN confidences go to bin 0; the meta-test drops the task.)
        binned = torch.ceil(confidence.nan_to_num(0.0) * self.bins) - 1
        index = binned.clamp(0, self.bins - 1).long()
        values = torch.stack([torch.ones_like(confidence), confidence, correct], -1)
        counts = values.new_zeros(len(values), self.bins, 3)
        return counts.scatter_add_(1, index[..., None].expand(-1, -1, 3), values)

    def summarize(self, values: torch.Tensor) -> dict:
        pooled = values.sum(0)
        stats = reliability(pooled)
        n = stats["count"]
        gap = (stats["accuracy"] - stats["confidence"]).abs()
        filled = n > 0
        ece = float((n[filled] / n.sum() * gap[filled]).sum()) if filled.any() else math.nan
        mce = float(gap[filled].max()) if filled.any() else math.nan
        return {"ece": ece, "mce": mce, "bins": self.bins, "counts": pooled.tolist()}
