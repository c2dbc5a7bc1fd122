"""Task-aware inner optimisers: TaskClippedSGD against its closed form."""

import pyro
import pyro.optim
import pytest
import torch
from sinusoid_fixtures import small_sinusoid

from pyro_gem import InnerVI, Sinusoid
from pyro_gem.core.optim import TaskClippedSGD


def one_step(p0, grad, **kw):
    p = torch.nn.Parameter(p0.clone())
    p.grad = grad.clone()
    TaskClippedSGD([p], **kw).step()
    return p.detach()


def test_a_short_step_is_sgds_and_a_long_one_is_cut_to_max_norm_along_the_gradient():
    p0 = torch.zeros(3, 2, 2)
    grad = torch.stack([torch.full((2, 2), 0.1), torch.full((2, 2), 10.0), -torch.eye(2) * 3])
    p = one_step(p0, grad, lr=0.5, max_norm=1.0)
    # Task 0: ‖0.5 g‖ = 0.1 ≤ 1, the SGD step. Task 1: ‖0.5 g‖ = 10, cut to length 1 along -g.
    # Task 2: ‖0.5 g‖ = 1.5 √2, cut to 1.
    assert torch.allclose(p[0], -0.05 * torch.ones(2, 2))
    assert torch.allclose(p[1], -torch.full((2, 2), 0.5))
    assert torch.allclose(p[2].norm(), torch.tensor(1.0))
    assert torch.allclose(p[2], torch.eye(2) / 2**0.5)


def test_tasks_are_independent_and_a_nan_stays_in_its_task():
    p0 = torch.randn(4, 5)
    grad = torch.randn(4, 5)
    clean = one_step(p0, grad, lr=0.1, max_norm=0.2)
    grad[2, 1] = float("nan")
    dirty = one_step(p0, grad, lr=0.1, max_norm=0.2)
    assert dirty[2].isnan().any()  # the task is reported as diverged
    keep = torch.tensor([0, 1, 3])
    assert torch.equal(dirty[keep], clean[keep])
    assert (clean - p0).norm(dim=1).max() <= 0.2 + 1e-6


def test_bad_arguments_are_named():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="lr must be > 0"):
        TaskClippedSGD(p, lr=0.0)
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        TaskClippedSGD(p, lr=0.1, max_norm=-1.0)


def test_inner_vi_with_clipped_sgd_is_plain_sgd_where_no_step_is_long():
    model, prior = small_sinusoid()
    tasks = Sinusoid().sample(3, torch.Generator().manual_seed(0))
    m, s = prior.loc.detach(), prior.scale.detach()
    fits = []
    for optim in (
        pyro.optim.PyroOptim(TaskClippedSGD, {"lr": 1e-3, "max_norm": 1e6}),
        pyro.optim.SGD({"lr": 1e-3}),
    ):
        pyro.set_rng_seed(0)
        fits.append(InnerVI(optim=optim, steps=3).fit(model, prior.name, tasks.support, (m, s)))
    assert torch.allclose(fits[0].loc, fits[1].loc) and torch.allclose(fits[0].scale, fits[1].scale)
