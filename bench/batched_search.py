"""A 20-trial digits search one trial at a time and k trials at a time.

``EvoSearchClassifier(n_trials=20, random_state=seed, batch_trials=k)`` on
scikit-learn's digits (a stratified 75/25 train/test split per seed; the
search holds out 20% of the training rows for validation; default search
space, GA sampler, max_epochs 100, patience 20, the five-member ensemble
refit), for each ``k`` in ``--batches`` and each seed. The runs of one seed
go back to back (k in turn), so that a change in the machine's load hits
every setting alike. Reported per run: the whole ``fit`` (search and refit),
the refit alone, the test accuracy of the ensemble and the best validation
score; then per setting the medians over seeds and the wall-time ratio to
``batch_trials=1``.

With ``--space small`` the search space holds small networks only (1-2
layers of 16-64 units, batch 32 or 64), the case stacks are built for; the
default is the estimator's own space (1-3 layers of 32-512 units); ``--space
conv`` reads digits as 1x8x8 images (``input_shape=(1, 8, 8)``, the default
ranges of convolutional genomes).

``--jobs`` adds the estimator's ``n_jobs`` (worker processes) and ``--threads``
the torch threads set before ``fit`` (the estimator's thread budget: networks
bound by arithmetic train with that many, small ones with one; by default
torch's own count) as further settings: every ``k`` runs with every ``n_jobs``
and thread count given, and the ratio is to the first setting (the first of each list).

Usage::

    python bench/batched_search.py                      # 3 seeds, k = 1, 4, 8, auto
    python bench/batched_search.py --space small --batches 1 8
    python bench/batched_search.py --seeds 0 --batches 1 8 --trials 10
    python bench/batched_search.py --batches 1 auto --jobs 1 2
    python bench/batched_search.py --batches 1 --threads 1 2
    python bench/batched_search.py --space small --batches 1 8 16 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, markdown_table, write_csv

from evohpo import EvoSearchClassifier, SearchSpace
from evohpo.training.threads import torch_threads


def parse_batch(value: str) -> int | str:
    return value if value == "auto" else int(value)


#: ``--space small``: the networks a stack trains fastest.
SMALL_SPACE = SearchSpace(
    min_layers=1,
    max_layers=2,
    units=(16, 64),
    dropout=(0.0, 0.3),
    optimizers=("adam", "adamw"),
    learning_rate=(1e-4, 1e-2),
    weight_decay=(1e-6, 1e-2),
    batch_sizes=(32, 64),
)


#: ``--space conv``: digits as 1x8x8 images, convolutional genomes.
CONV_SPACE = SearchSpace(input_shape=(1, 8, 8))


def one_run(
    seed: int,
    batch: int | str,
    n_trials: int,
    space: SearchSpace | None,
    n_jobs: int = 1,
    threads: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=seed
    )
    clf = EvoSearchClassifier(
        n_trials=n_trials,
        random_state=seed,
        batch_trials=batch,
        device=device,
        search_space=space,
        n_jobs=n_jobs,
    )
    with torch_threads(threads):
        started = time.perf_counter()
        clf.fit(X_train, y_train)
        seconds = time.perf_counter() - started
    return {
        "batch_trials": str(batch),
        "n_jobs": n_jobs,
        "threads": torch.get_num_threads() if threads is None else threads,
        "seed": seed,
        "fit_s": round(seconds, 1),
        "refit_s": round(clf.refit_time_, 1),
        "test_accuracy": round(float(clf.score(X_test, y_test)), 4),
        "best_val": round(float(clf.best_score_), 4),
        "trials": clf.n_trials_,
    }


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_setting: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for run in runs:
        key = (run["batch_trials"], run["n_jobs"], run["threads"])
        by_setting.setdefault(key, []).append(run)
    base = statistics.median(r["fit_s"] for r in next(iter(by_setting.values())))
    rows = []
    for (batch, n_jobs, threads), group in by_setting.items():
        fit = statistics.median(r["fit_s"] for r in group)
        rows.append(
            {
                "batch_trials": batch,
                "n_jobs": n_jobs,
                "threads": threads,
                "median fit s": round(fit, 1),
                "median refit s": round(statistics.median(r["refit_s"] for r in group), 1),
                "wall time vs first": round(fit / base, 2),
                "median test acc": round(statistics.median(r["test_accuracy"] for r in group), 4),
                "test acc per seed": " / ".join(f"{r['test_accuracy']:.4f}" for r in group),
                "median best val": round(statistics.median(r["best_val"] for r in group), 4),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=parse_batch, nargs="+", default=[1, 4, 8, "auto"])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--space", choices=("default", "small", "conv"), default="default")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1], help="n_jobs settings")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[None], help="torch threads before fit"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    args = parser.parse_args()
    space = {"small": SMALL_SPACE, "conv": CONV_SPACE}.get(args.space)
    print(f"# batched search, {args.space} space, {args.device}, {date.today()}, {machine()}")
    runs = []
    for seed in args.seeds:
        for threads in args.threads:
            for n_jobs in args.jobs:
                for batch in args.batches:
                    run = one_run(seed, batch, args.trials, space, n_jobs, threads, args.device)
                    print(run, flush=True)
                    runs.append(run)
    write_csv(f"batched_search_{args.space}_runs.csv", runs)
    rows = summary(runs)
    write_csv(f"batched_search_{args.space}.csv", rows)
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
