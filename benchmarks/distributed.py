"""Inner loops on Ray workers: meta-iterations per second in-process and with 1 and 2 workers,
and the bytes a meta-iteration sends between the driver and its workers.

GEM-BML+ on two batches: the sinusoid tasks (meta-batch 25) and Omniglot 5-way 1-shot (the
model file's meta-batch of 32 episodes, 5 query images per class, on the minimal subsets in
``../shared/data/omniglot``). Configurations, each ``--warmup`` meta-iterations (worker start-up,
the learner's first shipment), then ``--iterations`` timed ones:

- *in-process*: the plain learner (one vectorised SVI over the whole batch, torch's own
  threads), and the same learner fitting ``--shards`` shards one after another in this process
  (:class:`~pyro_gem.runners.LocalRunner`: smaller vectorised batches);
- *1 worker*: the whole batch on one Ray worker;
- *2 workers*: a :class:`~pyro_gem.runners.RayRunner` of 2 workers for each ``--shards`` layout
  (the same layout in-process gives the same prior bit for bit), and with tasks owned by the
  workers.

``speedup_2_workers`` is the fastest in-process configuration's time over the fastest 2-worker
one's; ``speedup_2_workers_same_shards`` compares each layout with itself, and
``speedup_2_workers_over_plain`` the fastest 2 workers with the plain learner.

Bytes are counted as Ray pickles them (``ray.cloudpickle``), per meta-iteration:

- *shipped* (the default, tasks drawn in the driver): the prior and each shard's data to the
  workers, each shard's summed Gradient-EM estimate back;
- *owned* (``RayRunner(families=...)``: tasks stay with the workers): the prior and seeds to
  the workers, the summed estimates back;
- *data*: the size of the tasks' data themselves (what a data-gradient method would ship).

The learner itself (model, network layout, inner VI) travels once per worker, counted apart.

    python benchmarks/distributed.py                 # both batches, 2 warm-up + 5 timed its
    python benchmarks/distributed.py --quick         # the sinusoid batch, small (the tests)

Writes ``<out>/distributed.json``; the last line printed is the JSON summary with the speed-ups
(the Omniglot batch; the sinusoid's with ``--quick``) and ``bytes_per_task`` (driver ↔ workers
per task and meta-iteration, tasks owned by the workers).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from pathlib import Path

import ray
import torch

from pyro_gem.config import build_learner, load_seeded, resolve_config
from pyro_gem.runners import LocalRunner, RayRunner
from pyro_gem.runners.shards import (
    draw_seeds,
    fit_shard,
    inner_replica,
    prior_state,
    shard_batch,
    shard_slices,
)

ROOT = Path(__file__).resolve().parents[1]
OMNIGLOT = ROOT.parent / "shared" / "data" / "omniglot"


def _nbytes(obj) -> int:
    return len(ray.cloudpickle.dumps(obj))


def _data_bytes(batch) -> int:
    return sum(a.nbytes for a in (*batch.support, *batch.query) if torch.is_tensor(a))


def _build(name: str, settings: dict, overrides: dict):
    mf = load_seeded(ROOT / "models" / f"{name}.py", settings=settings)
    config = resolve_config(mf.config, overrides)
    return mf, config, build_learner(mf, config)


def _family(name: str, settings: dict):
    """A worker's own copy of the model file's task family (its data loaded there)."""
    return load_seeded(ROOT / "models" / f"{name}.py", settings=settings).tasks


def _time(learner, tasks, meta_batch: int, warmup: int, iterations: int) -> dict:
    """Seconds per meta-iteration after ``warmup`` untimed ones, and with a runner the part of
    them the driver spent waiting for its shards (the rest is serial: drawing and cutting the
    batch, merging, the meta-update)."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(warmup):
        learner.step(tasks.sample(meta_batch, gen))
    waited = [0.0]
    runner = learner.runner
    if runner is not None:
        run = runner.run

        def timed_run(*args):
            tick = time.perf_counter()
            out = run(*args)
            waited[0] += time.perf_counter() - tick
            return out

        runner.run = timed_run
    tick = time.perf_counter()
    for _ in range(iterations):
        learner.step(tasks.sample(meta_batch, gen))
    total = (time.perf_counter() - tick) / iterations
    if runner is not None:
        runner.run = run
    return {"seconds": total, "driver_serial_seconds": total - waited[0] / iterations}


def _bytes(name: str, settings: dict, overrides: dict, shards: int) -> dict:
    """Bytes per meta-iteration each way, measured on the payloads the runner sends."""
    mf, config, learner = _build(name, settings, overrides)
    batch = mf.tasks.sample(config["meta_batch"], torch.Generator().manual_seed(0))
    replica = inner_replica(learner)
    prior = prior_state(learner)
    box = [ray.put(None)]  # the learner's reference in the object store, sent with each call
    slices = shard_slices(len(batch), shards)
    seeds = draw_seeds(2 * len(slices))
    to_workers, owned_to, back = 0, 0, 0
    for i, sl in enumerate(slices):
        shard = shard_batch(batch, sl, seeds[len(slices) + i])
        to_workers += _nbytes((box, prior, shard, seeds[i]))
        owned_to += _nbytes((box, prior, sl.stop - sl.start, seeds[len(slices) + i], seeds[i]))
        back += _nbytes(fit_shard(replica, shard, seeds[i], prior))
    num_tasks = len(batch)
    return {
        "tasks": num_tasks,
        "shards": len(slices),
        "weights": learner.prior.num_weights,
        "learner_once_per_worker": _nbytes(replica),
        "data_per_task": _data_bytes(batch) / num_tasks,
        "shipped": {"to_workers": to_workers, "from_workers": back},
        "owned": {"to_workers": owned_to, "from_workers": back},
        "shipped_per_task": (to_workers + back) / num_tasks,
        "owned_per_task": (owned_to + back) / num_tasks,
    }


def bench(name: str, settings: dict, overrides: dict, args) -> dict:
    """Seconds per meta-iteration of every configuration, the speed-ups and the bytes."""
    out = {"model": name, "settings": settings, **overrides}
    timings, serial = {}, {}

    def measure(label: str, runner) -> None:
        mf, config, learner = _build(name, settings, overrides)
        learner.runner = runner
        owned = runner is not None and runner.families is not None
        got = _time(
            learner,
            runner.tasks if owned else mf.tasks,
            config["meta_batch"],
            args.warmup,
            args.its,
        )
        timings[label] = got["seconds"]
        if runner is not None:
            serial[label] = got["driver_serial_seconds"]
        print(label, round(got["seconds"], 4), flush=True)

    # In-process: the plain learner (one vectorised SVI over the batch, torch's own threads),
    # and the same shards fitted one after another (smaller vectorised batches).
    measure("in_process", None)
    for shards in args.shards:
        measure(f"in_process_{shards}_shards", LocalRunner(shards))
    with RayRunner(1, shards=1) as runner:
        measure("1_worker", runner)
    for shards in args.shards:
        with RayRunner(2, shards=shards) as runner:
            measure(f"2_workers_{shards}_shards", runner)
    # Tasks owned by the workers: the same step, the families built on the workers.
    family = functools.partial(_family, name, settings)
    with RayRunner(families=[family, family]) as runner:
        measure("2_workers_owned", runner)
    in_process = min(v for k, v in timings.items() if k.startswith("in_process"))
    two = min(v for k, v in timings.items() if k.startswith("2_workers_") and "shards" in k)
    out["seconds_per_iteration"] = timings
    out["driver_serial_seconds"] = serial
    out["speedup_2_workers"] = in_process / two  # the fastest of each, whatever the shards
    out["speedup_2_workers_same_shards"] = {
        str(s): timings[f"in_process_{s}_shards"] / timings[f"2_workers_{s}_shards"]
        for s in args.shards
    }
    out["speedup_2_workers_over_plain"] = timings["in_process"] / two
    out["bytes"] = _bytes(name, settings, overrides, shards=2)
    print(json.dumps({name: {k: out[k] for k in ("seconds_per_iteration", "speedup_2_workers")}}))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="the sinusoid batch, small")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iterations", dest="its", type=int, default=5)
    p.add_argument("--shards", type=int, nargs="+", default=[2, 4, 8], help="shard layouts to time")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args()
    cpus = os.cpu_count()
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="warning")
    runs = {}
    if args.quick:
        args.warmup, args.its, args.shards = 1, 1, [2]
        runs["sinusoid"] = bench("sinusoid", {}, {"meta_batch": 4, "inner_steps": 2}, args)
        headline = runs["sinusoid"]
    else:
        runs["sinusoid"] = bench("sinusoid", {}, {"meta_batch": 25}, args)
        if not OMNIGLOT.is_dir():
            raise SystemExit(f"the Omniglot subsets are not at {OMNIGLOT}")
        runs["omniglot_5w1s"] = bench(
            "omniglot", {"ways": 5, "shots": 1, "data": str(OMNIGLOT)}, {"meta_batch": 32}, args
        )
        headline = runs["omniglot_5w1s"]
    ray.shutdown()
    report = {
        "settings": {
            "cpus": cpus,
            "torch_threads_in_process": torch.get_num_threads(),
            "warmup": args.warmup,
            "iterations": args.its,
            "method": "gem-bml+",
        },
        "results": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "distributed_quick.json" if args.quick else "distributed.json"
    (args.out / name).write_text(json.dumps(report, indent=1))
    summary = {
        "speedup_2_workers": headline["speedup_2_workers"],
        "speedup_2_workers_same_shards": headline["speedup_2_workers_same_shards"],
        "speedup_2_workers_over_plain": headline["speedup_2_workers_over_plain"],
        "bytes_per_task": headline["bytes"]["owned_per_task"],
        "bytes_per_task_shipped": headline["bytes"]["shipped_per_task"],
        "data_bytes_per_task": headline["bytes"]["data_per_task"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
