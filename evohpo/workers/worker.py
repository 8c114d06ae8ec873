"""Worker processes that share one study, and what keeps them going when things fail.

Any number of workers, in processes on one machine (:func:`run_workers`) or
on many machines (one :func:`run_worker` each), join the same Optuna study in
one storage. Each worker loads the study with its own sampler
(:class:`~evohpo.EvoSampler` keeps all GA state in the storage, so the
steady-state GA breeds every new trial from whatever has finished, whatever
the number of workers) and runs ``study.optimize`` until the study holds
``n_trials`` finished trials.

The rules, in one place:

Budget
    ``n_trials`` is the total of *counted* trials (complete or pruned) in the
    study, not a number per worker. Every worker stops after a trial of its
    own when the total is reached (Optuna's ``MaxTrialsCallback``), and does
    not start when it is already reached. Trials that were running elsewhere
    at that moment still finish, so a study ends with between ``n_trials``
    and ``n_trials + n_workers - 1`` counted trials. Retries still waiting in
    the queue when the total is reached are left waiting; a later run with a
    larger budget runs them first.

Failed training
    A trial whose objective raises (any exception but ``TrialPruned`` and
    a storage outage) is recorded as failed, with ``"Type: message"`` in the
    system attribute :data:`FAIL_REASON_ATTR` (passwords hidden), and the
    worker goes on with the next trial. ``KeyboardInterrupt`` and SIGTERM
    fail the running trial and stop the worker.

Dead workers, RDB storage (PostgreSQL, MySQL, SQLite)
    Workers record a heartbeat of their running trial every
    ``Heartbeat.interval`` seconds. Before each trial, every worker fails the
    running trials whose heartbeat is older than ``Heartbeat.grace_period``
    and re-enqueues each with the same parameters and the same user
    attributes, hence the same genome and lineage record (see
    :mod:`evohpo.evolution.lineage`); its system attributes ``failed_trial`` and
    ``retry_history`` name the trial it retries (Optuna's
    ``RetryHeartbeatStaleTrialCallback``, at most ``Heartbeat.max_retry``
    times per original trial).

Dead workers, journal file (no heartbeats)
    Every trial records which process runs it (:data:`WORKER_ATTR`: host
    name, process id, boot id). When a worker starts, it fails and
    re-enqueues, as above, every running trial whose process is known to be
    gone: same host name and either another boot or no live process of that
    id (a zombie counts as gone). With ``stale_after`` set, it also does so
    for running trials started more than ``stale_after`` seconds ago,
    whatever their host: the only rule that can see workers of other
    machines, so set it above the longest trial. Limits: a dead worker's
    trial is found only when a worker (re)starts; a process id reused by an
    unrelated live process hides the death (``stale_after`` then still
    applies); hosts that share a host name and a process-id namespace would
    be mistaken for one; trial start times come from each host's clock. The
    same rules run on RDB storage too, where they only act sooner than the
    heartbeat would.

Storage outages
    A storage that goes away (database server restarted, network cut, SQLite
    file locked) makes a worker log ``storage unavailable, retrying in Xs``
    and retry with exponential backoff (:class:`Backoff`); once the storage
    answers, the worker re-opens it and settles the trials it was running:
    a trial whose objective had returned is recorded complete with its
    value, one that was interrupted is failed and re-enqueued. Heartbeats
    missed during the outage are not an error. After ``Backoff.max_wait``
    seconds without a storage the worker stops with
    :class:`StorageUnavailableError`. Errors that waiting cannot fix (wrong
    password, missing database) are raised at once.

Safety
    Passwords of storage URLs never appear in what workers log or raise
    (:mod:`evohpo._redact`); the storage URL reaches worker processes through
    a pipe, not their command line. To keep a password out of the command
    line of ``evohpo worker`` as well, leave it out of the URL and set
    ``PGPASSWORD`` (libpq reads it).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from evohpo._interrupt import GracefulStop
from evohpo._redact import (
    install_redaction,
    redact_exception,
    redact_text,
    redact_url,
    register_secret,
    url_password,
)
from evohpo._validation import check_float, check_int, raise_invalid
from evohpo.exceptions import (
    StorageError,
    StorageUnavailableError,
    TrialFailedError,
    WorkerError,
)
from evohpo.storage import internals as _storage
from evohpo.storage.drivers import missing_driver

if TYPE_CHECKING:
    from evohpo.studies.study import StudyConfig

__all__ = [
    "COUNTED_STATES",
    "FAIL_REASON_ATTR",
    "WORKER_ATTR",
    "Backoff",
    "Heartbeat",
    "StorageUnavailableError",
    "TrialFailedError",
    "WorkerError",
    "WorkerPool",
    "WorkerReport",
    "WorkerSpec",
    "is_storage_outage",
    "open_worker_storage",
    "recover_stale_trials",
    "run_worker",
    "run_workers",
    "study_file_objective",
    "study_file_spec",
]

_logger = logging.getLogger("evohpo")

#: Trial system attribute naming the process that runs the trial.
WORKER_ATTR = "evohpo:worker"
#: Trial system attribute with the reason a trial failed (``"Type: message"``).
FAIL_REASON_ATTR = "fail_reason"
#: Trial states that count towards a budget.
COUNTED_STATES: tuple[TrialState, ...] = (TrialState.COMPLETE, TrialState.PRUNED)
#: System attributes that describe one run of a trial, not its parameters: a retry drops them.
_RUN_ATTRS = (WORKER_ATTR, FAIL_REASON_ATTR)
_JOURNAL_PREFIX = "journal://"
_MAX_REASON = 2000
# Connection errors that waiting cannot fix (PostgreSQL, MySQL and SQLite wording).
_PERMANENT_MARKERS = (
    "authentication failed",
    "no password supplied",
    "does not exist",
    "permission denied",
    "pg_hba.conf",
    "access denied",
    "unknown database",
    "unable to open database file",
)
_OWNER = "WorkerSpec"


# -- settings --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Heartbeat:
    """Heartbeat settings of RDB storages (Optuna's ``heartbeat_interval`` and friends).

    Parameters
    ----------
    interval : int, default=30
        Seconds between two heartbeats of a running trial.
    grace_period : int, default=120
        Seconds without a heartbeat after which a running trial is failed and
        retried by another worker. Keep it well above ``interval``.
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


@dataclass(frozen=True)
class Backoff:
    """How a worker waits for a storage that went away.

    Parameters
    ----------
    initial : float, default=1.0
        First wait in seconds; each further wait doubles, up to ``maximum``.
    maximum : float, default=30.0
        Longest single wait.
    max_wait : float, default=600.0
        Total seconds a worker waits for the storage to come back before it
        gives up; the count restarts once the storage answers again.
    """

    initial: float = 1.0
    maximum: float = 30.0
    max_wait: float = 600.0

    def __post_init__(self) -> None:
        check_float(self.initial, "initial", "Backoff", low=0.0, low_open=True)
        check_float(self.maximum, "maximum", "Backoff", low=self.initial)
        check_float(self.max_wait, "max_wait", "Backoff", low=0.0)


Objective = Callable[[optuna.Trial], Any]


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs to join a study; picklable.

    Parameters
    ----------
    study_name : str
        The study, which must exist in the storage.
    storage_url : str
        A SQLAlchemy URL (``postgresql://user:password@host/db``,
        ``sqlite:///file.db``...) or ``journal:///path/file.log``. Hidden from
        ``repr``; shown only through :func:`evohpo._redact.redact_url`.
    objective_factory : callable
        ``objective_factory()`` returns the objective, called once per storage
        opening in each worker. It must be picklable (a module-level
        function, class or :func:`functools.partial` of one) so that spawned
        processes can rebuild it.
    sampler_factory : callable
        ``sampler_factory()`` returns the study's sampler (an
        :class:`~evohpo.EvoSampler` for the GA); picklable like
        ``objective_factory``. An ``EvoSampler`` derives its random streams
        from the trial number, so workers may share its seed; any other
        sampler is reseeded in each worker (``reseed_rng``), as Optuna does
        for its threads, lest all workers suggest the same parameters.
    n_trials : int or None
        Total counted trials of the study (see the module's notes); ``None``
        runs until ``timeout`` or until stopped.
    timeout : float or None
        Seconds each worker runs at most (a running trial is not cut).
    heartbeat : Heartbeat or None
        Heartbeats on RDB storage; ``None`` turns them off.
    backoff : Backoff
        Waiting for a storage that went away.
    stale_after : float or None
        Also fail and retry running trials started more than this many
        seconds ago when a worker starts (journal storage; see the notes).
    counted_states : tuple of TrialState
        States that count towards ``n_trials``.
    pruner_factory : callable, optional
        ``pruner_factory()`` returns the study's pruner; Optuna's default
        (``MedianPruner``) if omitted.
    """

    study_name: str
    storage_url: str = field(repr=False)
    objective_factory: Callable[[], Objective]
    sampler_factory: Callable[[], BaseSampler]
    n_trials: int | None = None
    timeout: float | None = None
    heartbeat: Heartbeat | None = field(default_factory=Heartbeat)
    backoff: Backoff = field(default_factory=Backoff)
    stale_after: float | None = None
    counted_states: tuple[TrialState, ...] = COUNTED_STATES
    pruner_factory: Callable[[], BasePruner] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.study_name, str) or not self.study_name:
            raise_invalid("study_name", _OWNER, "a non-empty str", self.study_name)
        if not isinstance(self.storage_url, str) or not self.storage_url:
            raise_invalid("storage_url", _OWNER, "a storage URL", redact_url(str(self.storage_url)))
        for name in ("objective_factory", "sampler_factory", "pruner_factory"):
            value = getattr(self, name)
            if not callable(value) and not (name == "pruner_factory" and value is None):
                raise_invalid(name, _OWNER, "a picklable callable", getattr(self, name))
        if self.n_trials is not None:
            check_int(self.n_trials, "n_trials", _OWNER, low=1)
        if self.timeout is not None:
            check_float(self.timeout, "timeout", _OWNER, low=0.0, low_open=True)
        if self.stale_after is not None:
            check_float(self.stale_after, "stale_after", _OWNER, low=0.0, low_open=True)
        if self.heartbeat is not None and not isinstance(self.heartbeat, Heartbeat):
            raise_invalid("heartbeat", _OWNER, "a Heartbeat or None", self.heartbeat)
        if not isinstance(self.backoff, Backoff):
            raise_invalid("backoff", _OWNER, "a Backoff", self.backoff)

    @property
    def shown_storage(self) -> str:
        """The storage URL with its password hidden."""
        return redact_url(self.storage_url)


@dataclass(frozen=True)
class WorkerReport:
    """What one worker did.

    Attributes
    ----------
    index : int
        The worker's number in its pool (0 for a lone worker).
    pid : int
        Its process id.
    completed : tuple of int
        Numbers of the trials it completed.
    failed : int
        Its trials that failed.
    pruned : int
        Its trials that were pruned.
    outages : int
        Times it waited for the storage.
    seconds : float
        Wall-clock time it ran.
    exitcode : int or None
        Exit status of its process (negative: killed by that signal); ``None``
        while unknown.
    error : str or None
        Why it stopped early (passwords hidden), else ``None``.
    """

    index: int
    pid: int
    completed: tuple[int, ...] = ()
    failed: int = 0
    pruned: int = 0
    outages: int = 0
    seconds: float = 0.0
    exitcode: int | None = 0
    error: str | None = None


# -- storage ---------------------------------------------------------------------------------
def is_storage_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means the storage is unreachable for now (waiting may help).

    True for SQLAlchemy's ``OperationalError``, ``InterfaceError`` and
    ``DisconnectionError``, for an invalidated connection, and for Optuna's
    ``StorageInternalError`` caused by one of them; false when the message
    says the error is permanent (authentication failed, unknown database,
    unreadable SQLite file).
    """
    from sqlalchemy import exc as sa_exc

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        transient = isinstance(
            current, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)
        ) or (isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated)
        if transient:
            message = str(current).lower()
            return not any(marker in message for marker in _PERMANENT_MARKERS)
        current = current.__cause__ or current.__context__
    return False


class _Flight:
    """What a worker knows about one trial it started."""

    __slots__ = ("error", "reason", "started", "told_fail", "values")

    def __init__(self) -> None:
        self.started = False
        self.values: list[float] | None = None
        self.reason: str | None = None
        self.error: BaseException | None = None
        self.told_fail = False


class _Tracker:
    """The trials this worker process started and has not seen recorded yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[int, _Flight] = {}
        self.completed: list[int] = []
        self.failed = 0
        self.pruned = 0

    def flight(self, trial_id: int) -> _Flight:
        with self._lock:
            return self._flights.setdefault(trial_id, _Flight())

    def pending(self) -> list[tuple[int, _Flight]]:
        with self._lock:
            return sorted(self._flights.items())

    def forget(self, trial_id: int) -> None:
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
        self.forget(trial._trial_id)
        if trial.state == TrialState.COMPLETE:
            self.completed.append(trial.number)
        elif trial.state == TrialState.FAIL:
            self.failed += 1
        elif trial.state == TrialState.PRUNED:
            self.pruned += 1


class _WorkerRDBStorage(RDBStorage):
    """``RDBStorage`` that tracks the trials this process starts and survives outages.

    A heartbeat that cannot be written while the database is away is
    skipped, not fatal to the heartbeat thread, so a trial that outlives a
    short outage keeps its heartbeat.
    """

    def __init__(self, url: str, tracker: _Tracker, **kwargs: Any) -> None:
        self._tracker = tracker
        self._heartbeat_down = False
        super().__init__(url, **kwargs)

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        # Optuna's cached storage calls this one, and create_new_trial calls it too.
        trial = super()._create_new_trial(study_id, template_trial)
        if trial.state == TrialState.RUNNING:
            self._tracker.flight(trial._trial_id)
        return trial

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)
        if changed and state == TrialState.RUNNING:
            self._tracker.flight(trial_id)
        return changed

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:
            if not is_storage_outage(exc):
                raise
            if not self._heartbeat_down:
                _logger.warning(
                    "heartbeat of a running trial not recorded (storage unavailable: %s); "
                    "trying again in %s s",
                    redact_exception(exc),
                    self.heartbeat_interval,
                )
            self._heartbeat_down = True
        else:
            self._heartbeat_down = False


class _RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a stale trial, less the attributes of the dead run.

    It re-enqueues the trial with its parameters, user attributes (the
    lineage record) and system attributes, dropping :data:`WORKER_ATTR` and
    :data:`FAIL_REASON_ATTR`, and does nothing if the trial was already
    retried.
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
            k: copy.deepcopy(v) for k, v in trial.system_attrs.items() if k not in _RUN_ATTRS
        }
        super().__call__(study, clean)
        _logger.info(
            "trial %d failed (its worker is gone or lost the storage); re-enqueued with the "
            "same parameters and lineage",
            trial.number,
        )


def _retry_callback(max_retry: int | None) -> _RetryStaleTrial:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return _RetryStaleTrial(max_retry=max_retry)


def open_worker_storage(
    url: str,
    *,
    heartbeat: Heartbeat | None = None,
    _tracker: _Tracker | None = None,
) -> BaseStorage:
    """Open the storage at ``url`` the way workers use it.

    Parameters
    ----------
    url : str
        ``journal:///path/file.log`` (Optuna's journal file), ``sqlite:///...``
        or any other SQLAlchemy URL that Optuna's ``RDBStorage`` accepts.
    heartbeat : Heartbeat, optional
        Heartbeat settings for RDB storage; ``None``: no heartbeats.

    Returns
    -------
    BaseStorage
        A ``JournalStorage`` or an ``RDBStorage`` (SQLite waits up to 60 s for
        a lock; other databases check pooled connections before use, so a
        restarted server is reconnected to).

    Raises
    ------
    StorageError
        If the storage cannot be opened for a reason waiting cannot fix; the
        message hides passwords. Outages propagate unchanged (see
        :func:`is_storage_outage`).
    """
    if url.startswith(_JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url[len(_JOURNAL_PREFIX) :])
        if not path.parent.is_dir():
            raise StorageError(
                f"Cannot open the storage {url!r}: the directory {str(path.parent)!r} "
                "does not exist."
            )
        return JournalStorage(JournalFileBackend(str(path)))
    register_secret(url_password(url))
    engine_kwargs: dict[str, Any]
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    options: dict[str, Any] = {"engine_kwargs": engine_kwargs}
    if heartbeat is not None:
        options.update(
            heartbeat_interval=heartbeat.interval,
            grace_period=heartbeat.grace_period,
            heartbeat_stale_trial_callback=_retry_callback(heartbeat.max_retry),
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return _WorkerRDBStorage(
                url, _tracker if _tracker is not None else _Tracker(), **options
            )
    except Exception as exc:
        if is_storage_outage(exc):
            raise
        reason = missing_driver(url, exc) or _first_line(exc)
        raise StorageError(f"Cannot open the storage {redact_url(url)!r}: {reason}") from None


def _dispose(storage: BaseStorage | None) -> None:
    if isinstance(storage, RDBStorage):
        with contextlib.suppress(Exception):
            storage.engine.dispose()


def _first_line(exc: BaseException) -> str:
    text = redact_exception(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


# -- stale trials ----------------------------------------------------------------------------
def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would not be a probe elsewhere
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, under another user
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # Field 3, after the parenthesised command name: "Z" for a zombie.
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def _worker_identity(index: int) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "boot": _boot_id(),
        "worker": index,
        "session": uuid.uuid4().hex,
    }


def _worker_is_gone(record: Any) -> bool:
    if not isinstance(record, Mapping) or record.get("host") != socket.gethostname():
        return False
    boot = _boot_id()
    if boot is not None and record.get("boot") not in (None, boot):
        return True
    pid = record.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid == os.getpid():
        return False
    return not _pid_alive(pid)


def _fail_trial(
    study: optuna.Study,
    trial: FrozenTrial,
    reason: str,
    retry: Callable[[optuna.Study, FrozenTrial], None] | None,
) -> bool:
    """Fail a running ``trial`` with ``reason`` and retry it; False if another process won."""
    snapshot = copy.deepcopy(trial)
    try:
        _storage.set_trial_system_attr(study, trial._trial_id, FAIL_REASON_ATTR, reason)
        changed = study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False
    if changed and retry is not None:
        retry(study, snapshot)
    return bool(changed)


def recover_stale_trials(
    study: optuna.Study,
    *,
    stale_after: float | None = None,
    max_retry: int | None = 3,
) -> list[int]:
    """Fail the running trials of dead workers and re-enqueue them.

    This is what storages without heartbeats (journal files) need at resume;
    the module's notes give the rule and its limits.

    Parameters
    ----------
    study : optuna.Study
    stale_after : float, optional
        Also treat as dead the running trials started more than this many
        seconds ago.
    max_retry : int or None, default=3
        Retries of one original trial.

    Returns
    -------
    list of int
        Numbers of the trials failed and re-enqueued (or failed, once out of
        retries).
    """
    retry = _retry_callback(max_retry)
    now = datetime.now()
    recovered: list[int] = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        record = trial.system_attrs.get(WORKER_ATTR)
        if _worker_is_gone(record):
            assert isinstance(record, Mapping)
            reason = f"its worker (process {record.get('pid')} on {record.get('host')}) is gone"
        elif (
            stale_after is not None
            and trial.datetime_start is not None
            and (now - trial.datetime_start).total_seconds() > stale_after
        ):
            reason = f"still running after {stale_after:g} s (stale_after) when a worker started"
        else:
            continue
        if _fail_trial(study, trial, f"WorkerLost: {reason}", retry):
            _logger.warning("trial %d failed at resume: %s", trial.number, reason)
            recovered.append(trial.number)
    return recovered


# -- one worker ------------------------------------------------------------------------------
class _GuardedObjective:
    """The user's objective plus the bookkeeping the fault rules need."""

    def __init__(self, objective: Objective, tracker: _Tracker, identity: dict[str, Any]) -> None:
        self._objective = objective
        self._tracker = tracker
        self._identity = identity

    def __call__(self, trial: optuna.Trial) -> Any:
        flight = self._tracker.flight(trial._trial_id)
        flight.started = True
        _storage.set_trial_system_attr(trial.study, trial._trial_id, WORKER_ATTR, self._identity)
        try:
            value = self._objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            if is_storage_outage(exc):
                flight.error = exc
                raise
            reason = redact_exception(exc)[:_MAX_REASON]
            flight.reason = reason
            with contextlib.suppress(Exception):
                # If the storage is away, the reason is written once it is back.
                _storage.set_trial_system_attr(
                    trial.study, trial._trial_id, FAIL_REASON_ATTR, reason
                )
            raise TrialFailedError(f"trial {trial.number} failed: {reason}") from exc
        flight.values = _as_values(value)
        return value


def _as_values(value: Any) -> list[float] | None:
    try:
        if isinstance(value, Sequence):
            return [float(v) for v in value]
        return [float(value)]
    except (TypeError, ValueError):
        return None  # Optuna records the trial as failed and says why


def _settle(study: optuna.Study, tracker: _Tracker, max_retry: int | None) -> None:
    """Record the trials this worker was running when the storage went away."""
    retry = _retry_callback(max_retry)
    for trial_id, flight in tracker.pending():
        trial = study._storage.get_trial(trial_id)
        if trial.state == TrialState.RUNNING:
            try:
                if flight.values is not None:
                    study._storage.set_trial_state_values(
                        trial_id, TrialState.COMPLETE, flight.values
                    )
                    tracker.completed.append(trial.number)
                    _logger.info("trial %d recorded after the storage came back", trial.number)
                elif flight.reason is not None:
                    _storage.set_trial_system_attr(study, trial_id, FAIL_REASON_ATTR, flight.reason)
                    study._storage.set_trial_state_values(trial_id, TrialState.FAIL)
                    tracker.failed += 1
                elif _fail_trial(
                    study,
                    trial,
                    "StorageUnavailable: the storage went away during the trial",
                    retry if flight.started else None,
                ):
                    tracker.failed += 1
            except UpdateFinishedTrialError:
                pass  # another worker took it over (stale heartbeat)
        elif trial.state == TrialState.COMPLETE and flight.values is not None:
            # Recorded, but the storage went away before the callbacks ran.
            tracker.completed.append(trial.number)
        elif trial.state == TrialState.FAIL and flight.told_fail:
            tracker.failed += 1
            retry(study, copy.deepcopy(trial))
        elif trial.state == TrialState.FAIL and flight.reason is not None:
            tracker.failed += 1
        tracker.forget(trial_id)


def _load_study(spec: WorkerSpec, storage: BaseStorage) -> optuna.Study:
    from evohpo.evolution.sampler import EvoSampler

    sampler = spec.sampler_factory()
    if not isinstance(sampler, EvoSampler):
        sampler.reseed_rng()
    pruner = spec.pruner_factory() if spec.pruner_factory is not None else None
    try:
        return optuna.load_study(
            study_name=spec.study_name, storage=storage, sampler=sampler, pruner=pruner
        )
    except KeyError:
        raise StorageError(
            f"There is no study {spec.study_name!r} in {spec.shown_storage}; workers join "
            "an existing study: create it first."
        ) from None


def _count(study: optuna.Study, states: Sequence[TrialState]) -> int:
    return len(study.get_trials(deepcopy=False, states=tuple(states)))


def run_worker(
    spec: WorkerSpec,
    *,
    index: int = 0,
    threads: int | None = None,
    guard: GracefulStop | None = None,
) -> WorkerReport:
    """Run one worker in this process until the study's budget is spent.

    Parameters
    ----------
    spec : WorkerSpec
    index : int, default=0
        The worker's number, for logs and :data:`WORKER_ATTR`.
    threads : int, optional
        Torch CPU threads of this process, set once the objective is built
        (``torch.set_num_threads``); left alone if omitted.
    guard : GracefulStop, optional
        The installed signal guard: after SIGINT or SIGTERM the worker stops
        at the next safe point (a training step, the end of a trial, a wait
        for the storage) and raises :class:`KeyboardInterrupt`.

    Returns
    -------
    WorkerReport

    Raises
    ------
    KeyboardInterrupt
        After a signal to ``guard``.
    StorageUnavailableError
        If the storage stayed away longer than ``spec.backoff.max_wait``.
    StorageError
        If the storage cannot be opened for a reason waiting cannot fix, or
        holds no study of that name.
    """
    register_secret(url_password(spec.storage_url))
    guard = guard if guard is not None else GracefulStop()
    start = time.monotonic()
    deadline = None if spec.timeout is None else start + spec.timeout
    tracker = _Tracker()
    identity = _worker_identity(index)
    max_retry = spec.heartbeat.max_retry if spec.heartbeat is not None else 3
    objective = _GuardedObjective(spec.objective_factory(), tracker, identity)
    _set_threads(threads)
    delay = spec.backoff.initial
    waited = 0.0
    outages = 0
    first = True
    while True:
        storage: BaseStorage | None = None
        try:
            storage = open_worker_storage(
                spec.storage_url, heartbeat=spec.heartbeat, _tracker=tracker
            )
            study = _load_study(spec, storage)
            _settle(study, tracker, max_retry)
            if first:
                recover_stale_trials(study, stale_after=spec.stale_after, max_retry=max_retry)
                first = False
                _logger.info(
                    "worker %d (process %d) joined study %r in %s",
                    index,
                    os.getpid(),
                    spec.study_name,
                    spec.shown_storage,
                )
            delay, waited = spec.backoff.initial, 0.0
            if spec.n_trials is not None and _count(study, spec.counted_states) >= spec.n_trials:
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [
                tracker.on_trial_end,
                guard.stop_study,
            ]
            if spec.n_trials is not None:
                callbacks.append(MaxTrialsCallback(spec.n_trials, states=spec.counted_states))
            guard.check()
            study.optimize(
                objective,
                timeout=left,
                catch=(TrialFailedError,),
                callbacks=callbacks,
                gc_after_trial=False,
                show_progress_bar=False,
            )
            break
        except UpdateFinishedTrialError as exc:
            # Our trial was failed by another worker (its heartbeat looked stale,
            # e.g. after an outage) and has been retried there: go on.
            _logger.warning("worker %d: %s; continuing", index, redact_exception(exc))
        except Exception as exc:
            if not is_storage_outage(exc):
                raise
            tracker.mark_told(exc)
            if waited >= spec.backoff.max_wait:
                raise StorageUnavailableError(
                    f"The storage {spec.shown_storage} has been unavailable for {waited:.0f} s "
                    f"(Backoff.max_wait={spec.backoff.max_wait:g}); worker {index} gives up. "
                    f"Last error: {_first_line(exc)}"
                ) from None
            pause = min(delay, spec.backoff.max_wait - waited)
            outages += int(waited == 0.0)
            _logger.warning(
                "storage unavailable, retrying in %.1fs (worker %d, %s: %s)",
                pause,
                index,
                spec.shown_storage,
                _first_line(exc),
            )
            with guard.interruptible():
                time.sleep(pause)
            waited += pause
            delay = min(delay * 2, spec.backoff.maximum)
        finally:
            _dispose(storage)
    guard.check()
    return WorkerReport(
        index=index,
        pid=os.getpid(),
        completed=tuple(sorted(tracker.completed)),
        failed=tracker.failed,
        pruned=tracker.pruned,
        outages=outages,
        seconds=time.monotonic() - start,
    )


# -- worker processes ------------------------------------------------------------------------
def _configure_worker_logging(index: int, level: int, optuna_level: int) -> None:
    logger = logging.getLogger("evohpo")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"evohpo worker {index}: %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    optuna.logging.set_verbosity(optuna_level)
    install_redaction()


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

# A worker process starts with this program. It takes the parent's import path
# first (a header of plain lists and strings), so that everything the spec
# names imports as it does in the parent.
_BOOTSTRAP = (
    "import pickle, sys; header = pickle.load(sys.stdin.buffer); "
    "sys.path[:0] = header['path']; "
    "from evohpo.workers.worker import _worker_process_main; _worker_process_main(header)"
)


@dataclass(frozen=True)
class _Launch:
    """What a worker process reads from its standard input after the header."""

    spec: WorkerSpec
    index: int
    threads: int | None
    log_level: int  # of the "evohpo" logger
    optuna_level: int  # Optuna's verbosity


def _launch_header() -> dict[str, Any]:
    """The import path, and the file of ``__main__`` should the spec name it."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    path = getattr(spec, "origin", None) or getattr(main, "__file__", None)
    return {"path": list(sys.path), "main": path if isinstance(path, str) else None}


# The name the parent's script runs under in a worker, where one is needed.
_MAIN_NAME = "__evohpo_main__"


class _SpecUnpickler(pickle.Unpickler):
    """Unpickles a spec; what it names in ``__main__`` comes from the parent's script.

    That script is run (under another name, as :mod:`multiprocessing` does)
    only when the spec needs it, so a script whose factories live in modules
    needs no ``if __name__ == "__main__"`` guard.
    """

    def __init__(self, file: BinaryIO, main_path: str | None) -> None:
        super().__init__(file)
        self._main_path = main_path

    def find_class(self, module: str, name: str) -> Any:
        if module == "__main__":
            return getattr(self._main_module(), name)
        return super().find_class(module, name)

    def _main_module(self) -> Any:
        loaded = sys.modules.get(_MAIN_NAME)
        if loaded is not None:
            return loaded
        if self._main_path is None:
            raise pickle.UnpicklingError(
                "the spec names objects of an interactive __main__, which a new process "
                "cannot import; define the factories in a module"
            )
        import types

        module = types.ModuleType(_MAIN_NAME)
        module.__file__ = self._main_path
        sys.modules[_MAIN_NAME] = module
        code = compile(Path(self._main_path).read_bytes(), self._main_path, "exec")
        exec(code, module.__dict__)
        return module


def _worker_process_main(header: dict[str, Any]) -> None:
    """Entry point of a worker process (see :data:`_BOOTSTRAP`).

    The report goes back, pickled, through the pipe whose descriptor is the
    first argument; the exit status is 0, 1 on an error, 130 when stopped.
    """
    with os.fdopen(int(sys.argv[1]), "wb") as out:
        try:
            launch = _SpecUnpickler(sys.stdin.buffer, header.get("main")).load()
        except Exception as exc:
            report = WorkerReport(
                -1,
                os.getpid(),
                error=(
                    "the worker process cannot rebuild its spec "
                    f"({type(exc).__name__}: {redact_text(str(exc))}); objective_factory, "
                    "sampler_factory and pruner_factory must be picklable and importable "
                    "by a new Python process"
                ),
                exitcode=1,
            )
        else:
            report = _run_worker_process(launch)
        pickle.dump(report, out)
    if report.exitcode:
        sys.exit(report.exitcode)


def _run_worker_process(launch: _Launch) -> WorkerReport:
    index = launch.index
    _configure_worker_logging(index, launch.log_level, launch.optuna_level)
    _set_threads(launch.threads)
    started = time.monotonic()
    guard = GracefulStop(force_on_repeat=False)
    try:
        with guard.installed():
            return run_worker(launch.spec, index=index, threads=launch.threads, guard=guard)
    except KeyboardInterrupt:
        return WorkerReport(index, os.getpid(), error="interrupted", exitcode=130)
    except BaseException as exc:
        _logger.debug("worker %d failed", index, exc_info=True)
        return WorkerReport(
            index,
            os.getpid(),
            seconds=time.monotonic() - started,
            error=redact_exception(exc),
            exitcode=1,
        )


class WorkerPool:
    """Worker processes on one study; see :func:`run_workers`.

    Each worker is a new Python interpreter (not forked, which is unsafe once
    torch has started its threads): it reads the pickled spec from a pipe and
    sends its :class:`WorkerReport` back through another. Unlike
    :mod:`multiprocessing`'s spawn, it runs the calling script again only when
    the spec names something defined in it (then, as there, the script needs
    an ``if __name__ == "__main__"`` guard); factories from modules, such as
    the estimator's and the study files', need none.

    Parameters
    ----------
    spec : WorkerSpec
    n_workers : int
        Processes to start.
    threads_per_worker : int, optional
        Intra-op threads of each process (``OMP_NUM_THREADS`` and friends,
        ``torch.set_num_threads``); by default the CPU count divided by
        ``n_workers``, at least 1.
    log_level : int, optional
        Level of the workers' ``"evohpo"`` loggers (they log on standard
        error); by default the effective level of this process's.

    Examples
    --------
    ``with WorkerPool(spec, 4) as pool: reports = pool.join()``; the pool
    stops the processes still running when the block is left early.
    """

    def __init__(
        self,
        spec: WorkerSpec,
        n_workers: int,
        *,
        threads_per_worker: int | None = None,
        log_level: int | None = None,
    ) -> None:
        check_int(n_workers, "n_workers", "WorkerPool", low=1)
        if threads_per_worker is None:
            threads_per_worker = max(1, (os.cpu_count() or 1) // n_workers)
        check_int(threads_per_worker, "threads_per_worker", "WorkerPool", low=1)
        self.spec = spec
        if log_level is None:
            log_level = logging.getLogger("evohpo").getEffectiveLevel()
        level = log_level
        env = {**os.environ, **{name: str(threads_per_worker) for name in _THREAD_VARIABLES}}
        header = pickle.dumps(_launch_header())
        self._processes: list[subprocess.Popen[bytes]] = []
        self._pipes: list[BinaryIO] = []
        try:
            for index in range(n_workers):
                launch = pickle.dumps(
                    _Launch(spec, index, threads_per_worker, level, optuna.logging.get_verbosity())
                )
                read_end, write_end = os.pipe()
                try:
                    process = subprocess.Popen(
                        [sys.executable, "-c", _BOOTSTRAP, str(write_end)],
                        stdin=subprocess.PIPE,
                        pass_fds=(write_end,),
                        env=env,
                    )
                finally:
                    os.close(write_end)
                self._processes.append(process)
                self._pipes.append(os.fdopen(read_end, "rb"))
                assert process.stdin is not None
                with contextlib.suppress(BrokenPipeError):  # it died: its report says why
                    process.stdin.write(header + launch)
                    process.stdin.close()
        except BaseException:
            self.terminate(grace=5.0)
            self._close_pipes()
            raise
        self._pids = [p.pid for p in self._processes]
        self._reports: dict[int, WorkerReport] = {}
        self._done: set[int] = set()

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers, by index."""
        return list(self._pids)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if any(p.poll() is None for p in self._processes):
            self.terminate()
        self.join()

    def terminate(self, grace: float = 30.0) -> None:
        """Ask running workers to stop (SIGTERM: their running trial fails), then kill."""
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        end = time.monotonic() + grace
        for process in self._processes:
            try:
                process.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def join(self, timeout: float | None = None) -> list[WorkerReport]:
        """Wait for every worker; their reports by index.

        A worker killed before it could report (SIGKILL, out of memory) gets
        a report with its negative exit code and an ``error``.

        Raises
        ------
        TimeoutError
            If workers are still running after ``timeout`` seconds.
        """
        end = None if timeout is None else time.monotonic() + timeout
        pending = [i for i in range(len(self._processes)) if i not in self._done]
        while pending:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"{len(pending)} worker(s) still running after {timeout} s")
            # A worker's pipe becomes readable when it reports or dies.
            ready = multiprocessing.connection.wait(
                [self._pipes[i].fileno() for i in pending], left
            )
            for i in list(pending):
                if self._pipes[i].fileno() in ready:
                    self._receive(i)
                    self._processes[i].wait()
                    self._done.add(i)
                    pending.remove(i)
        self._close_pipes()
        return [self._final_report(i) for i in range(len(self._processes))]

    def _receive(self, index: int) -> None:
        """Read the report a worker sends, if it sent one (the pipe reads to its end)."""
        pipe = self._pipes[index]
        try:
            data = pipe.read()
        except OSError:
            return
        if data:
            with contextlib.suppress(Exception):  # a report cut short by a kill
                report = pickle.loads(data)
                if isinstance(report, WorkerReport):
                    self._reports[index] = dataclasses.replace(report, index=index)

    def _close_pipes(self) -> None:
        for pipe in self._pipes:
            pipe.close()

    def _final_report(self, index: int) -> WorkerReport:
        process = self._processes[index]
        report = self._reports.get(index)
        if report is None:
            code = process.returncode
            if code is not None and code < 0:
                try:
                    what = f"killed by {signal.Signals(-code).name}"
                except ValueError:
                    what = f"killed by signal {-code}"
            else:
                what = f"exited with status {code} without a report"
            return WorkerReport(index, self._pids[index], exitcode=code, error=what)
        return dataclasses.replace(report, exitcode=process.returncode)


def run_workers(
    spec: WorkerSpec,
    n_workers: int,
    *,
    threads_per_worker: int | None = None,
    timeout: float | None = None,
    on_wait: Callable[[], None] | None = None,
    wait_interval: float = 1.0,
    log_level: int | None = None,
) -> list[WorkerReport]:
    """Run ``n_workers`` worker processes on one study and wait for them.

    The study must exist (create it first, e.g. with ``optuna.create_study(...,
    load_if_exists=True)``). Processes are spawned, so ``spec`` and its
    factories must be picklable. Ctrl-C or SIGTERM stops every worker: their
    running trials are recorded as failed, finished trials are kept.

    Parameters
    ----------
    spec : WorkerSpec
    n_workers : int
        Worker processes, at least 1.
    threads_per_worker : int, optional
        See :class:`WorkerPool`.
    timeout : float, optional
        Seconds to wait for the workers before they are stopped.
    on_wait : callable, optional
        Called every ``wait_interval`` seconds while the workers run (to
        follow the study's progress, say).
    wait_interval : float, default=1.0
    log_level : int, optional
        See :class:`WorkerPool`.

    Returns
    -------
    list of WorkerReport
        One per worker, by index. Workers killed from outside (SIGKILL) have
        a negative ``exitcode``; the others carry on without them.

    Raises
    ------
    WorkerError
        If a worker stopped with an error (after all workers have exited);
        the message names the worker and the error, passwords hidden.
    """
    check_float(wait_interval, "wait_interval", "run_workers", low=0.0, low_open=True)
    end = None if timeout is None else time.monotonic() + timeout
    with WorkerPool(
        spec, n_workers, threads_per_worker=threads_per_worker, log_level=log_level
    ) as pool:
        try:
            while True:
                left = None if end is None else max(0.0, end - time.monotonic())
                if on_wait is None:
                    reports = pool.join(left)
                    break
                try:
                    reports = pool.join(wait_interval if left is None else min(left, wait_interval))
                    break
                except TimeoutError:
                    if left is not None and left <= wait_interval:
                        raise
                    on_wait()
        except (KeyboardInterrupt, TimeoutError):
            pool.terminate()
            raise
    errors = [r for r in reports if r.error is not None and (r.exitcode or 0) >= 0]
    for report in reports:
        if report.exitcode is not None and report.exitcode < 0:
            _logger.warning("worker %d (process %d): %s", report.index, report.pid, report.error)
    if errors:
        details = "; ".join(f"worker {r.index}: {r.error}" for r in errors)
        raise WorkerError(
            f"{len(errors)} of {n_workers} workers on study {spec.study_name!r} in "
            f"{spec.shown_storage} stopped with an error: {redact_text(details)}"
        )
    return reports


# -- studies of a study file -------------------------------------------------------------------
def study_file_objective(config: StudyConfig, seed: int) -> Objective:
    """The objective of a study file's study, built in the worker (a picklable factory).

    Use it as ``functools.partial(study_file_objective, config, seed)``: each
    worker loads (from its cache) and splits the data set itself.
    """
    from evohpo.studies.study import make_objective, prepare_data

    return make_objective(config, prepare_data(config), seed)


def study_file_spec(
    config: StudyConfig,
    sampler: str,
    seed: int,
    storage_url: str,
    *,
    n_trials: int | None,
    timeout: float | None = None,
    heartbeat: Heartbeat | None = None,
    backoff: Backoff | None = None,
    stale_after: float | None = None,
) -> WorkerSpec:
    """The :class:`WorkerSpec` of the study ``(sampler, seed)`` of a study file.

    Open the study first (:func:`evohpo.studies.study.open_study` creates it or
    checks that the stored one matches the file); then hand the spec to
    :func:`run_workers` or :func:`run_worker`.

    Parameters
    ----------
    config : StudyConfig
    sampler : {"ga", "tpe", "random"}
    seed : int
    storage_url : str
    n_trials : int or None
        Total finished trials of the study.
    timeout : float, optional
        Seconds each worker runs at most.
    heartbeat : Heartbeat, optional
        Heartbeats on RDB storage (SQLite included); ``Heartbeat()`` by
        default. Journal files have none.
    backoff : Backoff, optional
    stale_after : float, optional
        See :class:`WorkerSpec`.
    """
    from evohpo.studies.study import build_pruner, build_sampler, study_name

    return WorkerSpec(
        study_name=study_name(config.name, sampler, seed),
        storage_url=storage_url,
        objective_factory=functools.partial(study_file_objective, config, seed),
        sampler_factory=functools.partial(
            build_sampler,
            sampler,
            seed=seed,
            options=dict(config.sampler_options.get(sampler, {})),
            space=config.space,
        ),
        pruner_factory=functools.partial(build_pruner, dict(config.pruner)),
        n_trials=n_trials,
        timeout=timeout,
        heartbeat=heartbeat if heartbeat is not None else Heartbeat(),
        backoff=backoff if backoff is not None else Backoff(),
        stale_after=stale_after,
    )
