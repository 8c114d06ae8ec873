"""The comparison of a study file as a plain-text table."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from evohpo.studies.compare import Comparison

__all__ = ["format_table"]


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
    test accuracy (R2 for regression) of the best trial's refit (mean ± standard deviation over
    seeds), how many seeds reached the target, and the mean trials and trial
    seconds they needed, and the trial seconds per study.
    """
    config = comparison.config
    target = config.target
    short = "R2" if config.task == "regression" else "acc"
    headers = [
        "sampler",
        "seeds",
        "trials",
        f"best val {short}",
        f"test {short}",
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
        f"{config.name}: {', '.join(comparison.results)} on {config.data_label}, "
        f"budget {' / '.join(parts)} per study"
    )
    if target is not None:
        title += f", target validation {config.score_label} {target:g}"
    notes = [
        f"best val {short} / test {short}: mean ± sd over seeds; test {short}: the best "
        "trial's genome refit on the training + validation rows, scored on the held-out "
        "test rows.",
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
