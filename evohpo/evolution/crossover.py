"""Crossover of genomes: blocks and layers by one-point crossover, globals uniformly (DEAP)."""

from __future__ import annotations

import random
from typing import Any

from deap import tools

from evohpo._random import seeded_global_random
from evohpo._validation import check_rng
from evohpo.evolution._body_variation import CROSS_BLOCKS, cross_bodies
from evohpo.evolution._variation import REPAIR, rekey
from evohpo.evolution.blocks import READOUTS, BlockGene
from evohpo.evolution.genome import Genome
from evohpo.evolution.space import SearchSpace

__all__ = ["crossover"]

# Operator names reported in lineage records.
_CROSS_LAYERS = "crossover:layers"
_CROSS_GLOBALS = "crossover:globals"


def crossover(
    a: Genome, b: Genome, space: SearchSpace, rng: random.Random
) -> tuple[Genome, list[str]]:
    """One child of ``a`` and ``b``: layers by one-point crossover, globals uniformly.

    The layer stacks are cut at one random point within the shorter parent
    (DEAP's ``cxOnePoint``) and their tails swapped, which gives two
    offspring, one as deep as each parent; the child is one of them at
    random. A one-layer parent, where DEAP's operator cannot cut, is cut
    after its only layer. The global genes (optimizer, learning rate, weight
    decay, batch size) come from either parent with equal probability
    (DEAP's ``cxUniform``).

    Convolutional bodies, of any depths, are crossed the same way after
    that, aligned at the input side: the blocks before the cut from one
    parent, the rest from the other, the readout from either parent. A body
    that would not fit the input shape of ``space`` is never made (see
    :func:`~evohpo.evolution._body_variation.cross_bodies`). Genomes without
    a body draw exactly what they drew before bodies existed.

    Parameters
    ----------
    a, b : Genome
        The parents.
    space : SearchSpace
        The child is repaired into this space (a no-op for parents inside it).
    rng : random.Random
        The only source of randomness.

    Returns
    -------
    child : Genome
        Its layers keep their ids where their weight shape is unchanged (the
        rule of :mod:`evohpo.evolution.genome`): the first layer after the cut gets a
        fresh id unless the layer before it is as wide as in its parent. A
        layer whose id already occurs earlier in the child (parents of common
        descent) gets a fresh id too, so ids stay unique within a genome.
        Blocks follow the same rule with their conv's weight shape, and the
        first layer gets a fresh id when what the body hands it changes.
    operators : list of str
        ``"crossover:blocks"`` when the child's body (blocks and readout)
        differs in value from both parents' bodies, ``"crossover:layers"``
        when its layers differ in value from both parents' layers,
        ``"crossover:globals"`` when its global genes
        differ from both parents' (so nothing is reported when the child
        equals a parent, e.g. for two equal parents), then ``"repair"`` if the
        repair changed it.

    Examples
    --------
    >>> import random
    >>> space = SearchSpace(max_layers=4)
    >>> a, b = space.sample(random.Random(0)), space.sample(random.Random(1))
    >>> child, ops = crossover(a, b, space, random.Random(2))
    >>> space.contains(child)
    True
    """
    check_rng(rng, "crossover")
    layers_a, layers_b = list(a.layers), list(b.layers)
    globals_a, globals_b = _globals(a), _globals(b)
    with seeded_global_random(rng):
        if min(len(layers_a), len(layers_b)) >= 2:
            tools.cxOnePoint(layers_a, layers_b)
        else:
            # cxOnePoint draws its cut from [1, shorter - 1], empty for one layer.
            layers_a[1:], layers_b[1:] = layers_b[1:], layers_a[1:]
        tools.cxUniform(globals_a, globals_b, indpb=0.5)
    layers = layers_a if rng.random() < 0.5 else layers_b
    # Only genomes with a body draw for one, after everything a dense genome draws.
    body = None
    if a.has_body or b.has_body:
        body = cross_bodies(a, b, space.input_shape, rng)

    # Values, not origins, decide what is reported: genes taken from the other
    # parent that equal this parent's mix nothing (gene equality ignores ids).
    ops: list[str] = []
    if body is not None and body not in (_body(a), _body(b)):
        ops.append(CROSS_BLOCKS)
    if tuple(layers) not in (a.layers, b.layers):
        ops.append(_CROSS_LAYERS)
    if globals_a not in (_globals(a), _globals(b)):
        ops.append(_CROSS_GLOBALS)
    optimizer, learning_rate, weight_decay, batch_size = globals_a
    crossed, readout = (None, READOUTS[0]) if body is None else body
    blocks, settled = rekey(layers, (a, b), rng, blocks=crossed, readout=readout)
    child = Genome(
        layers=settled,
        optimizer=optimizer,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        batch_size=batch_size,
        blocks=blocks,
        readout=readout,
    )
    repaired = space.repair(child)
    if repaired != child:
        ops.append(REPAIR)
    return repaired, ops


def _body(genome: Genome) -> tuple[list[BlockGene], str]:
    """A genome's body as :func:`cross_bodies` gives one (no blocks: the canonical readout)."""
    return list(genome.blocks or ()), genome.readout


def _globals(genome: Genome) -> list[Any]:
    return [genome.optimizer, genome.learning_rate, genome.weight_decay, genome.batch_size]
