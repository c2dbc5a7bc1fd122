"""miniImageNet N-way K-shot classification (the paper's Table 3) as a pyro_gem model file.

Settings (``pyro-gem train models/miniimagenet.py --set data=PATH shots=5``):

- ``data``: a miniImageNet copy, Ravi & Larochelle's CSV split files beside ``images/`` or the
  ``mini-imagenet-cache-{train,val,test}.pkl`` pickles (pyro_gem.tasks.miniimagenet); no copy
  is on these machines, so it must be given;
- ``ways``, ``shots``, ``query``: the episode (MAML's 15 query images per class);
- ``bins``: equal-width confidence bins of the calibration errors (ECE, MCE).

Every method's settings and why: docs/fewshot.md.
"""

import pyro
import pyro.distributions as dist
from torch import nn

from pyro_gem import GaussianPrior, settings
from pyro_gem.tasks.miniimagenet import miniimagenet

opts = settings(ways=5, shots=1, query=15, data=None, bins=15)
if opts.data is None:
    raise FileNotFoundError(
        "models/miniimagenet.py needs the data folder: --set data=PATH (the CSV split files "
        "beside images/, or the mini-imagenet-cache-*.pkl pickles)"
    )


def conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    # MAML's block; BatchNorm normalises by each task's own batch (support or query set).
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]


# Conv4, 32 filters (MAML's, against overfitting): 84×84 → 42 → 21 → 10 → 5, then a linear head.
net = nn.Sequential(
    *conv_block(3, 32), *conv_block(32, 32), *conv_block(32, 32), *conv_block(32, 32),
    nn.Flatten(), nn.Linear(32 * 5 * 5, opts.ways),
)  # fmt: skip
# As models/omniglot.py: a wide prior, the inner VI started narrow (docs/fewshot.md).
prior = GaussianPrior(net, init_scale=0.2)


def model(images, labels=None):
    """One episode: labels_i ~ Categorical(softmax(f_θ(images_i))), θ ~ prior.
    ``images``: (n, 3, 84, 84), standardised; ``labels``: (n,) in 0..ways-1."""
    logits = pyro.deterministic("logits", prior.sample_net()(images))
    with pyro.plate("data", images.shape[-4], dim=-1):
        pyro.sample("labels", dist.Categorical(logits=logits), obs=labels)


tasks = miniimagenet(opts.data, opts.ways, opts.shots, opts.query, calibration_bins=opts.bins)

# MAML's α = 0.01 on the support cross-entropy divided by K, here on the summed log-likelihood.
MAML_LR = 0.01 / opts.shots
MAML = {"inner_optim": "sgd", "inner_lr": MAML_LR, "inner_steps": 5, "test_steps": 10}
# The Omniglot pilots' settings (models/omniglot.py says why), not piloted on miniImageNet (no copy
# on these machines): GEM's joint update at meta rate 3e-4; the unrolled VI methods from a narrow
# start with whitened SGD 0.1.
GEM = {"update": "joint", "meta_lr": 3e-4}
UNROLLED_VI = {"inner_optim": "sgd", "inner_lr": 0.1, "inner_steps": 5, "guide_init_scale": 0.005}

config = {
    "method": "gem-bml+",
    "meta_iterations": 2000,
    "meta_batch": 4 if opts.shots == 1 else 2,  # MAML's
    "meta_lr": 1e-3,
    # GEM-BML(+): Adam, as the paper does here; the Omniglot pilots' settings, not yet piloted on
    # miniImageNet (no copy on these machines).
    "inner_optim": "adam",
    "inner_lr": 0.005,
    "guide_init_scale": 0.005,
    "inner_steps": 5,
    "test_tasks": 600,
    "test_samples": 20,  # posterior draws per test episode for the predictive probabilities
    "eval_steps": [0, 1, 5, 10],
    "methods": {
        "gem-bml+": GEM,
        "gem-bml": GEM,
        "maml": MAML,
        "fomaml": MAML,
        "reptile": {**MAML, "test_steps": None},
        "pretrain": MAML,
        "imaml": {"inner_optim": "newton", "inner_steps": 5, "cg_steps": 5, "reg": 1.0},
        "abml": UNROLLED_VI,
        "abml+": UNROLLED_VI,
        "kl-chaser": UNROLLED_VI,
        "bmaml": {**MAML, "num_particles": 5, "test_steps": None},
    },
}
