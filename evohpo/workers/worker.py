"""One worker: joins a study in a shared storage and runs trials until the budget is spent.

Any number of workers, in processes on one machine
(:func:`evohpo.workers.run_workers`) or on many machines (one
:func:`run_worker` each), join the same Optuna study in one storage. Each
worker loads the study with its own sampler (:class:`~evohpo.EvoSampler`
keeps all GA state in the storage, so the steady-state GA breeds every new
trial from whatever has finished, whatever the number of workers) and runs
``study.optimize`` until the study holds ``n_trials`` counted trials.

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
    system attribute :data:`~evohpo.storage.FAIL_REASON_ATTR` (passwords
    hidden), and the worker goes on with the next trial.
    ``KeyboardInterrupt`` and SIGTERM fail the running trial and stop the
    worker.

Dead workers
    Each trial records its owner process when it starts; when a worker
    starts, it fails and re-enqueues the running trials of gone processes of
    this host, and with ``stale_after`` those started longer ago than that,
    whatever their host (:mod:`evohpo.storage.ownership`). On RDB storage
    (PostgreSQL, MySQL, SQLite) workers also record a heartbeat of their
    running trial every ``Heartbeat.interval`` seconds, and before each trial
    every worker fails and re-enqueues the running trials whose heartbeat is
    older than ``Heartbeat.grace_period``: the rule that sees dead workers of
    other machines. A retry has the same parameters and user attributes,
    hence the same genome and lineage record (:mod:`evohpo.storage.retry`).

Storage outages
    A storage that goes away (database server restarted, network cut, SQLite
    file locked) makes a worker log ``storage unavailable, retrying in Xs``
    and retry with exponential backoff (:class:`~evohpo.workers.Backoff`);
    once the storage answers, the worker re-opens it and settles the trials it
    was running (:mod:`evohpo.workers.tracker`). Heartbeats missed during the
    outage are not an error. After ``Backoff.max_wait`` seconds without a
    storage the worker stops with
    :class:`~evohpo.exceptions.StorageUnavailableError`. Errors that waiting
    cannot fix (wrong password, missing database) are raised at once.

Safety
    Passwords of storage URLs never appear in what workers log or raise
    (:mod:`evohpo._redact`); the storage URL reaches worker processes through
    a pipe, not their command line. To keep a password out of the command
    line of ``evohpo worker`` as well, leave it out of the URL and set
    ``PGPASSWORD`` (libpq reads it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial

from evohpo._interrupt import GracefulStop
from evohpo._redact import redact_exception, register_secret, url_password
from evohpo.exceptions import StorageError, StorageUnavailableError, TrialFailedError
from evohpo.search import batched
from evohpo.storage import (
    close_storage,
    count_trials,
    is_storage_outage,
    open_storage,
    recover_orphaned_trials,
)
from evohpo.storage.errors import error_summary, outage_cause
from evohpo.workers.spec import WorkerReport, WorkerSpec
from evohpo.workers.tracker import GuardedObjective, Tracker, settle

__all__ = ["run_worker", "set_threads"]

_logger = logging.getLogger("evohpo")


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op threads of this process, if torch is loaded and ``threads`` given."""
    if threads is None:
        return
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


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


class _Waiting:
    """Backoff state of one worker: how long it has waited for the storage."""

    def __init__(self, spec: WorkerSpec, index: int) -> None:
        self._spec = spec
        self._index = index
        self.delay = spec.backoff.initial
        self.waited = 0.0
        self.outages = 0

    def reset(self) -> None:
        """The storage answered."""
        self.delay, self.waited = self._spec.backoff.initial, 0.0

    def wait(self, exc: BaseException, guard: GracefulStop) -> None:
        """Sleep before the next try, or give up after ``Backoff.max_wait`` seconds."""
        backoff = self._spec.backoff
        if self.waited >= backoff.max_wait:
            raise StorageUnavailableError(
                f"The storage {self._spec.shown_storage} has been unavailable for "
                f"{self.waited:.0f} s (Backoff.max_wait={backoff.max_wait:g}); worker "
                f"{self._index} gives up. Last error: {error_summary(outage_cause(exc))}"
            ) from None
        pause = min(self.delay, backoff.max_wait - self.waited)
        self.outages += int(self.waited == 0.0)
        _logger.warning(
            "storage unavailable, retrying in %.1fs (worker %d, %s: %s)",
            pause,
            self._index,
            self._spec.shown_storage,
            error_summary(outage_cause(exc)),
        )
        with guard.interruptible():
            time.sleep(pause)
        self.waited += pause
        self.delay = min(self.delay * 2, backoff.maximum)


def run_worker(
    spec: WorkerSpec,
    *,
    index: int = 0,
    threads: int | None = None,
    guard: GracefulStop | None = None,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> WorkerReport:
    """Run one worker in this process until the study's budget is spent.

    Parameters
    ----------
    spec : WorkerSpec
    index : int, default=0
        The worker's number, for logs and the owner record of its trials.
    threads : int, optional
        Torch CPU threads of this process while the worker runs, set once the
        objective is built (``torch.set_num_threads``; the previous count is
        restored on return), and the thread budget of evohpo's trainers
        (:func:`evohpo.training.threads.thread_budget`: small networks train
        with one thread); left alone if omitted.
    guard : GracefulStop, optional
        The installed signal guard: after SIGINT or SIGTERM the worker stops
        at the next safe point (a training step, the end of a trial, a wait
        for the storage) and raises :class:`KeyboardInterrupt`.
    callbacks : sequence of callables, optional
        Called as Optuna's study callbacks after each trial of this worker.

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
    deadline = _deadline(spec, start)
    tracker = Tracker()
    objective = GuardedObjective(spec.objective_factory(), tracker)
    with _torch_threads(threads), _thread_budget(threads):
        waiting = _run(spec, index, tracker, objective, guard, deadline, callbacks)
    guard.check()
    return WorkerReport(
        index=index,
        pid=os.getpid(),
        completed=tuple(sorted(tracker.completed)),
        failed=tracker.failed,
        pruned=tracker.pruned,
        outages=waiting.outages,
        seconds=time.monotonic() - start,
    )


def _deadline(spec: WorkerSpec, start: float) -> float | None:
    """When the worker stops starting trials (``time.monotonic()``): ``spec.timeout``
    after ``start`` or ``spec.deadline``, whichever comes first."""
    ends = []
    if spec.timeout is not None:
        ends.append(start + spec.timeout)
    if spec.deadline is not None:
        ends.append(time.monotonic() + (spec.deadline - time.time()))
    return min(ends) if ends else None


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Torch's intra-op threads set to ``threads`` in the block, if torch is loaded.

    Restored afterwards: a worker may run in a process that goes on (the one
    that started the pool, a user's script).
    """
    if threads is None or "torch" not in sys.modules:
        yield
        return
    from evohpo.training.threads import torch_threads

    with torch_threads(threads):
        yield


@contextlib.contextmanager
def _thread_budget(threads: int | None) -> Iterator[None]:
    """Let evohpo's trainers pick from up to ``threads`` threads per network
    (:func:`evohpo.training.threads.thread_budget`), if the objective loaded torch."""
    if threads is None or "torch" not in sys.modules:
        yield
        return
    from evohpo.training.threads import thread_budget as budget

    with budget(threads):
        yield


def _run(
    spec: WorkerSpec,
    index: int,
    tracker: Tracker,
    objective: GuardedObjective,
    guard: GracefulStop,
    deadline: float | None,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]],
) -> _Waiting:
    """Optimize until the study is done, riding out storage outages; the waits' record."""
    waiting = _Waiting(spec, index)
    first = True
    while True:
        storage: BaseStorage | None = None
        try:
            storage = open_storage(
                spec.storage_url,
                heartbeat=spec.heartbeat,
                owner_extra={"worker": index},
                listener=tracker.on_trial_start,
            )
            study = _load_study(spec, storage)
            settle(study, tracker, spec.max_retry)
            if first:
                _join(study, spec, index)
                first = False
            waiting.reset()
            if not _finished(study, spec, deadline):
                left = None if deadline is None else deadline - time.monotonic()
                _optimize(study, objective, spec, tracker, guard, left, callbacks)
            break
        except UpdateFinishedTrialError as exc:
            # Our trial was failed by another worker (its heartbeat looked stale,
            # e.g. after an outage) and has been retried there: go on.
            _logger.warning("worker %d: %s; continuing", index, redact_exception(exc))
        except Exception as exc:
            if not is_storage_outage(exc):
                raise
            tracker.mark_told(exc)
            waiting.wait(exc, guard)
        finally:
            if storage is not None:
                close_storage(storage)
    return waiting


def _join(study: optuna.Study, spec: WorkerSpec, index: int) -> None:
    """A worker's first contact with the study: recover the trials of dead processes."""
    recover_orphaned_trials(study, stale_after=spec.stale_after, max_retry=spec.max_retry)
    _logger.info(
        "worker %d (process %d) joined study %r in %s",
        index,
        os.getpid(),
        spec.study_name,
        spec.shown_storage,
    )


def _finished(study: optuna.Study, spec: WorkerSpec, deadline: float | None) -> bool:
    """Whether the study holds its total, or the worker's time is up."""
    if spec.n_trials is not None and count_trials(study, spec.counted_states) >= spec.n_trials:
        return True
    return deadline is not None and deadline <= time.monotonic()


def _optimize(
    study: optuna.Study,
    objective: GuardedObjective,
    spec: WorkerSpec,
    tracker: Tracker,
    guard: GracefulStop,
    timeout: float | None,
    extra_callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]],
) -> None:
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [
        tracker.on_trial_end,
        guard.stop_study,
    ]
    if spec.n_trials is not None:
        callbacks.append(MaxTrialsCallback(spec.n_trials, states=spec.counted_states))
    callbacks.extend(extra_callbacks)
    guard.check()
    batched.optimize(
        study,
        objective,
        batch_trials=spec.batch_trials,
        timeout=timeout,
        study_total=None if spec.n_trials is None else (spec.n_trials, spec.counted_states),
        catch=(TrialFailedError,),
        callbacks=callbacks,
    )
