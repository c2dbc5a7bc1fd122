"""miniImageNet 5-way 1-shot classification (the paper's Table 3): accuracy, ECE and MCE.

Meta-trains each method (``--methods``; Table 3's rows by default) with the network and
per-method settings of ``models/miniimagenet.py`` on a user's miniImageNet copy (``--data PATH``:
Ravi & Larochelle's CSV split files beside ``images/``, or the ``mini-imagenet-cache-*.pkl``
pickles), then meta-tests on ``--test-episodes`` fixed test episodes as ``omniglot.py`` does (see
``fewshot.py``). No copy is on these machines: ``--quick`` runs on a small synthetic copy it
generates (pyro_gem.tasks.miniimagenet.write_fixture), to show the script works end to end.
Writes ``<out>/miniimagenet.json`` and ``<out>/miniimagenet_reliability_5w1s.png``; the last line
printed is a JSON summary.

    python benchmarks/miniimagenet.py --data ~/miniimagenet            # CPU budget
    python benchmarks/miniimagenet.py --data ~/miniimagenet --full     # MAML's 60,000 iterations
    python benchmarks/miniimagenet.py --quick                          # smoke run (the tests)
"""

from __future__ import annotations

from fewshot import Benchmark, main  # this script's directory

from pyro_gem.tasks.miniimagenet import write_fixture

MINIIMAGENET = Benchmark(
    name="miniimagenet",
    title="miniImageNet",
    description=__doc__.split("\n")[0],
    settings={"5w1s": (5, 1)},
    methods=("maml", "fomaml", "reptile", "imaml", "abml", "gem-bml+"),  # Table 3's rows
    # Accuracies (%) as Zou & Lu's Table 3 quotes them (ECE/MCE: MAML 0.0471/0.1104, ABML
    # 0.0124/0.0257, GEM-BML+ 0.0102/0.0197).
    paper={
        "maml": (48.70,),
        "fomaml": (48.07,),
        "reptile": (49.97,),
        "imaml": (49.30,),
        "abml": (45.0,),
        "gem-bml+": (50.03,),
    },
    full_iterations=60000,  # MAML's
    default_data="a user's copy (--data)",
    data_help="a miniImageNet copy: CSV split files beside images/, or the pickles",
    quick_data=lambda folder: write_fixture(folder, "pickle", classes=(8, 5, 5), per_class=20),
)

if __name__ == "__main__":
    main(MINIIMAGENET)
