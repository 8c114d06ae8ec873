"""Hypothesis strategies shared by the tests: search spaces, genomes, distributions, seeds.

Genomes with a convolutional body have strategies of their own: block genes,
input shapes, bodies that fit a given input shape, spaces with a body, and
arbitrary body genomes (fitting or not).
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from evohpo.evolution.blocks import POOLS, READOUTS, BlockGene, body_shapes
from evohpo.evolution.genome import ACTIVATIONS, OPTIMIZERS, Genome, LayerGene
from evohpo.evolution.space import SearchSpace
from evohpo.exceptions import SearchSpaceError

#: Seeds of ``random.Random``.
seeds = st.integers(0, 2**32 - 1)

#: Bounds of :func:`spaces` that reach further (deeper, wider, larger batches).
WIDE = {
    "max_depth": 6,
    "max_units": 2048,
    "max_dropout": 0.99,
    "max_weight_decay": 1.0,
    "max_batch_size": 4096,
}


@st.composite
def spaces(
    draw: st.DrawFn,
    *,
    max_depth: int = 5,
    max_units: int = 512,
    max_dropout: float = 0.95,
    max_weight_decay: float = 0.1,
    max_batch_size: int = 1024,
) -> SearchSpace:
    """Valid search spaces, each bound drawn below the given maximum."""
    min_layers = draw(st.integers(1, 3))
    units_low = draw(st.integers(1, 64))
    dropout_low = draw(st.floats(0.0, 0.9))
    lr_low = draw(st.floats(1e-6, 1.0))
    wd_low = draw(st.floats(1e-9, 1e-2))
    return SearchSpace(
        min_layers=min_layers,
        max_layers=draw(st.integers(min_layers, max_depth)),
        units=(units_low, draw(st.integers(units_low, max_units))),
        activations=tuple(draw(st.lists(st.sampled_from(ACTIVATIONS), min_size=1, unique=True))),
        dropout=(dropout_low, draw(st.floats(dropout_low, max_dropout))),
        optimizers=tuple(draw(st.lists(st.sampled_from(OPTIMIZERS), min_size=1, unique=True))),
        learning_rate=(lr_low, draw(st.floats(lr_low, 10.0))),
        weight_decay=(wd_low, draw(st.floats(wd_low, max_weight_decay))),
        batch_sizes=tuple(
            draw(st.lists(st.integers(1, max_batch_size), min_size=1, max_size=5, unique=True))
        ),
    )


@st.composite
def genomes(draw: st.DrawFn, **bounds: Any) -> Genome:
    """Genomes sampled from a space of :func:`spaces` (``bounds`` as there)."""
    return draw(spaces(**bounds)).sample(random.Random(draw(seeds)))


@st.composite
def any_genomes(draw: st.DrawFn) -> Genome:
    """Valid genomes with no regard to any space."""
    layers = draw(
        st.lists(
            st.builds(
                LayerGene,
                units=st.integers(1, 5000),
                activation=st.sampled_from(ACTIVATIONS),
                dropout=st.floats(0.0, 0.99),
                id=st.text("0123456789abcdef", max_size=12),
            ),
            min_size=1,
            max_size=8,
            # Non-empty ids are unique within a genome; "" (no id) may repeat.
            unique_by=lambda layer: layer.id or id(layer),
        )
    )
    return Genome(
        layers=tuple(layers),
        optimizer=draw(st.sampled_from(OPTIMIZERS)),
        learning_rate=draw(st.floats(1e-9, 100.0)),
        weight_decay=draw(st.floats(0.0, 1.0)),
        batch_size=draw(st.integers(1, 4096)),
    )


@st.composite
def distributions(draw: st.DrawFn) -> BaseDistribution:
    """Optuna distributions of every kind: float, log, stepped, int, categorical."""
    kind = draw(
        st.sampled_from(["float", "float_log", "float_step", "int", "int_log", "int_step", "cat"])
    )
    if kind == "cat":
        choices = draw(
            st.lists(
                st.sampled_from(["a", "b", "c", 1, 2.5, None]),
                min_size=1,
                max_size=4,
                unique_by=repr,
            )
        )
        return CategoricalDistribution(choices)
    if kind.startswith("int"):
        low = draw(st.integers(1 if kind == "int_log" else -50, 50))
        step = draw(st.integers(1, 7)) if kind == "int_step" else 1
        high = low + step * draw(st.integers(0, 60))
        return IntDistribution(low, high, log=kind == "int_log", step=step)
    if kind == "float_step":
        # Bounds on the grid: Optuna warns about (and moves) a misaligned high.
        step_size = draw(st.sampled_from([0.125, 0.25, 0.5, 1.0]))
        low = step_size * draw(st.integers(-40, 40))
        return FloatDistribution(low, low + step_size * draw(st.integers(0, 40)), step=step_size)
    low = draw(st.floats(1e-6 if kind == "float_log" else -10.0, 10.0))
    high = draw(st.floats(low, 20.0))
    return FloatDistribution(low, high, log=kind == "float_log")


# -- convolutional bodies ------------------------------------------------------------------
#: Hex ids of genes; "" (no id) may repeat within a genome, other ids may not.
gene_ids = st.text("0123456789abcdef", max_size=12)


def block_genes(
    *, max_channels: int = 64, max_kernel: int = 9, max_stride: int = 4
) -> st.SearchStrategy[BlockGene]:
    """Valid block genes with no regard to any space or input shape."""
    return st.builds(
        BlockGene,
        channels=st.integers(1, max_channels),
        kernel=st.integers(0, (max_kernel - 1) // 2).map(lambda half: 2 * half + 1),
        stride=st.integers(1, max_stride),
        pool=st.sampled_from(POOLS),
        residual=st.booleans(),
        batchnorm=st.booleans(),
        activation=st.sampled_from(ACTIVATIONS),
        dropout=st.floats(0.0, 0.9),
        id=gene_ids,
    )


def input_shapes(
    *, max_channels: int = 4, max_size: int = 64
) -> st.SearchStrategy[tuple[int, ...]]:
    """1-D ``(channels, length)`` and 2-D ``(channels, height, width)`` input shapes."""
    channels = st.integers(1, max_channels)
    size = st.integers(1, max_size)
    return st.tuples(channels, size) | st.tuples(channels, size, size)


@st.composite
def fitting_bodies(
    draw: st.DrawFn, input_shape: tuple[int, ...], *, max_blocks: int = 5
) -> tuple[BlockGene, ...]:
    """Bodies that fit ``input_shape``: a block whose pooling would leave no position pools not.

    Strides alone never shrink a dimension below one position, so dropping
    the pooling of such a block always makes it fit.
    """
    blocks: list[BlockGene] = []
    for block in draw(st.lists(block_genes(), max_size=max_blocks, unique_by=_id_or_self)):
        if body_shapes([*blocks, block], input_shape) is None:
            block = BlockGene(**{**block.to_dict(), "pool": "none"})
        blocks.append(block)
    assert body_shapes(blocks, input_shape) is not None
    return tuple(blocks)


@st.composite
def body_spaces(draw: st.DrawFn, *, max_blocks: int = 4) -> SearchSpace:
    """Valid spaces with an ``input_shape``: dense settings of :func:`spaces`, body settings drawn.

    ``min_blocks`` is lowered to 0 when no gentle body of that depth fits
    (pools without ``"none"`` on a small input).
    """
    dense = draw(spaces(max_depth=3, max_units=64))
    min_blocks = draw(st.integers(0, min(2, max_blocks)))
    channels_low = draw(st.integers(1, 16))
    dropout_low = draw(st.floats(0.0, 0.5))
    settings: dict[str, Any] = {
        **dense.to_dict(),
        "input_shape": draw(input_shapes(max_size=40)),
        "min_blocks": min_blocks,
        "max_blocks": draw(st.integers(min_blocks, max_blocks)),
        "channels": (channels_low, draw(st.integers(channels_low, 32))),
        "kernels": tuple(draw(st.lists(st.sampled_from([1, 3, 5, 7]), min_size=1, unique=True))),
        "strides": tuple(draw(st.lists(st.integers(1, 3), min_size=1, unique=True))),
        "pools": tuple(draw(st.lists(st.sampled_from(POOLS), min_size=1, unique=True))),
        "residual": tuple(draw(st.lists(st.booleans(), min_size=1, unique=True))),
        "batchnorm": tuple(draw(st.lists(st.booleans(), min_size=1, unique=True))),
        "block_dropout": (dropout_low, draw(st.floats(dropout_low, 0.9))),
        "readouts": tuple(draw(st.lists(st.sampled_from(READOUTS), min_size=1, unique=True))),
    }
    try:
        return SearchSpace.from_dict(settings)
    except SearchSpaceError:
        return SearchSpace.from_dict({**settings, "min_blocks": 0})


@st.composite
def body_genomes(draw: st.DrawFn, **bounds: Any) -> Genome:
    """Genomes sampled from a space of :func:`body_spaces` (``bounds`` as there)."""
    return draw(body_spaces(**bounds)).sample(random.Random(draw(seeds)))


@st.composite
def any_body_genomes(draw: st.DrawFn) -> Genome:
    """Valid genomes with a body (maybe of depth 0) that need not fit any input or space."""
    genome = draw(any_genomes())
    blocks = draw(st.lists(block_genes(max_channels=128), max_size=7, unique_by=_id_or_self))
    # Ids are unique across the blocks and layers of a genome.
    layer_ids = {layer.id for layer in genome.layers if layer.id}
    blocks = [
        b if b.id not in layer_ids else BlockGene(**{**b.to_dict(), "id": ""}) for b in blocks
    ]
    return genome.replace(blocks=tuple(blocks), readout=draw(st.sampled_from(READOUTS)))


def _id_or_self(gene: BlockGene) -> object:
    return gene.id or id(gene)
