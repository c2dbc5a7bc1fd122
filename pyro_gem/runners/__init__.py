"""Runners: where a meta-iteration's inner loops run (in this process, or on Ray workers), the
Gradient-EM meta-update staying with the learner.

Example::

    from pyro_gem.runners import RayRunner
    with RayRunner(num_workers=2) as runner:
        learner = GEMBML(model, prior, runner=runner)
        train(learner, tasks, meta_iterations=100, meta_batch=25)

:class:`RayRunner` needs Ray (``pip install "pyro-gem[ray]"``); it is imported on first use.
"""

from pyro_gem.core.estimators import GradientSum
from pyro_gem.runners.base import LocalRunner, OwnedBatch, Runner, ShardFailed, WorkerTasks
from pyro_gem.runners.shards import ShardResult

__all__ = [
    "GradientSum",
    "LocalRunner",
    "OwnedBatch",
    "RayRunner",
    "Runner",
    "ShardFailed",
    "ShardResult",
    "WorkerTasks",
]


def __getattr__(name: str):
    if name == "RayRunner":
        try:
            from pyro_gem.runners.ray_runner import RayRunner
        except ImportError as err:
            raise ImportError(f"{name} needs Ray: pip install 'pyro-gem[ray]' ({err})") from err
        return RayRunner
    raise AttributeError(f"module 'pyro_gem.runners' has no attribute {name!r}")
