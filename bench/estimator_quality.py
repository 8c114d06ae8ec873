"""Test accuracy and wall time of EvoSearchClassifier against scikit-learn's MLPClassifier.

For scikit-learn's digits (a fixed stratified 75/25 split) and mnist1d
(generated offline by the ``mnist1d`` package with its default arguments: 4000
training and 1000 test signals), every method is fitted on the training part
with several seeds and scored on the test part:

* ``EvoSearchClassifier`` with its default settings and the GA (``"ga"``), TPE
  (``"tpe"``) and random (``"random"``) samplers, all at the same trial budget;
* ``MLPClassifier`` with its default settings (inputs standardised, as
  EvoSearchClassifier does internally);
* with ``--conv``, ``EvoSearchClassifier(input_shape=...)`` for the same
  samplers: convolutional genomes on digits as 1x8x8 images and on mnist1d as
  1x40 signals;
* with ``--reference-cnn``, the MNIST-1D paper's CNN (three convolutions of
  25 channels, kernels 5, 3, 3, stride 2, padding 1, ReLU, a linear layer on
  the flattened output; Adam 1e-2, batch 100, 6000 steps; 2-D convolutions on
  digits), trained alone on the same split with one torch thread.

Usage::

    python bench/estimator_quality.py            # full: 3 seeds, default budget (long)
    python bench/estimator_quality.py --fast     # smoke run: seconds
    python bench/estimator_quality.py --datasets digits --samplers ga --seeds 0
    python bench/estimator_quality.py --conv --reference-cnn --no-dense --no-mlp
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
#: The shape of one row for the convolutional searches and the reference CNN.
INPUT_SHAPES: dict[str, tuple[int, ...]] = {"digits": (1, 8, 8), "mnist1d": (1, 40)}
RUN_FIELDS = ("dataset", "method", "seed", "test_accuracy", "fit_seconds", "n_trials", "detail")


def fit_evo(
    data: Data,
    sampler: str,
    seed: int,
    fast: bool,
    device: str,
    input_shape: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    from evohpo import EvoSearchClassifier, SearchSpace

    X_train, X_test, y_train, y_test = data
    settings: dict[str, Any] = {"sampler": sampler, "random_state": seed, "device": device}
    if input_shape is not None:
        settings["input_shape"] = input_shape
    if fast:
        space = {"max_layers": 1} if input_shape is None else {"max_layers": 1, "max_blocks": 1}
        settings |= {"n_trials": 3, "max_epochs": 5, "search_space": SearchSpace(**space)}
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


def fit_reference_cnn(
    data: Data, seed: int, fast: bool, input_shape: tuple[int, ...]
) -> dict[str, Any]:
    """The MNIST-1D paper's small CNN, trained alone (1-D or 2-D convolutions by the shape)."""
    import torch
    from torch import nn

    X_train, X_test, y_train, y_test = data
    conv = nn.Conv1d if len(input_shape) == 2 else nn.Conv2d
    torch.manual_seed(seed)
    body = nn.Sequential(
        nn.Unflatten(1, input_shape),
        conv(input_shape[0], 25, 5, stride=2, padding=1),
        nn.ReLU(),
        conv(25, 25, 3, stride=2, padding=1),
        nn.ReLU(),
        conv(25, 25, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
    )
    n_features = body(torch.zeros(1, int(np.prod(input_shape)))).shape[1]
    model = nn.Sequential(body, nn.Linear(n_features, int(max(y_train.max(), y_test.max())) + 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.as_tensor(X_train, dtype=torch.float32)
    y = torch.as_tensor(y_train, dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    steps = 50 if fast else 6000
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # as EvoSearchClassifier trains on the CPU
    started = time.perf_counter()
    try:
        for _ in range(steps):
            batch = torch.randint(len(x), (100,), generator=generator)
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            predicted = model(torch.as_tensor(X_test, dtype=torch.float32)).argmax(1).numpy()
    finally:
        torch.set_num_threads(previous)
    return {
        "test_accuracy": float(np.mean(predicted == y_test)),
        "fit_seconds": time.perf_counter() - started,
        "n_trials": 1,
        "detail": f"{steps} steps, {sum(p.numel() for p in model.parameters())} parameters",
    }


def _methods(args: argparse.Namespace, name: str) -> list[tuple[str, Callable[..., Any]]]:
    """(label, fit(data, seed)) of every method the arguments ask for on data set ``name``."""
    cuda = ", cuda" if args.device != "cpu" else ""
    shape = INPUT_SHAPES[name]
    methods: list[tuple[str, Callable[..., Any]]] = []
    for sampler in args.samplers:
        if not args.no_dense:
            methods.append(
                (
                    f"EvoSearchClassifier({sampler}{cuda})",
                    lambda d, s, sm=sampler: fit_evo(d, sm, s, args.fast, args.device),
                )
            )
        if args.conv:
            methods.append(
                (
                    f"EvoSearchClassifier({sampler}, input_shape={shape}{cuda})",
                    lambda d, s, sm=sampler: fit_evo(d, sm, s, args.fast, args.device, shape),
                )
            )
    if not args.no_mlp:
        methods.append(("MLPClassifier()", lambda d, s: fit_mlp(d, s, args.fast)))
    if args.reference_cnn:
        methods.append(
            (
                "reference CNN (MNIST-1D paper)",
                lambda d, s: fit_reference_cnn(d, s, args.fast, shape),
            )
        )
    return methods


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    out = RESULTS / args.out
    RESULTS.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RUN_FIELDS)
        writer.writeheader()
        for name in args.datasets:
            data = DATASETS[name]()
            for method, fit in _methods(args, name):
                for seed in args.seeds:
                    result = fit(data, seed)
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
    parser.add_argument("--no-dense", action="store_true", help="leave the dense searches out")
    parser.add_argument("--conv", action="store_true", help="add convolutional searches")
    parser.add_argument("--reference-cnn", action="store_true", help="add the reference CNN")
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
