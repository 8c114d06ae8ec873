"""EvoSampler: an Optuna sampler that breeds each trial from the stored population.

All state that matters lives in the study's storage: the population is the
study's finished trials, and each child (its parameters, genome, parents,
generation and the operators applied) is written to its trial when the trial
starts (see :mod:`evohpo.evolution.lineage`). A sampler object therefore holds only
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any, Literal

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, PartialFixedSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from evohpo._random import derive_seed, fresh_root_seed, python_random
from evohpo._validation import check_choice, check_float, check_int, raise_invalid
from evohpo.evolution.breeding import Breeder
from evohpo.evolution.duplicates import KnownParams
from evohpo.evolution.genome import N_BLOCKS
from evohpo.evolution.lineage import LINEAGE_ATTR, Lineage
from evohpo.evolution.mutation import MutationRates
from evohpo.evolution.population import Member, Population, Snapshot
from evohpo.evolution.selection import (
    nsga2_rank_and_crowding,
    select_nsga2,
    select_rank_tournament,
    select_tournament,
    youngest,
)
from evohpo.evolution.space import SearchSpace
from evohpo.evolution.suggest import space_from_distributions
from evohpo.exceptions import InvalidParameterError
from evohpo.storage import internals as _storage

__all__ = ["EvoSampler"]

_logger = logging.getLogger("evohpo")
_OWNER = "EvoSampler"
#: Repeated evaluations of the best trial that decide whether an objective is
#: deterministic: two, as a noisy objective with few distinct values (the
#: accuracy on a small validation set) can repeat one value by chance.
_NOISE_PROBES = 2
#: The tournament size of ``"auto"`` on a noisy objective.
NOISY_TOURNAMENT_SIZE = 5
_MUTATE = "mutate:"


class EvoSampler(BaseSampler):
    """Genetic-algorithm sampler over layer-wise genomes or any parameters.

    Objectives that ask for their parameters with :func:`evohpo.suggest_genome`
    get structure-aware variation (insert, remove and duplicate layers, and
    blocks of a convolutional body; crossover between networks of different
    depth). Any other define-by-run objective is evolved over the union of
    the parameters seen so far, each mutated according to its distribution;
    so are the parameters an objective asks for next to its genome (``epochs``, say):
    uniform crossover between the parents, mutation by distribution, both
    recorded in the lineage (``"crossover:uniform"``, ``"mutate:epochs"``).
    Only parameters a parent used are mutated, so every mutation the lineage
    reports is one the child expresses; a mutation of a parameter the
    finished trial did not ask for (a branch of a conditional objective the
    child left) is dropped from its record when the trial ends.

    Selection adapts to the objective's noise (``tournament_size="auto"``).
    Once the random start is over, the best trial's parameters are evaluated
    again, twice (lineage origin ``"repeat"``). If both values equal the
    first, the objective is deterministic and its values can be trusted:
    tournaments then cover the whole population, so the best individuals
    breed most (the greediest setting measured, and the best on noiseless
    objectives). If a value differs, the objective is noisy, and tournaments
    of 5 keep the pressure moderate. In both cases, trials of equal
    parameters count as one individual with their mean value. A trained
    network's validation score is noisy unless the objective fixes every seed,
    so on network training this costs one repeated trial. An integer
    ``tournament_size`` turns this off. Where repeated trainings of one
    network disagree by about as much as the candidates differ, a lucky trial
    stays in a best-by-value population and keeps breeding; regularized
    evolution lets it die of age, and measured most robust to noise
    (``bench/sampler_settings.py``)::

        EvoSampler(aging=True, elitism=0, population_size=20, tournament_size=8)

    A child that would repeat a finished (complete or pruned) or running trial
    of the study, agreeing with it on every parameter that trial used (a
    conditional objective's other branches aside; a wrapping
    ``PartialFixedSampler``'s values included), is bred again (up to 10
    times): a re-evaluation is spent only on the repeats above. If the
    repeats cannot have the best trial's parameters (the objective asks for
    others now), two tries end the measurement and selection stays at 5.

    Multi-objective studies use NSGA-II: the breeding pool is chosen by
    Pareto front, then crowding distance, and tournaments compare
    individuals in that order (NSGA-II's crowded comparison). Every other
    setting (``mode``, ``aging``, ``elitism``, ``selection``) means the same
    with "best" read in that order.

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
        Steady state only (``mode="generational"`` with ``aging=True`` is
        rejected): the population is the ``population_size`` most recent
        trials (regularized evolution; the oldest die) instead of the best
        ones. The ``elitism`` best are kept all the same.
    selection : {"tournament", "rank"}, default="tournament"
        ``"tournament"``: DEAP tournament selection of size
        ``tournament_size``. ``"rank"``: the best, second and third of a
        tournament win with ``rank_probabilities`` (p1 > p2 > p3).
    tournament_size : int or "auto", default="auto"
        Individuals drawn per tournament (NSGA-II proper uses 2). ``"auto"``:
        the whole population on a deterministic objective, 5 on a noisy one,
        as found by two repeated evaluations (above); it adapts only with one
        objective in steady state without aging, and is 5 otherwise. Five,
        with ``MutationRates(gene=0.1)``, searched best of the fixed sizes
        tried on noisy objectives, and the whole population on noiseless ones
        (``bench/sampler_settings.py``).
    rank_probabilities : sequence of float, default=(0.6, 0.3, 0.1)
        Probabilities that the best, second, third ... of a tournament win;
        strictly decreasing (p1 > p2 > p3 ...), each in ``[0, 1]``.
    crossover_prob : float, default=0.9
        Probability that a child of two different parents is their
        crossover. Layer-wise crossover joins good layers of two networks,
        which mutation alone finds slowly (``bench/sampler_settings.py``
        compares settings).
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
        Inferred from the stored trials when omitted: from their parameters'
        distributions and, for a space with an ``input_shape``, the input
        shape that :func:`~evohpo.suggest_genome` records on each trial.
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
        tournament_size: int | Literal["auto"] = "auto",
        rank_probabilities: Sequence[float] = (0.6, 0.3, 0.1),
        crossover_prob: float = 0.9,
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
        if aging and self._mode == "generational":
            # Aging evolution replaces the oldest member one trial at a time: a
            # steady-state scheme, with no meaning for whole generations.
            expected = "False when mode='generational' (aging is a steady-state scheme)"
            raise_invalid("aging", _OWNER, expected, aging)
        self._aging = aging
        self._selection = check_choice(selection, "selection", _OWNER, ("tournament", "rank"))
        # "auto": measure the noise with repeats, then tournaments of the whole pool
        # (deterministic) or of NOISY_TOURNAMENT_SIZE (noisy).
        self._adaptive = tournament_size == "auto"
        self._tournament_size = (
            NOISY_TOURNAMENT_SIZE if self._adaptive else _check_tournament_size(tournament_size)
        )
        self._rank_probabilities = _check_rank_probabilities(rank_probabilities)
        self._crossover_prob = check_float(crossover_prob, "crossover_prob", _OWNER, low=0, high=1)
        self._mutation_prob = check_float(mutation_prob, "mutation_prob", _OWNER, low=0, high=1)
        if mutation_rates is not None and not isinstance(mutation_rates, MutationRates):
            raise_invalid("mutation_rates", _OWNER, "a MutationRates or None", mutation_rates)
        self._rates = mutation_rates if mutation_rates is not None else MutationRates()
        self._elitism = check_int(elitism, "elitism", _OWNER, low=0)
        if self._elitism > self._population_size:
            expected = f"an int in the range [0, population_size] = [0, {self._population_size}]"
            raise_invalid("elitism", _OWNER, expected, elitism)
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

    def settings(self) -> dict[str, Any]:
        """The arguments this sampler was built with (the search space aside), JSON-ready:
        two samplers with the same settings breed alike.

        Examples
        --------
        >>> EvoSampler(population_size=6, seed=3).settings()["population_size"]
        6
        """
        return {
            "population_size": self._population_size,
            "mode": self._mode,
            "aging": self._aging,
            "selection": self._selection,
            "tournament_size": "auto" if self._adaptive else self._tournament_size,
            "rank_probabilities": list(self._rank_probabilities),
            "crossover_prob": self._crossover_prob,
            "mutation_prob": self._mutation_prob,
            "mutation_rates": asdict(self._rates),
            "elitism": self._elitism,
            "n_startup_trials": self._n_startup_trials,
            "seed": self._seed,
        }

    def _reset_caches(self) -> None:
        # Caches only: everything here can be rebuilt from storage. One sampler may
        # serve several studies: storage -> study id -> that study's caches. Weak
        # keys let the caches go with their storage, and a storage is never
        # mistaken for a later one at the same address.
        self._lock = threading.Lock()
        # Held while a child is bred and registered, so that threads breed apart.
        self._breeding = threading.Lock()
        self._caches: weakref.WeakKeyDictionary[Any, dict[int, _StudyCache]] = (
            weakref.WeakKeyDictionary()
        )

    def __getstate__(self) -> dict[str, Any]:
        # Settings and seed travel (pickling, deepcopy, sklearn.clone); caches
        # and the lock do not.
        state = self.__dict__.copy()
        for name in ("_lock", "_breeding", "_caches"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_caches()

    # -- Optuna sampler interface ----------------------------------------------------
    @property
    def population_size(self) -> int:
        """Members of the population the GA breeds from."""
        return self._population_size

    def reseed_rng(self) -> None:
        """Nothing to do: every trial's random streams derive from the seed and its own
        trial number, so threads (``optimize(n_jobs=...)``, which calls this in each)
        and processes already draw apart. Keeping the seed keeps ``seed=``
        reproducible with threads, and :meth:`settings` true."""

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
            if self._search_space is not None:
                self._warn_space_mismatch(study, param_name, param_distribution)
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
            entry = self._cache_of(study).running.pop(_storage.trial_id(trial), None)
        if state not in (TrialState.COMPLETE, TrialState.PRUNED):
            return  # a failed trial may stop early, or be retried: its record stays
        lineage = entry[1] if entry is not None else None
        if lineage is None:
            lineage = Lineage.from_attr(trial.user_attrs.get(LINEAGE_ATTR))
        if lineage is None:
            return
        expressed = _expressed_operators(lineage, trial.params)
        if expressed != lineage.operators:
            # The child left the branch a mutated parameter belongs to: that
            # mutation changed nothing the trial used. A second write, made only then.
            honest = replace(lineage, operators=expressed)
            _storage.set_trial_user_attr(
                study, _storage.trial_id(trial), LINEAGE_ATTR, honest.to_attr()
            )

    # -- caches ------------------------------------------------------------------------
    def _cache_of(self, study: Study) -> _StudyCache:
        """The caches of ``study`` (call with the lock held)."""
        storage = _storage.study_storage(study)
        studies = self._caches.get(storage)
        if studies is None:
            studies = {}
            self._caches[storage] = studies
        study_id = _storage.study_id(study)
        cache = studies.get(study_id)
        if cache is None:
            cache = _StudyCache()
            studies[study_id] = cache
        return cache

    # -- breeding ----------------------------------------------------------------------
    def _lineage_of(self, study: Study, trial: FrozenTrial) -> Lineage:
        """The trial's child record: from memory, from storage, or bred now."""
        with self._lock:
            entry = self._cache_of(study).running.get(_storage.trial_id(trial))
        if entry is not None:
            return entry[1]
        with self._breeding:
            with self._lock:
                entry = self._cache_of(study).running.get(_storage.trial_id(trial))
            if entry is not None:
                return entry[1]
            return self._start_lineage(study, trial)

    def _start_lineage(self, study: Study, trial: FrozenTrial) -> Lineage:
        """The record of a trial seen for the first time here: stored or bred, then kept."""
        stored = Lineage.from_attr(trial.user_attrs.get(LINEAGE_ATTR))
        if stored is not None:
            # A retried trial carries its original record (Optuna's retry
            # callbacks copy user attributes): same genome, same lineage, same
            # origin. Its system attributes 'failed_trial' and 'retry_history'
            # say that it is a retry.
            lineage = stored
        else:
            lineage = self._new_lineage(study, trial)
            _storage.set_trial_user_attr(
                study, _storage.trial_id(trial), LINEAGE_ATTR, lineage.to_attr()
            )
        with self._lock:
            self._cache_of(study).running[_storage.trial_id(trial)] = (trial.number, lineage)
        return lineage

    def _new_lineage(self, study: Study, trial: FrozenTrial) -> Lineage:
        fixed = trial.system_attrs.get("fixed_params")
        if isinstance(fixed, Mapping):
            return Lineage(origin="enqueued", params=dict(fixed))
        population = self._population_of(study)
        rng = python_random(self._seed, trial.number, "breed")
        if len(population) < self._n_startup_trials:
            return self._random_lineage(rng)
        greedy = False
        if self._adapts(study):
            measured = population.noisy or population.repeats >= _NOISE_PROBES
            if measured:
                greedy = not population.noisy
            elif population.probes + self._running_repeats(study) < _NOISE_PROBES:
                return _repeat_lineage(population.ranked[0])
            # Otherwise the last repeats are running, or they ran with other parameters
            # than the best's (the objective's space changed): breed as on a noisy objective.
        generation = self._generation_of(trial.number)
        pool = self._breeding_pool(study, population, generation)
        parents = self._select_parents(study, pool, rng, greedy=greedy)
        return self._vary(parents, pool, population, generation, rng, self._repeat_test(study))

    def _adapts(self, study: Study) -> bool:
        """Whether the tournament size follows the objective's noise in ``study``."""
        return (
            self._adaptive
            and len(study.directions) == 1
            and self._mode == "steady_state"
            and not self._aging
        )

    def _warn_space_mismatch(
        self, study: Study, param_name: str, distribution: BaseDistribution
    ) -> None:
        """Say once per study and parameter that the objective asks outside ``search_space``."""
        with self._lock:
            cache = self._cache_of(study)
            if param_name in cache.mismatched:
                return
            cache.mismatched.add(param_name)
        _logger.warning(
            "EvoSampler(search_space=...) bred %r outside the distribution the objective "
            "asks for (%s): the objective's space differs from the sampler's, and such "
            "values are drawn at random. Give the sampler the objective's SearchSpace.",
            param_name,
            distribution,
        )

    def _repeat_test(self, study: Study) -> Callable[[Mapping[str, Any]], bool]:
        """Whether a child would repeat a finished (complete or pruned) trial of
        ``study`` or one this sampler has running (bred, repeated or enqueued).

        Parameters a wrapping :class:`~optuna.samplers.PartialFixedSampler`
        fixes are the trial's, whatever the child says.
        """
        with self._lock:
            cache = self._cache_of(study)
            running = list(cache.running.values())
            finished = cache.known
        taken = KnownParams()
        for number, lineage in running:
            taken.add(number, lineage.params)
        fixed = _fixed_by_wrapper(study, self)

        def is_repeat(child: Mapping[str, Any]) -> bool:
            used = {**child, **fixed} if fixed else child
            return finished.repeats(used) or taken.repeats(used)

        return is_repeat

    def _running_repeats(self, study: Study) -> int:
        """Repeats this sampler has started in ``study`` that have not finished."""
        with self._lock:
            running = self._cache_of(study).running.values()
            return sum(lineage.origin == "repeat" for _, lineage in running)

    def _random_lineage(self, rng: random.Random) -> Lineage:
        if self._search_space is None:
            # Unknown space: every parameter is drawn by sample_independent.
            return Lineage(origin="random")
        genome = self._search_space.sample(rng)
        params = genome.to_params(residual=self._search_space.has_dense_residual)
        return Lineage(origin="random", params=params, genome=genome.to_json())

    def _population_of(self, study: Study) -> Snapshot:
        """The study's finished trials, folded into the cached view as they come.

        The same read tells which cached trials have finished without an
        ``after_trial`` here (asked but never told, failed by another
        process): their records are dropped.
        """
        trials = _storage.get_trials(study)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        with self._lock:
            cache = self._cache_of(study)
            if cache.population is None:
                signs = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions]
                cache.population = Population(signs)
            cache.population.sync(complete)
            cache.known = _sync_known(cache.known, trials)
            _forget_finished(cache.running, trials)
            return cache.population.snapshot()

    def _generation_of(self, number: int) -> int:
        if self._mode == "steady_state":
            return -1  # decided by the parents
        return max(1, 1 + (number - self._n_startup_trials) // self._population_size)

    def _breeding_pool(self, study: Study, population: Snapshot, generation: int) -> list[Member]:
        size = self._population_size
        multi = len(study.directions) > 1
        # Single objective: best first. Several: by trial number; _best sorts them.
        ordered = population.members if multi else population.ranked
        if self._mode == "steady_state" and not self._aging:
            return _best(ordered, size, multi)
        if self._mode == "generational":
            # Only earlier generations breed; later ones may already have finished
            # trials when workers run ahead.
            older = [m for m in ordered if m.generation < generation]
            previous = [m for m in older if m.generation == generation - 1]
            pool = _union(previous, _best(older, self._elitism, multi))
            if len(pool) < 2:
                pool = _best(older, size, multi) or _best(ordered, size, multi)
            return pool
        # Aging: the youngest breed, the elites never die.
        members = population.members
        recent = [members[i] for i in youngest([m.number for m in members], size)]
        return _union(recent, _best(ordered, self._elitism, multi))

    def _select_parents(
        self, study: Study, pool: list[Member], rng: random.Random, *, greedy: bool = False
    ) -> list[Member]:
        if len(pool) == 1:
            return [pool[0], pool[0]]
        if len(study.directions) > 1:
            fitness = _crowded_order_scores([m.fitness for m in pool])
        else:
            fitness = [m.fitness[0] for m in pool]
        size = len(pool) if greedy else min(self._tournament_size, len(pool))
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
        is_repeat: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> Lineage:
        breeder = Breeder(self._crossover_prob, self._mutation_prob, self._rates)
        return breeder.breed(
            parents,
            pool,
            population,
            generation,
            self._space_for(population),
            rng,
            is_repeat=is_repeat,
        )

    def _space_for(self, population: Snapshot) -> SearchSpace | None:
        if self._search_space is not None:
            return self._search_space
        latest = population.latest
        dists = dict(latest.distributions)
        if N_BLOCKS in dists:
            # The latest body may have no blocks: the block genes of earlier
            # members fill in (the latest trial's distributions win).
            for name, dist in population.distributions.items():
                dists.setdefault(name, dist)
        return space_from_distributions(dists, latest.input_shape)


_MISSING = object()


class _StudyCache:
    """What a sampler keeps in memory for one study; all of it is in storage too."""

    __slots__ = ("known", "mismatched", "population", "running")

    def __init__(self) -> None:
        self.population: Population | None = None
        # The parameters of the finished trials (complete or pruned).
        self.known = KnownParams()
        # Parameters found outside the sampler's search_space (warned about once).
        self.mismatched: set[str] = set()
        # Trial id -> (trial number, child record) of the trials that started here
        # and have not ended: the record is asked for at every suggest.
        self.running: dict[int, tuple[int, Lineage]] = {}


def _sync_known(known: KnownParams, trials: Sequence[FrozenTrial]) -> KnownParams:
    """``known`` with the complete and pruned trials of ``trials`` (sorted by number)
    it lacks; a new index if the study holds fewer than it knows (recreated)."""
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if len(finished) < len(known):
        known = KnownParams()
    missing = len(finished) - len(known)
    # New ones are almost always at the end.
    for trial in reversed(finished):
        if missing <= 0:
            break
        if not known.knows(trial.number):
            known.add(trial.number, trial.params)
            missing -= 1
    return known


def _fixed_by_wrapper(study: Study, sampler: EvoSampler) -> Mapping[str, Any]:
    """The parameters a :class:`~optuna.samplers.PartialFixedSampler` around ``sampler``
    fixes in ``study`` (none without one)."""
    wrapper = study.sampler
    if isinstance(wrapper, PartialFixedSampler) and wrapper._base_sampler is sampler:
        fixed = wrapper._fixed_params
        if isinstance(fixed, Mapping):
            return fixed
    return {}


def _forget_finished(
    running: dict[int, tuple[int, Lineage]], trials: Sequence[FrozenTrial]
) -> None:
    """Drop the records of trials that ``trials`` (the study's) shows finished.

    A trial missing from ``trials`` may have started after they were read, so
    only a trial seen finished is dropped; finished is final.
    """
    by_id: dict[int, FrozenTrial] | None = None
    for trial_id, (number, _) in list(running.items()):
        # Trials come sorted by number, numbered from 0: a direct look-up first.
        trial = trials[number] if 0 <= number < len(trials) else None
        if trial is None or _storage.trial_id(trial) != trial_id:
            if by_id is None:
                by_id = {_storage.trial_id(t): t for t in trials}
            trial = by_id.get(trial_id)
        if trial is not None and trial.state.is_finished():
            del running[trial_id]


def _as_member_of(value: Any, dist: BaseDistribution) -> Any:
    """``value`` in the distribution's own external form, or ``_MISSING``."""
    try:
        internal = dist.to_internal_repr(value)
        if dist._contains(internal):
            return dist.to_external_repr(internal)
    except (ValueError, TypeError):
        pass
    return _MISSING


def _union(first: list[Member], second: list[Member]) -> list[Member]:
    numbers = {m.number for m in first}
    return first + [m for m in second if m.number not in numbers]


def _expressed_operators(lineage: Lineage, used: Mapping[str, Any]) -> tuple[str, ...]:
    """``lineage``'s operators less mutations of its parameters the trial did not use,
    or used with another value than the mutation's (one a wrapper such as Optuna's
    ``PartialFixedSampler`` fixed)."""

    def unexpressed(op: str) -> bool:
        name = op[len(_MUTATE) :]
        if not op.startswith(_MUTATE) or name not in lineage.params:
            return False
        return name not in used or used[name] != lineage.params[name]

    return tuple(op for op in lineage.operators if not unexpressed(op))


def _check_tournament_size(value: Any) -> int:
    if not isinstance(value, str):
        try:
            return check_int(value, "tournament_size", _OWNER, low=1)
        except InvalidParameterError:
            pass
    raise_invalid("tournament_size", _OWNER, 'an int >= 1 or "auto"', value)


def _repeat_lineage(best: Member) -> Lineage:
    """A trial that evaluates ``best``'s parameters again, to measure the noise."""
    genome = best.genome
    return Lineage(
        origin="repeat",
        generation=best.generation,
        parents=(best.number,),
        params=dict(best.params),
        genome=genome.to_json() if genome is not None else None,
    )


def _best(candidates: list[Member], k: int, multi: bool) -> list[Member]:
    """The ``k`` best of ``candidates``: ranked ones' first ``k``, or by NSGA-II."""
    if not multi:
        return candidates[:k]
    return [candidates[i] for i in select_nsga2([m.fitness for m in candidates], k)]


def _crowded_order_scores(values: Sequence[Sequence[float]]) -> list[float]:
    """A score per individual that orders them by front, then crowding distance.

    NSGA-II's crowded comparison as one number, so that the single-objective
    tournaments apply: the first of the order scores 0, the next -1, ...
    """
    ranks = nsga2_rank_and_crowding(values)
    order = sorted(range(len(ranks)), key=lambda i: (ranks[i][0], -ranks[i][1]))
    scores = [0.0] * len(ranks)
    for position, index in enumerate(order):
        scores[index] = -float(position)
    return scores


def _check_rank_probabilities(value: Any) -> tuple[float, ...]:
    # The seed's rule: the best wins most often, then the second, ... (p1 > p2 > p3).
    expected = (
        "a non-empty, strictly decreasing sequence of probabilities (p1 > p2 > p3 ...) "
        "with a positive sum"
    )
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise_invalid("rank_probabilities", _OWNER, expected, value)
    try:
        probs = tuple(
            check_float(p, "rank_probabilities", _OWNER, low=0.0, high=1.0) for p in value
        )
    except InvalidParameterError:
        raise_invalid("rank_probabilities", _OWNER, expected, value)
    if sum(probs) <= 0 or any(a <= b for a, b in itertools.pairwise(probs)):
        raise_invalid("rank_probabilities", _OWNER, expected, value)
    return probs
