"""Selection, built on DEAP: tournaments, aging and NSGA-II.

Fitness is maximised throughout (negate values to minimise). The tournaments
draw from the ``rng`` argument only (DEAP's draws run inside
:func:`evohpo._random.seeded_global_random`); :func:`youngest`,
:func:`select_nsga2` and :func:`nsga2_rank_and_crowding` are deterministic.

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
from collections.abc import Sequence
from typing import Any

import numpy as np
from deap import base, tools
from deap.tools.emo import assignCrowdingDist

from evohpo._random import seeded_global_random
from evohpo._validation import check_float, check_int, check_rng, raise_invalid

__all__ = [
    "nsga2_rank_and_crowding",
    "select_nsga2",
    "select_rank_tournament",
    "select_tournament",
    "youngest",
]


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
    check_rng(rng, owner)
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
    check_rng(rng, owner)
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
    # Only individuals dominated by fewer than k others can be chosen: all of an
    # individual's dominators lie in earlier fronts, so with k or more of them the
    # selection is complete before its front. Dropping the others changes no
    # remaining individual's front (none of them dominates one that stays) and
    # leaves every front the selection reaches whole, so the choice is the same;
    # DEAP's sort, quadratic in Python, then sees the few that matter.
    candidates = [i for i, count in enumerate(_dominator_counts(rows)) if count < k]
    chosen = tools.selNSGA2(_individuals([rows[i] for i in candidates]), k)
    return [candidates[individual.index] for individual in chosen]


def _dominator_counts(rows: Sequence[tuple[float, ...]], chunk: int = 512) -> list[int]:
    """How many rows Pareto-dominate each row (every objective maximised)."""
    values = np.asarray(rows, dtype=float)
    counts = np.zeros(len(values), dtype=np.int64)
    for start in range(0, len(values), chunk):
        block = values[start : start + chunk, None, :]  # the would-be dominators
        dominates = (block >= values[None]).all(axis=-1) & (block > values[None]).any(axis=-1)
        counts += dominates.sum(axis=0)
    return counts.tolist()


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
