"""Function-preserving widening and deepening of trained dense networks."""

from __future__ import annotations

import pytest
import torch

from evohpo.evolution.genome import Genome, LayerGene
from evohpo.exceptions import InvalidParameterError
from evohpo.training.layers import ACTIVATIONS
from evohpo.training.morphisms import identity_exact, insert_identity_layer, widen_layer
from evohpo.training.nn import build_model, count_parameters


def model_of(*activations: str, units: int = 6, dropout: float = 0.2, seed: int = 0):
    genome = Genome(
        tuple(LayerGene(units, act, dropout) for act in activations), "adam", 1e-3, 0.0, 32
    )
    return build_model(genome, n_features=5, n_outputs=3, seed=seed).eval()


def outputs(model, seed: int = 1) -> torch.Tensor:
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(seed)) * 3
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("index", [0, 1])
def test_widening_keeps_the_function_for_every_activation(activation, index):
    parent = model_of(activation, activation, seed=index)
    child = widen_layer(parent, index, 11, generator=torch.Generator().manual_seed(2))
    assert getattr(child, f"hidden{index}").out_features == 11
    assert count_parameters(child) > count_parameters(parent)
    torch.testing.assert_close(outputs(child), outputs(parent), rtol=1e-5, atol=1e-5)


def test_widening_leaves_the_parent_alone_and_changes_the_function_when_wrong():
    parent = model_of("tanh", "tanh")
    before = [p.clone() for p in parent.parameters()]
    child = widen_layer(parent, 0, 9, generator=torch.Generator().manual_seed(0))
    for old, new in zip(before, parent.parameters(), strict=True):
        assert torch.equal(old, new)
    # Without dividing the outgoing weights the function would change: the test can fail.
    child.hidden1.weight.data[:, 6:] *= 2
    assert not torch.allclose(outputs(child), outputs(parent), atol=1e-4)


def test_an_identity_layer_after_relu_keeps_the_function():
    parent = model_of("relu", "tanh")
    child = insert_identity_layer(parent, 0, "relu")
    names = [name for name, _ in child.named_children()]
    assert names == [
        "hidden0", "act0", "dropout0", "hidden1", "act1", "hidden2", "act2", "dropout2", "output"
    ]  # fmt: skip
    torch.testing.assert_close(outputs(child), outputs(parent))
    assert identity_exact("relu", "relu")
    assert not identity_exact("tanh", "tanh")


def test_an_identity_layer_after_tanh_is_not_exact():
    parent = model_of("tanh")
    child = insert_identity_layer(parent, 0, "tanh")
    assert not torch.allclose(outputs(child), outputs(parent), atol=1e-4)


def test_bad_arguments_name_the_parameter():
    parent = model_of("relu")
    with pytest.raises(InvalidParameterError, match="'units' parameter of widen_layer"):
        widen_layer(parent, 0, 3)
    with pytest.raises(InvalidParameterError, match="'index' parameter of widen_layer"):
        widen_layer(parent, 1, 8)
    with pytest.raises(InvalidParameterError, match="'activation' parameter"):
        insert_identity_layer(parent, 0, "swish")
