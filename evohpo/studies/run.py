"""Running one study of a study file up to its budget.

Budgets are totals: a study that holds 7 finished trials of a 10-trial
budget runs 3 more, and a timeout counts the trial time already spent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial

from evohpo._interrupt import GracefulStop
from evohpo.storage import recover_orphaned_trials
from evohpo.storage.records import COUNTED_STATES
from evohpo.studies.config import Budget, StudyConfig
from evohpo.studies.data import PreparedData

if TYPE_CHECKING:
    from evohpo.search.objective import GenomeObjective

__all__ = [
    "StudyRun",
    "TrialCallback",
    "finished_trials",
    "make_objective",
    "remaining_budget",
    "run_study",
    "trial_seconds",
]

_logger = logging.getLogger("evohpo")

#: An Optuna trial callback.
TrialCallback = Callable[[optuna.Study, FrozenTrial], None]


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that count towards the budget (complete or pruned), by number."""
    trials = study.get_trials(deepcopy=False, states=COUNTED_STATES)
    return sorted(trials, key=lambda t: t.number)


def trial_seconds(trial: FrozenTrial) -> float:
    """Seconds from a trial's start to its end; 0 for one that has not ended."""
    if trial.datetime_start is None or trial.datetime_complete is None:
        return 0.0
    return max(0.0, (trial.datetime_complete - trial.datetime_start).total_seconds())


@dataclass(frozen=True)
class StudyRun:
    """What :func:`run_study` did.

    Attributes
    ----------
    study : optuna.Study
    n_before, n_after : int
        Finished trials before and after this run.
    target : int or None
        The total the run aimed at.
    """

    study: optuna.Study
    n_before: int
    n_after: int
    target: int | None


def remaining_budget(study: optuna.Study, budget: Budget) -> tuple[int | None, float | None]:
    """Trials and seconds left of ``budget``, counting what ``study`` already did."""
    done = finished_trials(study)
    n_left = None if budget.n_trials is None else max(0, budget.n_trials - len(done))
    time_left = None
    if budget.timeout is not None:
        spent = sum(trial_seconds(t) for t in study.get_trials(deepcopy=False))
        time_left = max(0.0, budget.timeout - spent)
    return n_left, time_left


def run_study(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    budget: Budget,
    *,
    guard: GracefulStop | None = None,
    callbacks: Sequence[TrialCallback] = (),
) -> StudyRun:
    """Run ``study`` until it holds ``budget`` in total (trials and/or seconds).

    After a signal to ``guard`` (see :mod:`evohpo._interrupt`) the study stops:
    a trial that was training stops at its next optimizer step and is
    recorded as failed (it does not count), one that was not finishes; then
    :class:`KeyboardInterrupt` propagates. Trials left running by killed
    processes are failed and retried first (:mod:`evohpo.storage.ownership`).
    """
    recover_orphaned_trials(study)
    n_before = len(finished_trials(study))
    n_left, time_left = remaining_budget(study, budget)
    if n_left == 0 or (time_left is not None and time_left <= 0):
        return StudyRun(study, n_before, n_before, budget.n_trials)
    guard = guard if guard is not None else GracefulStop()

    def guarded(trial: optuna.Trial) -> float:
        # A stop that came while the trial was being created: do not train it.
        guard.check()
        return objective(trial)

    total = budget.n_trials

    def enough(done_study: optuna.Study, trial: FrozenTrial) -> None:
        # Other workers may share the study: stop at the total, not "n more".
        if total is not None and len(finished_trials(done_study)) >= total:
            done_study.stop()

    _logger.info(
        "Running %s: %s trials and %s s left.",
        study.study_name,
        "no limit on" if n_left is None else n_left,
        "no limit on" if time_left is None else round(time_left),
    )
    study.optimize(
        guarded,
        n_trials=n_left,
        timeout=time_left,
        callbacks=[*callbacks, enough, guard.stop_study],
        gc_after_trial=False,
        show_progress_bar=False,
    )
    guard.check()
    return StudyRun(study, n_before, len(finished_trials(study)), total)


def make_objective(config: StudyConfig, data: PreparedData, seed: int) -> GenomeObjective:
    """The :class:`evohpo.search.objective.GenomeObjective` of this study file and seed.

    Every sampler gets the same rows: the objective trains on the training
    split (standardised with its own statistics) and scores each trial on the
    validation split. Trial ``n`` trains with a seed derived from ``(seed, n)``.
    With ``[space] input_shape`` every row is folded to that shape inside the
    network (:mod:`evohpo.training.nn`).
    """
    from evohpo.search.objective import GenomeObjective
    from evohpo.training.config import TrainConfig

    return GenomeObjective(
        data.X_train,
        data.y_train,
        space=config.space,
        train_config=TrainConfig(**config.train),
        validation_data=(data.X_val, data.y_val),
        seed=seed,
        input_shape=config.space.input_shape,
    )
