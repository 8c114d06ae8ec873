"""Helpers shared by the benchmarks: table printing and CSV output."""

from __future__ import annotations

import csv
import os
import platform
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

#: Where tables and run files go; EVOHPO_BENCH_RESULTS moves them (the tests do).
RESULTS = Path(
    os.environ.get("EVOHPO_BENCH_RESULTS") or Path(__file__).resolve().parent / "results"
)


def mean_std(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {spread:.4f}"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(row[h]) for h in headers) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(name: str, rows: Sequence[Mapping[str, Any]]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def read_runs(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The rows of one or more run files written with ``csv.DictWriter``."""
    runs: list[dict[str, Any]] = []
    for path in paths:
        with Path(path).open(newline="") as fh:
            runs.extend(csv.DictReader(fh))
    return runs


#: Every call a study makes on its sampler during a trial.
SAMPLER_HOOKS = (
    "before_trial",
    "infer_relative_search_space",
    "sample_relative",
    "sample_independent",
    "after_trial",
)

Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]


class WrappedSampler(optuna.samplers.BaseSampler):
    """Delegates every sampler hook to ``inner`` through ``wrap`` (a timer, say)."""

    def __init__(self, inner: optuna.samplers.BaseSampler, wrap: Wrap) -> None:
        self.inner = inner
        for hook in SAMPLER_HOOKS:
            setattr(self, hook, wrap(getattr(inner, hook)))

    # Abstract methods, replaced per instance by the wrapped hooks above.
    def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
        raise NotImplementedError

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
        raise NotImplementedError

    def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
        raise NotImplementedError
