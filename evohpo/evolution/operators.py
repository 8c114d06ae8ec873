"""Genetic operators: mutation, crossover and selection, built on DEAP.

DEAP supplies the numeric kernels (Gaussian steps, one-point and uniform
crossover, tournaments, non-dominated sorting and crowding distance); this
module adapts them to immutable :class:`~evohpo.evolution.genome.Genome` values and to
plain Optuna parameter dicts.

Two rules hold for every operator here:

* randomness comes only from the ``rng`` argument. DEAP draws from the global
  :mod:`random` module, so each DEAP call runs inside
  :func:`evohpo._random.seeded_global_random`, which seeds the global state
  from ``rng`` and restores it afterwards: callers never see it move;
* inputs are never modified; every operator returns new values.

No class is registered through ``deap.creator`` (it writes classes into a
global module, which breaks pickling under ``spawn``): the fitness classes
below are plain module-level subclasses of :class:`deap.base.Fitness`.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deap import base, tools
from deap.tools.emo import assignCrowdingDist
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from evohpo._random import seeded_global_random
from evohpo._validation import check_float, check_int, check_probability, raise_invalid
from evohpo.evolution.genome import Genome, LayerGene, new_gene_id, weight_shapes
from evohpo.evolution.space import SearchSpace
from evohpo.exceptions import InvalidParameterError

__all__ = [
    "MutationRates",
    "crossover",
    "crossover_params",
    "mutate",
    "mutate_params",
    "nsga2_rank_and_crowding",
    "select_nsga2",
    "select_rank_tournament",
    "select_tournament",
    "youngest",
]

# Operator names reported in lineage records.
_UNITS = "mutate:units"
_ACTIVATION = "mutate:activation"
_DROPOUT = "mutate:dropout"
_OPTIMIZER = "mutate:optimizer"
_LEARNING_RATE = "mutate:learning_rate"
_WEIGHT_DECAY = "mutate:weight_decay"
_BATCH_SIZE = "mutate:batch_size"
_INSERT = "insert_layer"
_REMOVE = "remove_layer"
_DUPLICATE = "duplicate_layer"
_CROSS_LAYERS = "crossover:layers"
_CROSS_GLOBALS = "crossover:globals"
_REPAIR = "repair"

# Bound on forced re-mutations; each one changes the genome almost surely, so
# the bound only guards against a pathological space.
_MAX_FORCED = 100


# -- DEAP individuals ------------------------------------------------------------
class _MaxFitness(base.Fitness):  # type: ignore[misc]
    """Single-objective fitness, maximised."""

    weights = (1.0,)


@functools.cache
def _max_fitness_class(n_objectives: int) -> type[base.Fitness]:
    """A fitness class maximising ``n_objectives`` objectives, made once per count."""
    if n_objectives == 1:
        return _MaxFitness
    name = f"_MaxFitness{n_objectives}"
    cls: type[base.Fitness] = type(name, (base.Fitness,), {"weights": (1.0,) * n_objectives})
    cls.__module__ = __name__
    return cls


class _Individual:
    """What DEAP's selection tools need: a ``fitness``; plus the caller's index."""

    __slots__ = ("fitness", "index")

    def __init__(self, index: int, fitness: base.Fitness) -> None:
        self.index = index
        self.fitness = fitness


def _individuals(values: Sequence[Sequence[float]]) -> list[_Individual]:
    n_objectives = len(values[0]) if values else 1
    fitness_class = _max_fitness_class(n_objectives)
    return [_Individual(i, fitness_class(tuple(v))) for i, v in enumerate(values)]


# -- mutation of genomes ----------------------------------------------------------------
@dataclass(frozen=True)
class MutationRates:
    """Probabilities and step sizes of :func:`mutate`.

    Parameters
    ----------
    gene : float
        Probability that each gene is perturbed: each layer's units,
        activation and dropout, and each global gene (optimizer, learning
        rate, weight decay, batch size).
    insert_layer, remove_layer, duplicate_layer : float
        Probabilities of the structural mutations, each applied independently
        (and skipped when the depth bounds of the space forbid it).
    units_sigma : float
        Standard deviation of the Gaussian step of ``log(units)``.
    learning_rate_sigma, weight_decay_sigma : float
        Standard deviations of the Gaussian steps of the logarithms.
    dropout_sigma : float
        Standard deviation of the Gaussian step of the dropout rate.

    Notes
    -----
    The defaults take steps of about a factor of two in units and learning
    rate (``exp(0.8)``: the usual "halve or double" of a width), and change
    the structure rarely: an inserted layer is random, so it mostly undoes
    what selection found. On the objectives of ``bench/sampler_settings.py``
    these defaults beat the earlier ones (steps of 0.4 and 0.5, structural
    probabilities of 0.1). They were chosen there on seeds 2000 to 5149 and
    then checked on the seeds of the README's tables.
    """

    gene: float = 0.1
    insert_layer: float = 0.05
    remove_layer: float = 0.05
    duplicate_layer: float = 0.05
    units_sigma: float = 0.8
    learning_rate_sigma: float = 0.8
    weight_decay_sigma: float = 1.0
    dropout_sigma: float = 0.1

    def __post_init__(self) -> None:
        owner = "MutationRates"
        for name in ("gene", "insert_layer", "remove_layer", "duplicate_layer"):
            object.__setattr__(self, name, check_probability(getattr(self, name), name, owner))
        for name in ("units_sigma", "learning_rate_sigma", "weight_decay_sigma", "dropout_sigma"):
            # A zero step could never move a gene, so a forced mutation could stall.
            value = check_float(getattr(self, name), name, owner, low=0.0, low_open=True)
            object.__setattr__(self, name, value)


class _Draft:
    """A genome under construction: the mutable working copy of one operator call."""

    def __init__(self, genome: Genome) -> None:
        self.layers: list[LayerGene] = list(genome.layers)
        self.parent_ids = {layer.id for layer in genome.layers}
        self.optimizer = genome.optimizer
        self.learning_rate = genome.learning_rate
        self.weight_decay = genome.weight_decay
        self.batch_size = genome.batch_size

    def taken_ids(self) -> set[str]:
        """Ids a new layer must not get: the parent's and the draft's."""
        return self.parent_ids | {layer.id for layer in self.layers}

    def build(self) -> Genome:
        return Genome(
            layers=tuple(self.layers),
            optimizer=self.optimizer,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
        )


def mutate(
    genome: Genome,
    space: SearchSpace,
    rng: random.Random,
    rates: MutationRates = MutationRates(),  # frozen, so one shared default is safe
) -> tuple[Genome, list[str]]:
    """A mutated copy of ``genome``, inside ``space``.

    Each gene is perturbed with probability ``rates.gene``: units, learning
    rate and weight decay by a Gaussian step of their logarithm (DEAP's
    ``mutGaussian``), dropout by a Gaussian step, and activation, optimizer
    and batch size by drawing a different choice. Then a random layer is
    removed, a fresh random layer inserted at a random position, and a
    random layer duplicated next to itself, each with its own probability and
    only where the depth bounds allow. If the result equals the parent,
    random applicable mutations are applied until it differs.

    Gene ids follow the layers' weight shapes (the rule of
    :mod:`evohpo.evolution.genome`): a layer whose units or input width change gets a
    fresh id (the layer after a layer whose units changed, after an inserted
    or removed layer, too), and so do an inserted layer and a duplicate; a
    layer whose activation or dropout changes keeps its id.

    Parameters
    ----------
    genome : Genome
        The parent. A parent outside ``space`` is first repaired into it.
    space : SearchSpace
        Bounds and choices of every gene.
    rng : random.Random
        The only source of randomness.
    rates : MutationRates, optional
        Probabilities and step sizes.

    Returns
    -------
    child : Genome
        The mutant, inside ``space`` and different from ``genome`` unless the
        space holds a single genome.
    operators : list of str
        The mutations that changed the child, in order and without repeats,
        e.g. ``["mutate:units", "insert_layer"]``; ``"repair"`` comes first
        when the parent lay outside the space.

    Examples
    --------
    >>> import random
    >>> space = SearchSpace(max_layers=3, units=(8, 64))
    >>> parent = space.sample(random.Random(0))
    >>> child, ops = mutate(parent, space, random.Random(1))
    >>> child != parent and space.contains(child) and len(ops) > 0
    True
    """
    _check_rng(rng, "mutate")
    if not isinstance(rates, MutationRates):
        raise_invalid("rates", "mutate", "a MutationRates", rates)
    ops: list[str] = []
    parent = space.repair(genome)
    if parent != genome:
        ops.append(_REPAIR)
    draft = _Draft(parent)
    _mutate_genes(draft, space, rng, rates, ops)
    _mutate_structure(draft, space, rng, rates, ops)
    for _ in range(_MAX_FORCED):
        if draft.build() != parent:
            break
        kinds = _applicable_kinds(draft, space)
        if not kinds:  # the space holds this genome only
            break
        _force(rng.choice(kinds), draft, space, rng, rates, ops)
    child = space.repair(draft.build())
    child = child.replace(layers=_rekey(child.layers, (genome, parent), rng))
    return child, _unique(ops)


def _mutate_genes(
    draft: _Draft, space: SearchSpace, rng: random.Random, rates: MutationRates, ops: list[str]
) -> None:
    """Per-gene perturbations, each with probability ``rates.gene``."""
    n = len(draft.layers)
    # One DEAP call steps every numeric gene: log(units) per layer, dropout per
    # layer, then log(learning rate) and log(weight decay).
    before = [math.log(layer.units) for layer in draft.layers]
    before += [layer.dropout for layer in draft.layers]
    before += [math.log(draft.learning_rate), math.log(draft.weight_decay)]
    sigmas = [rates.units_sigma] * n + [rates.dropout_sigma] * n
    sigmas += [rates.learning_rate_sigma, rates.weight_decay_sigma]
    after = list(before)
    with seeded_global_random(rng):
        tools.mutGaussian(after, mu=0.0, sigma=sigmas, indpb=rates.gene)

    for i in range(n):
        layer = draft.layers[i]
        units = layer.units
        if after[i] != before[i]:
            units = _units_from_log(layer.units, after[i] - before[i], space)
        dropout = layer.dropout
        if after[n + i] != before[n + i]:
            dropout = _step_float(layer.dropout, after[n + i] - before[n + i], space.dropout)
        activation = layer.activation
        if len(space.activations) > 1 and rng.random() < rates.gene:
            activation = _other_choice(activation, space.activations, rng)
        draft.layers[i] = _changed_layer(layer, units, activation, dropout, rng, ops)

    lr_step, wd_step = after[2 * n] - before[2 * n], after[2 * n + 1] - before[2 * n + 1]
    if lr_step != 0.0 and space.learning_rate[0] < space.learning_rate[1]:
        lr = draft.learning_rate
        draft.learning_rate = _step_float(lr, lr_step, space.learning_rate, log=True)
        ops.append(_LEARNING_RATE)
    if wd_step != 0.0 and space.weight_decay[0] < space.weight_decay[1]:
        wd = draft.weight_decay
        draft.weight_decay = _step_float(wd, wd_step, space.weight_decay, log=True)
        ops.append(_WEIGHT_DECAY)
    if len(space.optimizers) > 1 and rng.random() < rates.gene:
        draft.optimizer = _other_choice(draft.optimizer, space.optimizers, rng)
        ops.append(_OPTIMIZER)
    if len(space.batch_sizes) > 1 and rng.random() < rates.gene:
        draft.batch_size = _other_choice(draft.batch_size, space.batch_sizes, rng)
        ops.append(_BATCH_SIZE)


def _changed_layer(
    layer: LayerGene,
    units: int,
    activation: str,
    dropout: float,
    rng: random.Random,
    ops: list[str],
) -> LayerGene:
    """``layer`` with new genes, its id kept (:func:`_rekey` settles ids at the end)."""
    if units == layer.units and activation == layer.activation and dropout == layer.dropout:
        return layer
    if units != layer.units:
        ops.append(_UNITS)
    if activation != layer.activation:
        ops.append(_ACTIVATION)
    if dropout != layer.dropout:
        ops.append(_DROPOUT)
    return LayerGene(units=units, activation=activation, dropout=dropout, id=layer.id)


def _mutate_structure(
    draft: _Draft, space: SearchSpace, rng: random.Random, rates: MutationRates, ops: list[str]
) -> None:
    """Remove, insert and duplicate layers, each with its own probability."""
    # Removal first, so that a genome at full depth can still grow after it.
    if rng.random() < rates.remove_layer and len(draft.layers) > space.min_layers:
        _remove_layer(draft, rng, ops)
    if rng.random() < rates.insert_layer and len(draft.layers) < space.max_layers:
        _insert_layer(draft, space, rng, ops)
    if rng.random() < rates.duplicate_layer and len(draft.layers) < space.max_layers:
        _duplicate_layer(draft, rng, ops)


def _remove_layer(draft: _Draft, rng: random.Random, ops: list[str]) -> None:
    del draft.layers[rng.randrange(len(draft.layers))]
    ops.append(_REMOVE)


def _insert_layer(draft: _Draft, space: SearchSpace, rng: random.Random, ops: list[str]) -> None:
    position = rng.randint(0, len(draft.layers))
    layer = space.sample_layer(rng)
    taken = draft.taken_ids()
    if layer.id in taken:  # only when rng repeats a stream that made the parent
        layer = LayerGene(layer.units, layer.activation, layer.dropout, _fresh_id(rng, taken))
    draft.layers.insert(position, layer)
    ops.append(_INSERT)


def _duplicate_layer(draft: _Draft, rng: random.Random, ops: list[str]) -> None:
    index = rng.randrange(len(draft.layers))
    layer = draft.layers[index]
    taken = draft.taken_ids()
    copy = LayerGene(layer.units, layer.activation, layer.dropout, id=_fresh_id(rng, taken))
    draft.layers.insert(index + 1, copy)
    ops.append(_DUPLICATE)


def _applicable_kinds(draft: _Draft, space: SearchSpace) -> list[str]:
    """The mutations that can change ``draft`` within ``space``."""
    depth = len(draft.layers)
    candidates = [
        (_UNITS, space.units[0] < space.units[1]),
        (_ACTIVATION, len(space.activations) > 1),
        (_DROPOUT, space.dropout[0] < space.dropout[1]),
        (_OPTIMIZER, len(space.optimizers) > 1),
        (_LEARNING_RATE, space.learning_rate[0] < space.learning_rate[1]),
        (_WEIGHT_DECAY, space.weight_decay[0] < space.weight_decay[1]),
        (_BATCH_SIZE, len(space.batch_sizes) > 1),
        (_INSERT, depth < space.max_layers),
        (_REMOVE, depth > space.min_layers),
        (_DUPLICATE, depth < space.max_layers),
    ]
    return [kind for kind, applicable in candidates if applicable]


def _force(
    kind: str,
    draft: _Draft,
    space: SearchSpace,
    rng: random.Random,
    rates: MutationRates,
    ops: list[str],
) -> None:
    """Apply mutation ``kind`` for certain (to a random layer for per-layer genes)."""
    if kind == _INSERT:
        _insert_layer(draft, space, rng, ops)
    elif kind == _REMOVE:
        _remove_layer(draft, rng, ops)
    elif kind == _DUPLICATE:
        _duplicate_layer(draft, rng, ops)
    elif kind in (_UNITS, _ACTIVATION, _DROPOUT):
        index = rng.randrange(len(draft.layers))
        layer = draft.layers[index]
        units, activation, dropout = layer.units, layer.activation, layer.dropout
        if kind == _UNITS:
            step = _gaussian_step(rates.units_sigma, rng)
            units = _units_from_log(layer.units, step, space)
        elif kind == _ACTIVATION:
            activation = _other_choice(activation, space.activations, rng)
        else:
            step = _gaussian_step(rates.dropout_sigma, rng)
            dropout = _step_float(dropout, step, space.dropout)
        draft.layers[index] = _changed_layer(layer, units, activation, dropout, rng, ops)
    elif kind == _LEARNING_RATE:
        step = _gaussian_step(rates.learning_rate_sigma, rng)
        draft.learning_rate = _step_float(draft.learning_rate, step, space.learning_rate, log=True)
        ops.append(kind)
    elif kind == _WEIGHT_DECAY:
        step = _gaussian_step(rates.weight_decay_sigma, rng)
        draft.weight_decay = _step_float(draft.weight_decay, step, space.weight_decay, log=True)
        ops.append(kind)
    elif kind == _OPTIMIZER:
        draft.optimizer = _other_choice(draft.optimizer, space.optimizers, rng)
        ops.append(kind)
    else:
        draft.batch_size = _other_choice(draft.batch_size, space.batch_sizes, rng)
        ops.append(kind)


def _gaussian_step(sigma: float, rng: random.Random) -> float:
    """One Gaussian step drawn by DEAP's ``mutGaussian`` (applied for certain)."""
    value = [0.0]
    with seeded_global_random(rng):
        tools.mutGaussian(value, mu=0.0, sigma=sigma, indpb=1.0)
    return value[0]


def _units_from_log(units: int, step: float, space: SearchSpace) -> int:
    """Units after a step of ``log(units)``, inside the space.

    A step too small to reach another integer moves one unit in its direction
    instead, so a perturbation that fired always changes a changeable width.
    """
    low, high = space.units
    if low == high:
        return low
    value = _reflect(math.log(units) + step, math.log(low), math.log(high))
    result = min(high, max(low, round(math.exp(value))))
    if result == units:
        direction = 1 if step >= 0 else -1
        result = units + direction if low <= units + direction <= high else units - direction
    return result


def _step_float(
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
        moved = math.exp(_reflect(math.log(value) + step, math.log(low), math.log(high)))
    else:
        moved = _reflect(value + step, low, high)
    moved = min(high, max(low, moved))
    if moved != value:
        return moved
    toward, away = (high, low) if step >= 0 else (low, high)
    nearby = math.nextafter(value, toward)
    return nearby if nearby != value else math.nextafter(value, away)


def _reflect(value: float, low: float, high: float) -> float:
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


def _other_choice(current: Any, choices: Sequence[Any], rng: random.Random) -> Any:
    """A choice other than ``current`` (``current`` itself when it is the only one)."""
    others = [c for c in choices if c != current]
    return rng.choice(others) if others else current


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _rekey(
    layers: Sequence[LayerGene], parents: Sequence[Genome], rng: random.Random
) -> tuple[LayerGene, ...]:
    """``layers`` under the id rule of :mod:`evohpo.evolution.genome`.

    A layer with a parent's id keeps it only if it still has a weight shape
    (input width, units) that id had in a parent, and only at its first
    occurrence; otherwise it gets a fresh id. Ids no parent has (layers this
    operator made) are kept while unique.
    """
    known: dict[str, set[tuple[int | None, int]]] = {}
    for parent in parents:
        for layer, shape in zip(parent.layers, weight_shapes(parent.layers), strict=True):
            known.setdefault(layer.id, set()).add(shape)
    taken = set(known) | {layer.id for layer in layers}
    used: set[str] = set()
    result: list[LayerGene] = []
    for layer, shape in zip(layers, weight_shapes(layers), strict=True):
        shapes = known.get(layer.id)
        if (shapes is not None and shape not in shapes) or (layer.id and layer.id in used):
            gene_id = _fresh_id(rng, taken)
            taken.add(gene_id)
            layer = LayerGene(layer.units, layer.activation, layer.dropout, id=gene_id)
        used.add(layer.id)
        result.append(layer)
    return tuple(result)


def _fresh_id(rng: random.Random, taken: set[str]) -> str:
    """A new gene id from ``rng`` that is none of ``taken``."""
    gene_id = new_gene_id(rng)
    while gene_id in taken:
        gene_id = new_gene_id(rng)
    return gene_id


# -- crossover of genomes -------------------------------------------------------------------
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
    operators : list of str
        ``"crossover:layers"`` when the child's layers differ in value from
        both parents' layers, ``"crossover:globals"`` when its global genes
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
    _check_rng(rng, "crossover")
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

    # Values, not origins, decide what is reported: genes taken from the other
    # parent that equal this parent's mix nothing (LayerGene equality ignores ids).
    ops: list[str] = []
    if tuple(layers) not in (a.layers, b.layers):
        ops.append(_CROSS_LAYERS)
    if globals_a not in (_globals(a), _globals(b)):
        ops.append(_CROSS_GLOBALS)
    optimizer, learning_rate, weight_decay, batch_size = globals_a
    child = Genome(
        layers=_rekey(layers, (a, b), rng),
        optimizer=optimizer,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        batch_size=batch_size,
    )
    repaired = space.repair(child)
    if repaired != child:
        ops.append(_REPAIR)
    return repaired, ops


def _globals(genome: Genome) -> list[Any]:
    return [genome.optimizer, genome.learning_rate, genome.weight_decay, genome.batch_size]


# -- selection ------------------------------------------------------------------------------
def select_tournament(
    fitness: Sequence[float], k: int, tournament_size: int, rng: random.Random
) -> list[int]:
    """``k`` winners of tournaments among ``tournament_size`` random individuals.

    DEAP's ``selTournament``: aspirants are drawn with replacement and the
    fittest wins. Fitness is maximised; negate it to minimise.

    Parameters
    ----------
    fitness : sequence of float
        One value per individual; ``-inf`` is allowed (e.g. failed trials),
        NaN is not.
    k : int
        Number of selections, ``>= 0``.
    tournament_size : int
        Aspirants per tournament, ``>= 1``.
    rng : random.Random
        The only source of randomness.

    Returns
    -------
    list of int
        Indices into ``fitness``, one per selection (repeats possible).

    Examples
    --------
    >>> import random
    >>> select_tournament([0.1, 0.9, 0.5], k=2, tournament_size=3, rng=random.Random(0))
    [1, 1]
    """
    owner = "select_tournament"
    _check_rng(rng, owner)
    values = _fitness_values(fitness, "fitness", owner)
    k = check_int(k, "k", owner, low=0)
    tournament_size = check_int(tournament_size, "tournament_size", owner, low=1)
    if k == 0:
        return []
    _check_non_empty(values, "fitness", owner)
    individuals = _individuals([(v,) for v in values])
    with seeded_global_random(rng):
        chosen = tools.selTournament(individuals, k, tournament_size)
    return [individual.index for individual in chosen]


def select_rank_tournament(
    fitness: Sequence[float],
    k: int,
    tournament_size: int,
    probabilities: Sequence[float],
    rng: random.Random,
) -> list[int]:
    """``k`` selections by rank-probability tournaments.

    Each tournament draws ``tournament_size`` distinct individuals at random
    (all of them when the population is smaller), ranks them by fitness and
    picks the best with probability ``p1``, the second with ``p2``, the third
    with ``p3`` and so on; the probabilities of the ranks present are
    normalised to sum to one, and ranks beyond ``len(probabilities)`` are
    never picked. Ties keep the random draw order. Fitness is maximised.

    Parameters
    ----------
    fitness : sequence of float
        One value per individual; ``-inf`` is allowed, NaN is not.
    k : int
        Number of selections, ``>= 0``.
    tournament_size : int
        Individuals per tournament, ``>= 1``.
    probabilities : sequence of float
        ``p1 >= p2 >= ... >= 0`` with a positive sum.
    rng : random.Random
        The only source of randomness.

    Returns
    -------
    list of int
        Indices into ``fitness``, one per selection.

    Examples
    --------
    >>> import random
    >>> picks = select_rank_tournament([3.0, 1.0, 2.0], 1000, 3, [0.6, 0.3, 0.1],
    ...                                random.Random(0))
    >>> picks.count(0) > picks.count(2) > picks.count(1)
    True
    """
    owner = "select_rank_tournament"
    _check_rng(rng, owner)
    values = _fitness_values(fitness, "fitness", owner)
    k = check_int(k, "k", owner, low=0)
    tournament_size = check_int(tournament_size, "tournament_size", owner, low=1)
    weights = _rank_probabilities(probabilities, owner)
    if k == 0:
        return []
    _check_non_empty(values, "fitness", owner)
    size = min(tournament_size, len(values))
    rank_weights = weights[:size]
    chosen: list[int] = []
    for _ in range(k):
        aspirants = rng.sample(range(len(values)), size)
        # A stable sort keeps the random draw order among equal fitness.
        ranked = sorted(aspirants, key=lambda i: values[i], reverse=True)
        rank = rng.choices(range(len(rank_weights)), weights=rank_weights)[0]
        chosen.append(ranked[rank])
    return chosen


def _rank_probabilities(probabilities: Sequence[float], owner: str) -> list[float]:
    expected = "a non-empty, non-increasing sequence of probabilities >= 0 with a positive sum"
    if isinstance(probabilities, (str, bytes)) or not isinstance(probabilities, Sequence):
        raise_invalid("probabilities", owner, expected, probabilities)
    weights = [
        check_float(p, f"probabilities[{i}]", owner, low=0.0) for i, p in enumerate(probabilities)
    ]
    if not weights or sum(weights) <= 0.0:
        raise_invalid("probabilities", owner, expected, probabilities)
    if any(later > earlier for earlier, later in itertools.pairwise(weights)):
        raise_invalid("probabilities", owner, expected, probabilities)
    return weights


def youngest(birth_order: Sequence[int], size: int) -> list[int]:
    """Indices of the ``size`` most recently born individuals (aging evolution).

    Regularized evolution (Real et al. 2019, AmoebaNet) keeps the population
    as a queue: the oldest individuals die whatever their fitness. Ties in
    ``birth_order`` favour the later index.

    Parameters
    ----------
    birth_order : sequence of int
        When each individual was born (e.g. its trial number); larger is younger.
    size : int
        How many survive, ``>= 0``; all do when ``size >= len(birth_order)``.

    Returns
    -------
    list of int
        Indices into ``birth_order``, in increasing order.

    Examples
    --------
    >>> youngest([5, 1, 7, 3], size=2)
    [0, 2]
    """
    owner = "youngest"
    if isinstance(birth_order, (str, bytes)) or not isinstance(birth_order, Sequence):
        raise_invalid("birth_order", owner, "a sequence of int", birth_order)
    births = [check_int(b, f"birth_order[{i}]", owner) for i, b in enumerate(birth_order)]
    size = check_int(size, "size", owner, low=0)
    if size == 0:
        return []
    by_age = sorted(range(len(births)), key=lambda i: (births[i], i))
    return sorted(by_age[-size:])


def select_nsga2(values: Sequence[Sequence[float]], k: int) -> list[int]:
    """``k`` individuals by NSGA-II: whole Pareto fronts first, then crowding.

    DEAP's ``selNSGA2``. Every objective is maximised (negate those to
    minimise). Deterministic.

    Parameters
    ----------
    values : sequence of sequence of float
        One row of objective values per individual, all rows as long;
        infinities are allowed, NaN is not.
    k : int
        Number to select, ``>= 0``; everyone is selected when ``k >= len(values)``.

    Returns
    -------
    list of int
        ``min(k, len(values))`` distinct indices into ``values``, by front, then
        by decreasing crowding distance within the last front selected.

    Examples
    --------
    >>> select_nsga2([[1.0, 1.0], [2.0, 2.0], [3.0, 0.0], [0.0, 0.0]], k=2)
    [1, 2]
    """
    owner = "select_nsga2"
    rows = _objective_rows(values, owner)
    k = min(check_int(k, "k", owner, low=0), len(rows))
    if k == 0:
        return []
    chosen = tools.selNSGA2(_individuals(rows), k)
    return [individual.index for individual in chosen]


def nsga2_rank_and_crowding(values: Sequence[Sequence[float]]) -> list[tuple[int, float]]:
    """Each individual's Pareto front rank and crowding distance.

    DEAP's ``sortNondominated`` and ``assignCrowdingDist``, for callers that
    run their own binary tournament (lower rank wins, then larger crowding).
    Every objective is maximised.

    Parameters
    ----------
    values : sequence of sequence of float
        One row of objective values per individual, all rows as long;
        infinities are allowed, NaN is not.

    Returns
    -------
    list of (int, float)
        Per individual, in input order: the rank of its front (0 for the
        non-dominated front) and its crowding distance within that front
        (``inf`` at the extremes).

    Examples
    --------
    >>> nsga2_rank_and_crowding([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    [(0, inf), (0, inf), (1, inf)]
    """
    rows = _objective_rows(values, "nsga2_rank_and_crowding")
    individuals = _individuals(rows)
    result: list[tuple[int, float]] = [(0, 0.0)] * len(rows)
    for rank, front in enumerate(tools.sortNondominated(individuals, len(individuals))):
        assignCrowdingDist(front)
        for individual in front:
            result[individual.index] = (rank, float(individual.fitness.crowding_dist))
    return result


def _fitness_values(fitness: Any, name: str, owner: str) -> list[float]:
    expected = "a sequence of real numbers (not NaN)"
    if isinstance(fitness, (str, bytes)) or not isinstance(fitness, Sequence):
        raise_invalid(name, owner, expected, fitness)
    values: list[float] = []
    for i, value in enumerate(fitness):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
            raise_invalid(f"{name}[{i}]", owner, "a real number (not NaN)", value)
        values.append(float(value))
    return values


def _check_non_empty(values: Sequence[Any], name: str, owner: str) -> None:
    if not values:
        raise_invalid(name, owner, "non-empty when k > 0", values)


def _objective_rows(values: Any, owner: str) -> list[tuple[float, ...]]:
    expected = "a sequence of real numbers (not NaN)"
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise_invalid("values", owner, "a sequence of rows of real numbers", values)
    rows: list[tuple[float, ...]] = []
    for i, row in enumerate(values):
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence) or not row:
            raise_invalid(f"values[{i}]", owner, "a non-empty " + expected, row)
        rows.append(tuple(_fitness_values(row, f"values[{i}]", owner)))
        if len(rows[i]) != len(rows[0]):
            raise_invalid(
                f"values[{i}]", owner, f"a row of {len(rows[0])} values like values[0]", row
            )
    return _finite_surrogates(rows)


def _finite_surrogates(rows: list[tuple[float, ...]]) -> list[tuple[float, ...]]:
    """``rows`` with each infinity replaced by a finite value beyond its column's range.

    Crowding distances subtract objective values, and ``inf - inf`` is NaN.
    The order within every column, hence Pareto dominance, is unchanged, and
    an infinite value still lies far outside the finite ones.
    """
    if all(math.isfinite(v) for row in rows for v in row):
        return rows
    columns: list[list[float]] = [list(column) for column in zip(*rows, strict=True)]
    for column in columns:
        finite = [v for v in column if math.isfinite(v)]
        low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
        span = (high - low) or 1.0
        for j, v in enumerate(column):
            if v == math.inf:
                column[j] = high + span
            elif v == -math.inf:
                column[j] = low - span
    return [tuple(row) for row in zip(*columns, strict=True)]


# -- operators on Optuna parameter dicts ------------------------------------------------------
def mutate_params(
    params: Mapping[str, Any],
    distributions: Mapping[str, BaseDistribution],
    rng: random.Random,
    gene_prob: float,
    *,
    sigma: float = 0.1,
    ensure_change: bool = True,
) -> tuple[dict[str, Any], list[str]]:
    """A mutated copy of an Optuna parameter dict.

    For objectives with their own parameter names (conditional ones
    included). Each parameter is perturbed with probability ``gene_prob``:
    a float or int by a Gaussian step of ``sigma`` times its range (of the
    logarithm if ``log=True``; DEAP's ``mutGaussian``), mirrored at the
    bounds and snapped to its ``step``; a categorical by drawing a different
    choice. A numeric step too small to reach another grid value moves one
    grid step instead. If nothing changed and ``ensure_change`` is true, one
    random mutable parameter is perturbed for certain.

    Only the parameters in ``params`` are mutated: pass those the parent
    actually used, so that every reported mutation is one the child can
    express (a conditional parameter the parent never asked for is not
    worth a mutation).

    Parameters
    ----------
    params : mapping of str to value
        The parent's parameters (external representation, as in
        ``FrozenTrial.params``).
    distributions : mapping of str to BaseDistribution
        A distribution for every key of ``params`` (more keys are ignored).
    rng : random.Random
        The only source of randomness.
    gene_prob : float
        Per-parameter mutation probability in ``[0, 1]``.
    sigma : float, optional
        Step size as a fraction of each numeric range, ``> 0``.
    ensure_change : bool, default=True
        Whether a child equal to ``params`` is perturbed until it differs;
        ``False`` when other genes of the same child already changed.

    Returns
    -------
    child : dict
        Same keys, every value inside its distribution (a parent value
        outside it is first moved into it).
    operators : list of str
        ``"mutate:<name>"`` for each mutated parameter, in ``params`` order.

    Examples
    --------
    >>> import random
    >>> from optuna.distributions import FloatDistribution
    >>> child, ops = mutate_params({"x": 0.5}, {"x": FloatDistribution(0.0, 1.0)},
    ...                            random.Random(0), gene_prob=1.0)
    >>> ops, 0.0 <= child["x"] <= 1.0, child["x"] != 0.5
    (['mutate:x'], True, True)
    """
    owner = "mutate_params"
    _check_rng(rng, owner)
    gene_prob = check_probability(gene_prob, "gene_prob", owner)
    sigma = check_float(sigma, "sigma", owner, low=0.0, low_open=True)
    if not isinstance(ensure_change, bool):
        raise_invalid("ensure_change", owner, "a bool", ensure_change)
    missing = [name for name in params if name not in distributions]
    if missing:
        raise InvalidParameterError(
            f"The 'distributions' parameter of {owner} must map every parameter to a "
            f"distribution. Got none for {missing}."
        )
    dists = {name: distributions[name] for name in params}
    start = {name: _project(name, value, dists[name], rng) for name, value in params.items()}
    child = dict(start)
    mutable = [name for name, dist in dists.items() if _is_mutable(dist)]

    numeric = [name for name in mutable if not isinstance(dists[name], CategoricalDistribution)]
    before = [_Numeric(dists[name]).to_search(child[name]) for name in numeric]
    after = list(before)
    sigmas = [sigma * _Numeric(dists[name]).width for name in numeric]
    with seeded_global_random(rng):
        tools.mutGaussian(after, mu=0.0, sigma=sigmas, indpb=gene_prob)
    changed: set[str] = set()
    for name, old, new in zip(numeric, before, after, strict=True):
        if new != old:
            child[name] = _Numeric(dists[name]).step_to(child[name], new - old)
            changed.add(name)
    for name in mutable:
        dist = dists[name]
        if isinstance(dist, CategoricalDistribution) and rng.random() < gene_prob:
            child[name] = _other_category(child[name], dist, rng)
            changed.add(name)

    changed = {name for name in changed if child[name] != start[name]}

    # Guarantee a change: perturb random mutable parameters until one moves.
    for _ in range(_MAX_FORCED if ensure_change and mutable and not changed else 0):
        name = rng.choice(mutable)
        dist = dists[name]
        if isinstance(dist, CategoricalDistribution):
            child[name] = _other_category(child[name], dist, rng)
        else:
            numeric_dist = _Numeric(dist)
            step = _gaussian_step(sigma * numeric_dist.width, rng)
            child[name] = numeric_dist.step_to(child[name], step)
        if child[name] != start[name]:
            changed.add(name)
            break
    return child, [f"mutate:{name}" for name in params if name in changed]


def crossover_params(
    a: Mapping[str, Any], b: Mapping[str, Any], rng: random.Random
) -> dict[str, Any]:
    """Uniform crossover of two parameter dicts over the union of their keys.

    A key of both parents takes either parent's value with equal probability
    (DEAP's ``cxUniform``); a key of only one parent (a conditional parameter
    the other did not use) is inherited from it.

    Parameters
    ----------
    a, b : mapping of str to value
        The parents' parameters.
    rng : random.Random
        The only source of randomness.

    Returns
    -------
    dict
        The child: ``a``'s keys in order, then ``b``'s other keys.

    Examples
    --------
    >>> import random
    >>> child = crossover_params({"x": 1, "y": 2}, {"x": 3, "z": 4}, random.Random(0))
    >>> sorted(child), child["x"] in (1, 3), child["y"], child["z"]
    (['x', 'y', 'z'], True, 2, 4)
    """
    _check_rng(rng, "crossover_params")
    shared = [name for name in a if name in b]
    values_a = [a[name] for name in shared]
    values_b = [b[name] for name in shared]
    with seeded_global_random(rng):
        tools.cxUniform(values_a, values_b, indpb=0.5)
    child = dict(a)
    child.update(zip(shared, values_a, strict=True))
    child.update((name, value) for name, value in b.items() if name not in a)
    return child


def _is_mutable(dist: BaseDistribution) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return len(dist.choices) > 1
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        return not dist.single()
    return False  # an unknown distribution type: left as it is


class _Numeric:
    """Moves within a Float/IntDistribution: search space, grid and bounds.

    The search space is where Gaussian steps are taken: the values
    themselves, or their logarithms for ``log=True``.
    """

    def __init__(self, dist: BaseDistribution) -> None:
        assert isinstance(dist, (FloatDistribution, IntDistribution))
        self.dist = dist
        self.is_int = isinstance(dist, IntDistribution)
        self.step = dist.step
        self.low: float = dist.low
        self.high: float = dist.high
        transform: Callable[[float], float] = math.log if dist.log else float
        self.search_low = transform(dist.low)
        self.search_high = transform(dist.high)
        self.width = self.search_high - self.search_low

    def to_search(self, value: Any) -> float:
        return math.log(value) if self.dist.log else float(value)

    def from_search(self, x: float) -> Any:
        """The grid value nearest to search point ``x`` (folded into the bounds)."""
        x = _reflect(x, self.search_low, self.search_high)
        raw = math.exp(x) if self.dist.log else x
        return self.snap(raw)

    def snap(self, raw: float) -> Any:
        low, high = self.low, self.high
        raw = min(high, max(low, raw))
        if self.step is None and not self.is_int:
            return float(raw)
        step = self.step if self.step is not None else 1
        n_steps = round((high - low) / step)
        k = min(n_steps, max(0, round((raw - low) / step)))
        return self.grid(k)

    def grid(self, k: int) -> Any:
        step = self.step if self.step is not None else 1
        if self.is_int:
            return int(self.low) + k * int(step)
        return float(min(self.high, self.low + k * step))

    def step_to(self, value: Any, step: float) -> Any:
        """``value`` moved by ``step`` in search space; one grid step at least."""
        if self.step is None and not self.is_int:
            return _step_float(float(value), step, (self.low, self.high), log=self.dist.log)
        new = self.from_search(self.to_search(value) + step)
        if new != value:
            return new
        grid_step = self.step if self.step is not None else 1
        k = round((value - self.low) / grid_step)
        n_steps = round((self.high - self.low) / grid_step)
        direction = 1 if step >= 0 else -1
        k = k + direction if 0 <= k + direction <= n_steps else k - direction
        return self.grid(min(n_steps, max(0, k)))


def _project(name: str, value: Any, dist: BaseDistribution, rng: random.Random) -> Any:
    """``value`` if it lies in ``dist``, else the nearest value that does."""
    try:
        if dist._contains(dist.to_internal_repr(value)):
            return value
    except (ValueError, TypeError):
        pass
    if isinstance(dist, CategoricalDistribution):
        return rng.choice(dist.choices)
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        try:
            raw = float(value)
        except (TypeError, ValueError):
            raw = math.nan
        if math.isnan(raw) or isinstance(value, bool):
            raise_invalid(f"params[{name}]", "mutate_params", "a number", value)
        return _Numeric(dist).snap(raw)
    return value


def _other_category(value: Any, dist: CategoricalDistribution, rng: random.Random) -> Any:
    current = dist.to_internal_repr(value)
    index = rng.choice([i for i in range(len(dist.choices)) if i != current])
    return dist.choices[index]


def _check_rng(rng: Any, owner: str) -> None:
    if not isinstance(rng, random.Random):
        raise_invalid("rng", owner, "a random.Random", rng)
