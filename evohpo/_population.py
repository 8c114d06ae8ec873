"""The GA's view of a study's finished trials, kept up to date incrementally.

A sampler breeds every new trial from all finished trials so far. Rebuilding
that view per trial costs time linear in the study's length; :class:`Population`
instead folds in only the trials that finished since the last call, so the
cost per trial stays flat as a study grows to thousands of trials.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from evohpo.exceptions import GenomeFormatError
from evohpo.genome import Genome
from evohpo.lineage import LINEAGE_ATTR, Lineage

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
        sampler), the ids are derived from the trial number, as
        :func:`evohpo.suggest_genome` derives them.
        """
        try:
            genome = Genome.from_params(self.params)
        except GenomeFormatError:
            return None
        bred = self.lineage.parsed_genome() if self.lineage is not None else None
        if bred is not None and bred == genome:
            return bred
        return Genome.from_params(
            self.params, ids=[f"t{self.number}l{i}" for i in range(genome.depth)]
        )


def rank_key(member: Member) -> tuple[float, int]:
    """Fitter first; among equals, the older trial (stable under resume)."""
    return member.fitness[0], -member.number


def _descending_rank(member: Member) -> tuple[float, int]:
    return -member.fitness[0], member.number


@dataclass(frozen=True)
class Snapshot:
    """A population at one moment, safe to read while other threads sync."""

    members: list[Member]  # by trial number
    ranked: list[Member]  # best first (single objective only)
    distributions: dict[str, BaseDistribution]  # every parameter, latest distribution

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
        self.ranked: list[Member] = []  # best first (single objective only)
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
        if len(self._signs) == 1:
            bisect.insort(self.ranked, member, key=_descending_rank)
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

    def snapshot(self) -> Snapshot:
        """A copy of the current view (copies of the lists, not of the members)."""
        return Snapshot(list(self.members), list(self.ranked), self._distributions())

    def _distributions(self) -> dict[str, BaseDistribution]:
        """Every parameter seen in a member, with its latest distribution.

        Ordered by where each name first appeared (trial number, then position
        in that trial), so the order does not depend on when trials arrived.
        """
        ordered = sorted(self._dists.items(), key=lambda item: item[1][0])
        return {name: latest[1] for name, (_, latest) in ordered}


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
    )
