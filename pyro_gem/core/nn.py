"""Batched functional forward of an ``nn.Module`` on flat weight vectors.

A prior over a network's weights samples one flat vector ``theta`` per task (and per particle).
:class:`FunctionalNet` runs the module on a whole batch of such vectors at once with
``torch.func.functional_call`` under ``torch.func.vmap``, so the inner loop of a meta-batch is one
batched computation instead of a Python loop over tasks.

Example::

    net = nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 1))
    fnet = FunctionalNet(net)
    theta = torch.randn(25, fnet.num_weights)         # 25 weight sets
    y = fnet(theta, torch.randn(25, 10, 1))           # (25, 10, 1): weight set t on inputs t

Weights are shared within the innermost batch dimension of the input (the data points of one
task) and vary along every dimension to the left of it. BatchNorm layers always use the
statistics of the batch they see (the per-task support or query set), as in MAML; running
statistics are not tracked.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, replace_all_batch_norm_modules_, vmap

__all__ = ["FunctionalNet", "batched_mlp", "infer_input_rank"]

_INPUT_RANKS = {nn.Linear: 1, nn.Conv1d: 2, nn.Conv2d: 3, nn.Conv3d: 4}

# Parameter-free layers that act elementwise, so they apply to a batch of weight sets as is.
_ELEMENTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Identity,
)


def _is_mlp(module: nn.Module) -> bool:
    """A Sequential of Linear layers and elementwise activations."""
    return isinstance(module, nn.Sequential) and all(
        isinstance(m, nn.Linear) or (isinstance(m, _ELEMENTWISE) and not list(m.parameters()))
        for m in module
    )


def infer_input_rank(module: nn.Module) -> int:
    """Rank of one input example, read from the module's first weight layer.

    :param module: a network built from standard layers.
    :returns: 1 for a network starting with ``Linear``, 3 for one starting with ``Conv2d``, ...
    :raises ValueError: if the first weight layer is of a kind whose input rank is unknown.
    """
    for sub in module.modules():
        for kind, rank in _INPUT_RANKS.items():
            if isinstance(sub, kind):
                return rank
        # An unknown layer with weights comes first; the root's own parameters (a policy's
        # log standard deviation) are not a layer.
        if sub is not module and next(sub.parameters(recurse=False), None) is not None:
            break
    raise ValueError(
        f"cannot infer the input rank of {type(module).__name__}: its first weight layer is "
        "not Linear or ConvNd; pass input_rank= (the rank of one input example) explicitly"
    )


def batched_mlp(
    mlp: nn.Sequential, params: dict[str, torch.Tensor], x: torch.Tensor, prefix: str = ""
) -> torch.Tensor:
    """A Sequential of Linear layers and elementwise activations on P weight sets at once.

    :param params: the parameters by name (``prefix + "0.weight"``, ...), each ``(P, ...)``.
    :param x: inputs ``(P, N, in)``.
    """
    h = x
    for i, layer in enumerate(mlp):
        if isinstance(layer, nn.Linear):
            w = params[f"{prefix}{i}.weight"]
            b = params.get(f"{prefix}{i}.bias")
            h = (
                torch.bmm(h, w.transpose(1, 2))
                if b is None
                else torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))
            )
        else:
            h = layer(h)
    return h


class FunctionalNet:
    """A module evaluated on flat, batched weight vectors.

    :param module: the network. It is copied; the copy's BatchNorm layers stop tracking
        running statistics so that the forward can be vmapped.
    :param input_rank: rank of one input example (1 for vectors, 3 for images). Inferred from
        the first weight layer when omitted.
    """

    def __init__(self, module: nn.Module, input_rank: int | None = None):
        self.module = copy.deepcopy(module)
        replace_all_batch_norm_modules_(self.module)
        self.input_rank = infer_input_rank(module) if input_rank is None else int(input_rank)
        self.names: list[str] = []
        self.shapes: list[torch.Size] = []
        for name, p in module.named_parameters():
            self.names.append(name)
            self.shapes.append(p.shape)
        self.sizes = [math.prod(s) for s in self.shapes]
        self.num_weights = sum(self.sizes)
        if self.num_weights == 0:
            raise ValueError(f"{type(module).__name__} has no parameters to put a prior on")
        # MLPs run as batched matmuls directly: the same arithmetic as vmap, less dispatch. A
        # module may give its own batched forward (``batched_forward(params, x)``, params with
        # a leading weight-set dim P, x (P, N, ...)), as the RL policy does.
        self.is_mlp = _is_mlp(self.module)
        self.batched_forward = getattr(self.module, "batched_forward", None)

    def flatten(self, module: nn.Module) -> torch.Tensor:
        """The module's current parameters as one flat vector, in this net's order."""
        params = dict(module.named_parameters())
        return torch.cat([params[n].detach().reshape(-1) for n in self.names])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector ``(..., num_weights)`` into named parameters of batch ``...``."""
        if theta.shape[-1] != self.num_weights:
            raise ValueError(
                f"weight vector has {theta.shape[-1]} entries, the network has {self.num_weights}"
            )
        batch = theta.shape[:-1]
        parts = torch.split(theta, self.sizes, dim=-1)
        return {n: p.reshape(batch + s) for n, p, s in zip(self.names, parts, self.shapes)}

    def _single(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, self.unflatten(theta), (x,))

    def _batched_mlp(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``theta`` (P, D) and ``x`` (P, N, in) through a Sequential of Linear layers."""
        return batched_mlp(self.module, self.unflatten(theta), x)

    def __call__(
        self, theta: torch.Tensor, x: torch.Tensor, weight_batch: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Run the network.

        :param theta: weights ``(*W, num_weights)``.
        :param x: inputs ``(*B, N, *E)`` where ``E`` has ``input_rank`` dims and ``N`` counts the
            data points that share one weight set.
        :param weight_batch: how many leading dims of ``theta`` index weight sets; the rest must
            be size-1 slots (inner plates). Defaults to all of them.
        :returns: outputs ``(*broadcast(W, B), N, *out)``.
        """
        if weight_batch is not None:
            w = theta.shape[:weight_batch]
            if any(d != 1 for d in theta.shape[weight_batch:-1]):
                raise ValueError(
                    f"weights of shape {tuple(theta.shape)} vary inside the data plate; "
                    "sample the network outside the data plate"
                )
            theta = theta.reshape(w + theta.shape[-1:])
        r = self.input_rank
        if x.dim() < r + 1:
            raise ValueError(
                f"input of shape {tuple(x.shape)} has no data dimension: expected (..., N, "
                f"{r} input dims)"
            )
        batch = torch.broadcast_shapes(theta.shape[:-1], x.shape[: -(r + 1)])
        if not batch:
            return self._single(theta, x)
        theta = theta.expand(batch + theta.shape[-1:]).reshape((-1,) + theta.shape[-1:])
        x_flat = x.expand(batch + x.shape[-(r + 1) :]).reshape((-1,) + x.shape[-(r + 1) :])
        if self.batched_forward is not None:
            out = self.batched_forward(self.unflatten(theta), x_flat)
        else:
            out = (self._batched_mlp if self.is_mlp else vmap(self._single))(theta, x_flat)
        return out.reshape(batch + out.shape[1:])
