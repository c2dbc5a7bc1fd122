"""Batches of tasks: the data one meta-iteration sees.

A :class:`TaskBatch` holds T tasks. ``support`` and ``query`` are the positional arguments of the
user's single-task model, each stacked over tasks: a tensor of shape ``(T, N, ...)`` with the data
points of a task along dimension 1.

Example::

    batch = TaskBatch(support=(x_tr, y_tr), query=(x_val, y_val))   # x_tr: (T, K, 1)
    batch.validate()
    model(*batch.support)   # under the learner's tasks plate
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["TaskBatch", "task_count", "validate_task_args"]


def task_count(args: Sequence, what: str = "model") -> int:
    """The number of tasks T in stacked model arguments: dimension 0 of the first tensor.

    :param args: the model's positional arguments, tensors stacked over tasks ``(T, ...)``.
    :param what: the arguments' name, used in the error message.
    :raises ValueError: if no positional argument is a tensor.
    """
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.shape[0]
    raise ValueError(
        f"the {what} arguments hold no tensor: pass the model's data positionally, each "
        "stacked over tasks (T, N, ...); keyword-only data cannot be split into tasks"
    )


def validate_task_args(
    args: Sequence[torch.Tensor], what: str = "support", finite: bool = True
) -> int:
    """Check stacked task data and return the number of tasks.

    :param args: tensors of shape ``(T, N, ...)``.
    :param what: the set's name, used in error messages.
    :param finite: also refuse non-finite values.
    :raises ValueError: for zero tasks, an empty set, mismatched shapes or non-finite values.
    """
    task_count(args, what)
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    for i, t in enumerate(tensors):
        if t.dim() < 2:
            raise ValueError(
                f"{what} argument {i} has shape {tuple(t.shape)}: expected (tasks, points, ...)"
            )
    num_tasks, num_points = tensors[0].shape[:2]
    if num_tasks == 0:
        raise ValueError(f"the {what} set holds zero tasks")
    if num_points == 0:
        raise ValueError(f"the {what} set is empty: each task has zero data points")
    for i, t in enumerate(tensors):
        if t.shape[:2] != (num_tasks, num_points):
            raise ValueError(
                f"{what} argument {i} has shape {tuple(t.shape)}, but argument 0 has "
                f"{num_tasks} tasks of {num_points} points: shapes must agree on (tasks, points)"
            )
        if finite and t.is_floating_point() and not torch.isfinite(t).all():
            bad = (~torch.isfinite(t)).flatten(1).any(1).nonzero().flatten().tolist()
            raise ValueError(f"{what} argument {i} holds NaN or infinite values (tasks {bad})")
    return num_tasks


@dataclass
class TaskBatch:
    """T tasks: support (D_tr) and query (D_val) sets as stacked model arguments.

    :param support: model arguments for the support sets, each ``(T, N_tr, ...)``.
    :param query: model arguments for the query sets, each ``(T, N_val, ...)``.
    :param info: per-task ground truth for plots and diagnostics (e.g. amplitudes).
    """

    support: tuple[torch.Tensor, ...]
    query: tuple[torch.Tensor, ...]
    info: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.support[0].shape[0]

    def validate(self) -> int:
        """Check both sets (see :func:`validate_task_args`) and that they agree on T."""
        t = validate_task_args(self.support, "support")
        q = validate_task_args(self.query, "query")
        if t != q:
            raise ValueError(f"support has {t} tasks but query has {q}")
        if len(self.support) != len(self.query):
            raise ValueError("support and query must give the model the same arguments")
        return t

    def collect_support(self, theta: torch.Tensor) -> TaskBatch:
        """The batch with its support set collected under policy weights ``theta``: the data
        of supervised tasks exist already, so this is the batch itself (meta-RL batches,
        :class:`~pyro_gem.tasks.rl.OnPolicyBatch`, roll the policy out)."""
        return self

    def collect_query(self, theta: torch.Tensor) -> TaskBatch:
        """As :meth:`collect_support`, for the query set under the adapted weights."""
        return self

    def joint(self) -> tuple[torch.Tensor, ...]:
        """Support and query concatenated along the points dimension (D_tr ∪ D_val)."""
        return tuple(torch.cat([s, q], dim=1) for s, q in zip(self.support, self.query))

    def to(self, device: torch.device | str) -> TaskBatch:
        """The same tasks with every tensor on ``device`` (``self`` where they already are)."""
        device = torch.device(device)
        tensors = [*self.support, *self.query, *self.info.values()]
        if all(not torch.is_tensor(a) or a.device == device for a in tensors):
            return self

        def move(a):
            return a.to(device) if torch.is_tensor(a) else a

        return TaskBatch(
            tuple(map(move, self.support)),
            tuple(map(move, self.query)),
            {k: move(v) for k, v in self.info.items()},
        )

    def select(self, index: torch.Tensor | slice) -> TaskBatch:
        """The tasks at ``index``."""
        return TaskBatch(
            tuple(a[index] for a in self.support),
            tuple(a[index] for a in self.query),
            {k: v[index] for k, v in self.info.items()},
        )
