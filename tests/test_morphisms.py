"""Function-preserving widening and deepening of trained dense and convolutional networks."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from evohpo.evolution.blocks import BlockGene
from evohpo.evolution.genome import Genome, LayerGene
from evohpo.exceptions import InvalidParameterError
from evohpo.training.block_morphisms import block_insert_exact, insert_block, widen_block
from evohpo.training.conv import ConvBlock
from evohpo.training.layers import ACTIVATIONS, ResidualLinear
from evohpo.training.morphisms import (
    identity_exact,
    insert_copy_layer,
    insert_identity_layer,
    insert_residual_layer,
    set_residual,
    widen_layer,
)
from evohpo.training.nn import build_model, count_parameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


# -- convolutional bodies ---------------------------------------------------------------------
SHAPES = {1: (3, 12), 2: (3, 8, 6)}


def block(
    channels: int,
    stride: int = 1,
    pool: str = "none",
    *,
    residual: bool = False,
    batchnorm: bool = False,
    activation: str = "relu",
    dropout: float = 0.0,
    kernel: int = 3,
) -> BlockGene:
    return BlockGene(channels, kernel, stride, pool, residual, batchnorm, activation, dropout)


def body_genome(blocks: tuple[BlockGene, ...], readout: str = "avg") -> Genome:
    layers = (LayerGene(6, "tanh", 0.1),)
    return Genome(layers, "adam", 1e-3, 0.0, 32, blocks, readout)


def body_model(genome: Genome, shape: tuple[int, ...], seed: int = 0) -> nn.Sequential:
    """The model of ``genome`` with random batch-norm statistics and affine weights."""
    model = build_model(genome, math.prod(shape), 3, seed=seed, input_shape=shape)
    generator = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator))
                module.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.2)
                module.weight.copy_(torch.randn(n, generator=generator))
                module.bias.copy_(torch.randn(n, generator=generator))
    return model.eval()


def body_outputs(model: nn.Sequential, shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    x = torch.randn(16, math.prod(shape), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


def layout(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(key, tuple(value.shape)) for key, value in model.state_dict().items()]


def with_channels(genome: Genome, index: int, channels: int) -> Genome:
    assert genome.blocks is not None
    blocks = list(genome.blocks)
    blocks[index] = dataclasses.replace(blocks[index], channels=channels)
    return genome.replace(blocks=tuple(blocks))


def body_cases(bn: bool) -> dict[str, tuple[BlockGene, ...]]:
    """Bodies for an input of 3 channels."""
    return {
        # Plain blocks with pooling, dropout and activations other than ReLU.
        "plain": (
            block(4, activation="tanh", batchnorm=bn),
            block(5, pool="max", activation="elu", batchnorm=bn, dropout=0.3),
            block(6, pool="avg", activation="gelu", batchnorm=bn),
        ),
        # Identity skips in blocks 0 and 1 that gain projections; block 2 has one (stride 2).
        "residual": (
            block(3, residual=True, batchnorm=bn, activation="silu"),
            block(3, residual=True, batchnorm=bn),
            block(5, 2, residual=True, batchnorm=bn, activation="leaky_relu"),
        ),
        # Projections that widening block 1 to 6 channels turns into identity skips.
        "losing": (
            block(6, batchnorm=bn, activation="tanh"),
            block(4, residual=True, batchnorm=bn, activation="elu", kernel=5),
            block(6, residual=True, batchnorm=bn, pool="max"),
        ),
    }


WIDENINGS = [
    ("plain", 0, 7),
    ("plain", 1, 9),
    ("plain", 2, 8),
    ("residual", 0, 5),
    ("residual", 1, 4),
    ("residual", 2, 7),
    ("losing", 1, 6),
    ("losing", 1, 5),
    ("losing", 0, 9),
    ("losing", 2, 6),  # no new channels
]


@pytest.mark.parametrize("n_dims", [1, 2])
@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("readout", ["avg", "flatten"])
@pytest.mark.parametrize(("body", "index", "channels"), WIDENINGS)
def test_widening_a_block_keeps_the_function_and_matches_the_child_genome(
    n_dims: int, batchnorm: bool, readout: str, body: str, index: int, channels: int
) -> None:
    shape = SHAPES[n_dims]
    parent_genome = body_genome(body_cases(batchnorm)[body], readout)
    parent = body_model(parent_genome, shape)
    before = {key: value.clone() for key, value in parent.state_dict().items()}
    child = widen_block(parent, index, channels, generator=torch.Generator().manual_seed(3))

    child_genome = with_channels(parent_genome, index, channels)
    reference = build_model(child_genome, math.prod(shape), 3, seed=0, input_shape=shape)
    assert layout(child) == layout(reference)
    assert count_parameters(child) == child_genome.n_parameters(shape, 3)
    assert not any(module.training for module in child.modules())  # as the parent
    torch.testing.assert_close(
        body_outputs(child, shape), body_outputs(parent, shape), rtol=1e-4, atol=1e-5
    )
    for key, value in parent.state_dict().items():
        assert torch.equal(value, before[key])


def test_projections_come_and_go_as_the_child_genome_says() -> None:
    shape = SHAPES[1]
    cases = body_cases(True)
    residual = widen_block(body_model(body_genome(cases["residual"]), shape), 0, 5)
    assert residual.block0.proj is not None
    assert residual.block1.proj is not None
    losing = widen_block(body_model(body_genome(cases["losing"]), shape), 1, 6)
    assert losing.block1.proj is None
    assert losing.block2.proj is None


def test_widening_without_dividing_the_readers_changes_the_function() -> None:
    shape = SHAPES[2]
    for readout in ("avg", "flatten"):
        parent = body_model(body_genome(body_cases(True)["plain"], readout), shape)
        child = widen_block(parent, 2, 10, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(body_outputs(child, shape), body_outputs(parent, shape))
        positions = child.hidden0.in_features // 10
        child.hidden0.weight.data[:, 6 * positions :] *= 2
        assert not torch.allclose(body_outputs(child, shape), body_outputs(parent, shape))


def test_a_lost_projection_cannot_move_through_a_zero_batch_norm_weight() -> None:
    shape = SHAPES[1]
    parent = body_model(body_genome(body_cases(True)["losing"]), shape)
    parent.block2.norm.weight.data[0] = 0.0
    exact = widen_block(parent, 0, 9)
    torch.testing.assert_close(body_outputs(exact, shape), body_outputs(parent, shape))
    lossy = widen_block(parent, 1, 6)
    assert not torch.allclose(body_outputs(lossy, shape), body_outputs(parent, shape))


INSERTIONS = [
    # (body, index, new block); the new block's settings keep the shape.
    ((block(4), block(5, activation="tanh")), 0, block(4)),
    ((block(4, activation="tanh"), block(5, pool="max")), 1, block(5, kernel=5, dropout=0.2)),
]


@pytest.mark.parametrize("n_dims", [1, 2])
@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("residual", [False, True], ids=["identity", "zero-branch"])
@pytest.mark.parametrize("readout", ["avg", "flatten"])
@pytest.mark.parametrize(("body", "index", "new"), INSERTIONS)
def test_a_block_inserted_after_relu_keeps_the_function(
    n_dims: int,
    batchnorm: bool,
    residual: bool,
    readout: str,
    body: tuple[BlockGene, ...],
    index: int,
    new: BlockGene,
) -> None:
    shape = SHAPES[n_dims]
    body = tuple(dataclasses.replace(b, batchnorm=batchnorm) for b in body)
    new = dataclasses.replace(new, residual=residual, batchnorm=batchnorm)
    parent_genome = body_genome(body, readout)
    parent = body_model(parent_genome, shape)
    child = insert_block(parent, index, new, generator=torch.Generator().manual_seed(0))

    blocks = list(body)
    blocks.insert(index + 1, new)
    child_genome = parent_genome.replace(blocks=tuple(blocks))
    reference = build_model(child_genome, math.prod(shape), 3, seed=0, input_shape=shape)
    assert layout(child) == layout(reference)
    assert [name for name, _ in child.named_children()] == [
        name for name, _ in reference.named_children()
    ]
    assert block_insert_exact(body[index], new)
    assert not any(module.training for module in child.modules())  # as the parent
    torch.testing.assert_close(body_outputs(child, shape), body_outputs(parent, shape))
    # The parent keeps its blocks.
    assert sum(isinstance(m, ConvBlock) for m in parent.children()) == len(body)


@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("residual", [False, True], ids=["identity", "zero-branch"])
@pytest.mark.parametrize(("previous", "activation"), [("relu", "tanh"), ("tanh", "relu")])
def test_a_block_inserted_otherwise_changes_the_function(
    batchnorm: bool, residual: bool, previous: str, activation: str
) -> None:
    shape = SHAPES[1]
    body = (block(4, activation=previous, batchnorm=batchnorm), block(5, batchnorm=batchnorm))
    new = block(4, residual=residual, batchnorm=batchnorm, activation=activation)
    parent = body_model(body_genome(body), shape)
    child = insert_block(parent, 0, new)
    assert not block_insert_exact(body[0], new)
    assert not torch.allclose(body_outputs(child, shape), body_outputs(parent, shape), atol=1e-4)


def test_block_insert_exact_needs_the_same_shape() -> None:
    previous = block(4)
    assert block_insert_exact(previous, block(4, kernel=5, residual=True, batchnorm=True))
    assert not block_insert_exact(previous, block(5))
    assert not block_insert_exact(previous, block(4, 2))
    assert not block_insert_exact(previous, block(4, pool="max"))
    assert not block_insert_exact(block(4, activation="elu"), block(4, activation="elu"))


def test_block_morphisms_name_the_bad_parameter() -> None:
    shape = SHAPES[1]
    parent = body_model(body_genome((block(4), block(5))), shape)
    with pytest.raises(InvalidParameterError, match="'index' parameter of widen_block"):
        widen_block(parent, 2, 8)
    with pytest.raises(InvalidParameterError, match="'index' parameter of widen_block"):
        widen_block(parent, -1, 8)
    with pytest.raises(InvalidParameterError, match="'channels' parameter of widen_block"):
        widen_block(parent, 1, 4)
    with pytest.raises(InvalidParameterError, match="'model' parameter of widen_block"):
        widen_block(model_of("relu"), 0, 8)
    with pytest.raises(InvalidParameterError, match="'index' parameter of insert_block"):
        insert_block(parent, 2, block(5))
    with pytest.raises(InvalidParameterError, match="'model' parameter of insert_block"):
        insert_block(model_of("relu"), 0, block(5))
    with pytest.raises(InvalidParameterError, match=r"'block.channels' parameter of insert_block"):
        insert_block(parent, 0, block(5))
    with pytest.raises(InvalidParameterError, match=r"'block.stride' parameter of insert_block"):
        insert_block(parent, 0, block(4, 2))
    with pytest.raises(InvalidParameterError, match=r"'block.pool' parameter of insert_block"):
        insert_block(parent, 0, block(4, pool="avg"))
    with pytest.raises(InvalidParameterError, match="'block' parameter of insert_block"):
        insert_block(parent, 0, "conv")
    spec = SimpleNamespace(**{**dataclasses.asdict(block(4)), "activation": "swish"})
    with pytest.raises(
        InvalidParameterError, match=r"'block.activation' parameter of insert_block"
    ):
        insert_block(parent, 0, spec)


# -- residual dense layers ---------------------------------------------------------------------
def residual_model(*units: int, activation: str = "tanh", seed: int = 0) -> nn.Sequential:
    layers = tuple(LayerGene(u, activation, 0.2, residual=True) for u in units)
    genome = Genome(layers, "adam", 1e-3, 0.0, 32)
    return build_model(genome, n_features=5, n_outputs=3, seed=seed).eval()


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("index", [0, 1, 2])
def test_widening_a_residual_layer_keeps_the_function(activation, index):
    # Skips: a projection (5 -> 6), the identity (6 -> 6), a projection (6 -> 4).
    parent = residual_model(6, 6, 4, activation=activation, seed=index)
    child = widen_layer(parent, index, 9, generator=torch.Generator().manual_seed(2))
    widened = getattr(child, f"hidden{index}")
    assert widened.out_features == 9
    assert widened.projection is not None
    assert widened.projection.shape == (9, widened.in_features)
    torch.testing.assert_close(outputs(child), outputs(parent), rtol=1e-5, atol=1e-5)


def test_a_widened_reader_whose_widths_match_again_keeps_its_function():
    parent = residual_model(6, 9)  # layer 1 projects 6 -> 9
    child = widen_layer(parent, 0, 9, generator=torch.Generator().manual_seed(0))
    # Layer 1 now reads 9: its projection, divided, would match the identity only
    # by chance, so it stays (the function is kept either way).
    torch.testing.assert_close(outputs(child), outputs(parent), rtol=1e-5, atol=1e-5)
    # Where the widening copies nothing twice, an identity skip stays the identity.
    same = residual_model(6, 6)
    kept = widen_layer(same, 1, 6)
    assert kept.hidden1.projection is None


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("position", [0, 1, 2])
def test_an_inserted_residual_layer_is_the_identity_for_every_activation(activation, position):
    parent = model_of("tanh", "relu")
    child = insert_residual_layer(parent, position, activation, dropout=0.3)
    assert [n for n, _ in child.named_children() if n.startswith("hidden")] == [
        "hidden0",
        "hidden1",
        "hidden2",
    ]
    inserted = getattr(child, f"hidden{position}")
    assert isinstance(inserted, ResidualLinear)
    assert inserted.projection is None
    torch.testing.assert_close(outputs(child), outputs(parent))
    # The zero branch is what makes it exact: the test can fail.
    with torch.no_grad():
        inserted.bias.fill_(0.5)
    assert not torch.allclose(outputs(child), outputs(parent))


def test_a_copied_layer_and_flipped_flags():
    parent = model_of("tanh", "relu", units=6)
    copied = insert_copy_layer(parent, 1)
    assert torch.equal(copied.hidden2.weight, parent.hidden1.weight)
    assert isinstance(copied.act2, nn.ReLU)
    assert not torch.allclose(outputs(copied), outputs(parent))
    with pytest.raises(InvalidParameterError, match="'index' parameter of insert_copy_layer"):
        insert_copy_layer(parent, 0)  # 5 -> 6 is not square
    projected, exact = set_residual(parent, 0, True)
    assert exact
    assert isinstance(projected.hidden0, ResidualLinear)
    assert not hasattr(projected, "act0")
    torch.testing.assert_close(outputs(projected), outputs(parent))
    identity, exact = set_residual(parent, 1, True)
    assert not exact
    assert not torch.allclose(outputs(identity), outputs(parent))
    back, exact = set_residual(projected, 0, False)
    assert exact  # its projection was still zero
    torch.testing.assert_close(outputs(back), outputs(parent))


@pytest.mark.parametrize("readout", ["avg", "flatten"])
def test_widening_the_last_block_divides_a_residual_first_layer_and_its_skip(readout):
    shape = SHAPES[1]
    blocks = (block(3, activation="tanh"),)
    features = 3 if readout == "avg" else 36
    for units in (features, 6):  # an identity skip, then a projection
        genome = Genome(
            (LayerGene(units, "tanh", 0.0, residual=True),), "adam", 1e-3, 0.0, 32, blocks, readout
        )
        parent = body_model(genome, shape)
        child = widen_block(parent, 0, 5, generator=torch.Generator().manual_seed(1))
        assert child.hidden0.projection is not None
        torch.testing.assert_close(
            body_outputs(child, shape), body_outputs(parent, shape), rtol=1e-4, atol=1e-5
        )
