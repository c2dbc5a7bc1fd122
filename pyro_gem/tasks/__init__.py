"""Task families: each yields :class:`TaskBatch` objects of stacked support and query sets."""

from pyro_gem.tasks.base import TaskBatch, validate_task_args
from pyro_gem.tasks.sinusoid import Sinusoid

__all__ = ["Sinusoid", "TaskBatch", "validate_task_args"]
