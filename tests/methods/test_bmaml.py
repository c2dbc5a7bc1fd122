import math

import pytest
import torch
from sinusoid_fixtures import small_sinusoid

from pyro_gem import Sinusoid, TaskBatch, meta_test
from pyro_gem.core.posterior import ParticlePosterior
from pyro_gem.methods.bmaml import BMAML, svgd_adapt
from pyro_gem.methods.svgd import svgd_direction


def test_chaser_loss_backpropagates_through_the_chaser_only():
    model, prior = small_sinusoid(hidden=4)
    learner = BMAML(model, prior, num_particles=3, inner_lr=1e-3, inner_steps=2, leader_steps=1)
    batch = Sinusoid().sample(2, torch.Generator().manual_seed(0))
    losses, _ = learner.task_losses(batch)
    losses.sum().backward()
    ours = learner.particles.grad.clone()

    # By hand: two SVGD steps on D_tr from the particles, one more on D_tr ∪ D_val, no graph.
    learner.particles.grad = None
    sup, joint = learner.log_likelihood(batch.support), learner.log_likelihood(batch.joint())
    x = learner.particles.expand(2, -1, -1)
    for _ in range(2):
        (g,) = torch.autograd.grad(sup(x.transpose(0, 1)).sum(), x, create_graph=True)
        x = x + 1e-3 * svgd_direction(x, g)
    y = x.detach().requires_grad_()
    (g,) = torch.autograd.grad(joint(y.transpose(0, 1)).sum(), y)
    leader = (y + 1e-3 * svgd_direction(y, g)).detach()
    (x - leader).square().sum().backward()
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, learner.particles.grad, rtol=1e-5, atol=1e-8)


def test_step_adapt_predict_and_checkpoint():
    model, prior = small_sinusoid()
    learner = BMAML(model, prior, num_particles=4, inner_lr=1e-3, inner_steps=2)
    before = learner.particles.detach().clone()
    stats = learner.step(Sinusoid().sample(5, torch.Generator().manual_seed(0)))
    assert stats["nan_tasks"] == [] and math.isfinite(stats["meta_objective"])
    assert (learner.particles - before).abs().max() > 0
    test = Sinusoid().test_tasks(6)
    post = learner.adapt(*test.support, record=(0, 2))
    assert isinstance(post, ParticlePosterior) and set(post.history) == {0, 2}
    torch.testing.assert_close(post.history[0].particles[0], learner.particles.detach())
    draws = post.predict(test.query[0], num_samples=8)
    assert draws["y"].shape == (8, 6, test.query[0].shape[1])
    # Draws cycle through the 4 particles: draw 0 and draw 4 use the same weights.
    torch.testing.assert_close(draws["mean"][0], draws["mean"][4])
    scores = meta_test(learner, test, (0, 2), metrics=Sinusoid().metrics, num_samples=8)
    assert scores["diverged"] == 0 and 0 <= scores["coverage90"]["2"][0] <= 1
    state = learner.state_dict()
    other = BMAML(*small_sinusoid(), num_particles=4)
    other.load_state_dict(state)
    torch.testing.assert_close(other.particles, learner.particles)


def test_bad_options_and_diverged_tasks():
    model, prior = small_sinusoid()
    with pytest.raises(ValueError, match="num_particles"):
        BMAML(model, prior, num_particles=0)
    learner = BMAML(model, prior, num_particles=2, inner_lr=1e-3, inner_steps=1)
    batch = Sinusoid().sample(3, torch.Generator().manual_seed(0))
    x, y = batch.support
    y = y.clone()
    y[0] = 3e38
    with pytest.warns(UserWarning, match=r"diverged on tasks \[0\]"):
        stats = learner.step(TaskBatch((x, y), batch.query))
    assert stats["nan_tasks"] == [0] and torch.isfinite(learner.particles).all()


def test_svgd_adapt_records_snapshots():
    model, prior = small_sinusoid()
    learner = BMAML(model, prior, num_particles=2)
    batch = Sinusoid().sample(2, torch.Generator().manual_seed(0))
    start = learner.particles.detach().expand(2, -1, -1)
    out, snaps = svgd_adapt(learner.log_likelihood(batch.support), start, 3, 1e-3, False, (0, 3))
    torch.testing.assert_close(snaps[3], out)
    torch.testing.assert_close(snaps[0], start)
