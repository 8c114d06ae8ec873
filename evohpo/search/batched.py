"""Run a study's trials k at a time: :func:`optimize`.

``study.optimize`` runs one trial per objective call. To train k genomes as
one stack, k trials must be running at once: :func:`optimize` asks k trials
from the study (a sampler sees them as k running trials, as it would see k
workers' trials), hands them to the objective's ``train_trials`` together,
and tells each its own outcome: value, pruned or failed.

It keeps ``study.optimize``'s contract where it applies: ``n_trials`` and
``timeout`` (checked before each batch: a batch that starts finishes),
callbacks after each told trial, ``study.stop()`` from a callback, ``catch``,
heartbeats of the running trials on storages that have them, and stale trials
of dead processes failed before each batch. With ``batch_trials=1`` it *is*
``study.optimize``.

Asking all k trials before any is told makes a run reproducible: the same
seed and ``batch_trials`` give the same trials in the same order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from evohpo._interrupt import stop_requested as signal_requested
from evohpo._validation import check_int
from evohpo.storage import internals, recover_orphaned_trials
from evohpo.storage.heartbeats import beating, fail_stale_trials

__all__ = ["BatchObjective", "optimize"]

logger = logging.getLogger("evohpo")

Callback = Callable[[optuna.Study, FrozenTrial], None]

#: Seconds between two looks at a study whose total others' running trials may reach.
_WAIT_FOR_OTHERS = 0.5
#: Seconds between two log lines that say what a run waits for.
_WAIT_NOTICE_EVERY = 60.0


class BatchObjective(Protocol):
    """An objective that can also train several running trials at once."""

    def __call__(self, trial: optuna.Trial) -> Any: ...

    def train_trials(self, trials: Sequence[optuna.Trial]) -> Sequence[Any]:
        """One outcome per trial: its value, or the exception that ended it."""
        ...


def optimize(
    study: optuna.Study,
    objective: BatchObjective,
    *,
    batch_trials: int = 1,
    n_trials: int | None = None,
    timeout: float | None = None,
    callbacks: Iterable[Callback] = (),
    catch: tuple[type[Exception], ...] = (),
    study_total: tuple[int, tuple[TrialState, ...]] | None = None,
) -> None:
    """Run trials of ``study``, ``batch_trials`` at a time, until a budget is spent.

    Parameters
    ----------
    study : optuna.Study
    objective : BatchObjective
        With ``batch_trials > 1``, its ``train_trials(trials)`` returns one
        outcome per trial: a value, or an exception (``optuna.TrialPruned``
        prunes that trial; any other fails it).
    batch_trials : int, default=1
        Trials asked and trained together.
    n_trials, timeout, callbacks, catch
        As for ``study.optimize``. An exception not in ``catch`` fails its trial
        and is raised once every trial of its batch has been told. An
        exception raised by ``train_trials`` itself fails every trial of the
        batch.
    """
    batch_trials = check_int(batch_trials, "batch_trials", "optimize", low=1)
    callbacks = list(callbacks)
    if batch_trials == 1:
        study.optimize(
            objective,
            n_trials=n_trials,
            timeout=timeout,
            callbacks=callbacks,
            catch=catch,
            gc_after_trial=False,
            show_progress_bar=False,
        )
        return
    started = time.monotonic()
    asked = 0
    notice = _WaitNotice()
    with internals.optimizing(study) as stop_requested:
        # A signal to the process (its installed GracefulStop) ends the loop too: the
        # wait for others' trials below has no trial of its own to stop.
        while not stop_requested() and not signal_requested():
            if n_trials is not None and asked >= n_trials:
                break
            if timeout is not None and time.monotonic() - started >= timeout:
                break
            fail_stale_trials(study)
            size = batch_trials if n_trials is None else min(batch_trials, n_trials - asked)
            if study_total is None:
                trials = [study.ask() for _ in range(size)]
            else:
                asked_within = _ask_within_total(study, size, *study_total)
                if asked_within is None:
                    break
                if not asked_within:
                    # Others' running trials would reach the total: wait for them, in
                    # case some fail and leave trials to run. Those of processes of this
                    # machine that are gone (killed) will not end: fail and queue them.
                    recover_orphaned_trials(study)
                    notice.waiting(study, study_total[0])
                    time.sleep(_WAIT_FOR_OTHERS)
                    continue
                notice.reset()
                trials = asked_within
            asked += len(trials)
            outcomes = _train(study, objective, trials, callbacks, catch)
            raised = _tell_all(study, trials, outcomes, callbacks, catch)
            if raised is not None:
                raise raised


def _ask_within_total(
    study: optuna.Study, size: int, total: int, states: tuple[TrialState, ...]
) -> list[optuna.Trial] | None:
    """Up to ``size`` new trials, as many as the study's total leaves room for;
    ``None`` once the counted trials reach it.

    The room is looked at again before each ask, so that workers asking at the
    same moment see each other's trials: two workers can still both take the
    last place (storages have no atomic "ask if below"), but only one trial
    each, not a whole batch.
    """
    trials: list[optuna.Trial] = []
    while len(trials) < size:
        missing, reached = _missing(study, total, states)
        if reached and not trials:
            return None
        if missing <= 0:
            break
        trials.append(study.ask())
    return trials


class _WaitNotice:
    """Says which running trials a run waits for, once it has waited a minute and then once
    a minute. A short wait is normal (a worker at the end of a study waits for the others'
    last trials) and stays quiet; a long one may be a trial whose process died, which
    counts until a heartbeat or ``stale_after`` fails it."""

    def __init__(self) -> None:
        self._last: float | None = None

    def waiting(self, study: optuna.Study, total: int) -> None:
        now = time.monotonic()
        if self._last is None:
            self._last = now  # the wait starts: the first notice comes a minute later
            return
        if now - self._last < _WAIT_NOTICE_EVERY:
            return
        self._last = now
        running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        logger.warning(
            "still waiting for %d trial(s) that other processes are running (numbers %s) "
            "before starting more: the study's total of %d counts them. A trial left running "
            "by a dead process counts until the storage's heartbeat (RDB storages) or a "
            "worker's stale_after fails it.",
            len(running),
            running,
            total,
        )

    def reset(self) -> None:
        self._last = None


def _missing(study: optuna.Study, total: int, states: tuple[TrialState, ...]) -> tuple[int, bool]:
    """Trials still to start to reach ``total`` (running ones count), and whether the
    counted trials reach it already."""
    trials = study.get_trials(deepcopy=False, states=(*states, TrialState.RUNNING))
    counted = sum(t.state != TrialState.RUNNING for t in trials)
    return total - len(trials), counted >= total


def _train(
    study: optuna.Study,
    objective: BatchObjective,
    trials: list[optuna.Trial],
    callbacks: list[Callback],
    catch: tuple[type[Exception], ...],
) -> Sequence[Any]:
    """The objective's outcomes; a failure of the whole call fails every trial, but
    those the exception's ``finished_outcomes`` gives an outcome (a stop between
    members that train one after another), which are told it."""
    try:
        with beating(internals.study_storage(study), [internals.trial_id(t) for t in trials]):
            outcomes = objective.train_trials(trials)
    except BaseException as exc:
        finished = getattr(exc, "finished_outcomes", None)
        if not isinstance(finished, list) or len(finished) != len(trials):
            finished = [None] * len(trials)
        for trial, outcome in zip(trials, finished, strict=True):
            if outcome is None:
                _tell_failed(study, trial, exc)
            else:
                _tell_all(study, [trial], [outcome], callbacks, catch)
        raise
    if len(outcomes) != len(trials):
        raise RuntimeError(
            f"train_trials returned {len(outcomes)} outcomes for {len(trials)} trials."
        )
    return outcomes


def _tell_all(
    study: optuna.Study,
    trials: list[optuna.Trial],
    outcomes: Sequence[Any],
    callbacks: list[Callback],
    catch: tuple[type[Exception], ...],
) -> Exception | None:
    """Tell every trial its outcome and run the callbacks; the first error to raise."""
    raised: Exception | None = None
    for trial, outcome in zip(trials, outcomes, strict=True):
        if isinstance(outcome, optuna.TrialPruned):
            frozen = study.tell(trial, state=TrialState.PRUNED)
        elif isinstance(outcome, Exception):
            frozen = _tell_failed(study, trial, outcome)
            if not isinstance(outcome, catch) and raised is None:
                raised = outcome
        else:
            frozen = study.tell(trial, outcome)
        for callback in callbacks:
            callback(study, frozen)
    return raised


def _tell_failed(study: optuna.Study, trial: optuna.Trial, exc: BaseException) -> FrozenTrial:
    logger.warning("Trial %d failed because of %s: %s", trial.number, type(exc).__name__, exc)
    return study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
