"""Cost of one meta-iteration against the number of inner steps (the paper's Fig. 2b).

For every method and inner-step count, a fresh subprocess builds the model and learner, records
its peak RSS (the baseline after imports and set-up), runs a warm-up meta-iteration with one
inner step and then one with the given steps, and reports the wall time of the latter and the
peak RSS above the baseline. Gradient-EM needs only the final guide
parameters, so its memory should stay flat; MAML keeps the graph of every inner step.

Models: the sinusoid MLP 1-40-40-1 (meta-batch 25, K = 10) and Conv4 (4 × [3×3 conv 32,
BatchNorm, ReLU, 2×2 pool]) on 5-way 1-shot episodes of 84×84 RGB images (random pixels; 15 query
images per class; meta-batch 2; ``--quick``: meta-batch 1, 3 query images per class). Each
worker runs under an address-space limit (``--mem-limit``, GiB): a configuration that needs more
is recorded as out of memory, which is itself the result for methods whose memory grows with
the inner steps. Writes ``<out>/cost.json`` and ``<out>/cost.png`` (``cost_quick.*`` with
``--quick``); the last line printed is the JSON summary.

    python benchmarks/cost.py                 # every method, steps 1 … 100, both models
    python benchmarks/cost.py --quick         # Conv4, steps {1, 100}, GEM-BML+, MAML and ABML
    python benchmarks/cost.py --models conv4 --methods maml   # update those entries of cost.json
    python benchmarks/cost.py --table         # cost.json as Markdown tables
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = (1, 2, 5, 10, 25, 50, 100)
QUICK_METHODS = ("gem-bml+", "maml", "abml")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _conv4_setup(meta_batch: int, query_per_class: int):
    import pyro
    import pyro.distributions as dist
    import torch
    from torch import nn

    from pyro_gem import GaussianPrior, TaskBatch

    layers, c_in = [], 3
    for _ in range(4):
        layers += [
            nn.Conv2d(c_in, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        c_in = 32
    net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(32 * 5 * 5, 5))
    prior = GaussianPrior(net, init_scale=0.01)

    def model(images, labels=None):
        logits = prior.sample_net()(images)
        with pyro.plate("data", images.shape[-4], dim=-1):
            pyro.sample("labels", dist.Categorical(logits=logits), obs=labels)

    gen = torch.Generator().manual_seed(0)

    def batch():
        support = torch.randn(meta_batch, 5, 3, 84, 84, generator=gen)
        query = torch.randn(meta_batch, 5 * query_per_class, 3, 84, 84, generator=gen)
        return TaskBatch(
            (support, torch.arange(5).repeat(meta_batch, 1)),
            (query, torch.arange(5).repeat(meta_batch, query_per_class)),
        )

    return model, prior, batch


def worker(
    model_name: str,
    method: str,
    steps: int,
    meta_batch: int,
    query: int,
    mem_limit_gib: float,
    query_steps: int | None = None,
    device: str = "cpu",
) -> dict:
    if device == "cpu":  # CUDA reserves far more address space than it uses: no limit there
        limit = int(mem_limit_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    from pyro_gem.config import build_learner, resolve_config
    from pyro_gem.modelfile import load_model_file

    torch.set_num_threads(1)
    mf = load_model_file(ROOT / "models" / "sinusoid.py", seed=0)
    config = resolve_config(
        mf.config, {"method": method, "inner_steps": steps, "query_steps": query_steps}
    )
    if model_name == "conv4":
        model, prior, make_batch = _conv4_setup(meta_batch, query)
        mf.model, mf.prior = model, prior
    else:
        gen = torch.Generator().manual_seed(0)

        def make_batch():
            return mf.tasks.sample(meta_batch, gen)

    # Warm-up: one meta-iteration of a one-step learner pays the first-call costs (tracing,
    # lazy initialisation, the allocator) so that the timed iteration measures the method alone.
    warm = build_learner(mf, {**config, "inner_steps": 1, "query_steps": None}, device)
    learner = build_learner(mf, config, device)
    batches = [make_batch().to(device), make_batch().to(device)]
    cuda = torch.device(device).type == "cuda"

    def peak_mib() -> float:  # on a GPU its memory, on the CPU the process's resident set
        return torch.cuda.max_memory_allocated(device) / 2**20 if cuda else _peak_rss_mib()

    baseline = torch.cuda.memory_allocated(device) / 2**20 if cuda else _peak_rss_mib()
    try:
        warm.step(batches[0])
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        learner.step(batches[1])
        if cuda:
            torch.cuda.synchronize(device)
    except (MemoryError, RuntimeError) as err:
        if not isinstance(err, MemoryError) and "alloc" not in str(err).lower():
            raise
        return {"seconds": None, "peak_mib": None, "error": f"out of memory ({mem_limit_gib} GiB)"}
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mib": peak_mib() - baseline}


def measure(
    model_name: str,
    method: str,
    steps: int,
    meta_batch: int,
    query: int,
    mem_limit: float,
    query_steps: int | None = None,
    device: str = "cpu",
) -> dict:
    cmd = [sys.executable, __file__, "--worker", model_name, method]
    cmd += [str(steps), str(meta_batch), str(query), str(mem_limit), str(query_steps or 0)]
    cmd += [device]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{model_name}/{method}/{steps}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results)
    # One colour per method in every panel (more methods than a 10-colour cycle); Gradient-EM
    # drawn thicker, fixed-second-run variants dashed.
    names = list(dict.fromkeys(m for by_method in results.values() for m in by_method))
    colours = dict(zip(names, plt.cm.tab20(range(len(names))), strict=True))
    fig, axes = plt.subplots(2, len(models), figsize=(5 * len(models), 6.5), squeeze=False)
    for j, model_name in enumerate(models):
        for method, by_steps in results[model_name].items():
            steps = sorted(int(s) for s in by_steps if by_steps[s]["seconds"] is not None)
            style = {
                "color": colours[method],
                "linewidth": 2.5 if method.startswith("gem-") else 1.2,
                "linestyle": "--" if "/" in method else "-",
            }
            for i, key in enumerate(("seconds", "peak_mib")):
                axes[i][j].plot(
                    steps, [by_steps[str(s)][key] for s in steps], marker="o", label=method, **style
                )
        axes[0][j].set_title(f"{model_name}: time per meta-iteration (s)")
        axes[1][j].set_title(f"{model_name}: peak memory above baseline (MiB)")
        for i in range(2):
            axes[i][j].set_xscale("log")
            axes[i][j].set_xlabel("inner steps")
            axes[i][j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_tables(results: dict) -> str:
    """One table per model: time and peak memory at 1, 10 and 100 inner steps, with the growth
    from 1 to the largest step measured; "—" where a configuration was not measured, "OOM"
    where it ran out of the worker's memory limit."""

    def cell(entry, key, fmt):
        if entry is None:
            return "—"
        if entry[key] is None:
            return "OOM"
        return fmt(entry[key])

    def secs(x):
        return f"{x:.3g} s"

    def mib(x):
        return f"{x:,.0f} MiB"

    out = []
    for model_name, by_method in results.items():
        out.append(f"**{model_name}**\n")
        head = "| method | time, 1 / 10 / 100 steps | memory, 1 / 10 / 100 steps | memory growth |"
        out += [head, "| --- | --- | --- | --- |"]
        for method, by_steps in by_method.items():
            at = [by_steps.get(str(s)) for s in (1, 10, 100)]
            measured = [int(s) for s, e in by_steps.items() if e["peak_mib"] is not None]
            growth = "—"
            if 1 in measured and max(measured) > 1:
                last = max(measured)
                ratio = by_steps[str(last)]["peak_mib"] / by_steps["1"]["peak_mib"]
                growth = f"×{ratio:.2f} (1 → {last})"
            times = " / ".join(cell(e, "seconds", secs) for e in at)
            mems = " / ".join(cell(e, "peak_mib", mib) for e in at)
            out.append(f"| {method} | {times} | {mems} | {growth} |")
        out.append("")
    return "\n".join(out)


def _ratio(results, model_name, a, b, key, steps_a, steps_b=None):
    try:
        ra = results[model_name][a][str(steps_a)][key]
        rb = results[model_name][b][str(steps_b or steps_a)][key]
    except KeyError:
        return None
    return ra / rb if ra is not None and rb else None


def summarize(results: dict) -> dict:
    """The summary keys: memory growth and time ratios at the largest step count measured."""
    model = "conv4" if "conv4" in results else next(iter(results))
    last = max(int(s) for entries in results[model].values() for s in entries)
    summary = {
        "model": model,
        "gem_plus_mem_growth": _ratio(results, model, "gem-bml+", "gem-bml+", "peak_mib", last, 1),
        "maml_mem_growth": _ratio(results, model, "maml", "maml", "peak_mib", last, 1),
        f"gem_plus_vs_maml_time_at_{last}": _ratio(
            results, model, "gem-bml+", "maml", "seconds", last
        ),
        f"gem_plus_vs_abml_time_at_{last}": _ratio(
            results, model, "gem-bml+", "abml", "seconds", last
        ),
        "note": "peak RSS above each fresh process's baseline; memory growth = at most steps / at 1",
    }
    # Variants with a fixed second run (--query-steps) are reported beside the main figures.
    for variant in (k for k in results[model] if k.startswith("gem-bml+/query=")):
        tag = f"gem_plus_query{variant.split('=')[1]}"
        for other in ("maml", "abml"):
            summary[f"{tag}_vs_{other}_time_at_{last}"] = _ratio(
                results, model, variant, other, "seconds", last
            )
    return summary


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--methods", nargs="+", help="default: every method (--quick: three)")
    p.add_argument("--models", nargs="+", default=["mlp", "conv4"], choices=["mlp", "conv4"])
    p.add_argument("--steps", nargs="+", type=int, help=f"default: {' '.join(map(str, STEPS))}")
    p.add_argument(
        "--query-steps",
        type=int,
        help="fix the second inner run's steps (GEM, KL-chaser, BMAML's leader) instead of "
        "matching the inner steps; recorded as METHOD/query=N",
    )
    p.add_argument("--mem-limit", type=float, default=12.0, help="GiB per worker")
    p.add_argument("--table", action="store_true", help="print cost.json as Markdown and exit")
    p.add_argument(
        "--worker",
        nargs="+",
        metavar="ARG",
        help="internal: MODEL METHOD STEPS BATCH QUERY GIB [QUERY_STEPS [DEVICE]]",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="where the learners run (e.g. cuda): results go to cost_<device>.json",
    )
    args = p.parse_args(argv)
    if args.worker:
        model_name, method, steps, batch, query, gib, q_steps, device = (
            *args.worker,
            "0",
            "cpu",
        )[:8]
        result = worker(
            model_name,
            method,
            int(steps),
            int(batch),
            int(query),
            float(gib),
            int(q_steps) or None,
            device,
        )
        print(json.dumps(result))
        return result
    name = "cost_quick" if args.quick else "cost"
    if args.device != "cpu":  # a GPU's figures beside, not over, this machine's
        name += "_" + args.device.replace(":", "")
    if args.table:
        results = json.loads((args.out / f"{name}.json").read_text())
        print(markdown_tables(results))
        summary = summarize(results)
        print(json.dumps(summary))
        return summary
    from pyro_gem import METHODS

    # model: (methods, inner steps, meta-batch, query images per class)
    if args.quick:
        plan = {"conv4": (args.methods or QUICK_METHODS, (1, 100), 1, 3)}
    else:
        methods = args.methods or METHODS
        steps = args.steps or STEPS
        full = {"mlp": (methods, steps, 25, 10), "conv4": (methods, steps, 2, 15)}
        plan = {k: full[k] for k in args.models}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{name}.json"
    # A full run updates cost.json entry by entry and keeps what it does not measure, so it can
    # be done in parts (e.g. ``--models conv4 --methods maml``) and partial results survive.
    results: dict = json.loads(path.read_text()) if path.is_file() and not args.quick else {}
    for model_name, (methods, steps_list, batch, query) in plan.items():
        for method in methods:
            for steps in steps_list:
                r = measure(
                    model_name,
                    method,
                    steps,
                    batch,
                    query,
                    args.mem_limit,
                    args.query_steps,
                    args.device,
                )
                key = f"{method}/query={args.query_steps}" if args.query_steps else method
                results.setdefault(model_name, {}).setdefault(key, {})[str(steps)] = r
                print(f"{model_name:>5} {method:>9} {steps:>3} steps: {json.dumps(r)}", flush=True)
                path.write_text(json.dumps(results, indent=2))  # partial results survive
    plot(results, args.out / f"{name}.png")
    summary = summarize(results)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
