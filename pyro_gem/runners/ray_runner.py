"""Inner loops on Ray workers: each meta-iteration's shards are Ray tasks, the meta-update stays
in the driver.

Gradient-EM needs from a task only its two fitted posteriors, so a worker receives the prior
(m, log σ) and a shard of tasks, fits q_λtr and q_λtr⊕val for each, and returns the Gradient-EM
estimate summed over the shard's tasks: two vectors of the prior's size per shard, never data or
data gradients (Reptile and first-order MAML send their summed meta-gradients likewise). The
learner (its model, prior layout and inner VI, without the meta-optimiser) goes into Ray's object
store once; each worker deserialises it once and keeps it.

Ray does the rest: it schedules the shards on free workers, and when a worker process dies it
runs the shard again on another (``max_retries``). A shard's result depends only on its tasks and
its seed (:mod:`pyro_gem.runners.shards`), so a retried shard gives what the lost one would have:
a lost worker changes nothing. A shard that fails more than ``max_retries`` times ends the
meta-iteration with an error before the prior is touched; the training loop's last checkpoint
stays as it was.

With ``families`` the tasks stay with the workers: one Ray actor per family builds the family on
its worker and samples its share of every meta-batch there (an actor that dies is restarted, its
family rebuilt from the factory, and its call retried).

Example::

    with RayRunner(num_workers=2) as runner:           # a local Ray runtime with 2 CPUs
        learner = GEMBML(model, prior, runner=runner)
        train(learner, tasks, meta_iterations=100, meta_batch=25)

    RayRunner(address="auto")                          # join a running cluster
"""

from __future__ import annotations

import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import ray
import torch

from pyro_gem.modelfile import MODULE_PREFIX
from pyro_gem.runners.base import Runner, ShardFailed
from pyro_gem.runners.shards import ShardResult, fit_shard, inner_replica, prior_state

__all__ = ["RayRunner"]

# The replicas this worker process has been sent, by object id (a few: one per learner).
_REPLICAS: OrderedDict = OrderedDict()


def _replica(box: list):
    """The learner replica in ``box`` (``[ObjectRef]``: boxed, so that Ray does not fetch it
    for every call), fetched once per worker process."""
    (ref,) = box
    key = ref.hex()
    if key not in _REPLICAS:
        _REPLICAS[key] = ray.get(ref)
        while len(_REPLICAS) > 4:
            _REPLICAS.popitem(last=False)
    return _REPLICAS[key]


def _fit_remote(box: list, prior, batch, seed: int) -> ShardResult:
    return fit_shard(_replica(box), batch, seed, prior)


class _TaskOwner:
    """A worker that owns a task family: built once from its factory, it samples its tasks
    and fits them where they are."""

    def __init__(self, make_family: Callable):
        self.family = make_family()

    def fit(self, box: list, prior, num_tasks: int, task_seed: int, seed: int) -> ShardResult:
        batch = self.family.sample(num_tasks, torch.Generator().manual_seed(task_seed))
        return fit_shard(_replica(box), batch, seed, prior)

    def pid(self) -> int:
        return os.getpid()


def _ship_model_files_by_value(model: Callable) -> None:
    """Model files are loaded as modules that workers cannot import by name
    (:func:`~pyro_gem.load_model_file`): pickle them, and the modules beside them that they
    import (e.g. ``models/_locomotion.py``), by value."""
    module = sys.modules.get(getattr(model, "__module__", None) or "")
    if module is None or not module.__name__.startswith(MODULE_PREFIX):
        return
    folder = Path(module.__file__).resolve().parent
    for other in list(sys.modules.values()):
        path = getattr(other, "__file__", None)
        if path and Path(path).resolve().parent == folder:
            ray.cloudpickle.register_pickle_by_value(other)


class RayRunner(Runner):
    """Fit each meta-iteration's shards on Ray workers.

    :param num_workers: workers of the local Ray runtime this starts (its CPUs; default: all
        of this machine's); with ``address``, the shards default to this many.
    :param address: a running Ray cluster to join (``"auto"``, or ``"ray://host:10001"``);
        ``None`` starts a local runtime unless Ray is initialised already.
    :param shards: shards per meta-batch (default: ``num_workers``). The shard layout decides
        the random draws, so keep it when comparing runs on different numbers of workers.
    :param families: one task-family factory per worker: tasks that stay with the workers
        (see :mod:`pyro_gem.runners.base`).
    :param max_retries: how often Ray runs a shard again after its worker died.
    """

    def __init__(
        self,
        num_workers: int | None = None,
        *,
        address: str | None = None,
        shards: int | None = None,
        families: Sequence[Callable] | None = None,
        max_retries: int = 3,
    ):
        if num_workers is not None and int(num_workers) < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if int(max_retries) < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if shards is not None and int(shards) < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        if families is not None:
            num_workers = len(families) if num_workers is None else num_workers
            if num_workers != len(families):
                raise ValueError(
                    f"families: one per worker, got {len(families)} for {num_workers} workers"
                )
        self._started = False
        if not ray.is_initialized():
            options = dict(include_dashboard=False, logging_level=logging.WARNING)
            if address is None:
                options["num_cpus"] = num_workers or os.cpu_count()
            ray.init(address=address, **options)
            self._started = True
        self.num_workers = int(num_workers or ray.cluster_resources().get("CPU", 1))
        super().__init__(self.num_workers if shards is None else shards, families)
        self.max_retries = int(max_retries)
        self._fit = ray.remote(num_cpus=1, max_retries=self.max_retries)(_fit_remote)
        self._owners = None
        if self.families is not None:
            cpus = ray.cluster_resources().get("CPU", 0)
            if cpus < len(self.families):
                raise ValueError(
                    f"{len(self.families)} task-owning workers need as many CPUs; the Ray "
                    f"cluster has {cpus:g}"
                )
            owner = ray.remote(num_cpus=1)(_TaskOwner).options(
                max_restarts=self.max_retries, max_task_retries=self.max_retries
            )
            self._owners = [owner.remote(make) for make in self.families]
        self._box: tuple[int, list] | None = None

    def worker_pids(self) -> list[int]:
        """The process ids of the task-owning workers (with ``families``)."""
        if self._owners is None:
            raise ValueError("only a runner with families has workers of its own")
        return ray.get([o.pid.remote() for o in self._owners])

    def _replica_box(self, learner) -> list:
        # Keyed by the learner itself (not its id, which a new learner may reuse).
        if self._box is None or self._box[0] is not learner:
            _ship_model_files_by_value(learner.model)
            self._box = (learner, [ray.put(inner_replica(learner))])
        return self._box[1]

    def run(self, learner, jobs, seeds, owned):
        box, prior = self._replica_box(learner), prior_state(learner)
        if owned:
            refs = [
                self._owners[family].fit.remote(box, prior, num_tasks, task_seed, seed)
                for (family, num_tasks, task_seed), seed in zip(jobs, seeds)
            ]
        else:
            # Workers run on the CPU (a batch on the learner's GPU comes back to it).
            calls = [(box, prior, job.to("cpu"), seed) for job, seed in zip(jobs, seeds)]
            refs = self._submit(calls)
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as err:  # the user's code raised on a worker
            self._cancel(refs)
            raise err.as_instanceof_cause() from None
        except ray.exceptions.RayError as err:
            self._cancel(refs)
            raise ShardFailed(
                f"a shard could not be fitted on a worker ({type(err).__name__}: a worker "
                f"that died is retried up to max_retries={self.max_retries} times). This "
                "meta-iteration did not update the prior; a run resumes from its last checkpoint"
            ) from err

    @staticmethod
    def _cancel(refs: list) -> None:
        """Stop the shards still running after one failed (the iteration is lost anyway)."""
        for ref in refs:
            try:
                ray.cancel(ref)
            except Exception:  # finished, or an actor call (not cancellable): nothing to stop
                pass

    def _submit(self, calls: list[tuple]) -> list:
        """Submit the shards, at most ``num_workers`` in flight: N workers are N shards at a
        time, on a cluster of any size."""
        refs, pending = [], []
        for args in calls:
            if len(pending) >= self.num_workers:
                _, pending = ray.wait(pending, num_returns=1)
            ref = self._fit.remote(*args)
            refs.append(ref)
            pending.append(ref)
        return refs

    def close(self) -> None:
        """Stop the task-owning workers, and the Ray runtime if this runner started it."""
        if self._owners is not None:
            for owner in self._owners:
                ray.kill(owner)
            self._owners = None
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False
