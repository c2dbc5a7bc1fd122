"""Task families: each yields :class:`TaskBatch` objects of stacked support and query sets.

Example::

    tasks = Sinusoid("default", shots=10)
    batch = tasks.sample(25, torch.Generator().manual_seed(0))   # a TaskBatch of 25 tasks
    x_support, y_support = batch.support                         # (25, 10, 1) each
    heldout = tasks.test_tasks(600)                              # fixed, seeded held-out tasks
"""

from pyro_gem.tasks.base import TaskBatch, task_count, validate_task_args
from pyro_gem.tasks.sinusoid import Sinusoid

__all__ = ["Sinusoid", "TaskBatch", "task_count", "validate_task_args"]
