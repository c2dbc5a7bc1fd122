"""The meta-training loop: progress bar, periodic held-out evaluation, checkpoints and resume.

A checkpoint is a directory holding ``checkpoint.pt`` (plain tensors and numbers: the prior, the
meta-optimiser, the iteration and every random state; it loads with
``torch.load(path, weights_only=True)``), ``config.json`` (the run's options) and
``history.json`` (per-iteration statistics). Resuming continues the same run: a run resumed from
a checkpoint ends exactly where the uninterrupted run would have.

Example::

    history = train(learner, tasks, meta_iterations=3000, meta_batch=25, seed=0, out_dir="runs/a")
    history = train(learner, tasks, meta_iterations=6000, meta_batch=25, seed=0,
                    out_dir="runs/a", resume=True)       # picks up at iteration 3000
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from pyro_gem.evaluation.meta_test import meta_test, score_metrics

__all__ = ["train", "save_checkpoint", "load_checkpoint"]

CHECKPOINT = "checkpoint.pt"
#: The run directory's layout, written into every checkpoint (``pyro_gem.load_run`` checks it).
LAYOUT = 1


def save_checkpoint(
    out_dir: str | Path,
    learner,
    iteration: int,
    generator: torch.Generator,
    config: dict,
    history: list[dict],
) -> Path:
    """Write the run's state to ``out_dir`` (atomically: a crash never leaves half a file).

    :param out_dir: the run directory; ``checkpoint.pt``, ``config.json`` and ``history.json``
        are written into it.
    :param learner: the learner, saved through its ``state_dict()``.
    :param iteration: meta-iterations done so far.
    :param generator: the task stream's generator, so that a resumed run draws the same tasks.
    :param config: the run's options.
    :param history: the per-iteration statistics so far.
    :returns: the checkpoint's path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        "layout": LAYOUT,
        "iteration": iteration,
        "learner": learner.state_dict(),
        "task_rng": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    # Each file is written beside its place and renamed over it. The history goes before the
    # checkpoint: a resume truncates a longer history to the checkpoint's iteration.
    _replace(
        out / "config.json", lambda f: f.write_text(json.dumps(config, indent=2, sort_keys=True))
    )
    _replace(
        out / "history.json", lambda f: f.write_text(json.dumps(history, separators=(",", ":")))
    )
    _replace(out / CHECKPOINT, lambda f: torch.save(state, f))
    return out / CHECKPOINT


def _replace(path: Path, write) -> None:
    """``write(tmp)`` then rename ``tmp`` over ``path``: a crash leaves the old file or the new."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)


def load_checkpoint(out_dir: str | Path) -> tuple[dict, dict, list[dict]]:
    """Read ``(state, config, history)`` from a checkpoint directory."""
    out = Path(out_dir)
    if not (out / CHECKPOINT).is_file():
        raise FileNotFoundError(f"no {CHECKPOINT} in {out}")
    # Onto the CPU whatever device wrote it: load_state_dict copies onto the learner's device.
    state = torch.load(out / CHECKPOINT, weights_only=True, map_location="cpu")
    config = json.loads((out / "config.json").read_text())
    history_file = out / "history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else []
    return state, config, history


def _seed_everything(seed: int) -> None:
    pyro.set_rng_seed(seed)  # torch, numpy and random
    random.seed(seed)
    np.random.seed(seed)


def train(
    learner,
    tasks,
    *,
    meta_iterations: int,
    meta_batch: int = 25,
    seed: int = 0,
    out_dir: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 500,
    eval_every: int = 250,
    eval_tasks: int = 100,
    eval_steps: int | None = None,
    eval_samples: int = 50,
    meta_lr_milestones: Sequence[int] = (),
    meta_lr_gamma: float = 0.1,
    config: dict | None = None,
    progress: bool = True,
) -> list[dict]:
    """Meta-train ``learner`` on batches drawn from ``tasks``.

    :param learner: a learner with ``step(batch)``, ``state_dict()`` and ``load_state_dict()``.
    :param tasks: a task family with ``sample(num_tasks, generator)`` and ``test_tasks(n)``
        (or a runner's :class:`~pyro_gem.runners.WorkerTasks`, whose data stay with its
        workers: no held-out evaluation then, ``eval_every=0``).
    :param meta_iterations: the total number of meta-iterations (including resumed ones).
    :param meta_batch: tasks per meta-iteration.
    :param seed: seeds the task stream and Pyro's sampling.
    :param out_dir: where checkpoints go; ``None`` keeps nothing on disk.
    :param resume: continue from the checkpoint in ``out_dir`` if there is one.
    :param checkpoint_every: iterations between checkpoints (one is always written at the end).
    :param eval_every: iterations between held-out evaluations shown in the progress bar; the
        evaluation runs on a forked random state, so it never changes the training trajectory.
        It scores the task family's first metric (``tasks.metrics``), or the log predictive
        density if the family lists none. Before the first iteration the family's metrics are
        tried on two held-out tasks, so that a metric the model cannot give fails at once.
    :param eval_tasks: held-out tasks in those evaluations: the family's
        ``validation_tasks(n)`` where it has them (a split of their own), else ``test_tasks(n)``.
    :param eval_steps: inner steps of the evaluation (defaults to the learner's).
    :param eval_samples: posterior draws per task in those evaluations.
    :param meta_lr_milestones: iterations at which the meta-optimiser's learning rate is
        multiplied by ``meta_lr_gamma`` (a step schedule, a function of the iteration alone, so
        that a resumed run follows it exactly). Gradient-EM's per-iteration estimate is noisy,
        and Adam turns noise into steps of about its learning rate: a constant rate lets the
        prior random-walk away once the signal has been learned.
    :param meta_lr_gamma: the factor applied at each milestone.
    :param config: the run's options, stored beside the checkpoint.
    :returns: per-iteration statistics (one dict per iteration: the learner's statistics, the
        step's wall time ``seconds``, and ``heldout_<metric>`` where evaluated, e.g.
        ``heldout_mse``).
    """
    if meta_iterations < 0 or meta_batch < 1:
        raise ValueError(
            f"need meta_iterations >= 0 and meta_batch >= 1, got {meta_iterations}, {meta_batch}"
        )
    config = dict(config or {})
    generator = torch.Generator().manual_seed(seed)
    _seed_everything(seed)
    history: list[dict] = []
    start = 0
    if resume and out_dir is not None and (Path(out_dir) / CHECKPOINT).is_file():
        state, _, history = load_checkpoint(out_dir)
        learner.load_state_dict(state["learner"])
        generator.set_state(state["task_rng"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start = int(state["iteration"])
        if start > meta_iterations:
            raise ValueError(
                f"the checkpoint in {out_dir} is at iteration {start}, past meta_iterations="
                f"{meta_iterations}: resuming would overwrite it with a shorter run"
            )
        history = history[:start]
    for group in learner.meta_optim.param_groups:
        group.setdefault("initial_lr", group["lr"])
    metrics = score_metrics(getattr(tasks, "metrics", ()))
    watched = metrics[1] if len(metrics) > 1 else metrics[0]
    heldout = None
    if hasattr(tasks, "test_tasks"):
        with torch.random.fork_rng():
            # A metric that cannot score this model (MetricError) fails here, not after hours.
            meta_test(learner, tasks.test_tasks(2), steps=(0,), metrics=metrics, num_samples=2)
        heldout_tasks = getattr(tasks, "validation_tasks", tasks.test_tasks)
        heldout = heldout_tasks(eval_tasks) if eval_every else None
    elif eval_every:
        raise ValueError(
            f"eval_every={eval_every}: these tasks have no held-out tasks here (their data stay "
            "with the workers, pyro_gem.runners.WorkerTasks); train with eval_every=0 and "
            "meta-test where the test tasks are"
        )
    last_score = math.nan
    bar = tqdm(
        range(start, meta_iterations),
        initial=start,
        total=meta_iterations,
        desc=getattr(learner, "name", "meta-train"),
        disable=not progress,
        dynamic_ncols=True,
    )
    diverged = 0
    for it in bar:
        decay = meta_lr_gamma ** sum(it >= m for m in meta_lr_milestones)
        for group in learner.meta_optim.param_groups:
            group["lr"] = group["initial_lr"] * decay
        tick = time.perf_counter()
        with warnings.catch_warnings():
            # Diverged tasks are counted in the progress bar and kept in the history instead.
            warnings.filterwarnings("ignore", message="inner loop diverged")
            # Tasks are drawn on the CPU (one stream, whatever the device) and moved.
            stats = learner.step(tasks.sample(meta_batch, generator).to(learner.device))
        stats["seconds"] = time.perf_counter() - tick
        diverged += len(stats.get("nan_tasks", ()))
        stats["iteration"] = it + 1
        if eval_every and (it + 1) % eval_every == 0:
            with torch.random.fork_rng():
                steps = eval_steps if eval_steps is not None else learner.adapt_steps
                score = meta_test(
                    learner,
                    heldout,
                    steps=(steps,),
                    metrics=(watched,),
                    num_samples=eval_samples,
                )
            last_score = score[watched.name][str(steps)][0]
            stats[f"heldout_{watched.name}"] = last_score
        history.append(stats)
        bar.set_postfix(
            objective=f"{stats['meta_objective']:.3g}",
            **{f"heldout_{watched.name}": f"{last_score:.3g}"},
            sigma=f"{stats['prior_scale_median']:.3g}",
            diverged=diverged,
            refresh=False,
        )
        if out_dir is not None and (it + 1) % checkpoint_every == 0:
            save_checkpoint(out_dir, learner, it + 1, generator, config, history)
    if out_dir is not None:
        save_checkpoint(out_dir, learner, meta_iterations, generator, config, history)
    return history
