"""Compare samplers: run every (sampler, seed) study of a study file, then summarise.

All studies share one storage, one objective (the same train, validation and
test rows) and the same per-study budget. The comparison resumes: each study
runs only up to its budget, and the test accuracy of a study's best trial,
once measured, is kept as a study user attribute. :mod:`evohpo.studies.report`
prints a comparison and :mod:`evohpo.studies.plots` draws it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from evohpo._interrupt import GracefulStop
from evohpo.search.batch_size import BatchTrials
from evohpo.storage.records import COUNTED_STATES
from evohpo.studies.config import Budget, StudyConfig
from evohpo.studies.data import PreparedData, prepare_data
from evohpo.studies.group import check_study, open_study
from evohpo.studies.refit import cached_test_accuracy, measure_test_accuracy
from evohpo.studies.run import (
    TrialCallback,
    finished_trials,
    make_objective,
    run_study,
    study_batch_trials,
    trial_time_shares,
)

__all__ = ["Comparison", "StudyResult", "run_comparison", "summarize_study"]


@dataclass(frozen=True)
class StudyResult:
    """One study's outcome.

    Attributes
    ----------
    name, sampler : str
    seed : int
    n_trials : int
        Finished (complete or pruned) trials.
    n_failed : int
        Failed trials (interrupted or crashed), not counted in the budget.
    best_value : float or None
        Best validation accuracy.
    best_trial : int or None
        Number of the best trial.
    test_accuracy : float or None
        Test accuracy of the best trial's genome, refit on the training and
        validation rows.
    history : list of float
        Best validation accuracy so far after each finished trial.
    seconds : float
        Trial time spent (sum of trial durations; trials trained together
        share the time they overlapped, see
        :func:`~evohpo.studies.run.trial_time_shares`).
    trials_to_target, seconds_to_target : int or float or None
        Finished trials and trial seconds until the target was first reached.
    """

    name: str
    sampler: str
    seed: int
    n_trials: int
    n_failed: int
    best_value: float | None
    best_trial: int | None
    test_accuracy: float | None
    history: list[float] = field(repr=False)
    seconds: float
    trials_to_target: int | None
    seconds_to_target: float | None


@dataclass(frozen=True)
class Comparison:
    """Results of every study of a study file, grouped by sampler.

    Attributes
    ----------
    config : StudyConfig
    results : dict of str to list of StudyResult
        Per sampler, one result per seed.
    wall_seconds : float
        Wall time of this invocation.
    budget : Budget
        The per-study budget the studies ran to.
    """

    config: StudyConfig
    results: Mapping[str, list[StudyResult]]
    wall_seconds: float
    budget: Budget


def summarize_study(
    study: optuna.Study, *, sampler: str, seed: int, target: float | None
) -> StudyResult:
    """Summarise ``study`` (no training)."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    shares = trial_time_shares(trials)
    finished = finished_trials(study)
    history: list[float] = []
    best = -math.inf
    best_trial: FrozenTrial | None = None
    seconds = 0.0
    reached_trials: int | None = None
    reached_seconds: float | None = None
    done = 0
    for trial in trials:
        seconds += shares[trial.number]
        if trial.state not in COUNTED_STATES:
            continue
        done += 1
        if trial.state == TrialState.COMPLETE and trial.value is not None and trial.value > best:
            best, best_trial = trial.value, trial
        history.append(best if best_trial is not None else math.nan)
        if target is not None and reached_trials is None and best >= target:
            reached_trials, reached_seconds = done, seconds
    test_accuracy = None
    if best_trial is not None:
        test_accuracy = cached_test_accuracy(study.user_attrs, best_trial.number)
    return StudyResult(
        name=study.study_name,
        sampler=sampler,
        seed=seed,
        n_trials=len(finished),
        n_failed=sum(t.state == TrialState.FAIL for t in trials),
        best_value=None if best_trial is None else best,
        best_trial=None if best_trial is None else best_trial.number,
        test_accuracy=test_accuracy,
        history=history,
        seconds=seconds,
        trials_to_target=reached_trials,
        seconds_to_target=reached_seconds,
    )


def run_comparison(
    config: StudyConfig,
    data: PreparedData | None,
    storage: BaseStorage,
    *,
    storage_url: str = "",
    samplers: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    budget: Budget | None = None,
    guard: GracefulStop | None = None,
    callbacks: Sequence[TrialCallback] = (),
    on_plan: Callable[[int | None], None] | None = None,
    on_study: Callable[[str], None] | None = None,
    evaluate_test: bool = True,
    batch_trials: BatchTrials | None = None,
) -> Comparison:
    """Run (or resume) every study of the comparison and summarise them.

    Studies run seed by seed, each seed through every sampler, so a stopped
    comparison already holds comparable results for the first seeds.

    Parameters
    ----------
    config : StudyConfig
    data : PreparedData or None
        The splits shared by every study; ``None``: made from the study file
        once every study has been checked, before any is created.
    storage : BaseStorage
        Where all studies live.
    storage_url : str
        For messages.
    samplers, seeds : sequence, optional
        Override the study file's lists.
    budget : Budget, optional
        Override the study file's per-study budget.
    guard : GracefulStop, optional
        Makes SIGINT/SIGTERM stop cleanly; raises ``KeyboardInterrupt`` then.
    callbacks : sequence of callable
        Optuna trial callbacks (a progress bar).
    on_plan : callable, optional
        Called once with the number of trials still to run (``None`` when only
        a timeout bounds the studies).
    on_study : callable, optional
        Called with each study's name before it runs.
    evaluate_test : bool
        Refit each study's best genome and measure its test accuracy.
    batch_trials : int or "auto", optional
        Override the study file's ``batch_trials`` (trials trained together).

    Raises
    ------
    StudyMismatchError
        Before anything runs, if any stored study differs from the file.
    StudyConfigError
        Before any study is created, if the file's splits cannot be made.
    """
    started = time.perf_counter()
    samplers = tuple(samplers) if samplers is not None else config.samplers
    seeds = tuple(seeds) if seeds is not None else config.seeds
    budget = budget if budget is not None else config.budget
    guard = guard if guard is not None else GracefulStop()

    # Check every study and make the splits first: a mismatch or a split that cannot
    # be made stops the run before anything is written.
    for seed in seeds:
        for sampler in samplers:
            check_study(storage, config, sampler, seed, storage_url=storage_url)
    if data is None:
        data = prepare_data(config)
    studies: dict[tuple[str, int], optuna.Study] = {}
    for seed in seeds:
        for sampler in samplers:
            studies[sampler, seed] = open_study(
                storage, config, sampler, seed, storage_url=storage_url
            )
    if on_plan is not None:
        if budget.n_trials is None:
            on_plan(None)
        else:
            left = sum(max(0, budget.n_trials - len(finished_trials(s))) for s in studies.values())
            on_plan(left)

    for seed in seeds:
        objective = make_objective(config, data, seed, storage_url or None)
        for sampler in samplers:
            study = studies[sampler, seed]
            if on_study is not None:
                on_study(study.study_name)
            run_study(
                study,
                objective,
                budget,
                guard=guard,
                callbacks=callbacks,
                batch_trials=study_batch_trials(
                    config, study.sampler, budget.n_trials, batch_trials, objective=objective
                ),
            )
            if evaluate_test:
                measure_test_accuracy(study, objective, data, guard=guard)

    results: dict[str, list[StudyResult]] = {s: [] for s in samplers}
    for (sampler, seed), study in studies.items():
        results[sampler].append(
            summarize_study(study, sampler=sampler, seed=seed, target=config.target)
        )
    for listed in results.values():
        listed.sort(key=lambda r: r.seed)
    return Comparison(
        config=config,
        results=results,
        wall_seconds=time.perf_counter() - started,
        budget=budget,
    )
