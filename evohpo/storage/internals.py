"""The one module that reaches into Optuna's private storage API.

Optuna 5 removed ``Trial.set_system_attr``; a sampler writes trial system
attributes through the study's storage, as Optuna's own GA samplers do. A
running trial's cached attributes miss what was written after it was created,
recovery of dead processes' trials writes states of trials it does not run,
and caches key on the study's storage and trial ids. Every such access is a
function here, which bounds the cost of a future Optuna change.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from evohpo.storage.records import FAIL_REASON_ATTR

__all__ = [
    "fail_trial",
    "get_trial",
    "get_trials",
    "set_trial_state",
    "set_trial_system_attr",
    "set_trial_user_attr",
    "study_id",
    "study_storage",
    "trial_id",
    "trial_user_attrs",
]


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage object ``study`` reads and writes (Optuna's cache around an RDB storage)."""
    return study._storage


def study_id(study: optuna.Study | FrozenStudy) -> int:
    """The id of a study in its storage."""
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage id of a trial (not its number, which counts within its study)."""
    return trial._trial_id


def get_trial(study: optuna.Study, trial_id: int) -> FrozenTrial:
    """The trial of storage id ``trial_id``, read from storage."""
    return study._storage.get_trial(trial_id)


def get_trials(
    study: optuna.Study, states: Container[TrialState] | None = None
) -> Sequence[FrozenTrial]:
    """The study's trials without deep copies (read-only), from Optuna's cache."""
    return study._get_trials(deepcopy=False, states=states, use_cache=True)


def set_trial_system_attr(study: optuna.Study, trial_id: int, key: str, value: Any) -> None:
    """Write a system attribute of a running trial (JSON-serialisable ``value``)."""
    study._storage.set_trial_system_attr(trial_id, key, value)


def set_trial_user_attr(study: optuna.Study, trial_id: int, key: str, value: Any) -> None:
    """Write a user attribute of a running trial from outside the objective."""
    study._storage.set_trial_user_attr(trial_id, key, value)


def set_trial_state(
    study: optuna.Study,
    trial_id: int,
    state: TrialState,
    values: Sequence[float] | None = None,
) -> bool:
    """Record the state (and values) of a trial; False if it was already in that state.

    Raises
    ------
    optuna.exceptions.UpdateFinishedTrialError
        If the trial is finished already (another process recorded it).
    """
    return bool(study._storage.set_trial_state_values(trial_id, state, values))


def fail_trial(study: optuna.Study, trial_id: int, reason: str) -> bool:
    """Fail a running trial, with ``reason`` in :data:`FAIL_REASON_ATTR`.

    Returns
    -------
    bool
        False if another process finished the trial first (nothing changed).
    """
    try:
        set_trial_system_attr(study, trial_id, FAIL_REASON_ATTR, reason)
        return set_trial_state(study, trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False


def trial_user_attrs(trial: optuna.trial.BaseTrial) -> dict[str, Any]:
    """Current user attributes of ``trial``, read from storage for a running trial.

    What a sampler wrote after the trial was created is missing from the
    running trial's cached ``user_attrs``.
    """
    if isinstance(trial, FrozenTrial):
        return dict(trial.user_attrs)
    if isinstance(trial, optuna.Trial):
        return dict(trial.study._storage.get_trial_user_attrs(trial._trial_id))
    return {}
