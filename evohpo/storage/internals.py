"""The one module that reaches into Optuna's storage internals.

Optuna 5 removed ``Trial.set_system_attr``; a sampler writes trial system
attributes through the study's storage, as Optuna's own GA samplers do.
Keeping these accesses here bounds the cost of a future Optuna change.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "get_trials",
    "set_trial_system_attr",
    "set_trial_user_attr",
    "trial_system_attrs",
    "trial_user_attrs",
]


def set_trial_system_attr(study: optuna.Study, trial_id: int, key: str, value: Any) -> None:
    """Write a system attribute of a running trial (JSON-serialisable ``value``)."""
    study._storage.set_trial_system_attr(trial_id, key, value)


def set_trial_user_attr(study: optuna.Study, trial_id: int, key: str, value: Any) -> None:
    """Write a user attribute of a running trial from outside the objective."""
    study._storage.set_trial_user_attr(trial_id, key, value)


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


def trial_system_attrs(trial: optuna.trial.BaseTrial) -> dict[str, Any]:
    """Current system attributes of ``trial``, read from storage.

    A running trial's cached attributes do not show what the sampler wrote
    after the trial was created, so the storage is asked directly.
    """
    if isinstance(trial, FrozenTrial):
        return dict(trial.system_attrs)
    if isinstance(trial, optuna.Trial):
        return dict(trial.study._storage.get_trial_system_attrs(trial._trial_id))
    return {}


def get_trials(
    study: optuna.Study, states: Container[TrialState] | None = None
) -> Sequence[FrozenTrial]:
    """The study's trials without deep copies (read-only), from Optuna's cache."""
    return study._get_trials(deepcopy=False, states=states, use_cache=True)
