import pytest
import torch
from torch import nn

from pyro_gem.core.nn import FunctionalNet, infer_input_rank


def mlp():
    return nn.Sequential(
        nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1)
    )


def conv4(channels=8):
    layers, c_in = [], 1
    for _ in range(4):
        layers += [
            nn.Conv2d(c_in, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        c_in = channels
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels, 5))


def reference_forward(module, theta, x):
    """The module's own forward with its parameters set to ``theta`` (train mode)."""
    torch.nn.utils.vector_to_parameters(theta, module.parameters())
    module.train()
    return module(x)


@pytest.mark.parametrize("make, example", [(mlp, (1,)), (conv4, (1, 28, 28))], ids=["mlp", "conv4"])
def test_batched_forward_matches_module(make, example):
    torch.manual_seed(0)
    module = make()
    fnet = FunctionalNet(module)
    num_sets, n = 3, 6
    theta = fnet.flatten(module) + 0.1 * torch.randn(num_sets, fnet.num_weights)
    x = torch.randn(num_sets, n, *example)
    out = fnet(theta, x)
    for t in range(num_sets):
        expected = reference_forward(make(), theta[t], x[t])
        torch.testing.assert_close(out[t], expected, rtol=1e-4, atol=1e-5)


def test_weights_broadcast_over_inputs_and_plate_slots():
    module = mlp()
    fnet = FunctionalNet(module)
    theta = fnet.flatten(module) + 0.1 * torch.randn(4, 1, fnet.num_weights)  # (T, slot, D)
    x = torch.randn(4, 7, 1)
    out = fnet(theta, x, weight_batch=1)
    assert out.shape == (4, 7, 1)
    torch.testing.assert_close(out[2], reference_forward(mlp(), theta[2, 0], x[2]))
    shared = fnet(theta[0, 0], x)  # one weight set for every task
    torch.testing.assert_close(shared[3], reference_forward(mlp(), theta[0, 0], x[3]))


def test_input_rank_and_errors():
    assert infer_input_rank(mlp()) == 1
    assert infer_input_rank(conv4()) == 3
    with pytest.raises(ValueError, match="input rank"):
        infer_input_rank(nn.Sequential(nn.LayerNorm(3), nn.Linear(3, 1)))
    fnet = FunctionalNet(mlp())
    with pytest.raises(ValueError, match="entries"):
        fnet(torch.zeros(3), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="no data dimension"):
        fnet(torch.zeros(fnet.num_weights), torch.zeros(1))
    with pytest.raises(ValueError, match="vary inside the data plate"):
        fnet(torch.zeros(2, 3, fnet.num_weights), torch.zeros(2, 3, 1), weight_batch=1)
    with pytest.raises(ValueError, match="no parameters"):
        FunctionalNet(nn.Sequential(nn.ReLU()), input_rank=1)
