"""Test accuracy and wall time of EvoSearchClassifier against scikit-learn's MLPClassifier.

For scikit-learn's digits (a fixed stratified 75/25 split) and mnist1d
(generated offline by the ``mnist1d`` package with its default arguments: 4000
training and 1000 test signals), every method is fitted on the training part
with several seeds and scored on the test part:

* ``EvoSearchClassifier`` with its default settings and the GA (``"ga"``), TPE
  (``"tpe"``) and random (``"random"``) samplers, all at the same trial budget;
* ``MLPClassifier`` with its default settings (inputs standardised, as
  EvoSearchClassifier does internally).

Usage::

    python bench/estimator_quality.py            # full: 3 seeds, default budget (long)
    python bench/estimator_quality.py --fast     # smoke run: seconds
    python bench/estimator_quality.py --datasets digits --samplers ga --seeds 0
    python bench/estimator_quality.py --summarize bench/results/a.csv bench/results/b.csv

Every run is one row of ``bench/results/<--out>`` (default
``estimator_quality_runs.csv``); the summary table (mean ± sd over seeds) is
printed and written to ``estimator_quality.csv``. ``--summarize`` rebuilds the
summary from run files written by separate processes.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from _common import RESULTS, machine, markdown_table, mean_std, read_runs, write_csv

os.environ.setdefault("EVOHPO_NO_PROGRESS", "1")

Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def load_digits_split() -> Data:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    return X_train, X_test, y_train, y_test


def load_mnist1d() -> Data:
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())  # default arguments; generated, never downloaded
    return data["x"], data["x_test"], data["y"], data["y_test"]


DATASETS: dict[str, Callable[[], Data]] = {"digits": load_digits_split, "mnist1d": load_mnist1d}
SAMPLERS = ("ga", "tpe", "random")
RUN_FIELDS = ("dataset", "method", "seed", "test_accuracy", "fit_seconds", "n_trials", "detail")


def fit_evo(data: Data, sampler: str, seed: int, fast: bool, device: str) -> dict[str, Any]:
    from evohpo import EvoSearchClassifier

    X_train, X_test, y_train, y_test = data
    settings: dict[str, Any] = {"sampler": sampler, "random_state": seed, "device": device}
    if fast:
        settings |= {"n_trials": 3, "max_epochs": 5, "search_space": {"max_layers": 1}}
    clf = EvoSearchClassifier(**settings)
    started = time.perf_counter()
    clf.fit(X_train, y_train)
    seconds = time.perf_counter() - started
    return {
        "test_accuracy": float(clf.score(X_test, y_test)),
        "fit_seconds": seconds,
        "n_trials": clf.n_trials_,
        "detail": f"val {clf.best_score_:.4f}; {clf.best_genome_.to_json()}",
    }


def fit_mlp(data: Data, seed: int, fast: bool) -> dict[str, Any]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_train, X_test, y_train, y_test = data
    mlp = MLPClassifier(random_state=seed, **({"max_iter": 5} if fast else {}))
    model = make_pipeline(StandardScaler(), mlp)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_train, y_train)
    seconds = time.perf_counter() - started
    return {
        "test_accuracy": float(model.score(X_test, y_test)),
        "fit_seconds": seconds,
        "n_trials": 1,
        "detail": f"n_iter {mlp.n_iter_}",
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    out = RESULTS / args.out
    RESULTS.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RUN_FIELDS)
        writer.writeheader()
        for name in args.datasets:
            data = DATASETS[name]()
            methods: list[tuple[str, str | None]] = [
                (f"EvoSearchClassifier({s}{', cuda' if args.device != 'cpu' else ''})", s)
                for s in args.samplers
            ]
            if not args.no_mlp:
                methods.append(("MLPClassifier()", None))
            for method, sampler in methods:
                for seed in args.seeds:
                    result = (
                        fit_mlp(data, seed, args.fast)
                        if sampler is None
                        else fit_evo(data, sampler, seed, args.fast, args.device)
                    )
                    row = {"dataset": name, "method": method, "seed": seed, **result}
                    writer.writerow(row)
                    fh.flush()
                    runs.append(row)
                    print(
                        f"{name:8s} {method:32s} seed {seed}: test {row['test_accuracy']:.4f}, "
                        f"{row['fit_seconds']:.1f}s",
                        flush=True,
                    )
    print(f"runs: {out}")
    return runs


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    keys = list(dict.fromkeys((r["dataset"], r["method"]) for r in runs))
    for dataset, method in keys:
        group = [r for r in runs if r["dataset"] == dataset and r["method"] == method]
        rows.append(
            {
                "dataset": dataset,
                "method": method,
                "seeds": len(group),
                "test accuracy (mean ± sd)": mean_std([float(r["test_accuracy"]) for r in group]),
                "fit seconds (mean ± sd)": mean_std([float(r["fit_seconds"]) for r in group]),
                "trials": int(float(group[0]["n_trials"])),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="tiny budget: a smoke run")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--samplers", nargs="*", choices=SAMPLERS, default=list(SAMPLERS))
    parser.add_argument("--device", default="cpu", help="torch device of EvoSearchClassifier")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--no-mlp", action="store_true", help="leave MLPClassifier out")
    parser.add_argument("--out", default="estimator_quality_runs.csv", help="run file name")
    parser.add_argument("--summarize", nargs="+", metavar="CSV", help="summarize run files")
    args = parser.parse_args()

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    runs = read_runs(args.summarize) if args.summarize else run(args)
    rows = summarize(runs)
    mode = "fast smoke mode" if args.fast else "default settings"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"\nEvoSearchClassifier ({mode}) vs MLPClassifier(), {machine()}, {usable} usable\n")
    print(markdown_table(rows))
    name = "estimator_quality_fast.csv" if args.fast else "estimator_quality.csv"
    print(f"\nCSV: {write_csv(name, rows)}")


if __name__ == "__main__":
    main()
