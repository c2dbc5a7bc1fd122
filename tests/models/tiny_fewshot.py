"""A tiny few-shot image classifier for the tests: 8×8 one-channel images whose class is a
bright square at a position of its own (under noise), a small conv net, settings for the
episode's ways and shots."""

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_gem import GaussianPrior, settings
from pyro_gem.tasks.fewshot import FewShotClassification, ImageClasses

opts = settings(ways=3, shots=1, query=2)


def split(classes: range, per_class: int = 6) -> ImageClasses:
    gen = torch.Generator().manual_seed(classes.start)
    groups = []
    for c in classes:
        images = 40 * torch.rand(per_class, 1, 8, 8, generator=gen)
        r, s = divmod(c % 16, 4)
        images[:, 0, 2 * r : 2 * r + 2, 2 * s : 2 * s + 2] += 200
        groups.append(images.to(torch.uint8))
    return ImageClasses.from_groups(groups, [f"square{c}" for c in classes])


tasks = FewShotClassification(
    split(range(0, 8)), split(range(8, 12)), split(range(12, 16)), opts.ways, opts.shots, opts.query
)
net = nn.Sequential(
    nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(4 * 4 * 4, opts.ways),
)  # fmt: skip
prior = GaussianPrior(net, init_scale=0.01)


def model(images, labels=None):
    logits = pyro.deterministic("logits", prior.sample_net()(images))
    with pyro.plate("data", images.shape[-4], dim=-1):
        pyro.sample("labels", dist.Categorical(logits=logits), obs=labels)


config = {
    "meta_iterations": 3,
    "meta_batch": 4,
    "inner_optim": "adam",
    "inner_lr": 0.1,
    "inner_steps": 2,
    "test_tasks": 6,
    "test_samples": 4,
    "eval_steps": [0, 2],
}
