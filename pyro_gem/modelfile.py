"""Loading a user's model file: the Pyro model, its prior, its task family and default options.

A model file is a plain Python file that defines at module level ``prior`` (a
:class:`~pyro_gem.GaussianPrior`), ``model`` (one task's Pyro model drawing its weights from
``prior``), ``tasks`` (a task family with ``sample(num_tasks, generator)`` and
``test_tasks(num_tasks)``, and optionally ``metrics``: see :class:`pyro_gem.tasks.TaskFamily`)
and optionally ``config`` (a dict of default training options). ``models/sinusoid.py`` is the
example; ``tests/models/`` holds a ``pyro.factor`` classifier and a Poisson count model.

A model file may take **settings** that change what it builds (ways, shots, a data folder): it
declares them with their defaults by :func:`settings`, and the user sets them without editing
the file, ``pyro-gem train models/omniglot.py --set ways=20 shots=5 data=PATH``. A run records
its settings, so that :func:`~pyro_gem.load_run` rebuilds the same network.

Example::

    mf = load_model_file("models/sinusoid.py")
    mf.model, mf.prior, mf.tasks, mf.config
    mf = load_model_file("models/omniglot.py", settings={"ways": 20})
    mf.settings                        # {"ways": 20, "shots": 1, ...}: every setting's value

    # in a model file:
    opts = pyro_gem.settings(ways=5, shots=1, data=None)   # opts.ways: 5, or the user's value
"""

from __future__ import annotations

import contextvars
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyro

from pyro_gem.core.priors import GaussianPrior

__all__ = ["MODULE_PREFIX", "ModelFile", "load_model_file", "parse_settings", "settings"]

#: The name of every module :func:`load_model_file` creates begins with this.
MODULE_PREFIX = "pyro_gem_model_"

# The settings the user gave for the model file being loaded, and those it declared.
_GIVEN: contextvars.ContextVar[dict | None] = contextvars.ContextVar("given", default=None)
_DECLARED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("declared", default=None)


def _convert(name: str, value: Any, default: Any) -> Any:
    """``value`` (a CLI string, or any object from Python) as the type of ``default``."""
    if not isinstance(value, str) or default is None or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        return type(default)(value)
    except ValueError:
        raise ValueError(
            f"setting {name}={value!r}: expected a {type(default).__name__} like its default "
            f"{default!r}"
        ) from None


def settings(**defaults: Any) -> SimpleNamespace:
    """Declare a model file's settings with their defaults; returns their values, the user's
    where the user set them (``--set name=value``, or ``load_model_file(settings=...)``).

    Values given as strings (from the command line) are converted to the type of the default
    (int, float, bool); a default of ``None`` or a string takes the string as it is.

    :raises ValueError: for a setting the file does not declare (naming those it does), or a
        value that does not convert.
    """
    given = _GIVEN.get() or {}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}: this model file takes {sorted(defaults)}")
    values = {k: _convert(k, given[k], v) if k in given else v for k, v in defaults.items()}
    declared = _DECLARED.get()
    if declared is not None:
        declared.update(values)
    return SimpleNamespace(**values)


def parse_settings(pairs: list[str] | None) -> dict[str, str]:
    """``["ways=20", "data=/x"]`` (the CLI's ``--set``) as ``{"ways": "20", "data": "/x"}``.

    :raises ValueError: for an item without ``=``.
    """
    out = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set takes name=value pairs, got {pair!r}")
        out[name.strip()] = value
    return out


@dataclass
class ModelFile:
    """The objects a model file defines."""

    path: Path
    model: Any
    prior: GaussianPrior
    tasks: Any
    config: dict = field(default_factory=dict)
    module: Any = None
    settings: dict = field(default_factory=dict)


def load_model_file(
    path: str | Path, seed: int | None = None, settings: dict | None = None
) -> ModelFile:
    """Execute a model file as a fresh module and collect what it defines.

    Every call returns new objects (a new prior), so two loads never share state.

    :param seed: seed torch, numpy and ``random`` (``pyro.set_rng_seed``) before the file runs.
        A model file usually builds its network when it runs, and the prior starts from the
        network's initialisation: without a seed each process starts from other weights.
    :param settings: values of the settings the file declares with :func:`settings`.

    :raises FileNotFoundError: if there is no such file.
    :raises ValueError: naming the missing or ill-typed attribute, or a setting the file does
        not take.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    name = f"{MODULE_PREFIX}{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    sys.path.insert(0, str(path.parent.resolve()))
    if seed is not None:
        pyro.set_rng_seed(seed)
    declared: dict = {}
    tokens = _GIVEN.set(dict(settings or {})), _DECLARED.set(declared)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.pop(0)
        _GIVEN.reset(tokens[0])
        _DECLARED.reset(tokens[1])
    if settings and not declared:
        raise ValueError(
            f"model file {path} takes no settings (it does not call pyro_gem.settings), but "
            f"{sorted(settings)} were given"
        )
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
    return ModelFile(path, module.model, module.prior, module.tasks, config, module, declared)
