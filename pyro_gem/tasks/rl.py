"""Meta-RL task families: tasks are environments, and their data are rollouts of the learner's
own policy.

A supervised task's support and query sets exist before learning; an RL task's do not: D_tr is
K rollouts of the pre-update policy and D_val K rollouts of the policy after one inner update
(MAML's protocol, and the paper's). :meth:`MetaRLTasks.sample` therefore returns an
:class:`OnPolicyBatch` of tasks alone, and a learner fills it: ``batch.collect_support(theta)``
rolls out policy weights θ_t on task t, ``batch.collect_query(theta_adapted)`` after the inner
update (a supervised :class:`~pyro_gem.core.batch.TaskBatch` ignores both calls). The learners
that do this are GEM-BML, GEM-BML+, MAML, first-order MAML and Reptile; any other learner
meets an error that says so.

A task's data, as the model file's Pyro model receives them (N = K · H steps of its rollouts):

- ``observations (N, obs)``, ``actions (N, A)``: each step's state and action;
- ``advantages (N,)``: GAE(γ, λ) advantages over the linear feature baseline, normalised per task
  (:func:`pyro_gem.rl.advantages.advantages`), 0 after an episode ended;
- ``step_weights (N,)``: each step's share of the task's mean, ``1 / (K · length of its
  rollout)`` (0 after the end): MAML's surrogate averages over each rollout's steps, then over
  the rollouts, so ``Σ step_weights · log π(a | s) · Â`` is MAML's (negated) surrogate loss.

Example::

    tasks = MetaRLTasks("pyro_gem/Navigation2D-v0", policy=prior.net, rollouts=20)
    batch = tasks.sample(20, torch.Generator().manual_seed(0))
    batch.collect_support(prior.loc.detach().expand(20, -1))
    observations, actions, advantages, step_weights = batch.support      # (20, 2000, ...)
    tasks.test_tasks(40)                 # 40 fixed held-out tasks, 40 rollouts per update
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from pyro_gem.evaluation.returns import AverageReturn
from pyro_gem.rl.advantages import rollout_data
from pyro_gem.rl.sampler import RolloutSampler
from pyro_gem.tasks.base import TaskFamily

__all__ = ["MetaRLTasks", "OnPolicyBatch", "RL_METHODS"]

#: The learners that collect on-policy data.
RL_METHODS = ("gem-bml", "gem-bml+", "maml", "fomaml", "reptile")


class OnPolicyBatch:
    """T tasks of a meta-RL family, their support and query sets collected by the learner.

    It has the interface of a :class:`~pyro_gem.core.batch.TaskBatch` (``support``, ``query``,
    ``joint()``, ``select``, ``to``, ``validate``) once collected. Collection fills the batch in
    place, so that a learner that re-runs its losses on part of the batch (leaving out a
    diverged task) reuses the same rollouts.

    :param family: the task family (its sampler and settings).
    :param tasks: ``(T, task_dim)``.
    :param seed: the seed of the batch's rollouts (action and reset noise).
    :param rollouts: K, rollouts per task and set.
    """

    on_policy = True

    def __init__(self, family: MetaRLTasks, tasks: torch.Tensor, seed: int, rollouts: int):
        self.family, self.tasks, self.rollouts = family, tasks, int(rollouts)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.device = torch.device("cpu")
        self._sets: dict[str, tuple] = {}
        self.info: dict[str, torch.Tensor] = {"task": tasks}

    def __len__(self) -> int:
        return len(self.tasks)

    def _collect(self, which: str, theta: torch.Tensor) -> OnPolicyBatch:
        if which not in self._sets:
            rollouts = self.family.sampler.sample(
                self.tasks, theta.detach().to(self.device), self.rollouts, self.generator
            )
            data = rollout_data(rollouts, self.family.discount, self.family.gae_lambda)
            self._sets[which] = data
            self.info[f"{which}_returns"] = rollouts.returns.mean(1)
        return self

    def collect_support(self, theta: torch.Tensor) -> OnPolicyBatch:
        """Roll out weights ``theta (T, D)`` for D_tr (once; later calls keep those rollouts)."""
        return self._collect("support", theta)

    def collect_query(self, theta: torch.Tensor) -> OnPolicyBatch:
        """Roll out the adapted weights ``theta (T, D)`` for D_val (once)."""
        return self._collect("query", theta)

    def _get(self, which: str) -> tuple:
        if which not in self._sets:
            raise ValueError(
                f"these are on-policy tasks ({self.family.env_id}): their {which} set is "
                f"rollouts of the learner's own policy, collected by batch.collect_{which}("
                f"theta), and this learner does not collect them; the meta-RL learners are "
                f"{list(RL_METHODS)}"
            )
        return self._sets[which]

    @property
    def support(self) -> tuple:
        return self._get("support")

    @property
    def query(self) -> tuple:
        return self._get("query")

    def joint(self) -> tuple:
        """D_tr ∪ D_val, concatenated along the steps."""
        return tuple(torch.cat([s, q], 1) for s, q in zip(self.support, self.query))

    def validate(self) -> int:
        """The number of tasks; collected sets are checked for shape (a NaN reward is a
        diverged task, left to the learner, not an error)."""
        for data in self._sets.values():
            if any(a.shape[0] != len(self) for a in data):
                raise ValueError("collected rollouts do not match the batch's tasks")
        return len(self)

    def select(self, index: torch.Tensor | slice) -> OnPolicyBatch:
        out = OnPolicyBatch(self.family, self.tasks[index], 0, self.rollouts)
        out.generator, out.device = self.generator, self.device
        out._sets = {k: tuple(a[index] for a in v) for k, v in self._sets.items()}
        out.info = {k: v[index] for k, v in self.info.items()}
        return out

    def to(self, device: torch.device | str) -> OnPolicyBatch:
        """The batch with its rollouts collected onto ``device`` (where the learner is)."""
        device = torch.device(device)
        if device == self.device:
            return self
        out = self.select(slice(None))
        out.device = device
        out._sets = {k: tuple(a.to(device) for a in v) for k, v in self._sets.items()}
        return out


class MetaRLTasks(TaskFamily):
    """A meta-RL task family over a registered environment.

    :param env_id: a meta-RL environment id (see :mod:`pyro_gem.envs`).
    :param policy: ``(theta (T, D), observations (T, K, obs)) -> (T, K, 2 · A)``, the policy
        network on batched weights: ``prior.net`` of a
        :class:`~pyro_gem.rl.policy.GaussianMLPPolicy`.
    :param rollouts: K, rollouts per task in D_tr and in D_val at meta-training.
    :param test_rollouts: rollouts per inner update at the meta-test (MAML: 40).
    :param horizon: steps per rollout (the environment's registered horizon by default).
    :param discount: γ.
    :param gae_lambda: GAE's λ (1: returns minus the baseline, MAML's).
    """

    metrics = (AverageReturn(),)
    on_policy = True

    def __init__(
        self,
        env_id: str,
        policy: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        rollouts: int = 20,
        test_rollouts: int = 40,
        horizon: int | None = None,
        discount: float = 0.99,
        gae_lambda: float = 1.0,
    ):
        if int(rollouts) < 1 or int(test_rollouts) < 1:
            raise ValueError(f"rollouts must be >= 1, got {rollouts} and {test_rollouts}")
        if not 0 <= discount <= 1 or not 0 <= gae_lambda <= 1:
            raise ValueError(f"discount and gae_lambda lie in [0, 1], got {discount}, {gae_lambda}")
        self.env_id = env_id
        self.sampler = RolloutSampler(env_id, policy, horizon)
        self.rollouts, self.test_rollouts = int(rollouts), int(test_rollouts)
        self.discount, self.gae_lambda = float(discount), float(gae_lambda)

    def batch(self, tasks: np.ndarray | torch.Tensor, seed: int, rollouts: int) -> OnPolicyBatch:
        """An :class:`OnPolicyBatch` of given ``tasks`` (checked against the task range)."""
        tasks = torch.as_tensor(self.sampler.check_tasks(tasks))
        return OnPolicyBatch(self, tasks, seed, rollouts)

    def sample(self, num_tasks: int, generator: torch.Generator | None = None) -> OnPolicyBatch:
        """``num_tasks`` new tasks, their rollouts seeded from ``generator``."""
        if generator is None:  # torch's global stream (a fresh Generator would repeat)
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
        gen = generator
        seeds = torch.randint(2**62, (2,), generator=gen).tolist()
        tasks = self.sampler.sample_tasks(num_tasks, np.random.default_rng(seeds[0]))
        return self.batch(tasks, seeds[1], self.rollouts)

    def test_tasks(self, num_tasks: int = 40, seed: int | None = None) -> OnPolicyBatch:
        """Fixed held-out tasks (the same for a seed), ``test_rollouts`` rollouts per update."""
        gen = torch.Generator().manual_seed(self.test_seed if seed is None else seed)
        batch = self.sample(num_tasks, gen)
        batch.rollouts = self.test_rollouts
        return batch

    def validation_tasks(self, num_tasks: int = 40, seed: int | None = None) -> OnPolicyBatch:
        return self.test_tasks(num_tasks, (self.test_seed + 1) if seed is None else seed)
