"""One child of two selected parents: crossover, mutation and a check for duplicates.

Genomes of :func:`~evohpo.evolution.suggest.suggest_genome` are varied with the
structure-aware operators (:mod:`~evohpo.evolution.crossover`,
:mod:`~evohpo.evolution.mutation`); any other parameters with the operators on
parameter dicts (:mod:`~evohpo.evolution.params`). A child that would repeat
a finished or running trial (:class:`~evohpo.evolution.duplicates.KnownParams`)
is bred again, a few times at most.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from optuna.distributions import BaseDistribution

from evohpo.evolution.blocks import parse_block_param
from evohpo.evolution.crossover import crossover
from evohpo.evolution.duplicates import KnownParams
from evohpo.evolution.genome import GLOBAL_PARAMS, N_BLOCKS, READOUT, Genome, parse_layer_param
from evohpo.evolution.lineage import Lineage
from evohpo.evolution.mutation import MutationRates, mutate
from evohpo.evolution.params import crossover_params, mutate_params
from evohpo.evolution.population import Member, Snapshot
from evohpo.evolution.space import SearchSpace

__all__ = ["Breeder"]

#: Times a child equal to a member of the pool is bred again.
_DEDUP_ATTEMPTS = 10
_CROSS_UNIFORM = "crossover:uniform"
_MISSING = object()


@dataclass(frozen=True)
class Breeder:
    """How parents make a child: crossover and mutation probabilities, mutation rates."""

    crossover_prob: float
    mutation_prob: float
    rates: MutationRates

    def breed(
        self,
        parents: list[Member],
        pool: list[Member],
        population: Snapshot,
        generation: int,
        space: SearchSpace | None,
        rng: random.Random,
        *,
        is_repeat: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> Lineage:
        """The child record of ``parents`` (two members, possibly the same one).

        ``generation`` below 0 means one more than the parents'. With a
        ``space``, parents that carry genomes are varied as genomes. A child
        for which ``is_repeat`` holds (by default: it would repeat a member of
        the population or the pool) is bred again, up to
        :data:`_DEDUP_ATTEMPTS` times.
        """
        first, second = parents
        crossed = first.number != second.number and rng.random() < self.crossover_prob
        mutated = not crossed or rng.random() < self.mutation_prob
        parent_numbers = (first.number, second.number) if crossed else (first.number,)
        if generation < 0:
            generation = 1 + max(p.generation for p in parents[: len(parent_numbers)])
        if is_repeat is None:
            known = KnownParams()
            for member in [*population.members, *pool]:
                known.add(member.number, member.params)
            is_repeat = known.repeats
        distributions = population.distributions
        genomes = [p.genome for p in parents] if space is not None else []
        if space is not None and all(g is not None for g in genomes):
            a, b = (g for g in genomes if g is not None)
            child, params, ops = self._genome_child(
                a, b, parents, pool, distributions, space, is_repeat, crossed, mutated, rng
            )
            genome: str | None = child.to_json()
        else:
            pair = [dict(first.params), dict(second.params)]
            for _ in range(_DEDUP_ATTEMPTS):
                params, ops = self._params_child(
                    pair, pool, distributions, crossed, mutated, rng, extras_only=None
                )
                if not is_repeat(params):
                    break
            genome = None
        return Lineage(
            origin="bred",
            generation=generation,
            parents=parent_numbers,
            operators=tuple(ops),
            params=params,
            genome=genome,
        )

    def _genome_child(
        self,
        a: Genome,
        b: Genome,
        parents: list[Member],
        pool: list[Member],
        distributions: Mapping[str, BaseDistribution],
        space: SearchSpace,
        is_repeat: Callable[[Mapping[str, Any]], bool],
        crossed: bool,
        mutated: bool,
        rng: random.Random,
    ) -> tuple[Genome, dict[str, Any], list[str]]:
        """A child genome of ``a`` and ``b``, its parameters and the operators applied."""
        # Parameters the objective asks for next to its genome evolve too.
        is_extra = functools.partial(_is_extra, body=space.has_body)
        has_extras = any(is_extra(name) for name in distributions)
        extras = (
            [{k: v for k, v in p.params.items() if is_extra(k)} for p in parents]
            if has_extras
            else []
        )
        for _ in range(_DEDUP_ATTEMPTS):
            child, ops = crossover(a, b, space, rng) if crossed else (space.repair(a), [])
            if mutated:
                child, more = mutate(child, space, rng, self.rates)
                ops = [*ops, *more]
            params = child.to_params(residual=space.has_dense_residual)
            if has_extras:
                # The genome already differs from its parent when mutated.
                others, more = self._params_child(
                    extras, pool, distributions, crossed, mutated, rng, extras_only=is_extra
                )
                params.update(others)
                ops = [*ops, *more]
            if not is_repeat(params):
                break
        return child, params, ops

    def _params_child(
        self,
        parents: list[dict[str, Any]],
        pool: list[Member],
        distributions: Mapping[str, BaseDistribution],
        crossed: bool,
        mutated: bool,
        rng: random.Random,
        *,
        extras_only: Callable[[str], bool] | None,
    ) -> tuple[dict[str, Any], list[str]]:
        """A child parameter dict of two parents' parameters, and the operators applied.

        Only the parents' own parameters are mutated, before the child
        inherits, unchanged, the parameters they lacked from the pool: so a
        mutation is never spent on a parameter no parent used. With
        ``extras_only`` (which tells the parameters next to a genome), the
        genome carries the guaranteed change and the pool gives only
        parameters outside it.
        """
        a, b = parents
        params = crossover_params(a, b, rng) if crossed else dict(a)
        ops = [_CROSS_UNIFORM] if crossed and _mixes(params, a, b) else []
        if mutated:
            params, more = mutate_params(
                params, distributions, rng, self.rates.gene, ensure_change=extras_only is None
            )
            ops = [*ops, *more]
        _inherit_missing(params, pool, extras_only)
        return params, ops


def _inherit_missing(
    params: dict[str, Any], pool: list[Member], keep: Callable[[str], bool] | None = None
) -> None:
    """Give the child every parameter of the pool (those ``keep`` accepts), from the fittest.

    Conditional parameters the parents never used are then still inherited
    from the population rather than drawn at random.
    """
    for member in sorted(pool, key=lambda m: m.fitness, reverse=True):
        for name, value in member.params.items():
            if keep is None or keep(name):
                params.setdefault(name, value)


@functools.lru_cache(maxsize=4096)
def _is_extra(name: str, body: bool = False) -> bool:
    """Whether ``name`` is a parameter outside the genome of :func:`suggest_genome`.

    ``body``: the genome has a body, whose parameters are the genome's too.
    """
    if name in GLOBAL_PARAMS or parse_layer_param(name) is not None:
        return False
    return not (body and (name in (N_BLOCKS, READOUT) or parse_block_param(name) is not None))


def _mixes(child: Mapping[str, Any], a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether ``child`` differs in value from both parents (so it holds genes of each)."""

    def differs(parent: Mapping[str, Any]) -> bool:
        return any(parent.get(name, _MISSING) != value for name, value in child.items())

    return differs(a) and differs(b)
