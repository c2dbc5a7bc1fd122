"""Task families: each draws :class:`TaskBatch` objects of stacked support and query sets and
says what its tasks are scored on (``metrics``).

Example::

    tasks = Sinusoid("default", shots=10)
    batch = tasks.sample(25, torch.Generator().manual_seed(0))   # a TaskBatch of 25 tasks
    x_support, y_support = batch.support                         # (25, 10, 1) each
    heldout = tasks.test_tasks(600)                              # fixed, seeded held-out tasks
    tasks.metrics                                                # (SquaredError, IntervalCoverage)
"""

from pyro_gem.core.batch import TaskBatch, task_count, validate_task_args
from pyro_gem.tasks.base import TaskFamily
from pyro_gem.tasks.sinusoid import Sinusoid

__all__ = ["Sinusoid", "TaskBatch", "TaskFamily", "task_count", "validate_task_args"]
