import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer.reparam import LocScaleReparam
from torch.distributions import kl_divergence

from pyro_gem.core.whiten import DECENTERED, StandardNormal, WhitenReparam


def test_kl_to_standard_normal_is_the_general_normal_kl():
    torch.set_default_dtype(torch.float64)
    q = dist.Normal(torch.randn(3, 5), torch.rand(3, 5) + 0.1)
    short = kl_divergence(q, StandardNormal(torch.Size([3, 5]), q.loc))
    general = kl_divergence(q, dist.Normal(torch.zeros(3, 5), torch.ones(3, 5)))
    assert torch.allclose(short, general, atol=1e-12)
    # Through .to_event, as the inner VI uses it.
    batched = kl_divergence(q.to_event(1), StandardNormal(torch.Size([3, 5]), q.loc).to_event(1))
    assert torch.allclose(batched, general.sum(-1), atol=1e-12)


def test_standard_normal_expands_to_a_standard_normal():
    p = StandardNormal(torch.Size([5]), torch.zeros(())).expand([2, 5])
    assert isinstance(p, StandardNormal) and p.batch_shape == (2, 5)
    assert torch.equal(p.loc, torch.zeros(2, 5)) and torch.equal(p.scale, torch.ones(2, 5))


def _model(loc, scale):
    with pyro.plate("tasks", loc.shape[0], dim=-1):
        theta = pyro.sample("theta", dist.Normal(loc, scale).to_event(1))
        pyro.sample("y", dist.Normal(theta.sum(-1), 1.0), obs=torch.zeros(loc.shape[0]))


@pytest.mark.parametrize("observed", [False, True])
def test_whiten_reparam_matches_pyro_loc_scale_reparam(observed):
    """Same decentred site, same value at the original site, same joint density as Pyro's
    LocScaleReparam(centered=0), latent or observed."""
    torch.set_default_dtype(torch.float64)
    loc, scale = torch.randn(4, 6), torch.rand(4, 6) + 0.05
    u = torch.randn(4, 6)
    theta = loc + scale * torch.randn(4, 6)
    traces = []
    for reparam in (WhitenReparam(), LocScaleReparam(0.0)):
        if observed:  # the reparameteriser sees the observed value
            model = poutine.reparam(poutine.condition(_model, {"theta": theta}), {"theta": reparam})
        else:  # the decentred draw is given
            model = poutine.reparam(_model, {"theta": reparam})
            model = poutine.condition(model, {"theta" + DECENTERED: u})
        tr = poutine.trace(model).get_trace(loc, scale)
        tr.compute_log_prob()
        traces.append(tr)
    ours, pyros = traces
    for name in ("theta", "theta" + DECENTERED, "y"):
        assert torch.allclose(ours.nodes[name]["value"], pyros.nodes[name]["value"], atol=1e-12)
    assert torch.allclose(ours.log_prob_sum(), pyros.log_prob_sum(), atol=1e-10)


def test_whiten_reparam_refuses_a_non_normal_site():
    def model():
        pyro.sample("theta", dist.Laplace(torch.zeros(3), 1.0).to_event(1))

    with pytest.raises(ValueError, match="'theta'.*Normal prior.*Laplace"):
        poutine.reparam(model, config={"theta": WhitenReparam()})()
