"""How long ``EvoSearchClassifier(n_trials=None, timeout=T).fit`` takes, refit included.

``timeout`` bounds the whole fit: the search keeps the ensemble refit's
estimated time, and the refit trains in what is left. For each
``batch_trials`` setting and seed, on MNIST-1D (generated offline, its
canonical test split), this prints the fit's wall time, the trials it ran,
the refit's time and members, and the test accuracy.

Usage::

    python bench/fit_budget.py                          # timeout 120, batch_trials auto and 8
    python bench/fit_budget.py --timeout 60 --batches auto --seeds 0 1
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, markdown_table, write_csv
from estimator_quality import load_mnist1d

from evohpo import EvoSearchClassifier


def parse_batch(value: str) -> int | str:
    return value if value == "auto" else int(value)


def one_run(seed: int, batch: int | str, timeout: float) -> dict[str, Any]:
    X_train, X_test, y_train, y_test = load_mnist1d()
    clf = EvoSearchClassifier(
        n_trials=None, timeout=timeout, random_state=seed, batch_trials=batch, device="cpu"
    )
    started = time.perf_counter()
    clf.fit(X_train, y_train)
    seconds = time.perf_counter() - started
    return {
        "timeout_s": timeout,
        "batch_trials": str(batch),
        "seed": seed,
        "fit_s": round(seconds, 1),
        "trials": clf.n_trials_,
        "refit_s": round(clf.refit_time_, 1),
        "members": len(clf.ensemble_genomes_),
        "test_accuracy": round(float(clf.score(X_test, y_test)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--batches", type=parse_batch, nargs="+", default=["auto", 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    print(f"# fit under a timeout, mnist1d, {date.today()}, {machine()}")
    runs = []
    for seed in args.seeds:
        for batch in args.batches:
            run = one_run(seed, batch, args.timeout)
            print(run, flush=True)
            runs.append(run)
    write_csv(f"fit_budget_{int(args.timeout)}.csv", runs)
    print(markdown_table(runs))


if __name__ == "__main__":
    main()
