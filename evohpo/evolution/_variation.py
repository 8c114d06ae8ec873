"""What the variation operators share: random steps inside bounds and the gene-id rule.

:mod:`~evohpo.evolution.mutation`, :mod:`~evohpo.evolution.crossover` and
:mod:`~evohpo.evolution.params` take their numeric steps here (Gaussian steps
drawn by DEAP, mirrored at the bounds) and settle the gene ids of a child
with :func:`rekey`. Randomness comes only from the ``rng`` arguments.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from deap import tools

from evohpo._random import seeded_global_random
from evohpo.evolution.genome import Genome, LayerGene, new_gene_id, weight_shapes

__all__ = [
    "MAX_FORCED",
    "REPAIR",
    "fresh_id",
    "gaussian_step",
    "other_choice",
    "reflect",
    "rekey",
    "step_float",
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


def rekey(
    layers: Sequence[LayerGene], parents: Sequence[Genome], rng: random.Random
) -> tuple[LayerGene, ...]:
    """``layers`` under the id rule of :mod:`evohpo.evolution.genome`.

    A layer with a parent's id keeps it only if it still has a weight shape
    (input width, units) that id had in a parent, and only at its first
    occurrence; otherwise it gets a fresh id. Ids no parent has (layers this
    operator made) are kept while unique.
    """
    known: dict[str, set[tuple[int | str | None, int]]] = {}
    for parent in parents:
        for layer, shape in zip(parent.layers, weight_shapes(parent.layers), strict=True):
            known.setdefault(layer.id, set()).add(shape)
    taken = set(known) | {layer.id for layer in layers}
    used: set[str] = set()
    result: list[LayerGene] = []
    for layer, shape in zip(layers, weight_shapes(layers), strict=True):
        shapes = known.get(layer.id)
        if (shapes is not None and shape not in shapes) or (layer.id and layer.id in used):
            gene_id = fresh_id(rng, taken)
            taken.add(gene_id)
            layer = LayerGene(layer.units, layer.activation, layer.dropout, id=gene_id)
        used.add(layer.id)
        result.append(layer)
    return tuple(result)


def fresh_id(rng: random.Random, taken: set[str]) -> str:
    """A new gene id from ``rng`` that is none of ``taken``."""
    gene_id = new_gene_id(rng)
    while gene_id in taken:
        gene_id = new_gene_id(rng)
    return gene_id
