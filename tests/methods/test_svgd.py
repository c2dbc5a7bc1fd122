import math

import torch

from pyro_gem.methods.svgd import rbf_kernel, svgd_direction


def test_one_svgd_update_on_two_particles_by_hand():
    """Target N(0, I) in 2-D: ∇ log p(x) = −x. Two particles, written out term by term."""
    x1, x2 = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 1.0])
    particles = torch.stack([x1, x2])[None]  # (T=1, M=2, D=2)
    d2 = ((x1 - x2) ** 2).sum()  # 2.25 + 4 = 6.25
    # Median of the 2×2 squared distances {0, 0, d², d²} is d²/2; h = med / log(M + 1).
    h = (d2 / 2) / math.log(3)
    k12 = torch.exp(-d2 / h)  # k(x1, x1) = k(x2, x2) = 1
    phi1 = 0.5 * ((1 * -x1 + k12 * -x2) + (2 / h) * k12 * (x1 - x2))
    phi2 = 0.5 * ((k12 * -x1 + 1 * -x2) + (2 / h) * k12 * (x2 - x1))
    phi = svgd_direction(particles, -particles)
    torch.testing.assert_close(phi[0], torch.stack([phi1, phi2]))
    kernel, bandwidth = rbf_kernel(particles)
    torch.testing.assert_close(bandwidth.squeeze(), h)
    torch.testing.assert_close(kernel[0], torch.tensor([[1.0, k12], [k12, 1.0]]))


def test_repulsion_is_the_kernel_gradient():
    """Σ_j ∇_{x_j} k(x_j, x_i), by autograd with the bandwidth held fixed: the kernel depends
    on x_j − x_i only, so that sum is −∇_{x_i} Σ_j k(x_j, x_i)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64)
    phi = svgd_direction(x, torch.zeros_like(x))  # no attraction: repulsion alone
    _, h = rbf_kernel(x)
    y = x.clone().requires_grad_()
    k = torch.exp(-(x.unsqueeze(-2) - y.unsqueeze(-3)).square().sum(-1) / h)  # [j, i]
    (grad,) = torch.autograd.grad(k.sum(), y)
    torch.testing.assert_close(phi, -grad / x.shape[-2])


def test_svgd_moves_particles_towards_the_target_and_apart():
    x = torch.tensor([[[3.0], [3.1]]])
    for _ in range(200):
        x = x + 0.1 * svgd_direction(x, -x)
    assert x.mean().abs() < 0.2 and (x[0, 0] - x[0, 1]).abs() > 0.5
