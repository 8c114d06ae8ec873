"""The one policy for trials whose process died: heartbeats, failing, retrying.

A trial whose process is gone is failed and re-enqueued (state ``WAITING``)
with the same parameters, the same user attributes (its genome and lineage
record, see :mod:`evohpo.evolution.lineage`) and its system attributes, less
those of the dead run (:data:`~evohpo.storage.records.RUN_ATTRS`). Optuna's
system attributes ``failed_trial`` and ``retry_history`` name the original
trial. One original trial is retried at most :attr:`Heartbeat.max_retry`
times, and each failed run at most once, whoever notices it first: Optuna's
heartbeat (RDB storages, :class:`Heartbeat`) or the ownership rule at start
(:mod:`evohpo.storage.ownership`).
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from evohpo._validation import check_int
from evohpo.storage import internals
from evohpo.storage.records import RUN_ATTRS

__all__ = ["DEFAULT_HEARTBEAT", "Heartbeat", "RetryStaleTrial", "fail_and_retry", "retry_callback"]

_logger = logging.getLogger("evohpo")


@dataclass(frozen=True)
class Heartbeat:
    """Heartbeat settings of RDB storages (Optuna's ``heartbeat_interval`` and friends).

    Heartbeats work with ``study.optimize`` (every evohpo search uses it) on
    RDB storages (PostgreSQL, MySQL, SQLite); journal files have none.

    Parameters
    ----------
    interval : int, default=30
        Seconds between two heartbeats of a running trial.
    grace_period : int, default=120
        Seconds without a heartbeat after which a running trial is failed and
        retried by another process. Keep it well above ``interval``.
    max_retry : int or None, default=3
        Retries of one original trial; ``None``: no limit.
    """

    interval: int = 30
    grace_period: int = 120
    max_retry: int | None = 3

    def __post_init__(self) -> None:
        check_int(self.interval, "interval", "Heartbeat", low=1)
        check_int(self.grace_period, "grace_period", "Heartbeat", low=self.interval + 1)
        if self.max_retry is not None:
            check_int(self.max_retry, "max_retry", "Heartbeat", low=0)


#: The heartbeat every RDB storage gets unless told otherwise.
DEFAULT_HEARTBEAT = Heartbeat()


class RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a stale trial, less the attributes of the dead run.

    It re-enqueues the trial with its parameters, user attributes (the
    lineage record) and system attributes, dropping
    :data:`~evohpo.storage.records.RUN_ATTRS`, and does nothing if the trial
    was already retried.
    """

    def __init__(self, max_retry: int | None = None) -> None:
        super().__init__(max_retry=max_retry)
        self._limit = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        for other in study.get_trials(deepcopy=False):
            history = other.system_attrs.get("retry_history")
            if isinstance(history, list) and history and history[-1] == trial.number:
                return
        history = trial.system_attrs.get("retry_history")
        n_retries = len(history) + 1 if isinstance(history, list) else 1
        if self._limit is not None and n_retries > self._limit:
            _logger.warning("trial %d failed and has used up its retries", trial.number)
            return
        clean = copy.copy(trial)
        clean.system_attrs = {
            k: copy.deepcopy(v) for k, v in trial.system_attrs.items() if k not in RUN_ATTRS
        }
        super().__call__(study, clean)
        _logger.info(
            "trial %d failed (its process is gone or lost the storage); re-enqueued with the "
            "same parameters and lineage",
            trial.number,
        )


def retry_callback(max_retry: int | None) -> RetryStaleTrial:
    """A :class:`RetryStaleTrial`, without Optuna's warning that it is experimental."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RetryStaleTrial(max_retry=max_retry)


def fail_and_retry(
    study: optuna.Study, trial: FrozenTrial, reason: str, retry: RetryStaleTrial | None
) -> bool:
    """Fail the running ``trial`` with ``reason``, then ``retry`` it (if given).

    Returns
    -------
    bool
        False if another process finished the trial first (nothing changed).
    """
    snapshot = copy.deepcopy(trial)
    changed = internals.fail_trial(study, internals.trial_id(trial), reason)
    if changed and retry is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            retry(study, snapshot)
    return changed
