"""The inner update: one Pyro SVI that fits the posteriors of a whole batch of tasks at once.

The user's single-task model runs under a ``tasks`` plate; one autoguide (AutoNormal by default)
carries a task dimension on its parameters, and one SVI optimises all T posteriors together. Adam
and the other PyroOptim optimisers are elementwise, so this equals one SVI per task.

The prior site's distribution is swapped for a constant one (:class:`PriorSwap`): the learnable
prior Θ is never touched by the inner loop and no autograd graph to it is kept. The same swap
lets the second, sequential update use the first posterior q_λtr as its prior.

Example::

    vi = InnerVI(guide="normal", optim=pyro.optim.Adam({"lr": 0.01}), steps=20)
    fit = vi.fit(model, "theta", (x, y), prior=(m, s))   # x: (T, N, 1); m, s: (D,) or (T, D)
    fit.loc, fit.scale                                   # (T, D) each
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import pyro.optim
import pyro.poutine as poutine
import torch
from pyro.infer import SVI
from pyro.infer.autoguide import AutoGuide, init_to_mean
from pyro.optim.lr_scheduler import PyroLRScheduler
from pyro.poutine.messenger import Messenger

from pyro_gem.core.batch import task_count, validate_task_args
from pyro_gem.core.elbo import MeanFieldELBO
from pyro_gem.core.guides import guide_params, resolve_guide, set_guide_params
from pyro_gem.core.optim import check_lr_for, with_lr_for
from pyro_gem.core.whiten import DECENTERED, WhitenReparam

__all__ = [
    "InnerFit",
    "InnerProblem",
    "InnerVI",
    "PriorSwap",
    "TasksModel",
    "finite_tasks",
    "plate_nesting",
]


class _PriorSiteCheck(Messenger):
    """Refuse a prior site that is not a diagonal Normal over ``num_weights`` weights."""

    def __init__(self, site: str, num_weights: int | None):
        super().__init__()
        self.site, self.num_weights = site, num_weights

    def _pyro_sample(self, msg) -> None:
        if msg["name"] != self.site or msg["is_observed"]:
            return
        fn = base = msg["fn"]
        while isinstance(base, (dist.Independent, dist.ExpandedDistribution)):
            base = base.base_dist
        if type(base) is not dist.Normal:
            raise ValueError(
                f"the prior site {self.site!r} draws from {type(fn).__name__}"
                f"({type(base).__name__}): it must be the learnable diagonal Normal, "
                "pyro.sample(prior.name, prior.dist()) or prior.sample_net()"
            )
        if self.num_weights is not None and tuple(fn.event_shape) != (self.num_weights,):
            raise ValueError(
                f"the prior site {self.site!r} has event shape {tuple(fn.event_shape)}, but "
                f"the prior is over ({self.num_weights},) weights: draw them with prior.dist()"
            )


def plate_nesting(
    model: Callable, args: Sequence, site: str, num_weights: int | None = None
) -> int:
    """How many plate dims the single-task model uses, traced on the first task of ``args``.

    The same trace checks that the model is one pyro_gem can fit: the prior site is a latent
    diagonal Normal over ``num_weights`` weights (the inner loop swaps in the learnable prior's
    values, so any other family would silently become a different model), and the model
    declares no ``pyro.param`` (SVI would train it as a parameter shared by every task of a
    batch and carry it from one meta-iteration to the next).

    :param model: the user's single-task model.
    :param args: the model's arguments, stacked over tasks ``(T, N, ...)``.
    :param site: the prior's sample site.
    :param num_weights: the prior's size D, checked against the site's event shape if given.
    :raises ValueError: if the model has no latent sample site called ``site``, the site is not
        a Normal over ``(num_weights,)``, or the model declares ``pyro.param`` sites.
    """
    one = tuple(a[0] if isinstance(a, torch.Tensor) else a for a in args)
    # A forked random state: whether this trace runs must not change what a run samples.
    with (
        torch.no_grad(),
        torch.random.fork_rng(),
        pyro.get_param_store().scope(),
        pyro.settings.context(module_local_params=True),
    ):
        # The prior site is checked as it is drawn, before the model runs its network on a
        # draw of the wrong size.
        tr = poutine.trace(_PriorSiteCheck(site, num_weights)(model)).get_trace(*one)
    if site not in tr.nodes or tr.nodes[site]["type"] != "sample":
        found = [n for n, s in tr.nodes.items() if s["type"] == "sample"]
        raise ValueError(
            f"the model has no prior sample site {site!r} (its sample sites: {found}); "
            "draw the weights with prior.sample_net() or pyro.sample(prior.name, prior.dist())"
        )
    node = tr.nodes[site]
    if node["is_observed"]:
        raise ValueError(f"the prior site {site!r} is observed; it must be a latent site")
    params = [n for n, s in tr.nodes.items() if s["type"] == "param"]
    if params:
        raise ValueError(
            f"the model declares pyro.param sites {params}: the inner loop would train them as "
            "parameters shared by all tasks. pyro_gem meta-learns only the prior; make them "
            "constants, or weights of the network under the prior"
        )
    dims = [
        -f.dim
        for s in tr.nodes.values()
        if s["type"] == "sample"
        for f in s["cond_indep_stack"]
        if f.vectorized and f.dim is not None
    ]
    return max(dims, default=0)


class TasksModel:
    """The single-task model under a ``tasks`` plate over dimension 0 of its arguments.

    :param model: the user's single-task model.
    :param nesting: the number of plate dims the model uses; the tasks plate sits left of them.
    """

    def __init__(self, model: Callable, nesting: int):
        self.model = model
        self.nesting = nesting
        self.dim = -(nesting + 1)

    def __call__(self, *args, **kwargs):
        num_tasks = task_count(args)
        with pyro.plate("tasks", num_tasks, dim=self.dim):
            return self.model(*args, **kwargs)


class PriorSwap(Messenger):
    """Replace the prior at ``site`` by the constant Gaussian N(loc, diag scale²).

    :param site: the prior's sample site.
    :param loc: ``(D,)`` for one prior shared by all tasks, or ``(T, D)`` for one per task.
    :param scale: same shape as ``loc``.
    :param tasks_dim: the tasks plate's dim (negative), to lay out per-task values.
    """

    def __init__(self, site: str, loc: torch.Tensor, scale: torch.Tensor, tasks_dim: int):
        super().__init__()
        self.site = site
        loc, scale = self.layout(loc, tasks_dim), self.layout(scale, tasks_dim)
        # No validation: a diverged task's posterior, used as the next prior, may be NaN.
        self.fn = dist.Normal(loc.detach(), scale.detach(), validate_args=False).to_event(1)

    @staticmethod
    def layout(value: torch.Tensor, tasks_dim: int) -> torch.Tensor:
        """Per-task values ``(T, D)`` laid out as ``(T, 1, ..., D)`` to sit on the tasks plate."""
        if value.dim() != 2:
            return value
        slots = (1,) * (-tasks_dim - 1)
        return value.reshape(value.shape[:1] + slots + value.shape[1:])

    def _pyro_sample(self, msg) -> None:
        if msg["name"] == self.site:
            msg["fn"] = self.fn.expand(msg["fn"].batch_shape)


@dataclass
class InnerProblem:
    """What an inner VI step works on: the user's model and data, and the guide being fitted.

    :ivar guide_site: the guide's site (the whitened one where the guide is whitened).
    :ivar prior_loc: the (swapped) prior's mean, laid out on the tasks plate; with
        ``prior_scale`` it maps the whitened guide back to weights, θ = loc + scale · u.
    """

    model: Callable
    site: str
    args: tuple
    nesting: int
    guide: AutoGuide
    guide_site: str
    prior_loc: torch.Tensor
    prior_scale: torch.Tensor


@dataclass
class InnerFit:
    """The result of an inner VI run for T tasks.

    :ivar tasks_model: the user's model under the tasks plate.
    :ivar model: ``tasks_model`` as the guide was fitted to it (prior swapped, reparameterised).
    :ivar guide: the fitted autoguide (its parameters carry the task dimension).
    :ivar loc: posterior means at the prior site, ``(T, D)``.
    :ivar scale: posterior standard deviations ``(T, D)``, or ``None`` for a delta guide.
    :ivar losses: the SVI loss (negative ELBO summed over tasks) at each step.
    :ivar snapshots: ``{step: (loc, scale, guide state)}`` for the steps asked for in ``record``.
    """

    tasks_model: TasksModel
    model: Callable
    guide: AutoGuide
    loc: torch.Tensor
    scale: torch.Tensor | None
    losses: list[float]
    snapshots: dict[int, tuple[torch.Tensor, torch.Tensor | None, dict]] = field(
        default_factory=dict
    )

    @property
    def finite(self) -> torch.Tensor:
        """Per task: whether the fitted parameters are all finite, ``(T,)`` bool."""
        return finite_tasks(self.loc, self.scale)


def finite_tasks(loc: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """Per task: whether a posterior's means (and positive scales) are all finite, ``(T,)``."""
    ok = torch.isfinite(loc).all(-1)
    if scale is not None:
        ok &= torch.isfinite(scale).all(-1) & (scale > 0).all(-1)
    return ok


class InnerVI:
    """Task-vectorised SVI with an autoguide started at a given (prior) point.

    :param guide: ``"normal"`` (AutoNormal), ``"delta"`` (AutoDelta) or one of those classes.
    :param optim: a :class:`pyro.optim.PyroOptim`; a fresh copy is used for every run. A Pyro
        learning-rate scheduler (e.g. ``pyro.optim.ExponentialLR``) is stepped after every
        SVI step.
    :param steps: the number of SVI steps.
    :param num_particles: Monte Carlo particles of the ELBO (vectorised).
    :param whiten: optimise the guide in prior-whitened coordinates (θ = m + σ u, Pyro's
        :class:`~pyro.infer.reparam.LocScaleReparam`), which makes the step size independent of
        the prior's scale. Without it, Adam's step of roughly ``lr`` per weight dwarfs a small
        prior scale and the KL term explodes.
    :param init_scale: where the guide's scale starts when no ``init`` is given, as a fraction
        of the prior's scale (``None``: at the prior's, q = p). A wide prior over a deep
        network's weights makes a guide started at it draw networks that fit nothing, so the
        ELBO's gradients are noise; started narrow, VI can fit the data first (as Bayes by
        Backprop starts its scales small), and widens the posterior only as fast as its
        optimiser moves the scales.
    :param scale_lr: the step of the guide's scales, where it differs from its mean's (``None``:
        the optimiser's own ``lr`` for both). With whitened SGD at MAML's step α in θ, ``lr =
        α/σ²`` can be large (Omniglot: 10), and on a guide started narrow the entropy's gradient
        ``1/ν`` then throws the scales far out in one step.
    :param loss: an ELBO; defaults to :class:`~pyro_gem.core.elbo.MeanFieldELBO`, which computes
        :class:`~pyro.infer.TraceMeanField_ELBO` (analytic KL to the Gaussian prior, which makes
        the scale updates far less noisy) with less per-step overhead.
    """

    def __init__(
        self,
        guide: str | type[AutoGuide] = "normal",
        optim: pyro.optim.PyroOptim | None = None,
        steps: int = 10,
        num_particles: int = 1,
        loss: pyro.infer.ELBO | None = None,
        whiten: bool = True,
        init_scale: float | None = None,
        scale_lr: float | None = None,
    ):
        self.guide_cls = resolve_guide(guide)
        optim = pyro.optim.Adam({"lr": 0.01}) if optim is None else optim
        if not isinstance(optim, pyro.optim.PyroOptim):
            raise ValueError(
                f"optim must be a pyro.optim optimiser (e.g. pyro.optim.Adam), got "
                f"{type(optim).__name__}"
            )
        if int(steps) < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if int(num_particles) < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles}")
        self.optim = copy.deepcopy(optim)
        self.steps = int(steps)
        self.num_particles = int(num_particles)
        self.loss = loss
        self.whiten = whiten
        if init_scale is not None and not init_scale > 0:
            raise ValueError(f"init_scale must be a positive fraction, got {init_scale}")
        self.init_scale = init_scale
        if scale_lr is not None:
            check_lr_for(optim, scale_lr, "scale_lr")  # here, not at the first fit
        self.guide_scale_lr = scale_lr

    def svi_step(self, svi: SVI, problem: InnerProblem) -> float:
        """One step of the inner VI (an SVI step; a subclass may take another kind of step,
        e.g. :class:`~pyro_gem.rl.trust_region.TrustRegionVI`); returns the loss."""
        return svi.step(*problem.args)

    def _elbo(self, nesting: int) -> pyro.infer.ELBO:
        if self.loss is not None:
            return self.loss
        return MeanFieldELBO(
            num_particles=self.num_particles,
            vectorize_particles=self.num_particles > 1,
            max_plate_nesting=nesting + 1,
        )

    def fit(
        self,
        model: Callable,
        site: str,
        args: Sequence,
        prior: tuple[torch.Tensor, torch.Tensor],
        init: tuple[torch.Tensor, torch.Tensor | None] | None = None,
        steps: int | None = None,
        record: Sequence[int] = (),
        nesting: int | None = None,
    ) -> InnerFit:
        """Fit q(θ) for every task in ``args`` by SVI.

        :param model: the user's single-task model.
        :param site: the prior's sample site.
        :param args: the model's arguments, stacked over tasks ``(T, N, ...)``.
        :param prior: ``(loc, scale)`` of the (constant) prior at ``site``, ``(D,)`` or ``(T, D)``.
        :param init: where the guide starts; defaults to the prior.
        :param steps: overrides the configured number of steps.
        :param record: steps after which to keep a copy of the guide's parameters.
        :param nesting: the model's plate nesting, if already known.
        """
        # Shapes only: data are checked for finiteness where they enter (a batch's validate(),
        # adapt()); the rollouts of a meta-RL policy that turned non-finite are NaN on purpose,
        # so that its task diverges alone and is left out.
        validate_task_args(args, "inner VI", finite=False)
        if nesting is None:
            nesting = plate_nesting(model, args, site, num_weights=prior[0].shape[-1])
        tasks_model = TasksModel(model, nesting)
        steps = self.steps if steps is None else int(steps)
        swap = PriorSwap(site, *prior, tasks_dim=tasks_model.dim)
        p_loc, p_scale = swap.fn.base_dist.loc, swap.fn.base_dist.scale
        init_loc, init_scale = prior if init is None else init
        init_loc = PriorSwap.layout(init_loc, tasks_model.dim)
        if init is None and self.init_scale is not None:
            init_scale = p_scale * self.init_scale
        elif init_scale is None:
            init_scale = p_scale
        else:
            init_scale = PriorSwap.layout(init_scale, tasks_model.dim)
        conditioned = swap(tasks_model)
        guide_site = site
        if self.whiten:
            # θ = m + σ u with u ~ N(0, I) under the (swapped) prior: the guide works on u, so
            # one step size suits every prior scale (a non-centred reparameterisation).
            conditioned = poutine.reparam(conditioned, config={site: WhitenReparam()})
            guide_site = site + DECENTERED
            init_loc, init_scale = (init_loc - p_loc) / p_scale, init_scale / p_scale

        def read():
            loc, scale = guide_params(guide, guide_site)
            if self.whiten:
                loc = p_loc + p_scale * loc
                scale = None if scale is None else p_scale * scale
            flat = (loc.shape[0], loc.shape[-1])
            return loc.reshape(flat).clone(), None if scale is None else scale.reshape(flat).clone()

        losses: list[float] = []
        snapshots = {}
        # Module-local params: nothing reaches the user's global param store. Validation is
        # off in the loop (the model was validated when its plates were traced): a task whose
        # VI diverges must turn into non-finite values for that task alone, not an exception
        # that stops every task.
        with (
            pyro.settings.context(module_local_params=True),
            pyro.validation_enabled(False),
            warnings.catch_warnings(),
        ):
            # A diverged task is reported by the learner (InnerFit.finite), not per SVI step.
            warnings.filterwarnings("ignore", message="Encountered NaN")
            guide = self.guide_cls(conditioned, init_loc_fn=init_to_mean)
            with torch.no_grad():
                guide(*args)
            set_guide_params(guide, guide_site, init_loc, init_scale)
            optim = copy.deepcopy(self.optim)
            scales = getattr(guide, "scales", None)
            if self.guide_scale_lr is not None and scales is not None:
                optim = with_lr_for(optim, scales.parameters(), self.guide_scale_lr)
            svi = SVI(conditioned, guide, optim, self._elbo(nesting))
            problem = InnerProblem(model, site, args, nesting, guide, guide_site, p_loc, p_scale)
            for i in range(steps + 1):
                if i in record:
                    state = {k: v.detach().clone() for k, v in guide.state_dict().items()}
                    snapshots[i] = (*read(), state)
                if i < steps:
                    losses.append(self.svi_step(svi, problem))
                    if isinstance(optim, PyroLRScheduler):
                        optim.step()
        loc, scale = read()
        return InnerFit(tasks_model, conditioned, guide, loc, scale, losses, snapshots)
