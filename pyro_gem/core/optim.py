"""Inner optimisers that know the task dimension: a step bounded per task.

The inner VI fits all T tasks' guides in one tensor per parameter, tasks first. Plain SGD on a
whitened guide is fast, but its stable step is set by the stiffest task: whitening scales a
direction's curvature by the prior's σ², and a learned prior with a few large σ makes some tasks
diverge at a step that suits the rest. :class:`TaskClippedSGD` caps the length of each task's
step, so a stiff task moves at most ``max_norm`` (one prior standard deviation, in whitened
coordinates) per step while the others take SGD's full step. Tasks stay independent: one task's
gradient never changes another's step, and a non-finite gradient stays within its own task.

Example::

    optim = pyro.optim.PyroOptim(TaskClippedSGD, {"lr": 0.05, "max_norm": 1.0})
    vi = InnerVI(optim=optim, steps=20)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from pyro.optim import PyroOptim
from pyro.optim.lr_scheduler import PyroLRScheduler

__all__ = ["TaskClippedSGD", "check_lr_for", "with_lr_for"]


class _ParamsLR(PyroOptim):
    """A PyroOptim whose optimisers of some parameters take another learning rate."""

    def __init__(self, optim: PyroOptim, params: Iterable[torch.Tensor], lr: float):
        self.__dict__.update(copy.deepcopy(optim).__dict__)
        self._other_ids = {id(p) for p in params}
        self._other_lr = lr

    def _get_optim_args(self, param):
        args = super()._get_optim_args(param)
        return {**args, "lr": self._other_lr} if id(param) in self._other_ids else args


def check_lr_for(optim: PyroOptim, lr: float, name: str = "lr") -> None:
    """Raise ValueError unless :func:`with_lr_for` can give some of ``optim``'s parameters the
    step ``lr``: ``optim`` a plain PyroOptim with an ``lr`` (not a scheduler, whose arguments
    are the scheduler's, nor per-parameter arguments), ``lr`` positive. ``name`` is the
    option's name in the messages."""
    args = getattr(optim, "pt_optim_args", None)
    if isinstance(optim, PyroLRScheduler) or not isinstance(args, dict) or "lr" not in args:
        raise ValueError(
            f"{name} needs a plain PyroOptim with an 'lr' (not a scheduler or per-parameter "
            f"arguments), got {type(optim).__name__}"
        )
    if not lr > 0:
        raise ValueError(f"{name} must be > 0, got {lr}")


def with_lr_for(optim: PyroOptim, params: Iterable[torch.Tensor], lr: float) -> PyroOptim:
    """A copy of ``optim`` (a PyroOptim with a ``lr``) whose optimisers of ``params`` step
    with ``lr`` instead: e.g. a guide's scales at a step of their own (the inner VI's
    ``scale_lr``). Pyro's per-parameter ``optim_args`` callables look parameters up by name in
    the global param store, which the inner VI never touches; this goes by identity.

    :raises ValueError: as :func:`check_lr_for`.
    """
    check_lr_for(optim, lr)
    return _ParamsLR(optim, params, lr)


class TaskClippedSGD(torch.optim.Optimizer):
    """SGD whose step, per parameter and per task (the leading dimension), has norm at most
    ``max_norm``: ``p[t] -= lr g[t] min(1, max_norm / ‖lr g[t]‖)``.

    :param params: parameters whose first dimension indexes tasks (a 0-d parameter is one task).
    :param lr: the SGD step size.
    :param max_norm: the longest step a task may take in one parameter tensor.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, max_norm: float = 1.0):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not max_norm > 0:
            raise ValueError(f"max_norm must be > 0, got {max_norm}")
        super().__init__(params, {"lr": lr, "max_norm": max_norm})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                step = group["lr"] * p.grad.reshape(p.shape[0] if p.dim() else 1, -1)
                length = step.norm(dim=1, keepdim=True)
                # A non-finite length leaves the task's step non-finite too: that task
                # diverges on its own and is reported as such, the others are untouched.
                shrink = (group["max_norm"] / length).clamp(max=1.0).nan_to_num(nan=1.0)
                p.sub_((step * shrink).reshape(p.shape))
        return loss
