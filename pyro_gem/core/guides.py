"""Autoguides for the inner VI: which are supported, starting them at a prior, reading them back.

The Gradient-EM estimator needs, per task and per weight, the posterior mean μ and standard
deviation ν of the prior site. A mean-field guide gives both (``AutoNormal``); a delta guide gives
μ with ν = 0 (``AutoDelta``, MAP inner updates: the MAML / Reptile limit).

Example::

    guide_cls = resolve_guide("normal")            # or AutoNormal, "delta", AutoDelta
    guide = guide_cls(model)
    guide(*args)                                    # builds the guide's parameters
    set_guide_params(guide, "theta", loc, scale)    # start at the prior
    mu, nu = guide_params(guide, "theta")
"""

from __future__ import annotations

from operator import attrgetter

import torch
from pyro.infer.autoguide import AutoDelta, AutoGuide, AutoNormal

__all__ = ["SUPPORTED_GUIDES", "resolve_guide", "guide_params", "set_guide_params"]

SUPPORTED_GUIDES: dict[str, type[AutoGuide]] = {"normal": AutoNormal, "delta": AutoDelta}


def resolve_guide(guide: str | type[AutoGuide]) -> type[AutoGuide]:
    """The autoguide class for a name (``"normal"``, ``"delta"``) or a class.

    :param guide: a name (``"normal"``, ``"AutoNormal"``, ``"delta"``, ...) or an autoguide class.
    :raises ValueError: naming the guide, if it is not one the Gradient-EM estimator can read.
    """
    if isinstance(guide, str):
        key = guide.lower().removeprefix("auto")
        if key not in SUPPORTED_GUIDES:
            raise ValueError(
                f"unsupported guide {guide!r}: choose one of {sorted(SUPPORTED_GUIDES)}"
            )
        return SUPPORTED_GUIDES[key]
    if isinstance(guide, type) and guide in SUPPORTED_GUIDES.values():
        return guide
    name = getattr(guide, "__name__", repr(guide))
    raise ValueError(
        f"unsupported guide {name}: the inner VI needs a per-weight mean and scale, which "
        f"{', '.join(c.__name__ for c in SUPPORTED_GUIDES.values())} provide"
    )


def _holder(guide: AutoGuide, kind: str):
    if isinstance(guide, AutoNormal):
        return guide.locs if kind == "loc" else guide.scales
    if isinstance(guide, AutoDelta):
        return guide if kind == "loc" else None
    raise ValueError(f"unsupported guide {type(guide).__name__}")


def guide_params(guide: AutoGuide, site: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The guide's mean and standard deviation at ``site``, detached.

    :param guide: an AutoNormal or AutoDelta that has been run once (its parameters exist).
    :param site: the sample site, dotted as Pyro nests it.
    :returns: ``(loc, scale)``; ``scale`` is ``None`` for a delta guide.
    """
    loc = attrgetter(site)(_holder(guide, "loc")).detach()
    scales = _holder(guide, "scale")
    scale = None if scales is None else attrgetter(site)(scales).detach()
    return loc, scale


def set_guide_params(
    guide: AutoGuide, site: str, loc: torch.Tensor, scale: torch.Tensor | None = None
) -> None:
    """Set the guide's mean (and standard deviation, if it has one) at ``site``.

    Values are broadcast to the shape of the guide's parameters.

    :param guide: an AutoNormal or AutoDelta that has been run once (its parameters exist).
    :param site: the sample site, dotted as Pyro nests it.
    :param loc: the mean, broadcastable to the guide's parameter at ``site``.
    :param scale: the standard deviation (positive), ignored by a delta guide; ``None`` keeps it.
    """
    with torch.no_grad():
        for kind, value in (("loc", loc), ("scale", scale)):
            holder = _holder(guide, kind)
            if holder is None or value is None:
                continue
            *path, leaf = site.split(".")
            for part in path:
                holder = getattr(holder, part)
            current = getattr(holder, leaf)
            setattr(holder, leaf, value.detach().expand_as(current).clone())
