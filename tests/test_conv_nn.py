"""The convolutional body of the torch model: shapes, parameters, seeds, training."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from evohpo.evolution import blocks as evo_blocks
from evohpo.evolution.blocks import BlockGene, body_shapes
from evohpo.evolution.genome import ACTIVATIONS, Genome, LayerGene
from evohpo.exceptions import InvalidParameterError
from evohpo.training import conv
from evohpo.training.config import TrainConfig
from evohpo.training.conv import ConvBlock
from evohpo.training.epochs import Batches
from evohpo.training.layers import SeededDropout
from evohpo.training.loop import train_classifier
from evohpo.training.nn import build_model, count_parameters
from evohpo.training.predict import predict_logits, predict_proba
from evohpo.training.spec import BlockSpec, BodySpec, NetworkSpec, network_blocks

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def block(
    channels: int = 4,
    kernel: int = 3,
    stride: int = 1,
    pool: str = "none",
    *,
    residual: bool = False,
    batchnorm: bool = False,
    activation: str = "relu",
    dropout: float = 0.0,
) -> BlockGene:
    return BlockGene(channels, kernel, stride, pool, residual, batchnorm, activation, dropout)


def genome(blocks: tuple[BlockGene, ...] | None, readout: str = "avg", units: int = 8) -> Genome:
    return Genome((LayerGene(units, "relu", 0.0),), "adam", 1e-2, 0.0, 32, blocks, readout)


def block_outputs(model: nn.Sequential, x: torch.Tensor) -> list[tuple[int, ...]]:
    """The shape (without the batch) after each ``ConvBlock`` of ``model``."""
    shapes = []
    for module in model:
        x = module(x)
        if isinstance(module, ConvBlock):
            shapes.append(tuple(x.shape[1:]))
    return shapes


def test_the_trainer_knows_the_genome_choices() -> None:
    assert conv.POOLS == evo_blocks.POOLS
    assert conv.READOUTS == evo_blocks.READOUTS
    gene = block()
    assert isinstance(gene, BlockSpec)
    assert isinstance(genome((gene,)), BodySpec)
    assert network_blocks(genome(None)) is None
    assert network_blocks(genome((gene,))) == (gene,)


# -- every block combination, 1-D and 2-D -------------------------------------------------
COMBINATIONS = list(
    itertools.product(
        [(3, 12), (3, 10, 9)],  # input shapes: 1-D and 2-D
        [3, 5],  # output channels: equal to the input's or not
        [1, 2],  # stride
        evo_blocks.POOLS,
        [False, True],  # residual
        [False, True],  # batch norm
    )
)


@pytest.mark.parametrize(
    ("shape", "channels", "stride", "pool", "residual", "batchnorm"), COMBINATIONS
)
def test_every_block_combination_has_its_shape_and_parameters(
    shape: tuple[int, ...],
    channels: int,
    stride: int,
    pool: str,
    residual: bool,
    batchnorm: bool,
) -> None:
    gene = block(channels, 3, stride, pool, residual=residual, batchnorm=batchnorm, dropout=0.2)
    body = (gene, block(channels, 5, 1, "none", residual=True))
    g = genome(body, "flatten")
    n_features = math.prod(shape)
    model = build_model(g, n_features, 3, seed=0, input_shape=shape)
    first = model.get_submodule("block0")
    n_dims = len(shape) - 1

    assert block_outputs(model, torch.randn(5, n_features)) == body_shapes(body, shape)
    assert model(torch.randn(5, n_features)).shape == (5, 3)
    assert count_parameters(model) == g.n_parameters(shape, 3)
    assert isinstance(first, ConvBlock)
    assert (first.proj is not None) == (residual and (channels != 3 or stride != 1))
    assert (first.norm is not None) == batchnorm
    assert (first.pool is not None) == (pool != "none")
    assert isinstance(first.dropout, SeededDropout)
    assert first.conv.bias is None if batchnorm else first.conv.bias is not None
    conv_type = nn.Conv1d if n_dims == 1 else nn.Conv2d
    assert type(first.conv) is conv_type
    assert first.conv.weight.shape == (channels, 3, *([3] * n_dims))
    if first.proj is not None:
        assert first.proj.weight.shape == (channels, 3, *([1] * n_dims))
        assert first.proj.bias is None
    # Block 1 keeps channels and stride: its residual is the identity.
    assert model.get_submodule("block1").proj is None


@st.composite
def bodies(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[BlockGene, ...], str]:
    n_dims = draw(st.sampled_from([1, 2]))
    shape = (
        draw(st.integers(1, 3)),
        *(draw(st.integers(1, 24 if n_dims == 1 else 10)) for _ in range(n_dims)),
    )
    genes = st.builds(
        BlockGene,
        channels=st.integers(1, 6),
        kernel=st.sampled_from([1, 3, 5]),
        stride=st.integers(1, 3),
        pool=st.sampled_from(evo_blocks.POOLS),
        residual=st.booleans(),
        batchnorm=st.booleans(),
        activation=st.sampled_from(ACTIVATIONS),
        dropout=st.sampled_from([0.0, 0.3]),
    )
    body = tuple(draw(st.lists(genes, min_size=0, max_size=4)))
    return shape, body, draw(st.sampled_from(evo_blocks.READOUTS))


@settings(max_examples=60, deadline=None)
@given(case=bodies(), n_out=st.integers(2, 4))
def test_models_of_random_bodies_match_the_genome(
    case: tuple[tuple[int, ...], tuple[BlockGene, ...], str], n_out: int
) -> None:
    shape, body, readout = case
    g = genome(body, readout)
    n_features = math.prod(shape)
    if body_shapes(body, shape) is None:
        with pytest.raises(InvalidParameterError, match=r"does not fit the 'input_shape'"):
            build_model(g, n_features, n_out, seed=0, input_shape=shape)
        return
    model = build_model(g, n_features, n_out, seed=0, input_shape=shape)
    x = torch.randn(2, n_features)

    assert count_parameters(model) == g.n_parameters(shape, n_out)
    assert block_outputs(model, x) == body_shapes(body, shape)
    assert model(x).shape == (2, n_out)
    model.eval()
    with torch.inference_mode():
        assert model(x).shape == (2, n_out)


# -- what a block computes -----------------------------------------------------------------
def test_residual_block_adds_its_input_before_the_activation() -> None:
    shape = (2, 6, 5)
    g = genome((block(2, 3, 1, residual=True, activation="tanh"),))
    model = build_model(g, 60, 2, seed=1, input_shape=shape)
    x = torch.randn(4, 60)
    image = x.reshape(4, *shape)
    layer = model.get_submodule("block0.conv")

    expected = torch.tanh(F.conv2d(image, layer.weight, layer.bias, padding=1) + image)

    assert torch.allclose(model[:2](x), expected, atol=1e-6)


def test_projection_is_a_strided_one_by_one_conv() -> None:
    g = genome((block(3, 5, 2, "max", residual=True, batchnorm=True),))
    model = build_model(g, 2 * 16, 2, seed=1, input_shape=(2, 16))
    model.eval()
    x = torch.randn(4, 32)
    signal = x.reshape(4, 2, 16)
    b = model.get_submodule("block0")
    norm = b.norm
    assert isinstance(norm, nn.BatchNorm1d)

    y = norm(F.conv1d(signal, b.conv.weight, None, stride=2, padding=2))
    y = F.relu(y + F.conv1d(signal, b.proj.weight, None, stride=2))
    expected = F.max_pool1d(y, 2)

    with torch.inference_mode():
        assert torch.allclose(model[:2](x), expected, atol=1e-6)


@pytest.mark.parametrize(("readout", "width"), [("avg", 5), ("flatten", 5 * 3 * 2)])
def test_readout_sets_the_width_of_the_head(readout: str, width: int) -> None:
    g = genome((block(5, 3, 2),), readout)
    model = build_model(g, 6 * 4, 2, seed=0, input_shape=(1, 6, 4))
    names = [name for name, _ in model.named_children()]
    x = torch.randn(3, 24)

    assert model.get_submodule("hidden0").in_features == width
    assert model[: names.index("hidden0")](x).shape == (3, width)
    if readout == "avg":
        body = model[: names.index("readout")](x)
        assert torch.allclose(model[: names.index("hidden0")](x), body.mean(dim=(2, 3)))
    assert names[:2] == ["unflatten", "block0"]
    assert ("readout" in names) == (readout == "avg")


# -- dense genomes are unchanged -----------------------------------------------------------
def _same_model(model: nn.Sequential, reference: nn.Sequential) -> None:
    assert [n for n, _ in model.named_children()] == [n for n, _ in reference.named_children()]
    for (name, weight), (_, expected) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.equal(weight, expected), name


def test_dense_genome_and_an_empty_body_build_the_dense_model() -> None:
    dense = genome(None)
    reference = build_model(dense, 12, 3, seed=4)

    _same_model(build_model(dense, 12, 3, seed=4, input_shape=(3, 4)), reference)
    _same_model(build_model(genome(()), 12, 3, seed=4, input_shape=(3, 2, 2)), reference)


# -- seeds ---------------------------------------------------------------------------------
def test_seed_reproduces_weights_without_touching_the_global_generator() -> None:
    g = genome((block(4, 3, 2, "avg", residual=True), block(4, 5, 1, batchnorm=True)), "flatten")
    state = torch.random.get_rng_state()
    first = build_model(g, 40, 3, seed=7, input_shape=(2, 20))
    again = build_model(g, 40, 3, seed=7, input_shape=(2, 20))
    other = build_model(g, 40, 3, seed=8, input_shape=(2, 20))

    assert torch.equal(torch.random.get_rng_state(), state)
    _same_model(first, again)
    assert not torch.equal(
        first.state_dict()["block0.conv.weight"], other.state_dict()["block0.conv.weight"]
    )
    assert set(first.state_dict()) >= {
        "block0.conv.weight",
        "block0.conv.bias",
        "block0.proj.weight",
        "block1.conv.weight",
        "block1.norm.weight",
        "block1.norm.running_mean",
    }


def test_without_a_seed_weights_come_from_the_global_generator() -> None:
    g = genome((block(4, 3, 2),))
    torch.manual_seed(3)
    first = build_model(g, 20, 2, input_shape=(1, 20))
    torch.manual_seed(3)
    _same_model(build_model(g, 20, 2, input_shape=(1, 20)), first)


def test_seeded_conv_weights_follow_torch_default_bounds() -> None:
    g = genome((block(16, 5, 1),))
    layer = build_model(g, 3 * 30, 2, seed=0, input_shape=(3, 30)).get_submodule("block0.conv")
    weight, bias = layer.weight.detach(), layer.bias.detach()
    bound = 1.0 / math.sqrt(3 * 5)  # kaiming_uniform(a=sqrt(5)) and the bias: 1 / sqrt(fan_in)

    assert float(weight.abs().max()) <= bound
    assert float(bias.abs().max()) <= bound
    assert float(weight.abs().max()) > 0.8 * bound


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("input_shape", "match"),
    [
        (None, r"'input_shape' parameter of build_model must be the shape of the rows.*None"),
        ((2, 5), r"'input_shape'.*product is 10, the data have 12 features"),
        ((12,), r"'input_shape'.*2 or 3 positive ints"),
        ((1, 2, 2, 3), r"'input_shape'.*2 or 3 positive ints"),
        ((0, 12), r"'input_shape'.*2 or 3 positive ints"),
        ("1,12", r"'input_shape'.*2 or 3 positive ints"),
    ],
)
def test_bad_input_shape_is_refused(input_shape: object, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        build_model(genome((block(),)), 12, 2, input_shape=input_shape)  # type: ignore[arg-type]


def test_a_body_that_does_not_fit_names_the_block_and_the_shape() -> None:
    body = (block(4, 3, 2, "max"), block(4, 3, 2, "max"))
    with pytest.raises(
        InvalidParameterError, match=r"'input_shape' \(1, 6\) given to build_model: block 1"
    ):
        build_model(genome(body), 6, 2, input_shape=(1, 6))


@dataclass(frozen=True)
class PlainBlock:
    channels: int = 2
    kernel: int = 3
    stride: int = 1
    pool: str = "none"
    residual: bool = False
    batchnorm: bool = False
    activation: str = "relu"
    dropout: float = 0.0


@dataclass(frozen=True)
class PlainLayer:
    units: int = 4
    activation: str = "relu"
    dropout: float = 0.0


@dataclass(frozen=True)
class PlainBody:
    blocks: tuple[PlainBlock, ...] | None
    readout: str = "avg"
    layers: tuple[PlainLayer, ...] = (PlainLayer(),)
    optimizer: str = "adam"
    learning_rate: float = 0.01
    weight_decay: float = 0.0
    batch_size: int = 8


@pytest.mark.parametrize(
    ("network", "match"),
    [
        (PlainBody((PlainBlock(pool="min"),)), r"'genome.blocks\[0\].pool'.*Got 'min'"),
        (
            PlainBody(
                (PlainBlock(), PlainBlock(kernel=4)),
            ),
            r"'genome.blocks\[1\].kernel'.*odd",
        ),
        (PlainBody((PlainBlock(activation="swish"),)), r"'genome.blocks\[0\].activation'"),
        (PlainBody((PlainBlock(stride=0),)), r"'genome.blocks\[0\].stride'"),
        (PlainBody((PlainBlock(),), readout="max"), r"'genome.readout'.*Got 'max'"),
    ],
)
def test_plain_body_specs_are_built_or_refused(network: PlainBody, match: str) -> None:
    assert isinstance(network, BodySpec)
    assert isinstance(network, NetworkSpec)
    with pytest.raises(InvalidParameterError, match=match):
        build_model(network, 8, 2, input_shape=(1, 8))
    assert count_parameters(build_model(PlainBody((PlainBlock(),)), 8, 2, input_shape=(1, 8))) > 0


# -- training and prediction ---------------------------------------------------------------
def pulses(n_rows: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy signals with a positive (class 1) or negative (class 0) pulse anywhere."""
    rng = np.random.default_rng(seed)
    X = rng.normal(scale=0.5, size=(n_rows, length)).astype(np.float32)
    y = rng.integers(0, 2, size=n_rows)
    starts = rng.integers(0, length - 3, size=n_rows)
    for row, (start, label) in enumerate(zip(starts, y, strict=True)):
        X[row, start : start + 3] += 2.0 if label else -2.0
    return X, y.astype(np.int64)


def test_a_tiny_conv_net_learns_a_shifted_pulse() -> None:
    X, y = pulses(320, 24, seed=0)
    body = (
        block(6, 3, 1, "max", residual=True, batchnorm=True, dropout=0.1),
        block(6, 3, 1, batchnorm=True),
    )
    g = genome(body, "avg")
    config = TrainConfig(max_epochs=8, patience=None, device="cpu", seed=1, eval_batch_size=7)

    result = train_classifier(
        g, X[:240], y[:240], X[240:], y[240:], n_classes=2, config=config, input_shape=(1, 24)
    )
    again = train_classifier(
        g, X[:240], y[:240], X[240:], y[240:], n_classes=2, config=config, input_shape=(1, 24)
    )

    assert result.best_score >= 0.85
    assert result.n_parameters == g.n_parameters((1, 24), 2)
    _same_model(result.model, again.model)
    proba = predict_proba(result.model, X[240:], batch_size=9)
    assert proba.shape == (80, 2)
    assert float((proba.argmax(axis=1) == y[240:]).mean()) == pytest.approx(result.best_score)
    with pytest.raises(InvalidParameterError, match=r"'X'.*24 columns"):
        predict_logits(result.model, X[:, :20])


def test_a_conv_genome_needs_the_input_shape_to_train() -> None:
    X, y = pulses(40, 8, seed=0)
    with pytest.raises(InvalidParameterError, match=r"'input_shape' parameter of build_model"):
        train_classifier(genome((block(),)), X, y, X, y, n_classes=2)
    with pytest.raises(InvalidParameterError, match=r"product is 10, the data have 8 features"):
        train_classifier(genome((block(),)), X, y, X, y, n_classes=2, input_shape=(2, 5))


def test_batch_norm_never_trains_on_a_batch_of_one_row_and_one_position() -> None:
    # 33 rows in batches of 32 would leave one row; the body leaves one position.
    X, y = pulses(33, 4, seed=0)
    g = genome((block(3, 3, 4, batchnorm=True),)).replace(batch_size=32)
    config = TrainConfig(max_epochs=2, device="cpu")

    result = train_classifier(g, X, y, X, y, n_classes=2, config=config, input_shape=(1, 4))

    assert result.epochs_run == 2
    merged = Batches(33, 32, torch.device("cpu"), no_single=True)
    assert (merged.count, merged.rows.tolist(), merged.slice(0)) == (1, [33.0], slice(0, 33))
    plain = Batches(33, 32, torch.device("cpu"))
    assert (plain.count, plain.rows.tolist(), plain.slice(1)) == (2, [32.0, 1.0], slice(32, 33))
