"""EvoSampler: an Optuna sampler that breeds each trial from the stored population.

All state that matters lives in the study's storage: the population is the
study's finished trials, and each child (its parameters, genome, parents,
generation and the operators applied) is written to its trial when the trial
starts (see :mod:`evohpo.lineage`). A sampler object therefore holds only
caches, so a study resumes after a crash and many workers can share one
database. Every random decision for trial ``n`` draws from a stream derived
from ``(seed, n, purpose)``, so 20 trials in one run equal 10 trials, a
restart, and 10 more.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from evohpo import _storage
from evohpo._population import Member, Population, Snapshot
from evohpo._random import derive_seed, fresh_root_seed, python_random
from evohpo._validation import check_choice, check_float, check_int, raise_invalid
from evohpo.exceptions import GenomeFormatError, InvalidParameterError
from evohpo.genome import Genome
from evohpo.lineage import LINEAGE_ATTR, Lineage
from evohpo.operators import (
    MutationRates,
    crossover,
    crossover_params,
    mutate,
    mutate_params,
    nsga2_rank_and_crowding,
    select_nsga2,
    select_rank_tournament,
    select_tournament,
    youngest,
)
from evohpo.space import SearchSpace
from evohpo.suggest import space_from_distributions

__all__ = ["EvoSampler"]

_logger = logging.getLogger("evohpo")
_OWNER = "EvoSampler"
_DEDUP_ATTEMPTS = 4


class EvoSampler(BaseSampler):
    """Genetic-algorithm sampler over layer-wise genomes or any parameters.

    Objectives that ask for their parameters with :func:`evohpo.suggest_genome`
    get structure-aware variation (insert, remove and duplicate layers;
    layer-wise crossover between networks of different depth). Any other
    define-by-run objective is evolved over the union of the parameters seen
    so far, each mutated according to its distribution. Multi-objective
    studies use NSGA-II selection.

    Parameters
    ----------
    population_size : int, default=10
        Number of individuals that breed (steady state) or of each generation.
        Small populations suit the budgets of network training (tens to a
        few hundred trials); see ``bench/sampler_quality.py``.
    mode : {"steady_state", "generational"}, default="steady_state"
        ``"steady_state"`` breeds every new trial from the trials finished so
        far (asynchronous, Real et al. 2017): no worker ever waits.
        ``"generational"`` breeds generation ``g`` from generation ``g - 1``
        plus the ``elitism`` best individuals seen.
    aging : bool, default=False
        Steady state only: the population is the ``population_size`` most
        recent trials (regularized evolution; the oldest die) instead of the
        best ones. The ``elitism`` best are kept all the same.
    selection : {"tournament", "rank"}, default="tournament"
        ``"tournament"``: DEAP tournament selection of size
        ``tournament_size``. ``"rank"``: the best, second and third of a
        tournament win with ``rank_probabilities`` (p1 > p2 > p3).
    tournament_size : int, default=3
        Individuals drawn per tournament.
    rank_probabilities : sequence of float, default=(0.6, 0.3, 0.1)
        Probabilities that the best, second, third ... of a tournament win.
    crossover_prob : float, default=0.7
        Probability that a child is the crossover of two parents.
    mutation_prob : float, default=1.0
        Probability that a crossed-over child is also mutated. A child made
        without crossover is always mutated, so it differs from its parent.
    mutation_rates : MutationRates, optional
        Per-gene and structural mutation probabilities and step sizes.
    elitism : int, default=1
        Best individuals that never leave the population.
    n_startup_trials : int, optional
        Random trials before breeding starts; defaults to ``population_size``.
    search_space : SearchSpace, optional
        The space the objective passes to :func:`~evohpo.suggest_genome`.
        Inferred from the stored trials when omitted.
    seed : int, optional
        Root of every random stream. Workers may share it: streams also
        depend on the trial number.

    Examples
    --------
    >>> import optuna, evohpo
    >>> study = optuna.create_study(sampler=evohpo.EvoSampler(population_size=4, seed=0))
    >>> study.optimize(lambda t: (t.suggest_float("x", -5, 5) - 1) ** 2, n_trials=12)
    >>> study.trials[-1].user_attrs["evohpo"]["origin"]
    'bred'
    """

    def __init__(
        self,
        *,
        population_size: int = 10,
        mode: Literal["steady_state", "generational"] = "steady_state",
        aging: bool = False,
        selection: Literal["tournament", "rank"] = "tournament",
        tournament_size: int = 3,
        rank_probabilities: Sequence[float] = (0.6, 0.3, 0.1),
        crossover_prob: float = 0.7,
        mutation_prob: float = 1.0,
        mutation_rates: MutationRates | None = None,
        elitism: int = 1,
        n_startup_trials: int | None = None,
        search_space: SearchSpace | None = None,
        seed: int | None = None,
    ) -> None:
        self._population_size = check_int(population_size, "population_size", _OWNER, low=2)
        self._mode = check_choice(mode, "mode", _OWNER, ("steady_state", "generational"))
        if not isinstance(aging, bool):
            raise_invalid("aging", _OWNER, "a bool", aging)
        self._aging = aging
        self._selection = check_choice(selection, "selection", _OWNER, ("tournament", "rank"))
        self._tournament_size = check_int(tournament_size, "tournament_size", _OWNER, low=1)
        self._rank_probabilities = _check_rank_probabilities(rank_probabilities)
        self._crossover_prob = check_float(crossover_prob, "crossover_prob", _OWNER, low=0, high=1)
        self._mutation_prob = check_float(mutation_prob, "mutation_prob", _OWNER, low=0, high=1)
        if mutation_rates is not None and not isinstance(mutation_rates, MutationRates):
            raise_invalid("mutation_rates", _OWNER, "a MutationRates or None", mutation_rates)
        self._rates = mutation_rates if mutation_rates is not None else MutationRates()
        self._elitism = check_int(elitism, "elitism", _OWNER, low=0, high=self._population_size)
        self._n_startup_trials = (
            self._population_size
            if n_startup_trials is None
            else check_int(n_startup_trials, "n_startup_trials", _OWNER, low=1)
        )
        if search_space is not None and not isinstance(search_space, SearchSpace):
            raise_invalid("search_space", _OWNER, "a SearchSpace or None", search_space)
        self._search_space = search_space
        if seed is not None:
            seed = check_int(seed, "seed", _OWNER)
        self._seed = fresh_root_seed() if seed is None else seed
        self._reset_caches()

    def _reset_caches(self) -> None:
        # Caches only: everything here can be rebuilt from storage. Keys name the
        # storage and study too, since one sampler may serve several studies.
        self._lock = threading.Lock()
        self._running: dict[_TrialKey, Lineage] = {}
        # (storage id, study id) -> (the storage, weakly, and its study's view). The
        # weak reference tells a storage apart from a later one at the same address.
        self._populations: dict[tuple[int, int], tuple[weakref.ref[Any], Population]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Settings and seed travel (pickling, deepcopy, sklearn.clone); caches
        # and the lock do not.
        state = self.__dict__.copy()
        for name in ("_lock", "_running", "_populations"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_caches()

    # -- Optuna sampler interface ----------------------------------------------------
    def reseed_rng(self) -> None:
        """Draw a new root seed, so that parallel workers use different streams."""
        self._seed = fresh_root_seed()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._lineage_of(study, trial)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        lineage = self._lineage_of(study, trial)
        if param_name in lineage.params:
            value = _as_member_of(lineage.params[param_name], param_distribution)
            if value is not _MISSING:
                return value
        # A parameter the child lacks (a new branch of a conditional objective,
        # or a range that changed): drawn at random from its own stream.
        seed = derive_seed(self._seed, trial.number, "param", param_name) % 2**32
        return RandomSampler(seed=seed).sample_independent(
            study, trial, param_name, param_distribution
        )

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        with self._lock:
            self._running.pop(_trial_key(study, trial), None)

    # -- breeding ----------------------------------------------------------------------
    def _lineage_of(self, study: Study, trial: FrozenTrial) -> Lineage:
        """The trial's child record: from memory, from storage, or bred now."""
        with self._lock:
            cached = self._running.get(_trial_key(study, trial))
        if cached is not None:
            return cached
        stored = Lineage.from_attr(trial.user_attrs.get(LINEAGE_ATTR))
        if stored is not None:
            # A retried trial carries its original record (Optuna's retry
            # callbacks copy user attributes): same genome, same lineage.
            lineage = stored
        else:
            lineage = self._new_lineage(study, trial)
            _storage.set_trial_user_attr(study, trial._trial_id, LINEAGE_ATTR, lineage.to_attr())
        with self._lock:
            self._running[_trial_key(study, trial)] = lineage
        return lineage

    def _new_lineage(self, study: Study, trial: FrozenTrial) -> Lineage:
        fixed = trial.system_attrs.get("fixed_params")
        if isinstance(fixed, Mapping):
            return Lineage(origin="enqueued", params=dict(fixed))
        population = self._population_of(study)
        rng = python_random(self._seed, trial.number, "breed")
        if len(population) < self._n_startup_trials:
            return self._random_lineage(rng)
        generation = self._generation_of(trial.number)
        pool = self._breeding_pool(study, population, generation)
        parents = self._select_parents(study, pool, rng)
        return self._vary(parents, pool, population, generation, rng)

    def _random_lineage(self, rng: random.Random) -> Lineage:
        if self._search_space is None:
            # Unknown space: every parameter is drawn by sample_independent.
            return Lineage(origin="random")
        genome = self._search_space.sample(rng)
        return Lineage(origin="random", params=genome.to_params(), genome=genome.to_json())

    def _population_of(self, study: Study) -> Snapshot:
        """The study's finished trials, folded into the cached view as they come."""
        trials = _storage.get_trials(study, states=(TrialState.COMPLETE,))
        key = (id(study._storage), study._study_id)
        with self._lock:
            owner, population = self._populations.get(key, (None, None))
            if population is None or owner is None or owner() is not study._storage:
                signs = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions]
                population = Population(signs)
                self._populations[key] = (weakref.ref(study._storage), population)
            population.sync(trials)
            return population.snapshot()

    def _generation_of(self, number: int) -> int:
        if self._mode == "steady_state":
            return -1  # decided by the parents
        return max(1, 1 + (number - self._n_startup_trials) // self._population_size)

    def _breeding_pool(self, study: Study, population: Snapshot, generation: int) -> list[Member]:
        size = self._population_size
        members = population.members
        if len(study.directions) > 1:
            return [members[i] for i in select_nsga2([m.fitness for m in members], size)]
        if self._mode == "steady_state" and not self._aging:
            return population.ranked[:size]
        by_fitness = population.ranked
        elites = by_fitness[: self._elitism]
        if self._mode == "generational":
            # Only earlier generations breed; later ones may already have finished
            # trials when workers run ahead.
            older = [m for m in by_fitness if m.generation < generation]
            previous = [m for m in older if m.generation == generation - 1]
            pool = _union(previous, older[: self._elitism])
            if len(pool) < 2:
                pool = older[:size] or by_fitness[:size]
            return pool
        # Aging: the youngest breed, the elites never die.
        recent = [members[i] for i in youngest([m.number for m in members], size)]
        return _union(recent, elites)

    def _select_parents(self, study: Study, pool: list[Member], rng: random.Random) -> list[Member]:
        if len(pool) == 1:
            return [pool[0], pool[0]]
        if len(study.directions) > 1:
            ranks = nsga2_rank_and_crowding([m.fitness for m in pool])
            return [pool[_binary_tournament(ranks, rng)] for _ in range(2)]
        fitness = [m.fitness[0] for m in pool]
        size = min(self._tournament_size, len(pool))
        if self._selection == "rank":
            picks = select_rank_tournament(fitness, 2, size, self._rank_probabilities, rng)
        else:
            picks = select_tournament(fitness, 2, size, rng)
        return [pool[i] for i in picks]

    def _vary(
        self,
        parents: list[Member],
        pool: list[Member],
        population: Snapshot,
        generation: int,
        rng: random.Random,
    ) -> Lineage:
        first, second = parents
        crossed = first.number != second.number and rng.random() < self._crossover_prob
        mutated = not crossed or rng.random() < self._mutation_prob
        parent_numbers = (first.number, second.number) if crossed else (first.number,)
        if generation < 0:
            generation = 1 + max(p.generation for p in parents[: len(parent_numbers)])
        seen = {_params_key(m.params) for m in pool}

        space = self._space_for(population)
        genomes = [_genome_of(p) for p in parents] if space is not None else []
        if space is not None and all(g is not None for g in genomes):
            a, b = (g for g in genomes if g is not None)
            for _ in range(_DEDUP_ATTEMPTS):
                child, ops = crossover(a, b, space, rng) if crossed else (space.repair(a), [])
                if mutated:
                    child, more = mutate(child, space, rng, self._rates)
                    ops = [*ops, *more]
                if _params_key(child.to_params()) not in seen:
                    break
            return Lineage(
                origin="bred",
                generation=generation,
                parents=parent_numbers,
                operators=tuple(ops),
                params=child.to_params(),
                genome=child.to_json(),
            )

        distributions = population.distributions
        for _ in range(_DEDUP_ATTEMPTS):
            params = (
                crossover_params(first.params, second.params, rng)
                if crossed
                else dict(first.params)
            )
            ops = ["crossover:uniform"] if crossed else []
            _inherit_missing(params, pool)
            if mutated:
                params, more = mutate_params(params, distributions, rng, self._rates.gene)
                ops = [*ops, *more]
            if _params_key(params) not in seen:
                break
        return Lineage(
            origin="bred",
            generation=generation,
            parents=parent_numbers,
            operators=tuple(ops),
            params=params,
        )

    def _space_for(self, population: Snapshot) -> SearchSpace | None:
        if self._search_space is not None:
            return self._search_space
        return space_from_distributions(population.latest.distributions)


_MISSING = object()

_TrialKey = tuple[int, int, int]


def _trial_key(study: Study, trial: FrozenTrial) -> _TrialKey:
    """Cache key of a trial: in-memory storages all number their trials from 0."""
    return id(study._storage), study._study_id, trial._trial_id


def _as_member_of(value: Any, dist: BaseDistribution) -> Any:
    """``value`` in the distribution's own external form, or ``_MISSING``."""
    try:
        internal = dist.to_internal_repr(value)
        if dist._contains(internal):
            return dist.to_external_repr(internal)
    except (ValueError, TypeError):
        pass
    return _MISSING


def _genome_of(member: Member) -> Genome | None:
    """The member's genome, with the gene ids its lineage recorded when they match."""
    bred = member.lineage.parsed_genome() if member.lineage is not None else None
    try:
        genome = Genome.from_params(member.params)
    except GenomeFormatError:
        return None
    if bred is not None and bred == genome:
        return bred
    return Genome.from_params(
        member.params, ids=[f"t{member.number}l{i}" for i in range(genome.depth)]
    )


def _union(first: list[Member], second: list[Member]) -> list[Member]:
    numbers = {m.number for m in first}
    return first + [m for m in second if m.number not in numbers]


def _inherit_missing(params: dict[str, Any], pool: list[Member]) -> None:
    """Give the child every parameter of the pool, from the fittest member that has it.

    Conditional parameters the parents never used are then still inherited
    from the population rather than drawn at random.
    """
    for member in sorted(pool, key=lambda m: m.fitness, reverse=True):
        for name, value in member.params.items():
            params.setdefault(name, value)


def _params_key(params: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def _binary_tournament(ranks: Sequence[tuple[int, float]], rng: random.Random) -> int:
    i, j = rng.randrange(len(ranks)), rng.randrange(len(ranks))
    (rank_i, crowd_i), (rank_j, crowd_j) = ranks[i], ranks[j]
    if (rank_i, -crowd_i) <= (rank_j, -crowd_j):
        return i
    return j


def _check_rank_probabilities(value: Any) -> tuple[float, ...]:
    expected = "a non-empty, non-increasing sequence of probabilities with a positive sum"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise_invalid("rank_probabilities", _OWNER, expected, value)
    try:
        probs = tuple(
            check_float(p, "rank_probabilities", _OWNER, low=0.0, high=1.0) for p in value
        )
    except InvalidParameterError:
        raise_invalid("rank_probabilities", _OWNER, expected, value)
    if sum(probs) <= 0 or any(a < b for a, b in itertools.pairwise(probs)):
        raise_invalid("rank_probabilities", _OWNER, expected, value)
    return probs
