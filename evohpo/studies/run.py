"""Running one study of a study file up to its budget.

Budgets are totals: a study that holds 7 finished trials of a 10-trial
budget runs 3 more, and a timeout counts the trial time already spent.

Trial time is what the processes on a study spent in trials: trials of one
process that ran at the same time (trained together, ``batch_trials``) share
the seconds they overlapped, while each worker process adds its own
(:func:`trial_time_shares`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial

from evohpo._interrupt import GracefulStop
from evohpo.exceptions import InvalidParameterError
from evohpo.search import batched
from evohpo.search.batch_size import BatchTrials, resolve_batch_trials
from evohpo.storage import recover_orphaned_trials
from evohpo.storage.records import COUNTED_STATES, OWNER_ATTR
from evohpo.studies.config import Budget, StudyConfig
from evohpo.studies.data import PreparedData

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler

    from evohpo.search.objective import GenomeObjective

__all__ = [
    "StudyRun",
    "TrialCallback",
    "finished_trials",
    "make_objective",
    "remaining_budget",
    "run_study",
    "study_batch_trials",
    "trial_seconds",
    "trial_time_shares",
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


def trial_time_shares(trials: Iterable[FrozenTrial]) -> dict[int, float]:
    """Each trial's share of the trial time, by trial number; 0 for one that has not ended.

    A trial's share is its duration, except that the seconds in which several
    trials of one process ran (trained together) are divided among them. The
    shares of a process's trials add up to the time it spent in trials, so a
    batch of k trials costs its wall time, not k times it, and n worker
    processes still spend n seconds a second. The process is the trial's
    owner record (:mod:`evohpo.storage.ownership`); a trial without one
    shares with no other.
    """
    shares: dict[int, float] = {}
    by_owner: dict[str, list[tuple[int, float, float]]] = {}
    for trial in trials:
        shares[trial.number] = 0.0
        if trial.datetime_start is None or trial.datetime_complete is None:
            continue
        start = trial.datetime_start.timestamp()
        end = trial.datetime_complete.timestamp()
        if end <= start:
            continue
        by_owner.setdefault(_owner_key(trial), []).append((trial.number, start, end))
    for intervals in by_owner.values():
        _share_overlaps(intervals, shares)
    return shares


def _owner_key(trial: FrozenTrial) -> str:
    record = trial.system_attrs.get(OWNER_ATTR)
    if isinstance(record, Mapping):
        return json.dumps(record, sort_keys=True, default=str)
    return f"#{trial.number}"  # no owner known: on its own


def _share_overlaps(intervals: list[tuple[int, float, float]], shares: dict[int, float]) -> None:
    """Add to ``shares`` each interval's seconds, those covered by several split evenly."""
    events = sorted(
        [(start, 1, number) for number, start, _ in intervals]
        + [(end, 0, number) for number, _, end in intervals]
    )  # at one moment, ends (0) before starts (1)
    running: set[int] = set()
    last = events[0][0] if events else 0.0
    for moment, starts, number in events:
        if running and moment > last:
            each = (moment - last) / len(running)
            for member in running:
                shares[member] += each
        last = moment
        if starts:
            running.add(number)
        else:
            running.discard(number)


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
        spent = sum(trial_time_shares(study.get_trials(deepcopy=False)).values())
        time_left = max(0.0, budget.timeout - spent)
    return n_left, time_left


def study_batch_trials(
    config: StudyConfig,
    sampler: BaseSampler | None,
    n_trials: int | None,
    setting: BatchTrials | None = None,
    *,
    workers: int = 1,
    objective: GenomeObjective | None = None,
) -> int:
    """The trials a run of a study file's study trains together.

    Parameters
    ----------
    config : StudyConfig
    sampler : BaseSampler or None
        The study's sampler: a GA's ``population_size`` caps ``"auto"``.
    n_trials : int or None
        The study's total of trials, which caps ``"auto"``.
    setting : int or "auto", optional
        Overrides ``config.batch_trials`` (``--batch-trials``).
    workers : int, default=1
        Processes running the study at once.
    objective : GenomeObjective, optional
        The study's objective, which knows the width of the data (the study
        file's data are loaded when it is not given).

    Returns
    -------
    int
        ``setting`` (or the file's ``batch_trials``) when it is a number, else
        the ``"auto"`` choice for the ``[train] device`` (see
        :mod:`evohpo.search.batch_size`).
    """
    chosen = config.batch_trials if setting is None else setting
    if chosen != "auto":
        return int(chosen)
    from evohpo.training.nn import resolve_device  # torch: only when a study trains

    device_type = resolve_device(config.train.get("device", "auto")).type
    if objective is None:
        from evohpo.studies.data import prepare_data

        objective = make_objective(config, prepare_data(config), 0)
    return resolve_batch_trials(
        "auto",
        device_type,
        sampler,
        n_trials,
        workers=workers,
        largest_macs=objective.largest_network_macs(),
    )


class _Guarded:
    """An objective that trains nothing once a stop was requested.

    A stop that came while trials were being created fails them untrained.
    """

    def __init__(self, objective: Any, guard: GracefulStop) -> None:
        self.objective = objective
        self.guard = guard

    def __call__(self, trial: optuna.Trial) -> Any:
        self.guard.check()
        return self.objective(trial)

    def train_trials(self, trials: Sequence[optuna.Trial]) -> Sequence[Any]:
        self.guard.check()
        outcomes: Sequence[Any] = self.objective.train_trials(trials)
        return outcomes


def run_study(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float] | batched.BatchObjective,
    budget: Budget,
    *,
    guard: GracefulStop | None = None,
    callbacks: Sequence[TrialCallback] = (),
    batch_trials: int = 1,
) -> StudyRun:
    """Run ``study`` until it holds ``budget`` in total (trials and/or seconds).

    With ``batch_trials`` above 1, that many trials are asked and trained
    together (:func:`evohpo.search.batched.optimize`; ``objective`` needs a
    ``train_trials`` method, as :class:`~evohpo.search.objective.GenomeObjective`
    has); a batch never takes the study past its total of trials, counting
    those other processes are running. The timeout is checked before each
    batch: a batch that starts finishes.

    After a signal to ``guard`` (see :mod:`evohpo._interrupt`) the study stops:
    trials that were training stop at their next optimizer step and are
    recorded as failed (they do not count), trials that were not finish; then
    :class:`KeyboardInterrupt` propagates. Trials left running by killed
    processes are failed and retried first (:mod:`evohpo.storage.ownership`).
    """
    if batch_trials != 1 and not hasattr(objective, "train_trials"):
        raise InvalidParameterError(
            f"run_study got batch_trials={batch_trials!r} for an objective without a "
            "train_trials method; pass batch_trials=1 or a GenomeObjective."
        )
    recover_orphaned_trials(study)
    n_before = len(finished_trials(study))
    n_left, time_left = remaining_budget(study, budget)
    if n_left == 0 or (time_left is not None and time_left <= 0):
        return StudyRun(study, n_before, n_before, budget.n_trials)
    guard = guard if guard is not None else GracefulStop()
    total = budget.n_trials

    def enough(done_study: optuna.Study, trial: FrozenTrial) -> None:
        # Other workers may share the study: stop at the total, not "n more".
        if total is not None and len(finished_trials(done_study)) >= total:
            done_study.stop()

    _logger.info(
        "Running %s: %s, %d at a time.",
        study.study_name,
        _budget_left(n_left, time_left),
        batch_trials,
    )
    batched.optimize(
        study,
        _Guarded(objective, guard),
        batch_trials=batch_trials,
        n_trials=n_left,
        timeout=time_left,
        callbacks=[*callbacks, enough, guard.stop_study],
        study_total=None if total is None else (total, COUNTED_STATES),
    )
    guard.check()
    return StudyRun(study, n_before, len(finished_trials(study)), total)


def _budget_left(n_left: int | None, time_left: float | None) -> str:
    """``3 trials and 120 s of trial time left``; either part alone when the budget has one."""
    parts = []
    if n_left is not None:
        parts.append(f"{n_left} trial{'' if n_left == 1 else 's'}")
    if time_left is not None:
        seconds = f"{time_left:.0f}" if time_left >= 10 else f"{time_left:.1f}"
        parts.append(f"{seconds} s of trial time")
    if not parts:  # an empty Budget: only a stop ends the run
        return "no limit on trials or time"
    return " and ".join(parts) + " left"


def make_objective(
    config: StudyConfig, data: PreparedData, seed: int, storage_url: str | None = None
) -> GenomeObjective:
    """The :class:`evohpo.search.objective.GenomeObjective` of this study file and seed.

    Every sampler gets the same rows: the objective trains on the training
    split (standardised with its own statistics) and scores each trial on the
    validation split: its accuracy, or for ``task = "regression"`` its R2
    (targets standardised inside). Trial ``n`` trains with a seed derived from
    ``(seed, n)``.
    With ``[space] input_shape`` every row is folded to that shape inside the
    network (:mod:`evohpo.training.nn`). With ``[train] inherit_weights``, trained
    weights are kept in :meth:`StudyConfig.weights_store` of ``storage_url``
    (the file's storage by default).
    """
    from evohpo.search.inheritance import WeightInheritance
    from evohpo.search.objective import GenomeObjective
    from evohpo.training.config import TrainConfig

    inheritance = None
    if config.inherit_weights:
        population = int(config.sampler_options.get("ga", {}).get("population_size", 10))
        keep = max(20, 2 * population)  # every possible parent keeps its weights
        store = config.weights_store(storage_url)
        inheritance = WeightInheritance(store, keep_best=keep, keep_recent=keep)
    return GenomeObjective(
        data.X_train,
        data.y_train,
        space=config.space,
        train_config=TrainConfig(**config.train, task=config.task),
        validation_data=(data.X_val, data.y_val),
        seed=seed,
        input_shape=config.space.input_shape,
        inheritance=inheritance,
    )
