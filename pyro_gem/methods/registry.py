"""The paper's method matrix (its Table 1, plus the methods around it), as a registry.

A method is a posterior family, an objective and a meta-gradient estimator. Each row below names
the three and builds the learner from a run's options (the CLI's and the benchmarks' config).
The same inner-loop options apply wherever a method allows them; a method that needs plain SGD
(its meta-gradient differentiates or averages the inner steps) rejects another optimiser with an
error that says so.

==========  ===========  =========  ==========================================  ==============
method      posterior    objective  meta-gradient                               inner optimiser
==========  ===========  =========  ==========================================  ==============
gem-bml     Gaussian     L[1]       Gradient-EM                                 any PyroOptim
gem-bml+    Gaussian     L[2]       Gradient-EM                                 any PyroOptim
abml        Gaussian     L[1]       backprop through the inner VI (ELBO grad.)  SGD
abml+       Gaussian     L[2]       backprop through the inner VI (ELBO grad.)  SGD
kl-chaser   Gaussian     L[2]       KL chaser: Gradient-EM + backprop           SGD
bmaml       particles    L[2]       SVGD chaser, backprop                       SVGD steps
maml        delta        L[2]       backprop through the inner steps            SGD
fomaml      delta        L[2]       first-order backprop                        SGD
imaml       delta        L[2]       implicit (CG on Hessian-vector products)    any PyroOptim, or newton
reptile     delta        L[1]       Gradient-EM with a fixed variance           SGD
pretrain    point prior  pooled     ∇_m log P(all tasks' data | m)              SGD (fine-tune)
==========  ===========  =========  ==========================================  ==============

Example::

    learner = build("gem-bml+", model, prior, {"inner_optim": "adam", "inner_lr": 0.2, ...})
    METHOD_TABLE["imaml"].meta_gradient      # "implicit"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch

from pyro_gem.core.inner import InnerVI
from pyro_gem.core.optim import TaskClippedSGD
from pyro_gem.core.priors import GaussianPrior, prior_optimizer
from pyro_gem.methods.bmaml import BMAML
from pyro_gem.methods.elbo_gradient import AmortizedBML, KLChaser
from pyro_gem.methods.gem import GEMBML
from pyro_gem.methods.maml_trpo import MAMLTRPO
from pyro_gem.methods.point_estimate import IMAML, MAML, NEWTON, PreTraining, Reptile
from pyro_gem.rl.trust_region import TrustRegionVI

__all__ = [
    "INNER_OPTIMS",
    "METHODS",
    "METHOD_TABLE",
    "NOT_ON_WORKERS",
    "TRUST_REGION",
    "Method",
    "attach_runner",
    "build",
    "check_on_workers",
]

#: The ``inner_optim`` of GEM-BML(+)'s trust-region steps on a policy's posterior (meta-RL:
#: :class:`~pyro_gem.rl.trust_region.TrustRegionVI`, δ = ``max_kl``; ``inner_lr`` steps the
#: guide's scales).
TRUST_REGION = "trust-region"

#: Inner optimisers by name: torch optimisers, wrapped for Pyro with ``{"lr": inner_lr}``.
#: ``clipped-sgd`` bounds each task's step to norm 1 (one prior σ where the guide is whitened).
INNER_OPTIMS = {"sgd": torch.optim.SGD, "clipped-sgd": TaskClippedSGD, "adam": torch.optim.Adam}


@dataclass(frozen=True)
class Method:
    """One cell of the matrix: what the method is made of, and how to build it."""

    name: str
    posterior: str
    objective: str
    meta_gradient: str
    #: why the method needs plain SGD inner steps; ``None``: any of :data:`INNER_OPTIMS` works.
    needs_sgd: str | None
    make: Callable


def _inner_optim(config: dict) -> pyro.optim.PyroOptim:
    """The inner PyroOptim; with ``inner_lr_decay`` γ < 1 the step after n SVI steps is
    ``inner_lr`` γⁿ (Pyro's ExponentialLR, which :class:`InnerVI` steps after every SVI step)."""
    cls, lr = INNER_OPTIMS[config["inner_optim"]], config["inner_lr"]
    decay = config.get("inner_lr_decay", 1.0)
    if decay == 1.0:
        return pyro.optim.PyroOptim(cls, {"lr": lr})
    return pyro.optim.ExponentialLR({"optimizer": cls, "optim_args": {"lr": lr}, "gamma": decay})


def _gem(plus: bool):
    def make(model, prior, config):
        common = dict(
            guide=config["guide"],
            steps=config["inner_steps"],
            num_particles=config["num_particles"],
            init_scale=config.get("guide_init_scale"),
        )
        if config["inner_optim"] == TRUST_REGION:
            inner = TrustRegionVI(
                policy=prior.net,
                max_kl=config["max_kl"],
                cg_steps=config["cg_steps"],
                cg_damping=config["cg_damping"],
                scale_lr=config["inner_lr"],
                **common,
            )
        else:
            inner = InnerVI(
                optim=_inner_optim(config), scale_lr=config.get("inner_scale_lr"), **common
            )
        meta_optim = prior_optimizer(prior, config["meta_lr"], config.get("meta_lr_scale"))
        return GEMBML(
            model,
            prior,
            meta_optim,
            plus=plus,
            inner=inner,
            query_steps=config["query_steps"],
            update=config["update"],
        )

    return make


def _unrolled(cls, **fixed):
    def make(model, prior, config):
        return cls(
            model,
            prior,
            prior_optimizer(prior, config["meta_lr"], config.get("meta_lr_scale")),
            inner_lr=config["inner_lr"],
            inner_steps=config["inner_steps"],
            query_steps=config["query_steps"],
            num_particles=config["num_particles"],
            init_scale=config.get("guide_init_scale"),
            **fixed,
        )

    return make


def _point(cls, **fixed):
    def make(model, prior, config):
        extra = dict(fixed)
        if config.get("meta_update", "gradient") == "trpo":
            if cls is not MAML or fixed.get("first_order"):
                raise ValueError(
                    "meta_update 'trpo' is MAML's meta-RL update (second order, through the "
                    "inner step); first-order MAML, Reptile and the others take 'gradient'"
                )
            return MAMLTRPO(
                model,
                prior,
                max_kl=config["max_kl"],
                cg_steps=config["cg_steps"],
                cg_damping=config["cg_damping"],
                inner_lr=config["inner_lr"],
                inner_steps=config["inner_steps"],
            )
        if cls is IMAML:
            optim = config["inner_optim"]
            extra.update(
                reg=config["reg"],
                cg_steps=config["cg_steps"],
                inner_optim=optim if optim == NEWTON else _inner_optim(config),
            )
        return cls(
            model,
            prior,
            torch.optim.Adam([prior.loc], lr=config["meta_lr"]),
            inner_lr=config["inner_lr"],
            inner_steps=config["inner_steps"],
            **extra,
        )

    return make


def _bmaml(model, prior, config):
    learner = BMAML(
        model,
        prior,
        num_particles=config["num_particles"],
        inner_lr=config["inner_lr"],
        inner_steps=config["inner_steps"],
        leader_steps=config["query_steps"],
    )
    learner.meta_optim = torch.optim.Adam([learner.particles], lr=config["meta_lr"])
    return learner


_BACKPROP = "its meta-gradient backpropagates through them"
METHOD_TABLE: dict[str, Method] = {
    m.name: m
    for m in (
        Method("gem-bml", "Gaussian", "L[1]", "Gradient-EM", None, _gem(False)),
        Method("gem-bml+", "Gaussian", "L[2]", "Gradient-EM", None, _gem(True)),
        Method("abml", "Gaussian", "L[1]", "backprop", _BACKPROP, _unrolled(AmortizedBML)),
        Method(
            "abml+", "Gaussian", "L[2]", "backprop", _BACKPROP, _unrolled(AmortizedBML, plus=True)
        ),
        Method("kl-chaser", "Gaussian", "L[2]", "KL chaser", _BACKPROP, _unrolled(KLChaser)),
        Method("bmaml", "particles", "L[2]", "SVGD chaser", "SVGD steps, backpropagated", _bmaml),
        Method("maml", "delta", "L[2]", "backprop", _BACKPROP, _point(MAML)),
        Method("fomaml", "delta", "L[2]", "first-order", _BACKPROP, _point(MAML, first_order=True)),
        Method("imaml", "delta", "L[2]", "implicit", None, _point(IMAML)),
        Method(
            "reptile", "delta", "L[1]", "Gradient-EM", "Reptile averages SGD steps", _point(Reptile)
        ),
        Method(
            "pretrain",
            "point prior",
            "pooled",
            "pooled likelihood",
            "it fine-tunes by MAML's gradient steps",
            _point(PreTraining),
        ),
    )
}

#: Method names as the CLI and the benchmarks spell them.
METHODS = tuple(METHOD_TABLE)

#: Why these methods' inner loops cannot run on other workers (:mod:`pyro_gem.runners`); the
#: others' meta-updates need only each task's inner result (posterior parameters, θ_K or the
#: first-order gradient).
NOT_ON_WORKERS = {
    "abml": "its meta-gradient backpropagates through the inner VI",
    "abml+": "its meta-gradient backpropagates through the inner VI",
    "kl-chaser": "its meta-gradient backpropagates through the inner VI",
    "bmaml": "its meta-gradient backpropagates through the SVGD steps",
    "maml": "its meta-gradient backpropagates through the inner steps (second order)",
    "imaml": "its implicit gradient is solved in the meta-step; not supported on workers",
    "pretrain": "it fits one network to every task's data pooled; not supported on workers",
}


def attach_runner(name: str, learner, runner) -> None:
    """Run ``learner``'s inner loops through ``runner`` (:mod:`pyro_gem.runners`).

    :raises ValueError: for a method whose meta-update needs more than each task's inner
        result, saying why (:func:`check_on_workers`).
    """
    check_on_workers(name)
    learner.runner = runner


def check_on_workers(name: str) -> None:
    """Refuse (ValueError, saying why) a method whose inner loops cannot run on workers."""
    if name in NOT_ON_WORKERS:
        able = [m for m in METHODS if m not in NOT_ON_WORKERS]
        raise ValueError(
            f"{name} cannot run its inner loops on workers: {NOT_ON_WORKERS[name]}. The "
            f"methods that can: {able}"
        )


def build(name: str, model: Callable, prior: GaussianPrior, config: dict):
    """The learner ``name`` over ``model`` and ``prior``, configured by ``config``.

    :param config: run options: ``meta_lr``, ``meta_lr_scale`` (the methods with a
        Gaussian posterior), ``inner_optim``,
        ``inner_lr``, ``inner_lr_decay``, ``inner_scale_lr`` (GEM-BML(+)), ``inner_steps``, ``query_steps``, ``guide``,
        ``guide_init_scale``, ``prior_init_scale`` (resets the prior's σ), ``update``,
        ``num_particles``, ``reg``, ``cg_steps`` (see :data:`pyro_gem.config.DEFAULTS`).
    :raises ValueError: for an unknown method or an inner optimiser the method cannot use.
    """
    if name not in METHOD_TABLE:
        raise ValueError(f"unknown method {name!r}: choose one of {list(METHODS)}")
    method = METHOD_TABLE[name]
    optim = config["inner_optim"]
    if optim == NEWTON and name != "imaml":
        raise ValueError(
            f"inner_optim {NEWTON!r} is iMAML's proximal Newton-CG solver; {name} takes one of "
            f"{list(INNER_OPTIMS)}"
        )
    if optim == TRUST_REGION and name not in ("gem-bml", "gem-bml+"):
        raise ValueError(
            f"inner_optim {TRUST_REGION!r} is GEM-BML(+)'s trust-region step on a policy's "
            f"posterior; {name} takes one of {list(INNER_OPTIMS)}"
        )
    if optim not in (*INNER_OPTIMS, NEWTON, TRUST_REGION):
        raise ValueError(
            f"unknown inner optimiser {optim!r}: choose one of "
            f"{[*INNER_OPTIMS, NEWTON, TRUST_REGION]}"
        )
    if config.get("meta_update", "gradient") not in ("gradient", "trpo"):
        raise ValueError(
            f"unknown meta_update {config['meta_update']!r}: choose 'gradient' or 'trpo'"
        )
    decay = config.get("inner_lr_decay", 1.0)
    if not 0 <= decay <= 1:
        raise ValueError(f"inner_lr_decay must lie in [0, 1], got {decay}")
    if decay != 1.0 and (method.needs_sgd or optim in (NEWTON, TRUST_REGION)):
        raise ValueError(
            f"inner_lr_decay applies to a PyroOptim inner loop; {name} with inner_optim "
            f"{optim!r} takes a constant step (got inner_lr_decay={decay})"
        )
    if method.needs_sgd and optim != "sgd":
        raise ValueError(
            f"{name} needs plain SGD inner steps ({method.needs_sgd}): set inner_optim to "
            f"'sgd' (got {optim!r})"
        )
    if config.get("prior_init_scale") is not None:
        prior.reset_scale(config["prior_init_scale"])
    return method.make(model, prior, config)
