"""Variation of convolutional bodies: block mutations and body crossover that keep a body fitting.

:mod:`~evohpo.evolution.mutation` and :mod:`~evohpo.evolution.crossover` call
these for genomes with a body (:mod:`evohpo.evolution.blocks`); dense genomes
never reach them, so their random draws are what they always were.

Every change is checked against the input shape before it is made: a stride
or pooling change, an inserted or duplicated block that would leave no
position is not made (another fitting choice is drawn where there is one),
so a body that fits keeps fitting. Removing a block never shrinks the signal
more. Ids are settled afterwards by :func:`~evohpo.evolution._variation.rekey`;
here a changed block keeps its id and a new block gets a fresh one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from deap import tools

from evohpo._random import seeded_global_random
from evohpo.evolution._variation import (
    fresh_id,
    gaussian_step,
    neighbour_choices,
    other_choice,
    step_float,
    step_log_int,
)
from evohpo.evolution.blocks import READOUTS, BlockGene, body_shapes
from evohpo.evolution.genome import Genome
from evohpo.evolution.space import SearchSpace

__all__ = [
    "BODY_KINDS",
    "CROSS_BLOCKS",
    "BodyDraft",
    "BodySteps",
    "applicable_body_kinds",
    "cross_bodies",
    "force_body",
    "mutate_block_genes",
    "mutate_body_structure",
]

# Operator names reported in lineage records.
CHANNELS = "mutate:channels"
KERNEL = "mutate:kernel"
STRIDE = "mutate:stride"
POOL = "mutate:pool"
RESIDUAL = "mutate:residual"
BATCHNORM = "mutate:batchnorm"
BLOCK_ACTIVATION = "mutate:block_activation"
BLOCK_DROPOUT = "mutate:block_dropout"
READOUT = "mutate:readout"
INSERT_BLOCK = "insert_block"
REMOVE_BLOCK = "remove_block"
DUPLICATE_BLOCK = "duplicate_block"
CROSS_BLOCKS = "crossover:blocks"

#: Block genes with a set of choices, and their operator names, in mutation order.
_CHOICE_GENES: tuple[tuple[str, str], ...] = (
    ("kernel", KERNEL),
    ("stride", STRIDE),
    ("pool", POOL),
    ("residual", RESIDUAL),
    ("batchnorm", BATCHNORM),
    ("activation", BLOCK_ACTIVATION),
)
#: Genes whose change may make the body not fit; the others never do.
_SHAPING = frozenset(("stride", "pool"))
#: Genes that move to a neighbouring choice rather than any other one.
_ORDERED = frozenset(("kernel", "stride"))
_GENE_OF = {op: name for name, op in _CHOICE_GENES}
_GENE_OF.update({CHANNELS: "channels", BLOCK_DROPOUT: "dropout"})
#: Every mutation of a body, as :func:`force_body` knows them.
BODY_KINDS: tuple[str, ...] = (
    CHANNELS,
    *(op for _, op in _CHOICE_GENES),
    BLOCK_DROPOUT,
    READOUT,
    INSERT_BLOCK,
    REMOVE_BLOCK,
    DUPLICATE_BLOCK,
)


@dataclass(frozen=True)
class BodySteps:
    """The probabilities and step sizes a body mutation needs (from ``MutationRates``)."""

    gene: float
    insert: float
    remove: float
    duplicate: float
    channels_sigma: float
    dropout_sigma: float


class BodyDraft:
    """The mutable body of a genome under construction, and the input shape it must fit.

    Parameters
    ----------
    blocks : sequence of BlockGene
        The body, input side first.
    readout : str
        How the body meets the dense layers.
    input_shape : tuple of int or None
        The shape every body must fit; ``None``: not checked (a space without
        one, whose repair removes the body).
    """

    def __init__(
        self, blocks: Sequence[BlockGene], readout: str, input_shape: tuple[int, ...] | None
    ) -> None:
        self.blocks = list(blocks)
        self.readout = readout
        self.input_shape = input_shape

    def fits(self, blocks: Sequence[BlockGene]) -> bool:
        """Whether ``blocks`` leave at least one position of the input."""
        return self.input_shape is None or body_shapes(blocks, self.input_shape) is not None

    def fits_with(self, index: int, block: BlockGene) -> bool:
        """Whether the body fits with its block ``index`` replaced by ``block``."""
        return self.fits([*self.blocks[:index], block, *self.blocks[index + 1 :]])

    def ids(self) -> set[str]:
        return {block.id for block in self.blocks}

    def set_gene(self, index: int, name: str, value: Any, ops: list[str], op: str) -> None:
        """Set gene ``name`` of block ``index`` (keeping its id); report ``op`` if it changed."""
        block = self.blocks[index]
        if getattr(block, name) != value:
            self.blocks[index] = replace(block, **{name: value})
            ops.append(op)


def _space_choices(space: SearchSpace, name: str) -> tuple[Any, ...]:
    choices: dict[str, tuple[Any, ...]] = {
        "kernel": space.kernels,
        "stride": space.strides,
        "pool": space.pools,
        "residual": space.residual,
        "batchnorm": space.batchnorm,
        "activation": space.activations,
    }
    return choices[name]


def _candidates(body: BodyDraft, index: int, name: str, space: SearchSpace) -> list[Any]:
    """The values gene ``name`` of block ``index`` may change to, keeping the body fitting."""
    block = body.blocks[index]
    current = getattr(block, name)
    choices = _space_choices(space, name)
    if name in _ORDERED:
        values = neighbour_choices(current, choices)
    else:
        values = [c for c in choices if c != current]
    if name in _SHAPING:
        values = [v for v in values if body.fits_with(index, replace(block, **{name: v}))]
    return values


def mutate_block_genes(
    body: BodyDraft, space: SearchSpace, rng: random.Random, steps: BodySteps, ops: list[str]
) -> None:
    """Perturb each gene of each block, and the readout, with probability ``steps.gene``.

    Channels take a Gaussian step of their logarithm and dropout a Gaussian
    step (one DEAP ``mutGaussian`` call for all of them); kernel and stride
    move to a neighbouring choice, the other genes to any other choice. A
    stride or pooling choice that would make the body not fit is not drawn;
    with none left the gene stays.
    """
    n = len(body.blocks)
    before = [math.log(block.channels) for block in body.blocks]
    before += [block.dropout for block in body.blocks]
    after = list(before)
    if n:
        sigmas = [steps.channels_sigma] * n + [steps.dropout_sigma] * n
        with seeded_global_random(rng):
            tools.mutGaussian(after, mu=0.0, sigma=sigmas, indpb=steps.gene)
    for i in range(n):
        block = body.blocks[i]
        if after[i] != before[i]:
            channels = step_log_int(block.channels, after[i] - before[i], space.channels)
            body.set_gene(i, "channels", channels, ops, CHANNELS)
        if after[n + i] != before[n + i]:
            step = after[n + i] - before[n + i]
            dropout = step_float(block.dropout, step, space.block_dropout)
            body.set_gene(i, "dropout", dropout, ops, BLOCK_DROPOUT)
        for name, op in _CHOICE_GENES:
            if len(_space_choices(space, name)) > 1 and rng.random() < steps.gene:
                values = _candidates(body, i, name, space)
                if values:
                    body.set_gene(i, name, rng.choice(values), ops, op)
    if n and len(space.readouts) > 1 and rng.random() < steps.gene:
        body.readout = other_choice(body.readout, space.readouts, rng)
        ops.append(READOUT)


def mutate_body_structure(
    body: BodyDraft,
    space: SearchSpace,
    rng: random.Random,
    steps: BodySteps,
    taken: set[str],
    ops: list[str],
) -> None:
    """Remove, insert and duplicate a block, each with its own probability.

    Each is skipped at the body-depth bounds of the space, and an insertion
    or duplication when no such block fits. ``taken`` holds the ids a new
    block must not get.
    """
    if rng.random() < steps.remove and len(body.blocks) > space.min_blocks:
        _remove_block(body, rng, ops)
    if rng.random() < steps.insert and len(body.blocks) < space.max_blocks:
        _insert_block(body, space, rng, taken, ops)
    if rng.random() < steps.duplicate and len(body.blocks) < space.max_blocks:
        _duplicate_block(body, rng, taken | body.ids(), ops)


def _remove_block(body: BodyDraft, rng: random.Random, ops: list[str]) -> None:
    del body.blocks[rng.randrange(len(body.blocks))]
    ops.append(REMOVE_BLOCK)


def _gentlest(block: BlockGene, space: SearchSpace) -> BlockGene:
    """``block`` with the smallest stride and, if the space allows, no pooling."""
    pool = "none" if "none" in space.pools else block.pool
    return replace(block, stride=min(space.strides), pool=pool)


def _insert_block(
    body: BodyDraft, space: SearchSpace, rng: random.Random, taken: set[str], ops: list[str]
) -> None:
    """Insert a random block at a random position; its gentlest form if it does not fit."""
    position = rng.randint(0, len(body.blocks))
    block = space.sample_block(rng)
    taken = taken | body.ids()
    if block.id in taken:  # only when rng repeats a stream that made the parent
        block = replace(block, id=fresh_id(rng, taken))
    for candidate in (block, _gentlest(block, space)):
        blocks = [*body.blocks[:position], candidate, *body.blocks[position:]]
        if body.fits(blocks):
            body.blocks = blocks
            ops.append(INSERT_BLOCK)
            return


def _duplicable(body: BodyDraft) -> list[int]:
    """Indices of the blocks whose copy next to themselves keeps the body fitting."""
    blocks = body.blocks
    return [
        i for i in range(len(blocks)) if body.fits([*blocks[: i + 1], blocks[i], *blocks[i + 1 :]])
    ]


def _duplicate_block(body: BodyDraft, rng: random.Random, taken: set[str], ops: list[str]) -> None:
    indices = _duplicable(body)
    if not indices:
        return
    index = rng.choice(indices)
    copy = replace(body.blocks[index], id=fresh_id(rng, taken))
    body.blocks.insert(index + 1, copy)
    ops.append(DUPLICATE_BLOCK)


def applicable_body_kinds(body: BodyDraft, space: SearchSpace) -> list[str]:
    """The body mutations that can change ``body`` within ``space``, in :data:`BODY_KINDS` order."""
    n = len(body.blocks)
    gentle = _gentlest(BlockGene(1, 1, 1, space.pools[0], False, False, "relu", 0.0), space)
    possible = {
        CHANNELS: n > 0 and space.channels[0] < space.channels[1],
        BLOCK_DROPOUT: n > 0 and space.block_dropout[0] < space.block_dropout[1],
        READOUT: n > 0 and len(space.readouts) > 1,
        # A gentlest block fits somewhere if it fits after the last block.
        INSERT_BLOCK: n < space.max_blocks and body.fits([*body.blocks, gentle]),
        REMOVE_BLOCK: n > space.min_blocks,
        DUPLICATE_BLOCK: n < space.max_blocks and bool(_duplicable(body)),
    }
    for name, op in _CHOICE_GENES:
        possible[op] = any(_candidates(body, i, name, space) for i in range(n))
    return [kind for kind in BODY_KINDS if possible[kind]]


def force_body(
    kind: str,
    body: BodyDraft,
    space: SearchSpace,
    rng: random.Random,
    steps: BodySteps,
    taken: set[str],
    ops: list[str],
) -> None:
    """Apply body mutation ``kind`` (one of :func:`applicable_body_kinds`) for certain.

    A per-block gene is changed in a random block where it can change; an
    insertion whose block fits nowhere near its position does nothing.
    """
    if kind == INSERT_BLOCK:
        _insert_block(body, space, rng, taken, ops)
    elif kind == REMOVE_BLOCK:
        _remove_block(body, rng, ops)
    elif kind == DUPLICATE_BLOCK:
        _duplicate_block(body, rng, taken | body.ids(), ops)
    elif kind == READOUT:
        body.readout = other_choice(body.readout, space.readouts, rng)
        ops.append(READOUT)
    elif kind in (CHANNELS, BLOCK_DROPOUT):
        index = rng.randrange(len(body.blocks))
        block = body.blocks[index]
        if kind == CHANNELS:
            step = gaussian_step(steps.channels_sigma, rng)
            value: Any = step_log_int(block.channels, step, space.channels)
        else:
            step = gaussian_step(steps.dropout_sigma, rng)
            value = step_float(block.dropout, step, space.block_dropout)
        body.set_gene(index, _GENE_OF[kind], value, ops, kind)
    else:
        name = _GENE_OF[kind]
        options = {i: _candidates(body, i, name, space) for i in range(len(body.blocks))}
        index = rng.choice([i for i, values in options.items() if values])
        body.set_gene(index, name, rng.choice(options[index]), ops, kind)


def cross_bodies(
    a: Genome, b: Genome, input_shape: tuple[int, ...] | None, rng: random.Random
) -> tuple[list[BlockGene], str]:
    """The body of a child of ``a`` and ``b``: one-point crossover aligned at the input.

    The bodies are cut at one random point within the shorter one (after its
    only block for a one-block body, at 0 for an empty one) and their tails
    swapped, as the layers are; the child's body is one of the two offspring
    at random, or the other one if it does not fit ``input_shape``, or, if
    neither fits, the whole body of the parent whose head it would have had.
    The readout comes from either parent that has blocks, with equal
    probability.

    Returns
    -------
    blocks : list of BlockGene
        The child's body (ids as in the parents; settle them with ``rekey``).
    readout : str
        The canonical ``"avg"`` for an empty body.
    """
    blocks_a, blocks_b = list(a.blocks or ()), list(b.blocks or ())
    shorter = min(len(blocks_a), len(blocks_b))
    cut = rng.randint(1, shorter - 1) if shorter >= 2 else shorter
    offspring = [blocks_a[:cut] + blocks_b[cut:], blocks_b[:cut] + blocks_a[cut:]]
    first = 0 if rng.random() < 0.5 else 1
    readouts = [p.readout for p in (a, b) if p.blocks] or [READOUTS[0]]
    readout = readouts[0] if rng.random() < 0.5 else readouts[-1]
    draft = BodyDraft((), readout, input_shape)
    fitting = [blocks for blocks in (offspring[first], offspring[1 - first]) if draft.fits(blocks)]
    blocks = fitting[0] if fitting else [blocks_a, blocks_b][first]
    return blocks, readout if blocks else READOUTS[0]
