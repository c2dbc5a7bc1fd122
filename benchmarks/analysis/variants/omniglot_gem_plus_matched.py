"""models/omniglot.py with one change: GEM-BML+ takes the sinusoid's redesigned inner loop.

One support and one sequential query step of whitened SGD at MAML's step in θ (``MAML_LR / σ₀²``
with σ₀ = 0.2, the model file's prior scale), the guide started at a tenth of the prior's scale,
its scales stepped at 0.02 (the sinusoid's step), m and σ meta-learnt at 1e-3, and MAML's
test-time steps. A pilot for issue 26 (docs/fewshot.md):
``python benchmarks/omniglot.py --model-file benchmarks/analysis/variants/omniglot_gem_plus_matched.py
--methods gem-bml+ --meta-iterations 300 --threads 1 --test-samples 10 --out <dir>``.
"""

from pathlib import Path

SIGMA0 = 0.2
# Run the repository's model file in this namespace, so that the change below is all that
# differs (same network, prior, likelihood, tasks and other methods' settings).
exec((Path(__file__).resolve().parents[3] / "models" / "omniglot.py").read_text())

config["methods"]["gem-bml+"] = {  # noqa: F821 (defined by the model file above)
    "update": "sequential",
    "prior_init_scale": SIGMA0,
    "inner_optim": "sgd",
    "inner_lr": MAML_LR / SIGMA0**2,  # noqa: F821
    # the guide's scales at the sinusoid's step: at 10 the entropy's gradient 1/ν throws them out
    "inner_scale_lr": 0.02,
    "inner_steps": 1,
    "query_steps": 1,
    "guide_init_scale": 0.1,
    "meta_lr": 1e-3,
    "meta_lr_scale": 1e-3,
    "test_steps": MAML_TEST_STEPS,  # noqa: F821
}
