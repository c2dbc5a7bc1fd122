"""A trained run, loaded from its directory: the learner with its model file, options and prior.

``pyro-gem train`` writes a run directory (``checkpoint.pt``, ``config.json``, ``history.json``);
:func:`load_run` turns it back into objects, without the CLI.

Example::

    run = pyro_gem.load_run("runs/latest")
    post = run.adapt(x_support, y_support, steps=10)     # tensors (T, K, 1), (T, K)
    draws = post.predict(x_query, num_samples=200)       # {"y": (200, T, N), "mean": ...}
    scores = run.meta_test()                             # as `pyro-gem evaluate` computes them
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch

from pyro_gem.config import build_learner, load_seeded, resolve_config
from pyro_gem.evaluation import meta_test
from pyro_gem.methods.base import MetaLearner
from pyro_gem.modelfile import ModelFile
from pyro_gem.training import CHECKPOINT, LAYOUT, load_checkpoint

__all__ = ["LAYOUT", "Run", "load_run", "run_meta_test"]


def run_meta_test(learner: MetaLearner, tasks, config: dict) -> dict:
    """The meta-test of a run: ``config["test_tasks"]`` held-out tasks of ``tasks``, scored by
    every metric after each of ``config["eval_steps"]`` inner steps with
    ``config["test_samples"]`` posterior draws, with Pyro seeded by ``config["seed"]`` first, so
    that the same run gives the same numbers wherever it is tested.
    """
    pyro.set_rng_seed(config["seed"])
    heldout = tasks.test_tasks(config["test_tasks"])
    return meta_test(
        learner,
        heldout,
        steps=config["eval_steps"],
        metrics=getattr(tasks, "metrics", ()),
        num_samples=config.get("test_samples", 100),
        seed=config["seed"],
    )


@dataclass
class Run:
    """A trained run: the learner, the model file it was trained on and the run's options.

    :ivar path: the run directory.
    :ivar learner: the trained learner (its prior and meta-optimiser as checkpointed).
    :ivar model_file: the model file's objects (``model``, ``prior``, ``tasks``, ``config``).
    :ivar config: the run's options, with any overrides given to :func:`load_run`.
    :ivar history: per-iteration training statistics.
    :ivar iteration: the meta-iterations done.
    """

    path: Path
    learner: MetaLearner
    model_file: ModelFile
    config: dict
    history: list[dict]
    iteration: int

    @property
    def prior(self):
        """The meta-learned prior (a :class:`~pyro_gem.core.priors.GaussianPrior`)."""
        return self.learner.prior

    @property
    def tasks(self):
        """The model file's task family."""
        return self.model_file.tasks

    def adapt(self, *support: torch.Tensor, steps: int | None = None, record: Sequence[int] = ()):
        """The posterior of new tasks given their support sets (the learner's ``adapt``).

        :param support: the model's arguments, stacked over tasks ``(T, K, ...)``; checked by the
            task family's ``check_data`` where it has one (a few-shot family names images of
            the wrong size and labels out of range).
        :param steps: inner steps (the run's own by default).
        :param record: steps whose intermediate posteriors to keep in ``posterior.history``.
        """
        self._check(support)
        return self.learner.adapt(*self._on_device(support), steps=steps, record=record)

    def _on_device(self, args: Sequence) -> tuple:
        """A user's tensors on the learner's device (a run loaded with ``device="cuda"``)."""
        return tuple(a.to(self.learner.device) if torch.is_tensor(a) else a for a in args)

    def _check(self, args: Sequence) -> None:
        """The task family's own check of a user's data (e.g. image sizes, label ranges)."""
        check = getattr(self.tasks, "check_data", None)
        if check is not None:
            check(*args)

    def predict(
        self,
        support: Sequence[torch.Tensor],
        inputs: Sequence[torch.Tensor],
        steps: int | None = None,
        num_samples: int = 100,
    ) -> dict[str, torch.Tensor]:
        """Adapt to ``support`` and draw posterior predictive samples at ``inputs``.

        :param support: the model's arguments for the support sets, ``(T, K, ...)`` each.
        :param inputs: the model's arguments without the observations at the prediction points.
        :returns: ``{site: (num_samples, T, ...)}``, as :meth:`Posterior.predict` lays them out.
        """
        self._check(inputs)
        posterior = self.adapt(*support, steps=steps)
        return posterior.predict(*self._on_device(inputs), num_samples=num_samples)

    def meta_test(
        self,
        num_tasks: int | None = None,
        steps: Sequence[int] | None = None,
        num_samples: int | None = None,
    ) -> dict:
        """Meta-test on the task family's held-out tasks, as ``pyro-gem evaluate`` does.

        :param num_tasks: held-out tasks (the run's ``test_tasks`` by default).
        :param steps: inner-step counts to score (the run's ``eval_steps`` by default).
        :param num_samples: posterior draws per task (the run's ``test_samples`` by default).
        """
        config = dict(self.config)
        if num_samples is not None:
            config["test_samples"] = num_samples
        if num_tasks is not None:
            config["test_tasks"] = num_tasks
        if steps is not None:
            config["eval_steps"] = list(steps)
        return run_meta_test(self.learner, self.tasks, config)


def load_run(
    path: str | Path,
    model_file: str | Path | None = None,
    overrides: dict | None = None,
    device: torch.device | str | None = None,
) -> Run:
    """Load a run directory written by ``pyro-gem train`` (or :func:`~pyro_gem.training.train`
    with a ``config`` naming its model file).

    :param path: the run directory.
    :param model_file: the model file to rebuild the learner from; defaults to the one the run
        was trained on (its path is in ``config.json``).
    :param overrides: options that replace the run's own (``None`` values are ignored), e.g.
        ``{"inner_lr": 0.01}`` to adapt with another step than training's.
    :param device: where the learner lives (e.g. ``"cuda"``), whichever device trained it; the
        CPU by default.
    :raises FileNotFoundError: if the directory, its files or its model file are missing.
    :raises ValueError: for a run directory of another layout, a config that names no model
        file, or a model file whose prior does not fit the checkpoint.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no run directory at {path}")
    missing = [f for f in (CHECKPOINT, "config.json") if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path} is not a pyro-gem run directory: it has no {' or '.join(missing)} "
            f"(pyro-gem train writes {CHECKPOINT}, config.json and history.json)"
        )
    try:
        state, config, history = load_checkpoint(path)
    except Exception as err:  # an unpicklable or truncated file: say which and why
        raise ValueError(
            f"{path / CHECKPOINT} cannot be read with torch.load(weights_only=True): {err}"
        ) from err
    layout = state.get("layout", LAYOUT) if isinstance(state, dict) else None
    absent = [k for k in ("iteration", "learner") if not isinstance(state, dict) or k not in state]
    absent += [k for k in ("method", "seed") if k not in config]
    if absent or layout != LAYOUT:
        raise ValueError(
            f"{path} is a run directory of another layout (layout {layout}, missing {absent}); "
            f"this pyro_gem reads layout {LAYOUT}: retrain it with pyro-gem train, or load it "
            "with the pyro_gem version that wrote it"
        )
    model_path = model_file if model_file is not None else config.get("model_file")
    if model_path is None:
        raise ValueError(
            f"{path / 'config.json'} names no model file (benchmark runs set their tasks "
            "themselves): pass the model file to load it with (model_file=, or --model-file)"
        )
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(
            f"the run's model file {model_path} is missing (moved or deleted?): pass the model "
            "file to load the run with (model_file=, or --model-file)"
        )
    mf = load_seeded(model_path, config["seed"], config.get("settings"))
    config = resolve_config(config, overrides)
    learner = build_learner(mf, config, device)
    saved = state["learner"]["prior"]["loc"].shape
    if saved != mf.prior.loc.shape:
        raise ValueError(
            f"the checkpoint's prior is over {tuple(saved)} weights, but the network of "
            f"{model_path} has {tuple(mf.prior.loc.shape)}: load the run with the model file "
            "it was trained on"
        )
    learner.load_state_dict(state["learner"])
    return Run(path, learner, mf, config, history, int(state["iteration"]))
