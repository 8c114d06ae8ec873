"""Lamarckian weight inheritance: children start from their parents' trained weights.

A trial that finishes keeps its trained weights (keyed by gene id,
:mod:`evohpo.training.gene_weights`) as an Optuna artifact of the trial, in
any ``optuna.artifacts`` store: a folder next to a SQLite or journal file by
default, an S3 or GCS store for many machines. A bred trial (its lineage's
origin is ``"bred"``, :mod:`evohpo.evolution.lineage`) then starts from its
parents' weights (:func:`evohpo.training.transfer.inherit`) instead of from
scratch; its optimizer state starts afresh and its learning rate gene
applies. A random, enqueued or repeated trial trains from scratch: a repeat
measures the objective's noise, which inherited weights would hide.

Records, as user attributes of the trial:

* ``"weights"``: ``{"artifact": id, "bytes": n}``, the trial's own weights;
* ``"inherited"``: which parent gave each gene and how (copied, widened,
  identity-inserted, fresh), whether the child computes its first parent's
  function exactly, and the fraction of its parameters inherited;
* ``"inheritance_warning"``: why a parent's weights could not be used (none
  stored, removed by retention, unreadable); the child then starts fresh
  where that parent would have given weights. A trial never fails for it.

Retention keeps disk use bounded: after each save, the weights of every
finished trial that is neither among the ``keep_best`` best nor the
``keep_recent`` latest, nor a parent of a running trial, are removed. The
bytes still held are written to the study's user attribute
``"weights_bytes"``.

:class:`~evohpo.search.objective.GenomeObjective` (so the estimator, study
files and workers) does all this when given a :class:`WeightInheritance`; an
objective of one's own calls :meth:`WeightBank.warm_start` before training
and :meth:`WeightBank.keep` after it.

Examples
--------
>>> import optuna, tempfile, torch, evohpo
>>> from evohpo.training.nn import build_model
>>> space = evohpo.SearchSpace(max_layers=2, units=(4, 8))
>>> bank = WeightBank(WeightInheritance(tempfile.mkdtemp()))
>>> def objective(trial):
...     genome = evohpo.suggest_genome(trial, space)
...     model = build_model(genome, 3, 2, seed=trial.number)
...     bank.warm_start(trial, genome, model)
...     # ... train the model here ...
...     bank.keep(trial, genome, model)
...     return float(sum(p.detach().sum() for p in model.parameters()))
>>> study = optuna.create_study(sampler=evohpo.EvoSampler(population_size=2, seed=0))
>>> study.optimize(objective, n_trials=4)
>>> sorted(k for k in study.trials[-1].user_attrs if k in ("inherited", "weights"))
['inherited', 'weights']
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from evohpo._random import derive_seed
from evohpo._validation import check_int, raise_invalid
from evohpo.evolution.genome import Genome
from evohpo.evolution.lineage import LINEAGE_ATTR, Lineage
from evohpo.exceptions import GenomeFormatError
from evohpo.storage import internals
from evohpo.training.gene_weights import (
    GeneWeights,
    WeightsFormatError,
    gene_weights,
    model_state,
)
from evohpo.training.transfer import Inherited, ParentWeights, inherit

__all__ = [
    "INHERITED_ATTR",
    "STUDY_BYTES_ATTR",
    "WARNING_ATTR",
    "WEIGHTS_ATTR",
    "WeightBank",
    "WeightInheritance",
    "inherited_start",
    "is_weight_store",
]

logger = logging.getLogger("evohpo")

_OWNER = "WeightInheritance"

#: User attribute of a trial: its stored weights, ``{"artifact": id, "bytes": n}``.
WEIGHTS_ATTR = "weights"
#: User attribute of a bred trial: what it inherited (:meth:`Inherited.record`).
INHERITED_ATTR = "inherited"
#: User attribute of a trial whose parents' weights could not all be used.
WARNING_ATTR = "inheritance_warning"
#: User attribute of the study: bytes of weights the retention rule keeps.
STUDY_BYTES_ATTR = "weights_bytes"


def is_weight_store(value: Any) -> bool:
    """Whether ``value`` names a weight store: a non-empty folder path or an artifact store."""
    if isinstance(value, (str, os.PathLike)):
        return bool(str(value))
    return all(callable(getattr(value, m, None)) for m in ("open_reader", "write", "remove"))


@dataclass(frozen=True)
class WeightInheritance:
    """Where trained weights are kept, and how many.

    Parameters
    ----------
    store : str, path or optuna artifact store
        A folder (created if missing) for an ``optuna.artifacts.FileSystemArtifactStore``,
        or any artifact store object (``Boto3ArtifactStore``, ``GCSArtifactStore``,
        ...) that every worker can reach.
    keep_best : int, default=20
        The weights of the best finished trials that are kept.
    keep_recent : int, default=20
        The weights of the latest finished trials that are kept (the population
        of aging evolution). Keep both at least the sampler's population size:
        a parent whose weights were removed gives none.
    inherit : bool, default=True
        Start bred trials from their parents' weights. ``False`` only keeps
        the weights (to load a trained trial later, or to compare searches
        with and without inheritance on equal terms).
    """

    store: Any
    keep_best: int = 20
    keep_recent: int = 20
    inherit: bool = True

    def __post_init__(self) -> None:
        if not is_weight_store(self.store):
            expected = "a folder path or an optuna artifact store (open_reader, write, remove)"
            raise_invalid("store", _OWNER, expected, self.store)
        if not isinstance(self.inherit, bool):
            raise_invalid("inherit", _OWNER, "True or False", self.inherit)
        object.__setattr__(self, "keep_best", check_int(self.keep_best, "keep_best", _OWNER, low=1))
        object.__setattr__(
            self, "keep_recent", check_int(self.keep_recent, "keep_recent", _OWNER, low=0)
        )

    def artifact_store(self) -> Any:
        """The artifact store: the object given, or a file-system store on the folder."""
        if isinstance(self.store, (str, os.PathLike)):
            path = Path(self.store)
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise_invalid("store", _OWNER, f"a folder that can be created ({exc})", str(path))
            return FileSystemArtifactStore(str(path))
        return self.store


@dataclass
class WeightBank:
    """Saves trials' weights and gives bred trials their parents' (see the module)."""

    settings: WeightInheritance
    _store: Any = field(default=None, init=False, repr=False)
    #: Artifacts this process removed (a finished trial's record cannot change).
    _removed: set[str] = field(default_factory=set, init=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings, "_store": None, "_removed": set()}

    @property
    def store(self) -> Any:
        if self._store is None:
            self._store = self.settings.artifact_store()
        return self._store

    # -- for objectives of one's own -------------------------------------------------------
    def warm_start(
        self,
        trial: optuna.Trial,
        genome: Genome,
        model: nn.Module,
        *,
        input_shape: Sequence[int] | None = None,
        seed: int = 0,
    ) -> bool:
        """Load into ``model`` what the running ``trial`` inherits; whether it inherited.

        For an objective that builds its own model with
        :func:`~evohpo.training.nn.build_model` from the genome
        :func:`~evohpo.suggest_genome` gave (an ``EvoSampler`` study). The
        trial's user attributes record what was inherited, or why not.
        ``seed`` initialises what no parent gives; the model's own weights are
        kept where nothing is inherited.
        """
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise_invalid("model", "WeightBank.warm_start", "a model of build_model", model)
        n_features = int(math.prod(input_shape)) if input_shape else linears[0].in_features
        state, attrs = self.start_state(
            trial,
            genome,
            n_features=n_features,
            n_outputs=linears[-1].out_features,
            seed=seed,
            input_shape=input_shape,
        )
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if state is None:
            return False
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            expected = "the model build_model gives for the genome"
            raise_invalid("model", "WeightBank.warm_start", expected, f"another model ({exc})")
        return True

    def keep(self, trial: optuna.Trial, genome: Genome, model: nn.Module) -> None:
        """Store the trained ``model`` of the running ``trial`` (then apply retention)."""
        record = self.save(trial, genome, model)
        for key, value in record.items():
            trial.set_user_attr(key, value)
        self.retain(trial.study, {trial.number: record[WEIGHTS_ATTR]})

    # -- a child's start -------------------------------------------------------------------
    def start_state(
        self,
        trial: optuna.Trial,
        genome: Genome,
        *,
        n_features: int,
        n_outputs: int,
        seed: int,
        input_shape: Sequence[int] | None,
    ) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any]]:
        """The state a running trial trains from (``None``: its seed's), and the
        user attributes that say so."""
        if not self.settings.inherit:
            return None, {}
        lineage = Lineage.from_attr(internals.trial_user_attrs(trial).get(LINEAGE_ATTR))
        if lineage is None or lineage.origin != "bred" or not lineage.parents:
            return None, {}
        parents, problems = self._parents(trial.study, lineage.parents)
        attrs: dict[str, Any] = {}
        if problems:
            attrs[WARNING_ATTR] = "; ".join(problems)
            logger.warning("Trial %d starts without some weights: %s", trial.number, problems)
        if not parents:
            return None, attrs
        inherited = self._inherit(genome, parents, n_features, n_outputs, seed, input_shape)
        attrs[INHERITED_ATTR] = inherited.record()
        return inherited.state, attrs

    def refit_state(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        genome: Genome,
        *,
        n_features: int,
        n_outputs: int,
        seed: int,
        input_shape: Sequence[int] | None,
    ) -> dict[str, torch.Tensor] | None:
        """The state finished ``trial`` started from, built again from its parents'
        weights with its seed (as :meth:`start_state` built it), for a refit.

        ``None`` if it started from fresh weights, or if a parent's weights it
        used are gone (the state would differ from the one it trained from).
        """
        if not inherited_start(trial):
            return None
        lineage = Lineage.from_attr(trial.user_attrs.get(LINEAGE_ATTR))
        if lineage is None or not lineage.parents:
            return None
        parents, problems = self._parents(study, lineage.parents)
        if problems or not parents:
            return None
        return self._inherit(genome, parents, n_features, n_outputs, seed, input_shape).state

    def _parents(
        self, study: optuna.Study, numbers: Sequence[int]
    ) -> tuple[list[ParentWeights], list[str]]:
        """The stored weights of the trials ``numbers``, and why any are unavailable."""
        parents: list[ParentWeights] = []
        problems: list[str] = []
        for number in dict.fromkeys(numbers):
            try:
                parents.append(self._parent(study, number))
            except _Unavailable as exc:
                problems.append(str(exc))
        return parents, problems

    @staticmethod
    def _inherit(
        genome: Genome,
        parents: Sequence[ParentWeights],
        n_features: int,
        n_outputs: int,
        seed: int,
        input_shape: Sequence[int] | None,
    ) -> Inherited:
        return inherit(
            genome,
            parents,
            n_features=n_features,
            n_outputs=n_outputs,
            seed=derive_seed(seed, "init"),
            input_shape=input_shape,
            generator=torch.Generator().manual_seed(derive_seed(seed, "widen")),
        )

    def _parent(self, study: optuna.Study, number: int) -> ParentWeights:
        try:
            frozen = internals.get_trial(study, internals.trial_id_of_number(study, number))
        except KeyError as exc:
            raise _Unavailable(f"parent trial {number} is not in the study") from exc
        record = frozen.user_attrs.get(WEIGHTS_ATTR)
        if not isinstance(record, Mapping) or not isinstance(record.get("artifact"), str):
            raise _Unavailable(f"parent trial {number} stored no weights")
        try:
            with self.store.open_reader(record["artifact"]) as reader:
                data = reader.read()
        except Exception as exc:  # stores raise their own errors for a missing object
            where = self.settings.store
            shown = f"folder {str(where)!r}" if isinstance(where, (str, os.PathLike)) else "store"
            raise _Unavailable(
                f"the weights of parent trial {number} are not in the weights {shown} (removed "
                f"by retention, or the study was run with another weights folder): {exc}"
            ) from exc
        try:
            weights = GeneWeights.from_bytes(data)
            genome = Genome.from_json(weights.genome_json)
        except (WeightsFormatError, GenomeFormatError) as exc:
            raise _Unavailable(f"the weights of parent trial {number} are corrupt: {exc}") from exc
        return ParentWeights(number, genome, weights)

    def load(self, study: optuna.Study, number: int) -> tuple[Genome, dict[str, torch.Tensor]]:
        """The genome and state dict (of ``build_model(genome)``) trial ``number`` stored.

        Raises
        ------
        LookupError
            If the trial stored no weights, or they are gone or unreadable.
        """
        try:
            parent = self._parent(study, number)
        except _Unavailable as exc:
            raise LookupError(str(exc)) from exc
        genome = Genome.from_json(parent.weights.genome_json)
        state = model_state(parent.weights, genome)
        if state is None:
            raise LookupError(f"trial {number}'s weights miss a gene of its genome")
        return genome, state

    # -- a finished trial's weights --------------------------------------------------------
    def save(self, trial: optuna.Trial, genome: Genome, model: nn.Module) -> dict[str, Any]:
        """Upload ``model``'s weights as an artifact of the running ``trial``; the user
        attributes that record them (for the trial's final write)."""
        data = gene_weights(model, genome, genome.to_json()).to_bytes()
        handle, path = tempfile.mkstemp(prefix="evohpo-weights-", suffix=".pt")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            artifact = upload_artifact(
                artifact_store=self.store,
                file_path=path,
                study_or_trial=trial,
                mimetype="application/octet-stream",
            )
        finally:
            os.unlink(path)
        return {WEIGHTS_ATTR: {"artifact": artifact, "bytes": len(data)}}

    def retain(self, study: optuna.Study, saved: Mapping[int, Mapping[str, Any]] = {}) -> int:
        """Remove the weights the retention rule lets go; the bytes still kept.

        ``saved`` holds the records :meth:`save` just returned, by trial number:
        the trials this process runs, whose records a cached read may miss.
        """
        trials = internals.get_trials(study)
        stored = [t for t in trials if _weights_record(t) is not None]
        seen = {t.number for t in stored}
        kept = sum(
            int(record.get("bytes", 0)) for number, record in saved.items() if number not in seen
        )
        finished = [t for t in stored if t.state == TrialState.COMPLETE]
        keep: set[int] = set()
        sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else 1.0
        ranked = sorted(finished, key=lambda t: -_score(t, sign))
        keep.update(t.number for t in ranked[: self.settings.keep_best])
        if self.settings.keep_recent:
            latest = sorted(finished, key=lambda t: t.number)[-self.settings.keep_recent :]
            keep.update(t.number for t in latest)
        for running in trials:
            if running.state in (TrialState.RUNNING, TrialState.WAITING):
                lineage = Lineage.from_attr(running.user_attrs.get(LINEAGE_ATTR))
                if lineage is not None:
                    keep.update(lineage.parents)
        for t in stored:
            record = _weights_record(t)
            assert record is not None
            if t.number in keep or t.state == TrialState.RUNNING:
                kept += int(record.get("bytes", 0))
                continue
            if record["artifact"] in self._removed:
                continue
            # Gone already (another worker removed it): nothing to do.
            with contextlib.suppress(Exception):
                self.store.remove(record["artifact"])
            self._removed.add(record["artifact"])
        study.set_user_attr(STUDY_BYTES_ATTR, kept)
        return kept


class _Unavailable(Exception):
    """A parent's weights cannot be used (the message says why)."""


def _weights_record(trial: FrozenTrial) -> Mapping[str, Any] | None:
    record = trial.user_attrs.get(WEIGHTS_ATTR)
    if isinstance(record, Mapping) and isinstance(record.get("artifact"), str):
        return record
    return None


def _score(trial: FrozenTrial, sign: float) -> float:
    """The trial's first value, larger is better; a missing or non-finite one is worst."""
    value = trial.values[0] if trial.values else math.nan
    return sign * value if math.isfinite(value) else -math.inf


def inherited_start(trial: FrozenTrial) -> bool:
    """Whether ``trial`` started from weights inherited from its parents (``inherit_weights``).

    Examples
    --------
    >>> import optuna
    >>> trial = optuna.trial.create_trial(value=1.0, user_attrs={"inherited": {"fraction": 0.8}})
    >>> inherited_start(trial)
    True
    """
    record = trial.user_attrs.get(INHERITED_ATTR)
    fraction = record.get("fraction") if isinstance(record, Mapping) else None
    return isinstance(fraction, (int, float)) and fraction > 0
