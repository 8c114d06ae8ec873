"""The GA's view of a study's finished trials, kept up to date incrementally.

A sampler breeds every new trial from all finished trials so far. Rebuilding
that view per trial costs time linear in the study's length; :class:`Population`
instead folds in only the trials that finished since the last call, so the
cost per trial stays flat as a study grows to thousands of trials.

With one objective, trials of equal parameters are one individual whose
fitness is the mean of their values: an evaluation repeated to measure the
objective's noise (or enqueued twice) refines that individual instead of
adding a second, equally lucky copy. The repeats also tell whether the
objective is deterministic (:attr:`Snapshot.noisy`).
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from evohpo.evolution.genome import Genome
from evohpo.evolution.lineage import LINEAGE_ATTR, Lineage
from evohpo.evolution.suggest import derived_ids, input_shape_of
from evohpo.exceptions import GenomeFormatError

__all__ = ["Member", "Population", "Snapshot", "params_key", "rank_key"]


def params_key(params: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """A hashable key of a parameter dict: equal keys, equal parameters."""
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


@dataclass(frozen=True)
class Member:
    """A finished trial as the GA sees it.

    A finished trial never changes, so what is derived from it (its
    parameters' key, its genome) is computed once, on first use.
    """

    number: int
    fitness: tuple[float, ...]  # sign-adjusted: larger is better for every objective
    params: Mapping[str, object]
    distributions: Mapping[str, BaseDistribution]
    lineage: Lineage | None
    #: The input shape its genome's body was suggested for, if it has one.
    input_shape: tuple[int, ...] | None = None

    @property
    def generation(self) -> int:
        return self.lineage.generation if self.lineage is not None else 0

    @functools.cached_property
    def params_key(self) -> tuple[tuple[str, str], ...]:
        """:func:`params_key` of the member's parameters."""
        return params_key(self.params)

    @functools.cached_property
    def genome(self) -> Genome | None:
        """The member's genome, with the gene ids its lineage recorded when they match.

        ``None`` when its parameters are not those of :func:`evohpo.suggest_genome`.
        Without a matching record (a random or enqueued trial, or one of another
        sampler), the layer and block ids are derived from the trial number, as
        :func:`evohpo.suggest_genome` derives them. The genome is the one the
        parameters spell, before any repair :func:`evohpo.suggest_genome` made.
        """
        try:
            genome = Genome.from_params(self.params)
        except GenomeFormatError:
            return None
        bred = self.lineage.parsed_genome() if self.lineage is not None else None
        if bred is not None and bred == genome:
            return bred
        layer_ids, block_ids = derived_ids(self.number, self.params)
        return Genome.from_params(self.params, ids=layer_ids, block_ids=block_ids)


def rank_key(member: Member) -> tuple[float, int]:
    """Fitter first; among equals, the older trial (stable under resume)."""
    return member.fitness[0], -member.number


def _descending_rank(member: Member) -> tuple[float, int]:
    return -member.fitness[0], member.number


@dataclass(frozen=True)
class Snapshot:
    """A population at one moment, safe to read while other threads sync."""

    members: list[Member]  # by trial number
    ranked: list[Member]  # best first, one per parameter set, mean fitness (one objective)
    distributions: dict[str, BaseDistribution]  # every parameter, latest distribution
    repeats: int = 0  # members whose parameters an earlier member already had (one objective)
    noisy: bool = False  # whether two members of equal parameters differ in value
    probes: int = 0  # members the sampler made as repeats (lineage origin "repeat")

    @property
    def latest(self) -> Member:
        """The member with the highest trial number."""
        return self.members[-1]

    def __len__(self) -> int:
        return len(self.members)


class Population:
    """Members of one study, in trial-number order and (one objective) by rank.

    Feed it the study's COMPLETE trials sorted by number with :meth:`sync`.
    Finished trials never change, so only trials not seen before are parsed;
    they are found from the end of the list, where new ones almost always are.
    """

    def __init__(self, signs: Sequence[float]) -> None:
        self._signs = tuple(signs)
        self._clear()

    def _clear(self) -> None:
        self._seen: set[int] = set()  # trial numbers examined, members or not
        self.members: list[Member] = []  # by trial number
        self.ranked: list[Member] = []  # best first, one per parameter set (one objective)
        # Parameter key -> the values of its members and its entry in ``ranked``.
        self._evaluations: dict[tuple[tuple[str, str], ...], _Evaluations] = {}
        self.repeats = 0
        self.noisy = False
        self.probes = 0
        # name -> (where first seen: trial number, position), (latest number, distribution)
        self._dists: dict[str, tuple[tuple[int, int], tuple[int, BaseDistribution]]] = {}

    def sync(self, trials: Sequence[FrozenTrial]) -> None:
        """Fold in the trials of ``trials`` (COMPLETE, sorted by number) not seen yet."""
        if len(trials) < len(self._seen):
            # Fewer finished trials than before: not the study this view was
            # built from (a deleted and recreated study). Start again.
            self._clear()
        missing = len(trials) - len(self._seen)
        new: list[FrozenTrial] = []
        for trial in reversed(trials):
            if missing == 0:
                break
            if trial.number not in self._seen:
                new.append(trial)
                missing -= 1
        for trial in reversed(new):
            self._seen.add(trial.number)
            member = _member_of(trial, self._signs)
            if member is not None:
                self._add(member)

    def _add(self, member: Member) -> None:
        bisect.insort(self.members, member, key=lambda m: m.number)
        if member.lineage is not None and member.lineage.origin == "repeat":
            self.probes += 1
        if len(self._signs) == 1:
            self._rank(member)
        for position, (name, dist) in enumerate(member.distributions.items()):
            where = (member.number, position)
            known = self._dists.get(name)
            if known is None:
                self._dists[name] = (where, (member.number, dist))
            else:
                first, latest = known
                self._dists[name] = (
                    min(first, where),
                    max(latest, (member.number, dist), key=lambda pair: pair[0]),
                )

    def _rank(self, member: Member) -> None:
        """Put ``member`` in ``ranked``, merged with the members of equal parameters."""
        key = member.params_key
        known = self._evaluations.get(key)
        if known is None:
            self._evaluations[key] = _Evaluations(member)
            bisect.insort(self.ranked, member, key=_descending_rank)
            return
        self.repeats += 1
        self.noisy = self.noisy or member.fitness[0] != known.values[0]
        at = bisect.bisect_left(self.ranked, _descending_rank(known.entry), key=_descending_rank)
        del self.ranked[at]
        known.add(member)
        bisect.insort(self.ranked, known.entry, key=_descending_rank)

    def snapshot(self) -> Snapshot:
        """A copy of the current view (copies of the lists, not of the members)."""
        return Snapshot(
            list(self.members),
            list(self.ranked),
            self._distributions(),
            repeats=self.repeats,
            noisy=self.noisy,
            probes=self.probes,
        )

    def _distributions(self) -> dict[str, BaseDistribution]:
        """Every parameter seen in a member, with its latest distribution.

        Ordered by where each name first appeared (trial number, then position
        in that trial), so the order does not depend on when trials arrived.
        """
        ordered = sorted(self._dists.items(), key=lambda item: item[1][0])
        return {name: latest[1] for name, (_, latest) in ordered}


class _Evaluations:
    """The values of the members that share one parameter set, and their ranked entry.

    The entry is the earliest member (the individual's trial number stays
    stable under resume) with the mean value as its fitness.
    """

    __slots__ = ("entry", "values")

    def __init__(self, member: Member) -> None:
        self.entry = member
        self.values = [member.fitness[0]]

    def add(self, member: Member) -> None:
        self.values.append(member.fitness[0])
        earliest = member if member.number < self.entry.number else self.entry
        mean = math.fsum(self.values) / len(self.values)
        if math.isnan(mean):  # +inf and -inf for one parameter set: trust neither
            mean = -math.inf
        self.entry = replace(earliest, fitness=(mean,))


def _member_of(trial: FrozenTrial, signs: Sequence[float]) -> Member | None:
    if trial.values is None or len(trial.values) != len(signs):
        return None
    fitness = tuple(s * v for s, v in zip(signs, trial.values, strict=True))
    if any(math.isnan(f) for f in fitness):
        return None
    return Member(
        number=trial.number,
        fitness=fitness,
        params=trial.params,
        distributions=trial.distributions,
        lineage=Lineage.from_attr(trial.user_attrs.get(LINEAGE_ATTR)),
        input_shape=input_shape_of(trial.user_attrs),
    )
