"""models/sinusoid.py with one change: GEM-BML+'s inner loop is whitened SGD 0.05, not Adam 0.2.

The model file of the runs in this directory:
``python benchmarks/sinusoid.py --model-file benchmarks/results/gem_plus_inner_sgd_0.05/sinusoid.py
--out benchmarks/results/gem_plus_inner_sgd_0.05 --methods gem-bml+ --threads 1``. Since commit
9e446e5 ``models/sinusoid.py`` itself sets this inner loop, so the change below restates it; the
file stays as the record of what the runs were started with.
"""

from pathlib import Path

# Run the repository's model file in this namespace, so that the one change below is all that
# differs (same network, prior, likelihood, tasks and other methods' settings).
exec((Path(__file__).resolve().parents[3] / "models" / "sinusoid.py").read_text())

config["methods"]["gem-bml+"] = {  # noqa: F821 (defined by the model file above)
    "meta_lr_milestones": GEM_META_LR_MILESTONES,  # noqa: F821
    "inner_optim": "sgd",
    "inner_lr": 0.05,
}
