"""What averaging the best few refitted networks buys: EvoSearchClassifier's ``ensemble_size``.

For every data set and seed, one GA search (``EvoSearchClassifier`` with its
defaults and a time budget) is refitted with ``ensemble_size`` set to the
largest size asked for. Its members are refitted best first, each with a seed
of its own rank, so the first ``k`` of them are exactly the ensemble
``ensemble_size=k`` makes from the same search: every size is scored on the
test rows from one search, and the differences between sizes are not blurred
by differences between searches.

The splits are not those of ``bench/peers.py``: digits, wine and breast_cancer
take a stratified 75/25 split with ``--split-seed`` (default 1; peers.py uses
0), and mnist1d a stratified 75/25 split of all its 5000 signals (peers.py
uses its canonical test split). A default chosen here is then checked there on
data it was not chosen on.

Usage::

    python bench/ensemble.py                                 # 4 data sets, 3 seeds, 60 s each
    python bench/ensemble.py --fast                          # smoke run: seconds
    python bench/ensemble.py --datasets mnist1d --budget 180 --sizes 1 3 5
    python bench/ensemble.py --summarize bench/results/a.csv bench/results/b.csv

Every search is one row per size in ``bench/results/<--out>`` (default
``ensemble_runs.csv``); the summary (mean test accuracy over seeds and its gain
over the smallest size) is printed and written to ``ensemble.csv``.
``--summarize`` rebuilds it from run files written by separate processes.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from typing import Any

import numpy as np
from _common import RESULTS, machine, markdown_table, mean_std, read_runs, write_csv

os.environ.setdefault("EVOHPO_NO_PROGRESS", "1")

Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
DATASETS = ("digits", "wine", "breast_cancer", "mnist1d")
RUN_FIELDS = ("dataset", "seed", "size", "test_accuracy", "trials", "refit_seconds", "members")


def load_split(name: str, split_seed: int) -> Data:
    from sklearn.model_selection import train_test_split

    from evohpo.training.datasets import load_dataset

    data = load_dataset(name)  # mnist1d: all 5000 signals, split afresh below
    X_train, X_test, y_train, y_test = train_test_split(
        data.X, data.y, test_size=0.25, stratify=data.y, random_state=split_seed
    )
    return X_train, X_test, y_train, y_test


def member_accuracies(clf: Any, X_test: np.ndarray, y_test: np.ndarray) -> list[float]:
    """Test accuracy of the ensembles of the first 1, 2, ... members."""
    from evohpo.training.predict import predict_proba

    scaled = clf._scaler.transform(X_test)
    total = np.zeros((len(y_test), len(clf.classes_)))
    accuracies = []
    for model in clf.ensemble_models_:
        total += predict_proba(model, scaled)
        accuracies.append(float(np.mean(clf.classes_[total.argmax(axis=1)] == y_test)))
    # The prefix of all the members is the estimator itself.
    if accuracies[-1] != clf.score(X_test, y_test):
        raise RuntimeError("the ensemble of every member disagrees with clf.predict")
    return accuracies


def search(data: Data, seed: int, budget: float, size: int, fast: bool) -> dict[str, Any]:
    from evohpo import EvoSearchClassifier

    X_train, X_test, y_train, y_test = data
    settings: dict[str, Any] = {"n_trials": None, "timeout": budget}
    if fast:
        settings = {"n_trials": 4, "max_epochs": 3, "search_space": {"max_layers": 1}}
    clf = EvoSearchClassifier(ensemble_size=size, random_state=seed, device="cpu", **settings)
    clf.fit(X_train, y_train)
    return {
        "accuracies": member_accuracies(clf, X_test, y_test),
        "trials": clf.n_trials_,
        "refit_seconds": clf.refit_time_,
        "members": clf.ensemble_trials_,
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(1)
    runs: list[dict[str, Any]] = []
    largest = max(args.sizes)
    out = RESULTS / args.out
    RESULTS.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RUN_FIELDS)
        writer.writeheader()
        for name in args.datasets:
            data = load_split(name, args.split_seed)
            for seed in args.seeds:
                started = time.perf_counter()
                result = search(data, seed, args.budget, largest, args.fast)
                accuracies = result["accuracies"]
                for size in args.sizes:
                    # A study with fewer distinct trials than `size` refits them all.
                    accuracy = accuracies[min(size, len(accuracies)) - 1]
                    row = {
                        "dataset": name,
                        "seed": seed,
                        "size": size,
                        "test_accuracy": accuracy,
                        "trials": result["trials"],
                        "refit_seconds": result["refit_seconds"],
                        "members": " ".join(str(n) for n in result["members"][:size]),
                    }
                    writer.writerow(row)
                    runs.append(row)
                fh.flush()
                shown = ", ".join(
                    f"{s}: {accuracies[min(s, len(accuracies)) - 1]:.4f}" for s in args.sizes
                )
                print(
                    f"{name:14s} seed {seed}: {result['trials']} trials, test by size {shown} "
                    f"({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
    print(f"runs: {out}")
    return runs


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        sizes = sorted({int(r["size"]) for r in runs if r["dataset"] == dataset})
        by_size = {
            s: [r for r in runs if r["dataset"] == dataset and int(r["size"]) == s] for s in sizes
        }
        single = {r["seed"]: float(r["test_accuracy"]) for r in by_size[min(sizes)]}
        for size, group in by_size.items():
            gains = [float(r["test_accuracy"]) - single[r["seed"]] for r in group]
            refit = [float(r["refit_seconds"]) for r in group]
            rows.append(
                {
                    "data": dataset,
                    "ensemble_size": size,
                    "seeds": len(group),
                    "test accuracy (mean ± sd)": mean_std(
                        [float(r["test_accuracy"]) for r in group]
                    ),
                    f"gain over {min(sizes)} (mean, min, max)": (
                        f"{statistics.fmean(gains):+.4f} ({min(gains):+.4f}, {max(gains):+.4f})"
                    ),
                    f"refit s, all {max(sizes)} (mean)": f"{statistics.fmean(refit):.1f}",
                    "trials (median)": int(statistics.median(int(r["trials"]) for r in group)),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="tiny searches: a smoke run")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per search")
    parser.add_argument("--sizes", nargs="+", type=int, default=[1, 2, 3, 5, 8])
    parser.add_argument("--split-seed", type=int, default=1, help="train/test split seed")
    parser.add_argument("--out", default=None, help="run file name under bench/results")
    parser.add_argument("--summarize", nargs="+", metavar="CSV", help="summarize run files")
    args = parser.parse_args()
    if min(args.sizes) < 1:
        parser.error(f"--sizes must be ints >= 1; got {args.sizes}")
    args.sizes = sorted(set(args.sizes))
    args.seeds = args.seeds or ([0] if args.fast else [0, 1, 2])
    args.out = args.out or ("ensemble_runs_fast.csv" if args.fast else "ensemble_runs.csv")

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs = read_runs(args.summarize) if args.summarize else run(args)
    rows = summarize(runs)
    budget = "fast smoke mode" if args.fast else f"{args.budget:g} s per search"
    print(f"\nEvoSearchClassifier ensemble sizes ({budget}), one torch thread, {machine()}\n")
    print(markdown_table(rows))
    print(f"\nCSV: {write_csv('ensemble_fast.csv' if args.fast else 'ensemble.csv', rows)}")


if __name__ == "__main__":
    main()
