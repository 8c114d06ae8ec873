"""The Optuna studies of a study file: their names, identity, creation and listing.

Each (sampler, seed) pair of a study file is one Optuna study, named
``<name>/<sampler>/seed<seed>`` so that the studies of one file group
together in optuna-dashboard.

Everything needed to resume lives in the storage: the trials (with their
genomes and lineage) and, as the study user attribute :data:`STUDY_ATTR`, the
study's identity (data set, split, space, training settings, sampler, seed,
direction). A stored study whose identity differs from the file is refused
with :class:`~evohpo.exceptions.StudyMismatchError` before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import optuna
from optuna.storages import BaseStorage

from evohpo._version import __version__
from evohpo.search.identity import IdentityCheck
from evohpo.search.samplers import SAMPLERS, build_pruner, build_sampler
from evohpo.storage import internals
from evohpo.storage.urls import describe_storage
from evohpo.studies.config import StudyConfig

__all__ = [
    "DIRECTION",
    "RUNTIME_TRAIN_KEYS",
    "STUDY_ATTR",
    "StoredStudy",
    "check_study",
    "group_studies",
    "open_study",
    "study_identity",
    "study_name",
    "study_sort_key",
]

#: Every study maximises its validation score (accuracy, or R2 for regression).
DIRECTION: Literal["maximize"] = "maximize"
#: Study user attribute that holds the study's identity (a JSON object).
STUDY_ATTR = "evohpo.study"
#: Version of the identity record; part of the identity.
_IDENTITY_FORMAT = 1
#: ``[train]`` settings that change where and how fast a trial runs, not what it
#: learns: left out of a study's identity, so a study resumes on another device.
RUNTIME_TRAIN_KEYS: tuple[str, ...] = ("device", "eval_batch_size")


def study_name(group: str, sampler: str, seed: int) -> str:
    """Name of the Optuna study of one sampler and seed: ``digits/ga/seed0``.

    Examples
    --------
    >>> study_name("digits", "ga", 0)
    'digits/ga/seed0'
    """
    return f"{group}/{sampler}/seed{seed}"


def study_sort_key(name: str) -> tuple[str, int, str, int, str]:
    """Sort key of study names: by group, then sampler (as in :data:`SAMPLERS`), then seed.

    Examples
    --------
    >>> sorted(["d/tpe/seed0", "d/ga/seed10", "d/ga/seed2"], key=study_sort_key)
    ['d/ga/seed2', 'd/ga/seed10', 'd/tpe/seed0']
    """
    group, _, rest = name.partition("/")
    sampler, _, seed = rest.partition("/")
    order = SAMPLERS.index(sampler) if sampler in SAMPLERS else len(SAMPLERS)
    number = int(seed[4:]) if seed.startswith("seed") and seed[4:].isdigit() else -1
    return group, order, sampler, number, name


# -- identity ---------------------------------------------------------------------------------
def study_identity(config: StudyConfig, sampler: str, seed: int) -> dict[str, Any]:
    """The study user attribute :data:`STUDY_ATTR`: what makes results comparable.

    A stored study must match it on every key but ``evohpo_version`` to be
    resumed. The training settings that do not change what a trial learns
    (:data:`RUNTIME_TRAIN_KEYS`: the device, the evaluation batch size) are
    left out, so a study started on one machine resumes on another.
    """
    identity = {
        "format": _IDENTITY_FORMAT,
        "group": config.name,
        "dataset": config.dataset,
        "data": config.data_identity(),
        "space": config.space.to_dict(),
        "train": _train_identity(config.train),
        "sampler": sampler,
        "sampler_options": dict(sorted(config.sampler_options.get(sampler, {}).items())),
        "pruner": dict(sorted(config.pruner.items())),
        "seed": seed,
        "direction": DIRECTION,
        "evohpo_version": __version__,
        # Children trained from their parents' weights learn otherwise than from fresh ones.
        "inherit_weights": config.inherit_weights,
    }
    if config.task != "classification":  # only then: classification studies keep theirs
        identity["task"] = config.task
    digest = config.data_digest()
    if digest is not None:  # a CSV file or image folder: its contents decide the rows too
        identity["data_digest"] = digest
    return identity


def _train_identity(train: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(train.items()) if k not in RUNTIME_TRAIN_KEYS}


def _comparable(identity: dict[str, Any]) -> dict[str, Any]:
    """``identity`` without the runtime training settings.

    Studies stored before the runtime settings left the identity still carry
    them; they are dropped here too, so such studies resume.
    """
    if isinstance(identity.get("train"), Mapping):
        identity = {**identity, "train": _train_identity(identity["train"])}
    return identity


_IDENTITY = IdentityCheck(
    attr=STUDY_ATTR,
    direction=(
        "{study} has the direction(s) [{directions}], but evohpo studies maximize "
        "validation accuracy. Nothing was changed; use another study name or storage."
    ),
    foreign=(
        "{study} already holds trials that evohpo did not record (no {attr!r} attribute). "
        "Nothing was changed; use another study name or storage."
    ),
    different=(
        "{study} was created with different settings ({keys}), so its trials are not "
        "comparable: {details}. Nothing was changed; restore the settings, or change "
        "'name' in the study file (or use another storage) to start new studies."
    ),
    ignore=("evohpo_version",),
    canonical=_comparable,
    limit=12,
    # Recorded since 2026-12-03 and 2026-12-04: older studies resume without them.
    added=("inherit_weights", "data_digest"),
)


def _subject(name: str, storage_url: str) -> str:
    where = describe_storage(storage_url) if storage_url else "the storage"
    return f"The study {name!r} in {where}"


def check_study(
    storage: BaseStorage,
    config: StudyConfig,
    sampler: str,
    seed: int,
    *,
    storage_url: str = "",
) -> None:
    """Raise :class:`StudyMismatchError` if the stored study differs; write nothing.

    A missing study passes: it would be created.
    """
    name = study_name(config.name, sampler, seed)
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return
    identity = study_identity(config, sampler, seed)
    _IDENTITY.check(storage, study_id, identity, subject=_subject(name, storage_url))


def open_study(
    storage: BaseStorage,
    config: StudyConfig,
    sampler: str,
    seed: int,
    *,
    storage_url: str = "",
) -> optuna.Study:
    """Create the study of ``(sampler, seed)`` or load it after checking its identity.

    Raises
    ------
    StudyMismatchError
        If a study of that name exists with another direction, search space,
        data, training settings or sampler settings; nothing is written then.
    """
    name = study_name(config.name, sampler, seed)
    identity = study_identity(config, sampler, seed)
    subject = _subject(name, storage_url)
    try:
        study_id: int | None = storage.get_study_id_from_name(name)
    except KeyError:
        study_id = None
    n_existing = 0
    if study_id is not None:
        _IDENTITY.check(storage, study_id, identity, subject=subject)
        n_existing = len(storage.get_all_trials(study_id, deepcopy=False))
    built = build_sampler(
        sampler,
        seed=seed,
        options=config.sampler_arguments(sampler),
        space=config.space,
        n_existing=n_existing,
    )
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction=DIRECTION,
        sampler=built,
        pruner=build_pruner(config.pruner),
        load_if_exists=True,
    )
    # Another worker may have created it in between: check again, then label it.
    if not _IDENTITY.check(storage, internals.study_id(study), identity, subject=subject):
        study.set_user_attr(STUDY_ATTR, identity)
        for key in ("dataset", "sampler", "seed"):
            study.set_user_attr(key, identity[key])
    return study


# -- listing ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredStudy:
    """An evohpo study found in a storage (one carrying :data:`STUDY_ATTR`).

    Attributes
    ----------
    name : str
        The study's name, ``<group>/<sampler>/seed<seed>``.
    study_id : int
        Optuna's id of the study in that storage.
    group, sampler : str
        From the study's identity.
    seed : int
        From the study's identity; ``-1`` if it records none.
    """

    name: str
    study_id: int
    group: str
    sampler: str
    seed: int


def group_studies(storage: BaseStorage, group: str | None = None) -> list[StoredStudy]:
    """The evohpo studies in ``storage`` (of one group if given), by :func:`study_sort_key`."""
    found: list[StoredStudy] = []
    for frozen in storage.get_all_studies():
        identity = frozen.user_attrs.get(STUDY_ATTR)
        if not isinstance(identity, Mapping):
            continue
        name = str(identity.get("group", ""))
        if group is not None and name != group:
            continue
        seed = identity.get("seed")
        found.append(
            StoredStudy(
                name=frozen.study_name,
                study_id=internals.study_id(frozen),
                group=name,
                sampler=str(identity.get("sampler", "")),
                seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else -1,
            )
        )
    return sorted(found, key=lambda s: study_sort_key(s.name))
