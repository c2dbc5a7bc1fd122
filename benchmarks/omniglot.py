"""Omniglot few-shot classification (the paper's Table 2): every method on the same episodes.

Meta-trains each method (``--methods``; the paper's Table 2 rows plus ABML and GEM-BML by
default) in each setting (``--settings``: 5w1s, 5w5s, 20w1s, 20w5s) with the network and
per-method settings of ``models/omniglot.py``: the same seeds, meta-training episodes and test
episodes for every method. Then meta-tests on ``--test-episodes`` fixed test episodes after the
method's test-time inner steps (``test_steps`` in the model file's config; where it lists
several, e.g. MAML's training step and its 3 at test, the one best on validation episodes):
accuracy with a 95% CI over episodes, the NLL of the posterior predictive, ECE and MCE
(``--bins`` equal-width bins, pooled over all query predictions). The Bayesian methods' class
probabilities are the mean over ``test_samples`` posterior draws (recorded per method).

By default the data is the two minimal Omniglot subsets in ``../shared/data/omniglot`` (whole
alphabets held out) at the budget this 2-core CPU runs: ``--meta-iterations`` (500) of
``--meta-batch`` (8) episodes. ``--data PATH --full`` runs a user's full copy at MAML's budget
(60,000 iterations, meta-batch 32 at 5-way / 16 at 20-way).

Each (setting, method) trains in its own checkpointed run directory
``<out>/omniglot_runs/<setting>/<method>/``: run the same command again to continue where it
stopped. Writes ``<out>/omniglot.json`` (``{"settings", "results": {setting: {method:
{"accuracy": [mean, ci95], "nll", "ece", "mce", ...}}}}``; entries of other methods are kept)
and ``<out>/omniglot_reliability_<setting>.png``. The last line printed is a JSON summary.

    python benchmarks/omniglot.py                           # 5w1s, every method, CPU budget
    python benchmarks/omniglot.py --settings 5w1s 20w1s --methods maml gem-bml+
    python benchmarks/omniglot.py --data ~/omniglot --full
    python benchmarks/omniglot.py --quick                   # smoke run (the tests)
    python benchmarks/omniglot.py --table                   # omniglot.json as a Markdown table
"""

from __future__ import annotations

from fewshot import Benchmark, main  # this script's directory

OMNIGLOT = Benchmark(
    name="omniglot",
    title="Omniglot",
    description=__doc__.split("\n")[0],
    settings={"5w1s": (5, 1), "5w5s": (5, 5), "20w1s": (20, 1), "20w5s": (20, 5)},
    # The paper's Table 2 rows, then ABML and GEM-BML.
    methods=("maml", "fomaml", "reptile", "imaml", "gem-bml+", "abml", "gem-bml"),
    # The full-data accuracies (%): GEM-BML+ from Zou & Lu's Table 2, the others from their own
    # papers as that table quotes them.
    paper={
        "maml": (98.7, 99.9, 95.8, 98.9),
        "fomaml": (98.3, 99.2, 89.4, 97.9),
        "reptile": (97.68, 99.48, 89.43, 97.12),
        "imaml": (99.50, 99.74, 96.18, 99.14),
        "gem-bml+": (99.23, 99.64, 96.24, 98.94),
    },
    full_iterations=60000,  # MAML's
    default_data="../shared/data/omniglot (the minimal subsets)",
    data_help="an Omniglot folder (default: the minimal subsets in ../shared/data/omniglot)",
)

if __name__ == "__main__":
    main(OMNIGLOT)
