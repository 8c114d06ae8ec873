"""The record a sampler writes on each trial it breeds: child and ancestry.

It is stored as one user attribute, :data:`LINEAGE_ATTR`, so that it shows in
optuna-dashboard, survives a restart (the GA reads it back from storage) and
is copied by Optuna's retry callbacks when a dead worker's trial is re-run.
One attribute means one storage write per trial (a second one only when a
finished trial did not use a parameter whose mutation its record reports:
that mutation is then dropped from the record).

A retried trial (Optuna's ``RetryFailedTrialCallback`` or
``RetryHeartbeatStaleTrialCallback``, as :mod:`evohpo.workers.worker` uses) is the
same child run again: it keeps the original's record, origin included, and
Optuna's system attributes ``failed_trial`` and ``retry_history`` say that it
is a retry and of which trial.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evohpo.evolution.genome import Genome
from evohpo.exceptions import GenomeFormatError

__all__ = ["LINEAGE_ATTR", "ORIGINS", "Lineage"]

#: User attribute holding a trial's :class:`Lineage` as a JSON object.
LINEAGE_ATTR = "evohpo"

#: How a trial's parameters came about. A retry keeps its original's origin.
ORIGINS = ("random", "bred", "repeat", "enqueued")


@dataclass(frozen=True)
class Lineage:
    """Where a trial's parameters came from.

    Parameters
    ----------
    origin : str
        ``"random"`` (initial population), ``"bred"`` (selection and
        variation), ``"repeat"`` (its parent's parameters evaluated again, to
        measure the objective's noise) or ``"enqueued"`` (fixed by the user).
        A retried trial keeps the origin of the trial it retries.
    generation : int
        0 for the initial population; a bred child is one generation after its
        youngest parent (steady state) or the number of its generation
        (generational mode); a repeat has its parent's.
    parents : tuple of int
        Trial numbers of the parents.
    operators : tuple of str
        Variation operators that changed the child, e.g.
        ``("crossover:layers", "mutate:units")``: a crossover only when the
        child differs in value from both parents, a mutation only of a
        parameter the finished trial used.
    params : dict
        The child's parameters, as the sampler will answer them.
    genome : str or None
        The child genome's JSON, with gene ids, when the objective uses
        :func:`evohpo.suggest_genome`.
    """

    origin: str
    generation: int = 0
    parents: tuple[int, ...] = ()
    operators: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    genome: str | None = None

    def to_attr(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "generation": self.generation,
            "parents": list(self.parents),
            "operators": list(self.operators),
            "params": dict(self.params),
            "genome": self.genome,
        }

    @classmethod
    def from_attr(cls, value: Any) -> Lineage | None:
        """Read a stored record; ``None`` if absent or not one of ours."""
        if not isinstance(value, Mapping) or value.get("origin") not in ORIGINS:
            return None
        generation = value.get("generation", 0)
        parents = value.get("parents", [])
        operators = value.get("operators", [])
        params = value.get("params", {})
        genome = value.get("genome")
        if (
            not isinstance(generation, int)
            or not isinstance(parents, Sequence)
            or not isinstance(operators, Sequence)
            or not isinstance(params, Mapping)
            or not (genome is None or isinstance(genome, str))
        ):
            return None
        return cls(
            origin=str(value["origin"]),
            generation=generation,
            parents=tuple(int(p) for p in parents),
            operators=tuple(str(o) for o in operators),
            params=dict(params),
            genome=genome,
        )

    def parsed_genome(self) -> Genome | None:
        """The child genome, or ``None`` if none was stored or it cannot be read."""
        if self.genome is None:
            return None
        try:
            return Genome.from_json(self.genome)
        except GenomeFormatError:
            return None
