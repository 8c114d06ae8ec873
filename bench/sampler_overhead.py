"""Time spent inside the sampler per trial, at 10, 100 and 1000 finished trials.

The storage is a SQLite file, as users run it. The study is filled up to each
checkpoint with finished trials, then ``--measure`` more trials run while
every sampler call (``before_trial``, ``infer_relative_search_space``,
``sample_relative``, ``sample_independent``, ``after_trial``) is timed,
storage writes the sampler makes included.

Usage::

    python bench/sampler_overhead.py                       # 10, 100, 1000
    python bench/sampler_overhead.py --checkpoints 10 50   # fast mode
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from _common import WrappedSampler, machine, markdown_table, write_csv

from evohpo import EvoSampler, SearchSpace, suggest_genome

SPACE = SearchSpace(max_layers=6)


def objective(trial: optuna.Trial) -> float:
    genome = suggest_genome(trial, SPACE)
    return sum(layer.units for layer in genome.layers) * genome.learning_rate


class TimedSampler(WrappedSampler):
    """Delegates to a sampler and adds up the time spent in each call."""

    def __init__(self, inner: optuna.samplers.BaseSampler) -> None:
        self.seconds = 0.0
        super().__init__(inner, self._timed)

    def _timed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return wrapper


SAMPLERS: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
    "EvoSampler": lambda: EvoSampler(seed=0),
    "TPESampler": lambda: optuna.samplers.TPESampler(seed=0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--measure", type=int, default=20)
    parser.add_argument("--samplers", nargs="+", choices=list(SAMPLERS), default=list(SAMPLERS))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.samplers:
            factory = SAMPLERS[name]
            url = f"sqlite:///{Path(tmp) / (name + '.db')}"
            timed = TimedSampler(factory())
            study = optuna.create_study(storage=url, sampler=timed, direction="maximize")
            row: dict[str, object] = {"sampler": name}
            for checkpoint in sorted(args.checkpoints):
                study.optimize(objective, n_trials=max(0, checkpoint - len(study.trials)))
                per_trial = []
                for _ in range(args.measure):
                    timed.seconds = 0.0
                    study.optimize(objective, n_trials=1)
                    per_trial.append(timed.seconds * 1000)
                row[f"ms/trial at {checkpoint}"] = (
                    f"{statistics.median(per_trial):.2f} (p90 "
                    f"{statistics.quantiles(per_trial, n=10)[-1]:.2f})"
                )
                print(f"{name} at {checkpoint}: {statistics.median(per_trial):.2f} ms", flush=True)
            rows.append(row)
    print(f"\nsampler time per trial on SQLite, median of {args.measure}, {machine()}\n")
    print(markdown_table(rows))
    print(f"\nCSV: {write_csv('sampler_overhead.csv', rows)}")


if __name__ == "__main__":
    main()
