"""Loading a user's model file: the Pyro model, its prior, its task family and default options.

A model file is a plain Python file that defines at module level ``prior`` (a
:class:`~pyro_gem.GaussianPrior`), ``model`` (one task's Pyro model drawing its weights from
``prior``), ``tasks`` (a task family with ``sample(num_tasks, generator)`` and
``test_tasks(num_tasks)``, and optionally ``metrics``: see :class:`pyro_gem.tasks.TaskFamily`)
and optionally ``config`` (a dict of default training options). ``models/sinusoid.py`` is the
example; ``tests/models/`` holds a ``pyro.factor`` classifier and a Poisson count model.

Example::

    mf = load_model_file("models/sinusoid.py")
    mf.model, mf.prior, mf.tasks, mf.config
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro

from pyro_gem.core.priors import GaussianPrior

__all__ = ["ModelFile", "load_model_file"]


@dataclass
class ModelFile:
    """The objects a model file defines."""

    path: Path
    model: Any
    prior: GaussianPrior
    tasks: Any
    config: dict = field(default_factory=dict)
    module: Any = None


def load_model_file(path: str | Path, seed: int | None = None) -> ModelFile:
    """Execute a model file as a fresh module and collect what it defines.

    Every call returns new objects (a new prior), so two loads never share state.

    :param seed: seed torch, numpy and ``random`` (``pyro.set_rng_seed``) before the file runs.
        A model file usually builds its network when it runs, and the prior starts from the
        network's initialisation: without a seed each process starts from other weights.

    :raises FileNotFoundError: if there is no such file.
    :raises ValueError: naming the missing or ill-typed attribute.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    name = f"pyro_gem_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    sys.path.insert(0, str(path.parent.resolve()))
    if seed is not None:
        pyro.set_rng_seed(seed)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.pop(0)
    missing = [a for a in ("model", "prior", "tasks") if not hasattr(module, a)]
    if missing:
        raise ValueError(
            f"model file {path} does not define {', '.join(missing)}: it needs module-level "
            "'model' (a Pyro model), 'prior' (a GaussianPrior) and 'tasks' (a task family)"
        )
    if not callable(module.model):
        raise ValueError(f"'model' in {path} is not callable")
    if not isinstance(module.prior, GaussianPrior):
        raise ValueError(
            f"'prior' in {path} is a {type(module.prior).__name__}, expected a GaussianPrior"
        )
    for method in ("sample", "test_tasks"):
        if not callable(getattr(module.tasks, method, None)):
            raise ValueError(f"'tasks' in {path} has no {method}() method")
    config = dict(getattr(module, "config", {}) or {})
    return ModelFile(path, module.model, module.prior, module.tasks, config, module)
