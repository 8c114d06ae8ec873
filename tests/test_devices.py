"""The stacked trainer, the flat step and a batched search on every device this machine has.

Each test runs on the CPU and, where torch sees one, on a CUDA device: the same
checks, so that the CUDA runs check what the CPU runs are known to pass.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import make_classification

from evohpo import EvoSearchClassifier, SearchSpace
from evohpo.evolution.genome import Genome, LayerGene
from evohpo.training.config import TrainConfig, TrainResult
from evohpo.training.flat import FlatParameters
from evohpo.training.loop import train_classifier
from evohpo.training.nn import OPTIMIZERS, build_model, build_optimizer
from evohpo.training.population import train_population
from evohpo.training.stack_model import DenseStack
from evohpo.training.stack_optimizer import RowOptimizer, StackOptimizer
from evohpo.training.task import get_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


def genome(units: tuple[int, ...], activation: str = "relu", optimizer: str = "adam", **kw):
    layers = tuple(LayerGene(u, activation, kw.get("dropout", 0.0)) for u in units)
    return Genome(layers, optimizer, kw.get("lr", 1e-2), kw.get("wd", 0.0), kw.get("bs", 16))


def blobs(n: int = 200, seed: int = 0) -> tuple[np.ndarray, ...]:
    X, y = make_classification(
        n_samples=n, n_features=6, n_informative=4, n_classes=3, random_state=seed
    )
    X = X.astype(np.float32)
    cut = int(n * 0.75)
    return X[:cut], y[:cut], X[cut:], y[cut:]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", [StackOptimizer, RowOptimizer])
def test_stacked_steps_match_torch_optim_on(device, kind):
    dev = torch.device(device)
    torch.manual_seed(0)
    x = torch.randn(20, 5, device=dev)
    y = torch.randint(0, 3, (20,), device=dev)
    members = [genome((8,), "tanh", name, lr=3e-2, wd=1e-2) for name in OPTIMIZERS]
    stack = DenseStack(members, 5, 3, [7] * len(members), dev)
    optimizer = kind(
        stack.params,
        stack.grads,
        [m.optimizer for m in members],
        [m.learning_rate for m in members],
        [m.weight_decay for m in members],
    )
    for _ in range(4):
        logits = stack.forward(x)
        losses = torch.stack([F.cross_entropy(logits[i], y) for i in range(len(members))])
        optimizer.zero_grad()
        stack.backward(losses.sum())
        optimizer.step()
    for row, member in enumerate(members):
        model = build_model(member, 5, 3, seed=7).to(dev)
        solo = build_optimizer(member, model.parameters())
        for _ in range(4):
            solo.zero_grad()
            F.cross_entropy(model(x), y).backward()
            solo.step()
        got = stack.member_model(member, stack.params[row]).state_dict()
        for key, value in model.state_dict().items():
            assert got[key].device.type == dev.type
            torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_the_flat_step_matches_torch_optim_on(device):
    dev = torch.device(device)
    g = genome((12, 7), "tanh", "adamw", lr=3e-2, wd=1e-2)
    x = torch.randn(16, 5, device=dev)
    y = torch.randint(0, 3, (16,), device=dev)
    flat_model, torch_model = (build_model(g, 5, 3, seed=4).to(dev) for _ in range(2))
    flat = FlatParameters(flat_model)
    assert flat.params.device.type == dev.type
    for model, optimizer in (
        (flat_model, flat.optimizer(g)),
        (torch_model, build_optimizer(g, torch_model.parameters())),
    ):
        for _ in range(5):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    flat.release()
    expected = torch_model.state_dict()
    for key, value in flat_model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_a_population_trains_on(device):
    data = blobs()
    members = [
        genome((16,), "relu", dropout=0.2),
        genome((8,), "gelu", "sgd", lr=0.05),
        genome((12, 6), "tanh", "rmsprop", lr=1e-3),  # another depth: trains alone
    ]
    configs = [
        TrainConfig(device=device, max_epochs=4, patience=None, seed=seed) for seed in range(3)
    ]
    results = train_population(members, *data, n_classes=3, configs=configs)
    for result in results:
        assert isinstance(result, TrainResult)
        assert result.epochs_run == 4
        assert next(result.model.parameters()).device.type == device
        assert 0.0 <= result.best_score <= 1.0
    # The stack of the first two members left each exactly as wide as its genome.
    assert results[1].model.state_dict()["hidden0.weight"].shape == (8, 6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("task_name", ["classification", "regression"])
def test_the_hand_written_training_pass_computes_autograds_gradients_on(device, task_name):
    dev = torch.device(device)
    task = get_task(task_name)
    members = [genome((12, 8), a, dropout=0.2) for a in ("gelu", "relu", "relu", "tanh")]
    members.append(
        Genome(tuple(LayerGene(u, "elu", 0.0, residual=True) for u in (6, 9)), "sgd", 0.1, 0.0, 16)
    )
    n_outputs = 3 if task_name == "classification" else 2
    stack = DenseStack(members, 6, n_outputs, list(range(len(members))), dev)
    draws = torch.Generator().manual_seed(0)
    x = torch.randn(len(members), 10, 6, generator=draws).to(dev)
    if task_name == "classification":
        target = torch.randint(0, 3, (len(members) * 10,), generator=draws).to(dev)
    else:
        target = torch.randn(len(members) * 10, 2, generator=draws).to(dev)
    with torch.no_grad():
        stack.grads.fill_(float("nan"))
    losses = stack.train_step(x, target, task, torch.Generator(device=dev).manual_seed(1))
    by_hand = stack.grads.clone()
    stack.grads.zero_()
    outputs = stack.forward(x, dropout=torch.Generator(device=dev).manual_seed(1))
    expected = task.member_losses(outputs, target, len(members))
    stack.backward(expected.sum())
    torch.testing.assert_close(losses, expected.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(by_hand, stack.grads, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_a_stack_of_one_follows_its_solo_run_on(device):
    data = blobs()
    member = genome((16, 8), "silu", "adam", dropout=0.3, lr=3e-3)
    config = TrainConfig(device=device, max_epochs=5, patience=None, seed=5)
    alone = train_classifier(member, *data, n_classes=3, config=config)
    (stacked,) = train_population([member], *data, n_classes=3, configs=[config], min_stack=1)
    assert isinstance(stacked, TrainResult)
    np.testing.assert_allclose(
        [r["val_loss"] for r in stacked.history],
        [r["val_loss"] for r in alone.history],
        rtol=1e-3,
    )


@pytest.mark.parametrize("device", DEVICES)
def test_a_batched_search_runs_and_pickles_to_the_cpu_on(device):
    X, y = make_classification(
        n_samples=160, n_features=6, n_informative=4, n_classes=3, random_state=0
    )
    clf = EvoSearchClassifier(
        n_trials=4,
        batch_trials=2,
        max_epochs=3,
        search_space=SearchSpace(max_layers=2, units=(4, 16), batch_sizes=(16,)),
        device=device,
        random_state=0,
        ensemble_size=2,
    ).fit(X, y)
    assert len(clf.cv_results_["params"]) == 4
    assert next(clf.best_model_.parameters()).device.type == device
    proba = clf.predict_proba(X[:7])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    restored = pickle.loads(pickle.dumps(clf))
    assert next(restored.best_model_.parameters()).device.type == "cpu"
    np.testing.assert_allclose(restored.predict_proba(X[:7]), proba, rtol=1e-4, atol=1e-6)
