"""Compare samplers: run every (sampler, seed) study of a study file, then summarise.

All studies share one storage, one objective (the same train, validation and
test rows) and the same per-study budget. The comparison resumes: each study
runs only up to its budget, and the test accuracy of a study's best trial,
once measured, is kept as a study user attribute.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from evohpo._interrupt import GracefulStop
from evohpo.evolution.genome import Genome

if TYPE_CHECKING:
    from evohpo.search.objective import GenomeObjective
    from evohpo.training.train import TrainResult
from evohpo.studies.study import (
    Budget,
    PreparedData,
    StudyConfig,
    TrialCallback,
    check_study,
    finished_trials,
    make_objective,
    open_study,
    prepare_data,
    run_study,
    study_name,
)

__all__ = [
    "TEST_ATTR",
    "Comparison",
    "StudyResult",
    "best_genome",
    "format_table",
    "history_figure",
    "measure_test_accuracy",
    "plot_histories",
    "run_comparison",
    "summarize_study",
]

_logger = logging.getLogger("evohpo")

#: Study user attribute caching the test accuracy of the best trial's refit.
TEST_ATTR = "evohpo.test"


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
        Trial time spent (sum of trial durations).
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
    """

    config: StudyConfig
    results: Mapping[str, list[StudyResult]]
    wall_seconds: float
    budget: Budget


def best_genome(trial: FrozenTrial) -> Genome:
    """The genome a trial trained: its ``genome`` user attribute, else its parameters."""
    stored = trial.user_attrs.get("genome")
    if isinstance(stored, str):
        return Genome.from_json(stored)
    return Genome.from_params(trial.params)


def refit(objective: GenomeObjective, trial: FrozenTrial) -> TrainResult:
    """Train ``trial``'s genome on the training and validation rows together.

    It trains for the trial's best epoch count (no early stopping: no rows are
    left to stop on) with the trial's own training seed. The returned
    :class:`~evohpo.training.train.TrainResult`'s model expects features transformed
    by ``objective.standardizer()``.
    """
    epochs = trial.user_attrs.get("best_epoch")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        epochs = None  # the objective finds it with one early-stopped training
    return objective.fit_genome(
        best_genome(trial), seed=objective.trial_seed(trial.number), epochs=epochs
    )


def _trial_seconds(trial: FrozenTrial) -> float:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return 0.0
    return max(0.0, (trial.datetime_complete - trial.datetime_start).total_seconds())


def summarize_study(
    study: optuna.Study, *, sampler: str, seed: int, target: float | None
) -> StudyResult:
    """Summarise ``study`` (no training)."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    finished = finished_trials(study)
    history: list[float] = []
    best = -math.inf
    best_trial: FrozenTrial | None = None
    seconds = 0.0
    reached_trials: int | None = None
    reached_seconds: float | None = None
    done = 0
    for trial in trials:
        seconds += _trial_seconds(trial)
        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        done += 1
        if trial.state == TrialState.COMPLETE and trial.value is not None and trial.value > best:
            best, best_trial = trial.value, trial
        history.append(best if best_trial is not None else math.nan)
        if target is not None and reached_trials is None and best >= target:
            reached_trials, reached_seconds = done, seconds
    cached = study.user_attrs.get(TEST_ATTR)
    test_accuracy = None
    if (
        best_trial is not None
        and isinstance(cached, Mapping)
        and cached.get("trial") == best_trial.number
        and isinstance(cached.get("accuracy"), (int, float))
    ):
        test_accuracy = float(cached["accuracy"])
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


def measure_test_accuracy(
    study: optuna.Study,
    objective: GenomeObjective,
    data: PreparedData,
    *,
    guard: GracefulStop | None = None,
) -> float | None:
    """Refit the best trial's genome (see :func:`refit`), score it on the test rows.

    The result is cached in the study user attribute :data:`TEST_ATTR` for
    the best trial's number, so it is measured once.

    Returns ``None`` for a study without a completed trial.
    """
    from evohpo.training.train import predict_logits

    try:
        trial = study.best_trial
    except ValueError:
        return None
    cached = study.user_attrs.get(TEST_ATTR)
    if isinstance(cached, Mapping) and cached.get("trial") == trial.number:
        value = cached.get("accuracy")
        if isinstance(value, (int, float)):
            return float(value)
    guard = guard if guard is not None else GracefulStop()
    guard.check()
    result = refit(objective, trial)  # stops at a training step on a signal
    logits = predict_logits(result.model, objective.standardizer().transform(data.X_test))
    accuracy = float(np.mean(logits.argmax(axis=1) == data.y_test))
    study.set_user_attr(
        TEST_ATTR,
        {"trial": trial.number, "accuracy": accuracy, "n_test": len(data.y_test)},
    )
    return accuracy


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
        objective = make_objective(config, data, seed)
        for sampler in samplers:
            study = studies[sampler, seed]
            if on_study is not None:
                on_study(study.study_name)
            run_study(study, objective, budget, guard=guard, callbacks=callbacks)
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


# -- the table --------------------------------------------------------------------------------
def _mean_sd(values: Sequence[float], digits: int = 4) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def format_table(comparison: Comparison) -> str:
    """The comparison as a plain-text table (one row per sampler).

    Columns: seeds, finished trials per study, best validation accuracy and
    test accuracy of the best trial's refit (mean ± standard deviation over
    seeds), how many seeds reached the target, and the mean trials and trial
    seconds they needed, and the trial seconds per study.
    """
    config = comparison.config
    target = config.target
    headers = [
        "sampler",
        "seeds",
        "trials",
        "best val acc",
        "test acc",
        "reached",
        "trials to target",
        "time to target",
        "study time",
    ]
    rows: list[list[str]] = []
    for sampler, results in comparison.results.items():
        finished = [r.n_trials for r in results]
        trials = (
            f"{min(finished)}"
            if min(finished) == max(finished)
            else f"{min(finished)}-{max(finished)}"
        )
        reached = [r for r in results if r.trials_to_target is not None]
        rows.append(
            [
                sampler,
                str(len(results)),
                trials,
                _mean_sd([r.best_value for r in results if r.best_value is not None]),
                _mean_sd([r.test_accuracy for r in results if r.test_accuracy is not None]),
                "-" if target is None else f"{len(reached)}/{len(results)}",
                _mean_sd([float(r.trials_to_target) for r in reached if r.trials_to_target], 1)
                if target is not None
                else "-",
                _seconds([r.seconds_to_target for r in reached if r.seconds_to_target is not None])
                if target is not None
                else "-",
                _seconds([r.seconds for r in results]),
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    budget = comparison.budget
    parts = []
    if budget.n_trials is not None:
        parts.append(f"{budget.n_trials} trials")
    if budget.timeout is not None:
        parts.append(f"{budget.timeout:g} s")
    title = (
        f"{config.name}: {', '.join(comparison.results)} on {config.dataset}, "
        f"budget {' / '.join(parts)} per study"
    )
    if target is not None:
        title += f", target validation accuracy {target:g}"
    notes = [
        "best val acc / test acc: mean ± sd over seeds; test acc: the best trial's genome "
        "refit on the training + validation rows, scored on the held-out test rows.",
    ]
    if target is not None:
        notes.append(
            "trials/time to target: mean over the seeds that reached it; times are trial "
            "time (training and scoring), summed."
        )
    return "\n".join([title, "", *lines, "", *notes])


def _seconds(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:.1f} s" if mean < 10 else f"{mean:.0f} s"


# -- the plot --------------------------------------------------------------------------------
def plot_histories(comparison: Comparison, path: str | Path) -> Path:
    """Write a PNG of the best validation accuracy so far against the trial count.

    One line per sampler (the mean over seeds) with a band from the lowest to
    the highest seed. Uses matplotlib's Agg canvas; pyplot's global state is
    not touched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    history_figure(comparison).savefig(target, format="png")
    return target


def _legend_label(sampler: str, n_seeds: int) -> str:
    """``ga (mean of 3 seeds)``; ``ga (1 seed)``."""
    return f"{sampler} (1 seed)" if n_seeds == 1 else f"{sampler} (mean of {n_seeds} seeds)"


def history_figure(comparison: Comparison) -> Any:
    """The matplotlib ``Figure`` that :func:`plot_histories` writes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(7.5, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for sampler, results in comparison.results.items():
        curves = [np.asarray(r.history, dtype=float) for r in results if r.history]
        if not curves:
            continue
        length = max(len(c) for c in curves)
        # A study that stopped early keeps its last value (its best so far).
        padded = np.vstack([np.pad(c, (0, length - len(c)), mode="edge") for c in curves])
        x = np.arange(1, length + 1)
        with np.errstate(all="ignore"):
            mean = np.nanmean(padded, axis=0) if np.isfinite(padded).any() else padded[0]
            low = np.nanmin(padded, axis=0)
            high = np.nanmax(padded, axis=0)
        (line,) = axes.plot(
            x,
            mean,
            label=_legend_label(sampler, len(curves)),
            linewidth=2,
            drawstyle="steps-post",
        )
        if len(curves) > 1:
            axes.fill_between(
                x, low, high, color=line.get_color(), alpha=0.2, linewidth=0, step="post"
            )
    if comparison.config.target is not None:
        axes.axhline(comparison.config.target, color="grey", linestyle="--", linewidth=1)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("finished trials")
    axes.set_ylabel("best validation accuracy so far")
    axes.set_title(f"{comparison.config.name}: optimisation histories (band: min-max over seeds)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    return figure


def default_plot_path(config: StudyConfig) -> Path:
    """``<study dir>/runs/<name>/history.png``."""
    return config.output_dir / "history.png"


def study_names(config: StudyConfig) -> list[str]:
    """Names of every study of the comparison."""
    return [study_name(config.name, s, seed) for seed in config.seeds for s in config.samplers]
