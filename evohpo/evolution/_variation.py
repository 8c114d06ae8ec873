"""What the variation operators share: random steps inside bounds and the gene-id rule.

:mod:`~evohpo.evolution.mutation`, :mod:`~evohpo.evolution.crossover` and
:mod:`~evohpo.evolution.params` take their numeric steps here (Gaussian steps
drawn by DEAP, mirrored at the bounds) and settle the gene ids of a child's
blocks and layers with :func:`rekey`. Randomness comes only from the ``rng``
arguments.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from deap import tools

from evohpo._random import seeded_global_random
from evohpo.evolution.blocks import READOUTS, BlockGene, block_weight_shapes
from evohpo.evolution.genome import OPTIMIZERS, Genome, LayerGene, new_gene_id, weight_shapes

__all__ = [
    "MAX_FORCED",
    "REPAIR",
    "fresh_id",
    "gaussian_step",
    "neighbour_choices",
    "other_choice",
    "reflect",
    "rekey",
    "step_float",
    "step_log_int",
]

#: Lineage name of a repair into the search space.
REPAIR = "repair"

#: Bound on forced re-mutations; each one changes the value almost surely, so
#: the bound only guards against a pathological space.
MAX_FORCED = 100


def gaussian_step(sigma: float, rng: random.Random) -> float:
    """One Gaussian step drawn by DEAP's ``mutGaussian`` (applied for certain)."""
    value = [0.0]
    with seeded_global_random(rng):
        tools.mutGaussian(value, mu=0.0, sigma=sigma, indpb=1.0)
    return value[0]


def step_float(
    value: float, step: float, bounds: tuple[float, float], *, log: bool = False
) -> float:
    """``value`` moved by ``step`` (of its logarithm if ``log``), mirrored into ``bounds``.

    The result always differs from ``value`` when the bounds allow it: a step
    lost to rounding moves to the adjacent float instead.
    """
    low, high = bounds
    if low >= high:
        return low
    if log:
        moved = math.exp(reflect(math.log(value) + step, math.log(low), math.log(high)))
    else:
        moved = reflect(value + step, low, high)
    moved = min(high, max(low, moved))
    if moved != value:
        return moved
    toward, away = (high, low) if step >= 0 else (low, high)
    nearby = math.nextafter(value, toward)
    return nearby if nearby != value else math.nextafter(value, away)


def reflect(value: float, low: float, high: float) -> float:
    """Fold ``value`` back into ``[low, high]`` by mirroring at the bounds.

    Mirroring, unlike clipping, does not pile probability mass on the bounds.
    """
    if low >= high:
        return low
    span = high - low
    offset = (value - low) % (2.0 * span)
    if offset > span:
        offset = 2.0 * span - offset
    return min(high, max(low, low + offset))


def other_choice(current: Any, choices: Sequence[Any], rng: random.Random) -> Any:
    """A choice other than ``current`` (``current`` itself when it is the only one)."""
    others = [c for c in choices if c != current]
    return rng.choice(others) if others else current


def neighbour_choices(current: Any, choices: Sequence[Any]) -> list[Any]:
    """The choices next to ``current`` in sorted order (the nearest ones if it is none).

    Examples
    --------
    >>> neighbour_choices(3, (7, 1, 3, 5)), neighbour_choices(7, (1, 3, 5, 7))
    ([1, 5], [5])
    >>> neighbour_choices(4, (1, 3, 5, 7))
    [3, 5]
    """
    ordered = sorted(set(choices))
    below = [c for c in ordered if c < current]
    above = [c for c in ordered if c > current]
    return below[-1:] + above[:1]


def step_log_int(value: int, step: float, bounds: tuple[int, int]) -> int:
    """An int after a step of its logarithm, mirrored into ``bounds``.

    A step too small to reach another integer moves one in its direction
    instead, so a perturbation that fired always changes a changeable gene.
    """
    low, high = bounds
    if low == high:
        return low
    moved = reflect(math.log(value) + step, math.log(low), math.log(high))
    result = min(high, max(low, round(math.exp(moved))))
    if result == value:
        direction = 1 if step >= 0 else -1
        result = value + direction if low <= value + direction <= high else value - direction
    return result


def rekey(
    layers: Sequence[LayerGene],
    parents: Sequence[Genome],
    rng: random.Random,
    *,
    blocks: Sequence[BlockGene] | None = None,
    readout: str = READOUTS[0],
) -> tuple[tuple[BlockGene, ...] | None, tuple[LayerGene, ...]]:
    """A child's ``blocks`` and ``layers`` under the id rule of :mod:`evohpo.evolution.genome`.

    A gene with a parent's id keeps it only if it still has a weight shape
    that id had in a parent (a block's conv: input channels, channels,
    kernel; a layer's: input width, units, the first layer's input width
    being :meth:`~evohpo.evolution.genome.Genome.head_input_key` of the child
    with ``blocks`` and ``readout``), and only at its first occurrence;
    otherwise it gets a fresh id. Ids no parent has (genes this operator
    made) are kept while unique. Blocks are settled first, input side first.

    Returns
    -------
    blocks : tuple of BlockGene or None
        ``None`` when ``blocks`` is ``None`` (a dense child).
    layers : tuple of LayerGene
    """
    known: dict[str, set[tuple[Any, ...]]] = {}
    for parent in parents:
        for block, conv in zip(parent.blocks or (), parent.block_weight_shapes(), strict=True):
            known.setdefault(block.id, set()).add(("block", *conv))
        for layer, shape in zip(parent.layers, parent.weight_shapes(), strict=True):
            known.setdefault(layer.id, set()).add(shape)
    body = list(blocks or ())
    taken = set(known) | {block.id for block in body} | {layer.id for layer in layers}
    used: set[str] = set()

    def settle(gene_id: str, shape: tuple[Any, ...]) -> str:
        shapes = known.get(gene_id)
        if (shapes is not None and shape not in shapes) or (gene_id and gene_id in used):
            gene_id = fresh_id(rng, taken)
            taken.add(gene_id)
        used.add(gene_id)
        return gene_id

    new_blocks: list[BlockGene] = []
    for block, conv in zip(body, block_weight_shapes(body), strict=True):
        gene_id = settle(block.id, ("block", *conv))
        new_blocks.append(block if gene_id == block.id else replace(block, id=gene_id))
    new_layers: list[LayerGene] = []
    for layer, shape in zip(layers, weight_shapes(layers, _head_key(body, readout)), strict=True):
        gene_id = settle(layer.id, shape)
        if gene_id != layer.id:
            layer = replace(layer, id=gene_id)
        new_layers.append(layer)
    return (None if blocks is None else tuple(new_blocks)), tuple(new_layers)


def _head_key(blocks: Sequence[BlockGene], readout: str) -> int | str | None:
    """:meth:`Genome.head_input_key` of a genome with ``blocks`` and ``readout``.

    Read from a probe genome with the same body and no ids, so that the key
    is defined in one place even while the child's ids may still repeat.
    """
    if not blocks:
        return None
    probe = Genome(
        layers=(LayerGene(1, "relu", 0.0),),
        optimizer=OPTIMIZERS[0],
        learning_rate=1.0,
        weight_decay=0.0,
        batch_size=1,
        blocks=tuple(replace(block, id="") for block in blocks),
        readout=readout,
    )
    return probe.head_input_key()


def fresh_id(rng: random.Random, taken: set[str]) -> str:
    """A new gene id from ``rng`` that is none of ``taken``."""
    gene_id = new_gene_id(rng)
    while gene_id in taken:
        gene_id = new_gene_id(rng)
    return gene_id
