"""One network's parameters in one flat tensor, stepped like torch.optim steps them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import evohpo.training.flat
from evohpo.evolution.genome import Genome, LayerGene
from evohpo.training.config import TrainConfig
from evohpo.training.flat import FLAT_STEP_MAX_PARAMS, FlatParameters, solo_optimizer
from evohpo.training.loop import train_classifier
from evohpo.training.nn import OPTIMIZERS, build_model, build_optimizer
from evohpo.training.stack_optimizer import StackOptimizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def genome(units: tuple[int, ...], optimizer: str = "adam", wd: float = 0.0) -> Genome:
    layers = tuple(LayerGene(u, "tanh", 0.0) for u in units)
    return Genome(layers, optimizer, 3e-2, wd, 16)


def train_steps(model: nn.Module, optimizer, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_the_flat_step_matches_torch_optim(name, wd):
    g = genome((12, 7), name, wd)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    flat_model, torch_model = (build_model(g, 5, 3, seed=4) for _ in range(2))
    flat = FlatParameters(flat_model)

    train_steps(flat_model, flat.optimizer(g), x, y, 6)
    train_steps(torch_model, build_optimizer(g, torch_model.parameters()), x, y, 6)

    expected = torch_model.state_dict()
    for key, value in flat_model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)
        assert not torch.equal(value, build_model(g, 5, 3, seed=4).state_dict()[key])


def test_parameters_are_views_until_released():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flat = FlatParameters(model)

    assert flat.params.shape == (1, 3 * 4 + 4 + 4 * 2 + 2)
    assert torch.equal(flat.params[0, :12], before["0.weight"].reshape(-1))
    for parameter in model.parameters():
        assert parameter.untyped_storage().data_ptr() == flat.params.untyped_storage().data_ptr()
        assert parameter.grad is not None
        assert not parameter.grad.any()
    flat.params.add_(1.0)
    assert torch.equal(model[0].bias, before["0.bias"] + 1)

    flat.release()
    flat.params.zero_()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key] + 1)
    for parameter in model.parameters():
        assert parameter.grad is None
        assert parameter.untyped_storage().data_ptr() != flat.params.untyped_storage().data_ptr()


def test_flat_parameters_refuse_models_they_cannot_hold():
    with pytest.raises(ValueError, match="trainable parameters"):
        FlatParameters(nn.ReLU())
    with pytest.raises(ValueError, match="one dtype"):
        FlatParameters(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).double()))


def test_large_networks_keep_torch_optim():
    small, large = genome((32,)), genome((256, 256))
    flat, optimizer = solo_optimizer(build_model(small, 64, 10, seed=0), small)
    assert isinstance(flat, FlatParameters)
    assert isinstance(optimizer, StackOptimizer)
    model = build_model(large, 64, 10, seed=0)
    assert sum(p.numel() for p in model.parameters()) > FLAT_STEP_MAX_PARAMS
    flat, optimizer = solo_optimizer(model, large)
    assert flat is None
    assert isinstance(optimizer, torch.optim.Adam)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_training_with_the_flat_step_follows_torch_optim(name, monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)
    data = (X[:150], y[:150], X[150:], y[150:])
    g = Genome((LayerGene(16, "relu", 0.0),), name, 1e-2, 1e-3, 32)
    config = TrainConfig(device="cpu", max_epochs=6, patience=None, seed=3)

    flat = train_classifier(g, *data, n_classes=3, config=config)
    monkeypatch.setattr(evohpo.training.flat, "FLAT_STEP_MAX_PARAMS", 0)
    reference = train_classifier(g, *data, n_classes=3, config=config)

    np.testing.assert_allclose(
        [r["val_loss"] for r in flat.history],
        [r["val_loss"] for r in reference.history],
        rtol=1e-4,
    )
    for parameter in flat.model.parameters():  # an ordinary model: own storage, no gradient
        assert parameter.grad is None
        assert parameter.untyped_storage().nbytes() == parameter.numel() * 4


def test_training_a_small_network_does_not_load_torch_compile():
    # torch.optim imports torch._dynamo (and Triton where torch ships it) on first use:
    # one to several seconds of every fresh process.
    code = (
        "import sys, numpy as np\n"
        "from evohpo.evolution.genome import Genome, LayerGene\n"
        "from evohpo.training.config import TrainConfig\n"
        "from evohpo.training.loop import train_classifier\n"
        "X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)\n"
        "y = (X[:, 0] > 0).astype(np.int64)\n"
        "g = Genome((LayerGene(8, 'relu', 0.2),), 'adamw', 1e-2, 1e-4, 16)\n"
        "train_classifier(g, X[:40], y[:40], X[40:], y[40:], n_classes=2,\n"
        "                 config=TrainConfig(device='cpu', max_epochs=2))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
