"""What a worker knows about the trials it started, and settling them after an outage.

A storage that goes away mid-trial leaves the worker's trials unrecorded. The
worker keeps, per trial it started, what the objective returned or why it
failed; once the storage answers again, :func:`settle` records it: a trial
whose objective had returned is recorded complete with its value, one whose
objective raised is failed with its reason, one that was interrupted is
failed and re-enqueued (:mod:`evohpo.storage.retry`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from evohpo._redact import redact_exception
from evohpo.exceptions import TrialFailedError
from evohpo.storage import FAIL_REASON_ATTR, internals, is_storage_outage
from evohpo.storage.retry import RetryStaleTrial, fail_and_retry, retry_callback
from evohpo.workers.spec import Objective

__all__ = ["Flight", "GuardedObjective", "Tracker", "settle"]

_logger = logging.getLogger("evohpo")
_MAX_REASON = 2000


class Flight:
    """What a worker knows about one trial it started."""

    __slots__ = ("error", "reason", "started", "told_fail", "values")

    def __init__(self) -> None:
        self.started = False
        self.values: list[float] | None = None
        self.reason: str | None = None
        self.error: BaseException | None = None
        self.told_fail = False


class Tracker:
    """The trials this worker process started and has not seen recorded yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[int, Flight] = {}
        self.completed: list[int] = []
        self.failed = 0
        self.pruned = 0

    def flight(self, trial_id: int) -> Flight:
        """The record of trial ``trial_id``, made on first use."""
        with self._lock:
            return self._flights.setdefault(trial_id, Flight())

    def on_trial_start(self, trial_id: int) -> None:
        """A storage listener: the trial started in this process."""
        self.flight(trial_id)

    def pending(self) -> list[tuple[int, Flight]]:
        """The trials not seen recorded yet, by id."""
        with self._lock:
            return sorted(self._flights.items())

    def forget(self, trial_id: int) -> None:
        """Trial ``trial_id`` is recorded: nothing is left to settle."""
        with self._lock:
            self._flights.pop(trial_id, None)

    def mark_told(self, error: BaseException) -> None:
        """``error`` came out of ``optimize`` itself: the trial it interrupted was told FAIL."""
        with self._lock:
            for flight in self._flights.values():
                if flight.error is error:
                    flight.told_fail = True

    def on_trial_end(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """An Optuna callback: the trial is recorded, nothing is left to settle."""
        self.forget(internals.trial_id(trial))
        if trial.state == TrialState.COMPLETE:
            self.completed.append(trial.number)
        elif trial.state == TrialState.FAIL:
            self.failed += 1
        elif trial.state == TrialState.PRUNED:
            self.pruned += 1


class GuardedObjective:
    """The user's objective plus the bookkeeping the fault rules need.

    A failure is recorded with its reason (:data:`~evohpo.storage.FAIL_REASON_ATTR`,
    passwords hidden) and raised as :class:`~evohpo.exceptions.TrialFailedError`,
    which the worker's ``optimize`` catches; an outage propagates unchanged.
    """

    def __init__(self, objective: Objective, tracker: Tracker) -> None:
        self._objective = objective
        self._tracker = tracker

    def __call__(self, trial: optuna.Trial) -> Any:
        (outcome,) = self.train_trials([trial], one=True)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def train_trials(self, trials: Sequence[optuna.Trial], *, one: bool = False) -> list[Any]:
        """The objective's outcomes for ``trials`` trained together, each one recorded.

        A failure becomes :class:`~evohpo.exceptions.TrialFailedError` with its
        reason stored; an outage of the storage is raised for the whole call.
        """
        flights = [self._tracker.flight(internals.trial_id(trial)) for trial in trials]
        for flight in flights:
            flight.started = True
        try:
            if one:
                outcomes: list[Any] = [_call(self._objective, trials[0])]
            else:
                outcomes = list(self._objective.train_trials(trials))  # type: ignore[attr-defined]
        except Exception as exc:
            if is_storage_outage(exc):
                for flight in flights:
                    flight.error = exc
            raise
        return [
            self._record(trial, flight, outcome)
            for trial, flight, outcome in zip(trials, flights, outcomes, strict=True)
        ]

    def _record(self, trial: optuna.Trial, flight: Any, outcome: Any) -> Any:
        if isinstance(outcome, optuna.TrialPruned):
            return outcome
        if isinstance(outcome, Exception):
            if is_storage_outage(outcome):
                flight.error = outcome
                raise outcome
            reason = redact_exception(outcome)[:_MAX_REASON]
            flight.reason = reason
            with contextlib.suppress(Exception):
                # If the storage is away, the reason is written once it is back.
                internals.set_trial_system_attr(
                    trial.study, internals.trial_id(trial), FAIL_REASON_ATTR, reason
                )
            error = TrialFailedError(f"trial {trial.number} failed: {reason}")
            error.__cause__ = outcome
            return error
        flight.values = _as_values(outcome)
        return outcome


def _call(objective: Objective, trial: optuna.Trial) -> Any:
    """The objective's value, or the exception it raised (outages propagate)."""
    try:
        return objective(trial)
    except Exception as exc:
        if is_storage_outage(exc):
            raise
        return exc


def _as_values(value: Any) -> list[float] | None:
    try:
        if isinstance(value, Sequence):
            return [float(v) for v in value]
        return [float(value)]
    except (TypeError, ValueError):
        return None  # Optuna records the trial as failed and says why


def settle(study: optuna.Study, tracker: Tracker, max_retry: int | None) -> None:
    """Record the trials this worker was running when the storage went away."""
    retry = retry_callback(max_retry)
    for trial_id, flight in tracker.pending():
        trial = internals.get_trial(study, trial_id)
        if trial.state == TrialState.RUNNING:
            # UpdateFinishedTrialError: another worker took it over (stale heartbeat).
            with contextlib.suppress(UpdateFinishedTrialError):
                _settle_running(study, tracker, trial, flight, retry)
        elif trial.state == TrialState.COMPLETE and flight.values is not None:
            # Recorded, but the storage went away before the callbacks ran.
            tracker.completed.append(trial.number)
        elif trial.state == TrialState.FAIL and flight.told_fail:
            tracker.failed += 1
            retry(study, copy.deepcopy(trial))
        elif trial.state == TrialState.FAIL and flight.reason is not None:
            tracker.failed += 1
        tracker.forget(trial_id)


def _settle_running(
    study: optuna.Study,
    tracker: Tracker,
    trial: FrozenTrial,
    flight: Flight,
    retry: RetryStaleTrial,
) -> None:
    trial_id = internals.trial_id(trial)
    if flight.values is not None:
        internals.set_trial_state(study, trial_id, TrialState.COMPLETE, flight.values)
        tracker.completed.append(trial.number)
        _logger.info("trial %d recorded after the storage came back", trial.number)
    elif flight.reason is not None:
        internals.set_trial_system_attr(study, trial_id, FAIL_REASON_ATTR, flight.reason)
        internals.set_trial_state(study, trial_id, TrialState.FAIL)
        tracker.failed += 1
    elif fail_and_retry(
        study,
        trial,
        "StorageUnavailable: the storage went away during the trial",
        retry if flight.started else None,
    ):
        tracker.failed += 1
