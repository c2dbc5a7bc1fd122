"""The delta limits of Gradient-EM: with a delta guide and the prior's scale held fixed, GEM-BML+
is first-order MAML and GEM-BML is Reptile (the paper's Table 1), meta-gradient for
meta-gradient on a batch of sinusoid tasks.

With whitened SGD of step ``lr`` under a prior of scale σ, one step moves θ by ``lr σ²`` along the
log-likelihood's gradient (the prior's own gradient is zero where the step starts): the point
methods' step α is ``lr σ²``.
"""

import pyro
import pytest
import torch
from sinusoid_fixtures import small_sinusoid

from pyro_gem import GEMBML, InnerVI, Sinusoid
from pyro_gem.methods.point_estimate import MAML, Reptile

ALPHA = 1e-3  # the point methods' step on the log-likelihood


def _batch():
    return Sinusoid().sample(8, torch.Generator().manual_seed(3))


def _gem(model, prior, plus: bool, steps: int, query_steps: int, update: str) -> GEMBML:
    sigma = prior.scale[0].item()
    inner = InnerVI(guide="delta", optim=pyro.optim.SGD({"lr": ALPHA / sigma**2}), steps=steps)
    return GEMBML(model, prior, plus=plus, inner=inner, query_steps=query_steps, update=update)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return (a @ b / (a.norm() * b.norm())).item()


@pytest.mark.parametrize("sigma", [0.05, 1.0])
def test_gem_bml_plus_delta_limit_is_first_order_maml(sigma):
    """One support and one sequential query step: ĝ_m = (θ_val − θ_tr)/σ² = lr ∇ log P(D_val |
    θ_tr), first-order MAML's descent direction after one step of α = lr σ²."""
    model, prior = small_sinusoid(init_scale=sigma)
    batch = _batch()
    gem = _gem(model, prior, plus=True, steps=1, query_steps=1, update="sequential")
    g_loc, g_log_scale = gem.inner_result(batch).mean()
    fomaml = MAML(model, prior, inner_lr=ALPHA, inner_steps=1, first_order=True)
    (grad,) = fomaml.inner_result(batch).mean()
    assert _cosine(g_loc, -grad) == pytest.approx(1.0, abs=1e-9)
    # the same vector, not only its direction: ĝ_m σ² = α ∇ log P(D_val | θ_tr)
    torch.testing.assert_close(g_loc * sigma**2, -ALPHA * grad, rtol=2e-3, atol=1e-6)
    assert torch.equal(g_log_scale, torch.zeros_like(g_log_scale))  # a delta keeps σ fixed


@pytest.mark.parametrize("steps", [1, 3])
def test_gem_bml_delta_limit_is_reptile(steps):
    """No support step, K joint steps under a wide prior: ĝ_m = (θ_K − m)/σ² with θ_K the
    weights after K SGD steps on D_tr ∪ D_val, Reptile's direction. The prior's pull on each
    step, lr (θ − m) with lr = α/σ², vanishes as σ grows (σ = 30: 1e-6 of the distance)."""
    model, prior = small_sinusoid(init_scale=30.0)
    batch = _batch()
    gem = _gem(model, prior, plus=False, steps=0, query_steps=steps, update="joint")
    g_loc, _ = gem.inner_result(batch).mean()
    reptile = Reptile(model, prior, inner_lr=ALPHA, inner_steps=steps)
    (grad,) = reptile.inner_result(batch).mean()  # m − θ_K: the descent direction
    assert _cosine(g_loc, -grad) == pytest.approx(1.0, abs=1e-9)
